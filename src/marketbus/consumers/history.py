"""`ArchiveReader`: the subscriber's reads of a ``marketbus record`` archive (optional).

An archive (``Subscriber(..., archive=DIR)``) serves two things:

- `ArchiveReader.history` (`Subscriber.history`): a feed's candles or trades over a
  time window, from the archive and then from the stream, each once, as the rows the
  buffers hold (`Candle`, `Trade`);
- the older part of a candle buffer: when a first backfill finds fewer closed candles
  in the stream than the buffer holds, the engine asks for the rest (`OlderCandles`)
  and `ArchiveReader.worker` reads them from the archive and hands them back
  (`Engine.on_older_candles`); the feed is ready once they are applied.

The archive package needs pyarrow (the ``record`` extra). It is imported here, and only
when an archive is read, so ``marketbus.consumers`` imports without it; a subscriber
given an archive without pyarrow is refused with a `ConfigError` that says what to
install.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import msgspec

from marketbus.consumers.buffers import Candle, candle_row
from marketbus.consumers.engine import Engine, OlderCandles
from marketbus.consumers.read_loop import Redis
from marketbus.consumers.supervisor import raise_if_cancelled
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import Feed
from marketbus.shared.schema import Trade, Trades

log = logging.getLogger("marketbus.consumers")

RECORD_EXTRA: Final = "pip install 'marketbus[record]'"


def check_archive(archive: str | None) -> str:
    """*archive* when it can be read; ConfigError naming the option otherwise (not set,
    or pyarrow missing)."""
    if archive is None:
        raise ConfigError(
            "history needs an archive: pass Subscriber(..., archive=DIR), the directory "
            "`marketbus record` writes"
        )
    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(f"archive={archive!r} needs pyarrow: {RECORD_EXTRA}")
    return archive


def trade_rows(batches: Iterable[Trades]) -> list[Trade]:
    """The trades of *batches* as a `TradeBuffer` holds them (a trade without its own
    time takes its batch's ``ts_ms``, else the receive time), in time order (stable:
    trades of one time keep their stream order)."""
    rows = []
    for batch in batches:
        default_ts = batch.ts_ms if batch.ts_ms is not None else batch.recv_ns // 1_000_000
        for trade in batch.trades:
            if trade.ts_ms is None:
                trade = msgspec.structs.replace(trade, ts_ms=default_ts)
            rows.append(trade)
    rows.sort(key=lambda t: t.ts_ms or 0)
    return rows


def older_window(request: OlderCandles, now_ms: int) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of open times to read for *request*: the *count* periods
    before its oldest candle, or before the period after *now_ms* when it has none."""
    step = request.timeframe_ms
    end = request.before_ms if request.before_ms is not None else (now_ms // step + 1) * step
    return end - request.count * step, end


class ArchiveReader:
    """Reads one archive directory for a subscriber (see the module doc).

    *on_progress* is called after each read that may make a feed ready: an
    older-candles read, and each stream read (`on_stream_read`, which first takes the
    archive reads the engine asked for). The subscriber's `ready` waits on it. With
    *archive* None there is nothing to read, and `history` raises.
    """

    def __init__(
        self,
        engine: Engine,
        archive: str | None,
        *,
        on_progress: Callable[[], None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._archive = None if archive is None else check_archive(archive)
        self._on_progress = on_progress
        self._wall_clock = wall_clock
        self._pending: dict[str, OlderCandles] = {}
        """Requests waiting, one per feed (the newest wins): bounded by the feeds."""
        self._wakeup = asyncio.Event()

    @property
    def enabled(self) -> bool:
        """True when there is an archive to read."""
        return self._archive is not None

    def on_stream_read(self) -> None:
        """A stream read was applied: queue the archive reads the engine asked for
        (after a first backfill), then report progress."""
        for request in self._engine.take_older():
            self._pending[request.feed] = request
        if self._pending:
            self._wakeup.set()
        self._on_progress()

    async def worker(self) -> None:
        """Performs the queued older-candles reads, one at a time, until cancelled."""
        while True:
            raise_if_cancelled()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            feed = next(iter(self._pending))
            request = self._pending.pop(feed)
            try:
                await self._fill(request)
            finally:
                self._on_progress()

    async def _fill(self, request: OlderCandles) -> None:
        from marketbus.archive.errors import ArchiveError
        from marketbus.archive.history import archived_candles

        assert self._archive is not None
        start_ms, end_ms = older_window(request, int(self._wall_clock() * 1000))
        try:
            candles = await asyncio.to_thread(
                archived_candles, self._archive, request.feed, start_ms, end_ms, on_bad_file="skip"
            )
        except (ArchiveError, OSError) as exc:
            self._engine.on_older_failed(request.feed, f"{type(exc).__name__}: {exc}")
            return
        self._engine.on_older_candles(request.feed, candles)

    async def history(
        self, redis: Redis, feed: str, start_ms: int, end_ms: int
    ) -> list[Candle] | list[Trade]:
        """Closed candles (the last value per open time) or trades of *feed* with time in
        ``[start_ms, end_ms)``, from the archive then the stream, each once, in time
        order. ConfigError without an archive or pyarrow; ValueError for a feed that
        is neither candles nor trades."""
        archive = check_archive(self._archive)
        from marketbus.archive.history import HistoryReader

        parsed = Feed.parse(feed)
        reader = HistoryReader(redis, Path(archive))
        if parsed.timeframe is not None:
            candles = await reader.candles(feed, start_ms, end_ms)
            return [candle_row(c, closed=True) for c in candles]
        if parsed.kind == "trades":
            return trade_rows(await reader.trades(feed, start_ms, end_ms))
        raise ValueError(f"history: {feed} is neither a candle nor a trades feed")
