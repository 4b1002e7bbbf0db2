"""`history`: a feed's candles or trades over a time window, from the archive and then
from its Redis stream, seamlessly and each message once.

The archive answers for what it holds; the stream is read with ``XRANGE`` from the
last entry the archive recorded of that feed (its manifest position; the start of the
stream if there is none), so the two overlap at most by what was recorded but is
still in the stream. Messages are deduplicated by ``(run, seq)``; candles then follow
the read rule of `marketbus.archive.candles` (the last value of a ``ts_ms`` wins).

The window is exchange time, ``start_ms`` inclusive, ``end_ms`` exclusive: a candle by
its open time, a trade batch by its ``ts_ms``. Archive files are read in a worker
thread, so an asyncio program (the SDK's `Subscriber.history`) keeps running meanwhile;
`archived_candles` is the archive-only read, blocking, for a caller's own thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from marketbus.archive.candles import latest_by_time
from marketbus.archive.dataset import BadFilePolicy, FeedKey, archive_files, read_feed
from marketbus.archive.manifest import decode_manifest
from marketbus.archive.partitions import DAY_MS
from marketbus.archive.rows import messages_of
from marketbus.archive.store import MANIFEST
from marketbus.shared.codecs import decode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import STREAM_FIELD_BYTES, Feed
from marketbus.shared.schema import OHLCV, MarketMessage, Trades

PAGE = 1_000

Client: TypeAlias = aioredis.Redis | RedisCluster
"""A Redis client to read streams with: one server, or a cluster."""


class HistoryReader:
    """Reads feeds' history from one archive directory and one Redis."""

    def __init__(
        self, redis: Client, archive: str | Path, *, on_bad_file: BadFilePolicy = "raise"
    ) -> None:
        self.redis = redis
        self.root = Path(archive)
        self.on_bad_file: BadFilePolicy = on_bad_file

    async def candles(self, feed: str, start_ms: int, end_ms: int) -> list[OHLCV]:
        """Closed candles of an ``ohlcv.*`` feed with open time in the window."""
        parsed = _feed(feed, "ohlcv")
        found = [m for m in await self._messages(parsed, start_ms, end_ms) if isinstance(m, OHLCV)]
        return latest_by_time(found)

    async def trades(self, feed: str, start_ms: int, end_ms: int) -> list[Trades]:
        """Trade batches of a ``trades`` feed in the window, in stream order."""
        parsed = _feed(feed, "trades")
        return [m for m in await self._messages(parsed, start_ms, end_ms) if isinstance(m, Trades)]

    async def _messages(self, feed: Feed, start_ms: int, end_ms: int) -> list[MarketMessage]:
        found: dict[tuple[int, int], MarketMessage] = {}
        archived = await asyncio.to_thread(
            _archived, self.root, feed, start_ms, end_ms, self.on_bad_file
        )
        for m in archived:
            found[m.position] = m
        for m in await self._streamed(feed, start_ms, end_ms):
            found[m.position] = m
        return [found[key] for key in sorted(found)]

    def _resume_after(self, feed: Feed) -> str:
        path = self.root / MANIFEST
        if not path.exists():
            return "-"
        try:
            position = decode_manifest(path.read_bytes()).positions.get(feed.name)
        except ValueError:
            return "-"
        return f"({position.entry_id}" if position is not None else "-"

    async def _streamed(self, feed: Feed, start_ms: int, end_ms: int) -> list[MarketMessage]:
        found: list[MarketMessage] = []
        start = self._resume_after(feed)
        while True:
            page = list(await self.redis.xrange(feed.name, min=start, max="+", count=PAGE) or [])
            for _, fields in page:
                payload = fields.get(STREAM_FIELD_BYTES) if fields else None
                if not isinstance(payload, bytes):
                    continue
                try:
                    message = decode(payload)
                except ContractError:
                    continue
                if (
                    isinstance(message, OHLCV | Trades)
                    and message.ts_ms is not None
                    and start_ms <= message.ts_ms < end_ms
                ):
                    found.append(message)
            if len(page) < PAGE:
                return found
            last = page[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def archived_candles(
    archive: str | Path,
    feed: str,
    start_ms: int,
    end_ms: int,
    *,
    on_bad_file: BadFilePolicy = "raise",
) -> list[OHLCV]:
    """Closed candles of an ``ohlcv.*`` feed with open time in the window, from the
    archive alone (no Redis), by the read rule. Reads files: blocking."""
    found = _archived(Path(archive), _feed(feed, "ohlcv"), start_ms, end_ms, on_bad_file)
    return latest_by_time([m for m in found if isinstance(m, OHLCV)])


def _feed(feed: str, family: str) -> Feed:
    parsed = Feed.parse(feed)
    if not (parsed.kind == family or parsed.kind.startswith(family + ".")):
        raise ValueError(f"{feed} is not a {family} feed")
    return parsed


def _archived(
    root: Path, feed: Feed, start_ms: int, end_ms: int, on_bad_file: BadFilePolicy
) -> list[MarketMessage]:
    """*feed*'s archived messages with ``ts_ms`` in the window (blocking file reads)."""
    if not root.is_dir() or end_ms <= start_ms:
        return []
    files = archive_files(root, on_bad_file=on_bad_file)
    key = FeedKey(feed.exchange, feed.kind, feed.symbol)
    table = read_feed(
        files,
        key,
        first_day=start_ms // DAY_MS,
        last_day=(end_ms - 1) // DAY_MS,
        on_bad_file=on_bad_file,
    )
    return [
        m
        for m in messages_of(feed.kind, feed.exchange, feed.symbol, table)
        if m.ts_ms is not None and start_ms <= m.ts_ms < end_ms
    ]


async def history(
    redis: Client, archive: str | Path, feed: str, start_ms: int, end_ms: int
) -> list[OHLCV] | list[Trades]:
    """Candles (``ohlcv.*`` feeds) or trade batches (``trades``) of *feed* in the
    window, from *archive* then from *redis*; see `HistoryReader`."""
    reader = HistoryReader(redis, archive)
    if Feed.parse(feed).timeframe is not None:
        return await reader.candles(feed, start_ms, end_ms)
    return await reader.trades(feed, start_ms, end_ms)
