"""`marketbus status`: every producer's feeds, their state, age and errors, from Redis alone.

It reads the catalog hash, the newest entry of each feed's stream, and each exchange's
status stream: the newest ``heartbeat`` carries every feed's state and counters (JSON
`Heartbeat`, see `marketbus.producer.stats`) and the lease holder; without one (an older
producer) state and errors come from the status events. Nothing needs to run but Redis.
Rendering is a pure function of rows.

Never fooled by a dead producer: its last heartbeat still says ``connected``. A producer
whose newest heartbeat is older than `DEAD_AFTER_BEATS` times its heartbeat interval
(at least `MIN_DEAD_AFTER_S`) is shown ``dead``, and so is every feed of it
(`liveness`). The interval is the median spacing of its newest heartbeats of one run,
else the producer's default ``heartbeat_s``. A ``stopped`` event after the newest
heartbeat shows it ``stopped`` instead.

Never stopped by garbage: a stream entry that is not one of ours (no ``d`` field, an
undecodable payload, or an ID that is not its message's ``{run}-{seq}``) is skipped and
counted, and the report says how many.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from typing import Final, Literal, TextIO, TypeAlias, cast

import msgspec
import redis.asyncio as aioredis

from marketbus.producer.config import ProducerSettings
from marketbus.producer.lease import describe
from marketbus.producer.stats import Heartbeat, parse_heartbeat
from marketbus.shared.codecs import decode, decode_feed_info
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ContractError
from marketbus.shared.names import (
    STREAM_FIELD_BYTES,
    catalog_key,
    kind_and_symbol,
    parse_entry_id,
    standby_prefix,
    status_name,
)
from marketbus.shared.schema import MESSAGE_TYPES, FeedInfo, Message, Status

RECENT_STATUS = 200
NEWEST_SCANNED = 10
"""Entries read from the end of a feed's stream to find its newest decodable message."""
DEAD_AFTER_BEATS: Final = 3
"""Missed heartbeats after which a producer is shown dead."""
MIN_DEAD_AFTER_S: Final = 5.0
"""The least silence called dead: a sub-second interval must not turn a pause into death."""
DEFAULT_HEARTBEAT_S: Final = ProducerSettings().heartbeat_s
"""The interval assumed when the status stream shows only one heartbeat of a run."""
BEAT_GAPS: Final = 4
"""Spacings between newest heartbeats whose median is taken as the interval."""

Verdict: TypeAlias = Literal["alive", "dead", "stopped"]


class FeedRow(msgspec.Struct, frozen=True):
    """One line of the report; None where the producer did not say (no heartbeat)."""

    feed: str
    run: int
    stream_len: int
    last_age_s: float | None
    state: str
    errors: int
    messages: int | None = None
    reconnects: int | None = None
    dropped: int | None = None


class Liveness(msgspec.Struct, frozen=True):
    """Whether a producer still beats: ``dead`` once silent for longer than
    ``dead_after_s`` (`DEAD_AFTER_BEATS` x ``interval_s``, at least `MIN_DEAD_AFTER_S`)."""

    verdict: Verdict
    interval_s: float
    dead_after_s: float


class ExchangeRow(msgspec.Struct, frozen=True):
    """What an exchange's newest heartbeat says about its producer, and the standby
    producers waiting to take over (their keys, see `standby_key`)."""

    exchange: str
    heartbeat_age_s: float | None
    queued: int | None
    lease: str | None
    standby: tuple[str, ...] = ()
    liveness: Liveness | None = None


class Report(msgspec.Struct, frozen=True):
    """Everything `marketbus status` shows; ``skipped``: stream entries that were not
    ours (undecodable, no payload field, or an ID that is not their ``{run}-{seq}``)."""

    rows: list[FeedRow]
    exchanges: list[ExchangeRow]
    skipped: int = 0


def age_text(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.1f}s"
    if age_s < 7200:
        return f"{age_s / 60:.1f}m"
    return f"{age_s / 3600:.1f}h"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _cells(r: FeedRow) -> tuple[str, ...]:
    """One row's cells, in the order of the table's head."""
    return (
        r.feed,
        str(r.run),
        str(r.stream_len),
        age_text(r.last_age_s),
        r.state,
        _count(r.messages),
        str(r.errors),
        _count(r.reconnects),
        _count(r.dropped),
    )


def _skipped_note(skipped: int) -> str:
    if not skipped:
        return ""
    return f"skipped {skipped} undecodable or foreign stream entries\n"


