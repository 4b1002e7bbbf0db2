"""`marketbus status`: every producer's feeds, their age and errors, from Redis alone.

It reads the catalog hash, the newest entry of each feed's stream, and each exchange's
status stream; nothing needs to run but Redis. Rendering is a pure function of rows.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import msgspec
import redis.asyncio as aioredis

from marketbus.shared.codecs import decode, decode_feed_info
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ContractError
from marketbus.shared.names import catalog_key, status_name
from marketbus.shared.schema import FeedInfo, Status

RECENT_STATUS = 200


class FeedRow(msgspec.Struct, frozen=True):
    """One line of the report."""

    feed: str
    run: int
    stream_len: int
    last_age_s: float | None
    state: str
    errors: int


def age_text(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.1f}s"
    if age_s < 7200:
        return f"{age_s / 60:.1f}m"
    return f"{age_s / 3600:.1f}h"


def render(rows: list[FeedRow], now_text: str) -> str:
    """The report as an aligned text table."""
    if not rows:
        return f"no feeds in the catalog ({now_text})\n"
    head = ("FEED", "RUN", "STREAM", "LAST", "STATE", "ERRORS")
    body = [
        (r.feed, str(r.run), str(r.stream_len), age_text(r.last_age_s), r.state, str(r.errors))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
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


async def _recent_status(redis: aioredis.Redis, ns: str, exchange: str) -> list[Status]:
    entries = await redis.xrevrange(status_name(ns, exchange), count=RECENT_STATUS)
    found: list[Status] = []
    for _id, fields in reversed(entries):
        try:
            message = decode(fields[b"d"])
        except (ContractError, KeyError):
            continue
        if isinstance(message, Status):
            found.append(message)
    return found


async def collect(redis: aioredis.Redis, ns: str) -> list[FeedRow]:
    catalog: dict[bytes, bytes] = await redis.hgetall(catalog_key(ns))
    infos: dict[str, FeedInfo] = {}
    for name, raw in catalog.items():
        try:
            infos[name.decode()] = decode_feed_info(raw)
        except ContractError:
            continue
    statuses = {
        exchange: feed_states(await _recent_status(redis, ns, exchange))
        for exchange in {info.exchange for info in infos.values()}
    }
    now_ns = time.time_ns()
    rows: list[FeedRow] = []
    for name in sorted(infos):
        info = infos[name]
        length = await redis.xlen(name)
        newest = await redis.xrevrange(name, count=1)
        age: float | None = None
        if newest:
            try:
                age = (now_ns - decode(newest[0][1][b"d"]).recv_ns) / 1e9
            except (ContractError, KeyError):
                age = None
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
    return rows


async def print_status(config: RedisConfig, out: TextIO = sys.stdout) -> None:
    redis = await connect(config)
    try:
        rows = await collect(redis, config.namespace)
    finally:
        await redis.aclose()
    out.write(render(rows, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
