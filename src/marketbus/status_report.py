"""`marketbus status`: every producer's feeds, their state, age and errors, from Redis alone.

It reads the catalog hash, the newest entry of each feed's stream, and each exchange's
status stream: the newest ``heartbeat`` carries every feed's state and counters (JSON
`Heartbeat`, see `marketbus.producer.stats`) and the lease holder; without one (an older
producer) state and errors come from the status events. Nothing needs to run but Redis.
Rendering is a pure function of rows.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO, cast

import msgspec
import redis.asyncio as aioredis

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
    standby_prefix,
    status_name,
)
from marketbus.shared.schema import MESSAGE_TYPES, FeedInfo, Status

RECENT_STATUS = 200


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


class ExchangeRow(msgspec.Struct, frozen=True):
    """What an exchange's newest heartbeat says about its producer, and the standby
    producers waiting to take over (their keys, see `standby_key`)."""

    exchange: str
    heartbeat_age_s: float | None
    queued: int | None
    lease: str | None
    standby: tuple[str, ...] = ()


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


def render(rows: list[FeedRow], now_text: str, exchanges: list[ExchangeRow] | None = None) -> str:
    """The report as an aligned text table, then one line per exchange's producer."""
    if not rows:
        return f"no feeds in the catalog ({now_text})\n"
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
        lines.append(
            f"{ex.exchange}: heartbeat {age_text(ex.heartbeat_age_s)} ago, {ex.queued} queued, "
            f"{lease}{standby}"
        )
    return "\n".join(lines) + f"\n{len(rows)} feed(s) at {now_text}\n"


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


def _payload(fields: object) -> bytes | None:
    """The payload field of a stream entry as redis-py returns it, if it has one."""
    value = fields.get(STREAM_FIELD_BYTES) if isinstance(fields, dict) else None
    return value if isinstance(value, bytes) else None


def _decoded(fields: object) -> object | None:
    payload = _payload(fields)
    if payload is None:
        return None
    try:
        return decode(payload)
    except ContractError:
        return None


async def _recent_status(redis: aioredis.Redis, ns: str, exchange: str) -> list[Status]:
    entries = await redis.xrevrange(status_name(ns, exchange), count=RECENT_STATUS) or []
    found: list[Status] = []
    for _id, fields in reversed(entries):
        message = _decoded(fields)
        if isinstance(message, Status):
            found.append(message)
    return found


async def _standbys(redis: aioredis.Redis, ns: str, exchange: str) -> tuple[str, ...]:
    """The producers standing by for *exchange*, as `describe` puts them."""
    found: list[str] = []
    async for key in redis.scan_iter(match=standby_prefix(ns, exchange) + "*", count=100):
        value = await redis.get(key)
        if isinstance(value, bytes):
            found.append(describe(value))
    return tuple(sorted(found))


async def collect_all(redis: aioredis.Redis, ns: str) -> tuple[list[FeedRow], list[ExchangeRow]]:
    """Rows per feed (sorted by name) and per exchange."""
    catalog = await redis.hgetall(catalog_key(ns))
    infos: dict[str, FeedInfo] = {}
    for key, raw in catalog.items():
        try:
            field = key.decode() if isinstance(key, bytes) else key
            infos[field] = decode_feed_info(raw if isinstance(raw, bytes) else raw.encode())
        except ContractError:
            continue
    now_ns = time.time_ns()
    events = {
        exchange: await _recent_status(redis, ns, exchange)
        for exchange in sorted({info.exchange for info in infos.values()})
    }
    statuses = {exchange: feed_states(found) for exchange, found in events.items()}
    beats = {exchange: latest_heartbeat(found) for exchange, found in events.items()}
    exchanges = []
    for exchange, beat in beats.items():
        standby = await _standbys(redis, ns, exchange)
        if beat is None:
            exchanges.append(ExchangeRow(exchange, None, None, None, standby))
            continue
        age_s = (now_ns - beat[0].recv_ns) / 1e9
        exchanges.append(ExchangeRow(exchange, age_s, beat[1].queued, beat[1].lease, standby))
    rows: list[FeedRow] = []
    for name in sorted(infos):
        info = infos[name]
        length = int(await redis.xlen(name))
        newest = await redis.xrevrange(name, count=1) or []
        message = _decoded(newest[0][1]) if newest else None
        age = (now_ns - message.recv_ns) / 1e9 if isinstance(message, MESSAGE_TYPES) else None
        beat = beats[info.exchange]
        kind, symbol = kind_and_symbol(name)
        stats = None if beat is None else beat[1].feeds.get(f"{kind}:{symbol}")
        if stats is not None:
            rows.append(
                FeedRow(
                    feed=name,
                    run=info.run,
                    stream_len=length,
                    last_age_s=age,
                    state=stats.state,
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
                state=state.get(name, state.get(None, "-")),
                errors=errors.get(name, 0),
            )
        )
    return rows, exchanges


async def collect(redis: aioredis.Redis, ns: str) -> list[FeedRow]:
    """Rows per feed, sorted by name."""
    rows, _ = await collect_all(redis, ns)
    return rows


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
        rows, exchanges = await collect_all(redis, config.namespace)
    finally:
        await redis.aclose()
    out.write(render(rows, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), exchanges))