def render(
    rows: list[FeedRow],
    now_text: str,
    exchanges: list[ExchangeRow] | None = None,
    *,
    skipped: int = 0,
) -> str:
    """The report as an aligned text table, then one line per exchange's producer."""
    if not rows:
        return f"no feeds in the catalog ({now_text})\n" + _skipped_note(skipped)
    head = ("FEED", "RUN", "STREAM", "LAST", "STATE", "MSGS", "ERRORS", "RECONN", "DROPPED")
    body = [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
    for ex in exchanges or []:
        standby = f"; standby: {', '.join(ex.standby)}" if ex.standby else "; no standby"
        if ex.heartbeat_age_s is None:
            lines.append(f"{ex.exchange}: no heartbeat in the status stream{standby}")
            continue
        lease = f"lease held by {ex.lease}" if ex.lease else "no lease"
        age = age_text(ex.heartbeat_age_s)
        live = ex.liveness
        if live is not None and live.verdict == "dead":
            lines.append(
                f"{ex.exchange}: DEAD: last heartbeat {age} ago (over {live.dead_after_s:.1f}s "
                f"= {DEAD_AFTER_BEATS} x its {live.interval_s:.1f}s interval), "
                f"{lease}{standby}"
            )
            continue
        if live is not None and live.verdict == "stopped":
            lines.append(f"{ex.exchange}: stopped after its heartbeat {age} ago{standby}")
            continue
        lines.append(f"{ex.exchange}: heartbeat {age} ago, {ex.queued} queued, {lease}{standby}")
    return "\n".join(lines) + f"\n{len(rows)} feed(s) at {now_text}\n" + _skipped_note(skipped)


def feed_states(events: list[Status]) -> tuple[dict[str | None, str], dict[str | None, int]]:
    """Latest state and error count per feed (None = the whole exchange), oldest first in."""
    state: dict[str | None, str] = {}
    errors: dict[str | None, int] = {}
    for event in events:
        if event.event == "heartbeat":
            continue
        state[event.feed] = event.event
        if event.event in ("error", "gap"):
            errors[event.feed] = errors.get(event.feed, 0) + 1
    return state, errors


def latest_heartbeat(events: list[Status]) -> tuple[Status, Heartbeat] | None:
    """The newest heartbeat event whose detail carries feed stats."""
    for event in reversed(events):
        if event.event == "heartbeat":
            beat = parse_heartbeat(event.detail)
            if beat is not None:
                return event, beat
    return None


def heartbeat_interval_s(events: list[Status]) -> float | None:
    """The median spacing of the newest heartbeats of the newest heartbeat's run (up
    to `BEAT_GAPS` gaps), from their ``recv_ns``; None with fewer than two."""
    beats = [e for e in events if e.event == "heartbeat"]
    if not beats:
        return None
    run = beats[-1].run
    times = [b.recv_ns for b in beats if b.run == run][-(BEAT_GAPS + 1) :]
    gaps = [(later - earlier) / 1e9 for earlier, later in itertools.pairwise(times)]
    positive = [gap for gap in gaps if gap > 0]
    return statistics.median(positive) if positive else None


def liveness(events: list[Status], now_ns: int) -> Liveness | None:
    """Whether the producer writing *events* (oldest first) is alive at *now_ns*;
    None when it never sent a heartbeat (nothing to judge by)."""
    beats = [i for i, event in enumerate(events) if event.event == "heartbeat"]
    if not beats:
        return None
    last_beat = beats[-1]
    interval = heartbeat_interval_s(events) or DEFAULT_HEARTBEAT_S
    bound = max(DEAD_AFTER_BEATS * interval, MIN_DEAD_AFTER_S)
    beat = events[last_beat]
    after = events[last_beat + 1 :]
    if any(e.event == "stopped" and e.feed is None and e.run == beat.run for e in after):
        return Liveness("stopped", interval, bound)
    silent_s = (now_ns - beat.recv_ns) / 1e9
    return Liveness("dead" if silent_s > bound else "alive", interval, bound)


def _payload(fields: object) -> bytes | None:
    """The payload field of a stream entry as redis-py returns it, if it has one."""
    value = fields.get(STREAM_FIELD_BYTES) if isinstance(fields, dict) else None
    return value if isinstance(value, bytes) else None


def entry_message(entry_id: bytes | str, fields: object) -> Message | None:
    """The message of one stream entry; None for one that is not ours: no payload
    field, an undecodable payload, or an ID that is not the message's ``{run}-{seq}``."""
    payload = _payload(fields)
    if payload is None:
        return None
    try:
        message = decode(payload)
        if parse_entry_id(entry_id) != (message.run, message.seq):
            return None
    except ContractError:
        return None
    return message


class _Skips:
    """Counts the stream entries `collect_all` could not use."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def message(self, entry_id: object, fields: object) -> Message | None:
        """`entry_message`, counting the entries that are not ours."""
        message = entry_message(entry_id, fields) if isinstance(entry_id, bytes | str) else None
        if message is None:
            self.count += 1
        return message


async def _recent_status(
    redis: aioredis.Redis, ns: str, exchange: str, skips: _Skips
) -> list[Status]:
    entries = await redis.xrevrange(status_name(ns, exchange), count=RECENT_STATUS) or []
    found: list[Status] = []
    for entry_id, fields in reversed(entries):
        message = skips.message(entry_id, fields)
        if isinstance(message, Status):
            found.append(message)
    return found


async def _newest_message(redis: aioredis.Redis, name: str, skips: _Skips) -> Message | None:
    """The newest of the last `NEWEST_SCANNED` entries of stream *name* that is ours."""
    for entry_id, fields in await redis.xrevrange(name, count=NEWEST_SCANNED) or []:
        message = skips.message(entry_id, fields)
        if message is not None:
            return message
    return None


async def _standbys(redis: aioredis.Redis, ns: str, exchange: str) -> tuple[str, ...]:
    """The producers standing by for *exchange*, as `describe` puts them."""
    found: list[str] = []
    async for key in redis.scan_iter(match=standby_prefix(ns, exchange) + "*", count=100):
        value = await redis.get(key)
        if isinstance(value, bytes):
            found.append(describe(value))
    return tuple(sorted(found))


async def collect_all(redis: aioredis.Redis, ns: str) -> Report:
    """Rows per feed (sorted by name) and per exchange, and the entries skipped."""
    catalog = await redis.hgetall(catalog_key(ns))
    infos: dict[str, FeedInfo] = {}
    for key, raw in catalog.items():
        try:
            field = key.decode() if isinstance(key, bytes) else key
            infos[field] = decode_feed_info(raw if isinstance(raw, bytes) else raw.encode())
        except ContractError:
            continue
    skips = _Skips()
    now_ns = time.time_ns()
    events = {
        exchange: await _recent_status(redis, ns, exchange, skips)
        for exchange in sorted({info.exchange for info in infos.values()})
    }
    statuses = {exchange: feed_states(found) for exchange, found in events.items()}
    beats = {exchange: latest_heartbeat(found) for exchange, found in events.items()}
    lives = {exchange: liveness(found, now_ns) for exchange, found in events.items()}
    exchanges = []
    for exchange, beat in beats.items():
        standby = await _standbys(redis, ns, exchange)
        if beat is None:
            exchanges.append(ExchangeRow(exchange, None, None, None, standby))
            continue
        age_s = (now_ns - beat[0].recv_ns) / 1e9
        exchanges.append(
            ExchangeRow(exchange, age_s, beat[1].queued, beat[1].lease, standby, lives[exchange])
        )
    rows: list[FeedRow] = []
    for name in sorted(infos):
        info = infos[name]
        length = int(await redis.xlen(name))
        message = await _newest_message(redis, name, skips)
        age = (now_ns - message.recv_ns) / 1e9 if isinstance(message, MESSAGE_TYPES) else None
        beat = beats[info.exchange]
        live = lives[info.exchange]
        verdict = None if live is None or live.verdict == "alive" else live.verdict
        kind, symbol = kind_and_symbol(name)
        stats = None if beat is None else beat[1].feeds.get(f"{kind}:{symbol}")
        if stats is not None:
            rows.append(
                FeedRow(
                    feed=name,
                    run=info.run,
                    stream_len=length,
                    last_age_s=age,
                    state=verdict or stats.state,
                    errors=stats.errors,
                    messages=stats.msgs,
                    reconnects=stats.reconnects,
                    dropped=stats.dropped,
                )
            )
            continue
        state, errors = statuses[info.exchange]
        rows.append(
            FeedRow(
                feed=name,
                run=info.run,
                stream_len=length,
                last_age_s=age,
                state=verdict or state.get(name, state.get(None, "-")),
                errors=errors.get(name, 0),
            )
        )
    return Report(rows, exchanges, skips.count)


async def collect(redis: aioredis.Redis, ns: str) -> list[FeedRow]:
    """Rows per feed, sorted by name."""
    return (await collect_all(redis, ns)).rows


async def _connect(config: RedisConfig) -> aioredis.Redis:
    """A client for *config*; with ``config.cluster`` a `RedisCluster`, which serves
    `collect` as well: every command it sends reads one key, routed to that key's node."""
    if not config.cluster:
        return await connect(config)
    from marketbus.shared.cluster import connect_cluster

    return cast(aioredis.Redis, await connect_cluster(config))


async def print_status(config: RedisConfig, out: TextIO = sys.stdout) -> None:
    redis = await _connect(config)
    try:
        report = await collect_all(redis, config.namespace)
    finally:
        await redis.aclose()
    now_text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    out.write(render(report.rows, now_text, report.exchanges, skipped=report.skipped))
