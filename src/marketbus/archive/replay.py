"""`replay`: publish an archive onto a namespace exactly as a producer would.

Each recorded message is PUBLISHed on ``{namespace}:{exchange}:{kind}:{symbol}`` and
XADDed to the stream of the same name as ``{run}-{seq} d {payload}`` (``MAXLEN ~`` the
default cap of its kind), with its original run, seq and fields; the catalog
``{namespace}:feeds`` lists every replayed feed. A strategy built on the SDK runs
unchanged against it. Order: `marketbus.archive.ordering` (exchange time across feeds,
stream order within each), so two replays give identical streams. Pacing: with
``speed`` the exchange-time gaps are slept, divided by ``speed``.

Memory: the selected window's rows, as Arrow tables (compact columns), are held while
they are merged; narrow ``--start/--end/--feeds`` for very large archives.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from pathlib import Path

import msgspec

from marketbus.archive.dataset import BadFilePolicy, archive_files, feeds, read_feed
from marketbus.archive.errors import ArchiveError
from marketbus.archive.manifest import decode_manifest
from marketbus.archive.options import ReplayOptions
from marketbus.archive.ordering import event_ms, merge
from marketbus.archive.partitions import DAY_MS, GAP_KIND
from marketbus.archive.rows import messages_of
from marketbus.archive.store import MANIFEST
from marketbus.shared.codecs import encode_feed_info, encoder_for
from marketbus.shared.config import RedisConfig, StreamCaps
from marketbus.shared.names import (
    DEFAULT_NS,
    catalog_key,
    kind_and_symbol,
    split_name,
    timeframe_of,
)
from marketbus.shared.resp import FeedCommands
from marketbus.shared.schema import FeedInfo, MarketMessage
from marketbus.shared.transport import PipelineWriter

log = logging.getLogger(__name__)


class ReplayStats(msgspec.Struct, kw_only=True):
    messages: int = 0
    feeds: int = 0
    seconds: float = 0.0


def source_namespace(root: Path) -> str:
    """The namespace the archive was recorded from (its manifest), else ``md``."""
    path = root / MANIFEST
    if not path.exists():
        return DEFAULT_NS
    try:
        return decode_manifest(path.read_bytes()).namespace
    except ValueError as exc:
        raise ArchiveError(f"{path}: {exc}") from None


def _window(options: ReplayOptions, message: MarketMessage) -> bool:
    t = event_ms(message)
    return (options.start_ms is None or t >= options.start_ms) and (
        options.end_ms is None or t < options.end_ms
    )


def load(options: ReplayOptions) -> dict[str, list[MarketMessage]]:
    """The selected messages per target feed name, each feed in stream order."""
    root = Path(options.source)
    if not root.is_dir():
        raise ArchiveError(f"archive directory {root} does not exist")
    policy: BadFilePolicy = "skip" if options.skip_bad_files else "raise"
    files = archive_files(root, on_bad_file=policy)
    source_ns = source_namespace(root)
    first_day = (options.start_ms // DAY_MS) - 1 if options.start_ms is not None else None
    last_day = options.end_ms // DAY_MS if options.end_ms is not None else None
    selected: dict[str, list[MarketMessage]] = {}
    for key in feeds(files):
        if key.kind == GAP_KIND or not fnmatch.fnmatchcase(key.name(source_ns), options.feeds):
            continue
        table = read_feed(files, key, first_day=first_day, last_day=last_day, on_bad_file=policy)
        messages = [
            m for m in messages_of(key.kind, key.exchange, key.symbol, table) if _window(options, m)
        ]
        if messages:
            selected[key.name(options.namespace)] = messages
    return selected


async def replay(
    redis: RedisConfig, options: ReplayOptions, *, replace: bool = False
) -> ReplayStats:
    """Publish the archive *options* select onto ``options.namespace`` of *redis*."""
    selected = load(options)
    caps = StreamCaps()
    writer = await PipelineWriter.open(redis)
    stats = ReplayStats(feeds=len(selected))
    began = time.perf_counter()
    try:
        await _prepare(writer, options.namespace, selected, replace)
        await _catalog(writer, options.namespace, selected, caps, last=False)
        commands = {
            name: FeedCommands(name, caps.for_kind(kind_and_symbol(name)[0])) for name in selected
        }
        encode = encoder_for(redis.encoding).encode
        out: list[bytes] = []
        pending = 0
        clock: tuple[float, int] | None = None
        for name, message in merge(dict(selected.items())):
            if options.speed is not None:
                t = event_ms(message)
                if clock is None:
                    clock = (time.monotonic(), t)
                due = clock[0] + (t - clock[1]) / 1000 / options.speed
                wait = due - time.monotonic()
                if wait > 0:
                    if out:
                        writer.send_parts(out, 2 * pending)
                        out, pending = [], 0
                        await writer.flush()
                    await asyncio.sleep(wait)
            feed = commands[name]
            feed.append_publish_xadd(out, feed.entry_id(message.run, message.seq), encode(message))
            pending += 1
            stats.messages += 1
            if pending >= options.batch:
                writer.send_parts(out, 2 * pending)
                out, pending = [], 0
                await writer.drain()
        if out:
            writer.send_parts(out, 2 * pending)
        await writer.flush()
        await _catalog(writer, options.namespace, selected, caps, last=True)
    finally:
        await writer.aclose()
    stats.seconds = time.perf_counter() - began
    return stats


async def _prepare(
    writer: PipelineWriter, ns: str, selected: dict[str, list[MarketMessage]], replace: bool
) -> None:
    existing = [name for name in sorted(selected) if await writer.execute("EXISTS", name)]
    if not existing:
        return
    if not replace:
        raise ArchiveError(
            f"namespace {ns!r} already has {len(existing)} of these streams ({existing[0]}, "
            "...): replay into an empty namespace, or pass --replace to delete them first"
        )
    for name in existing:
        await writer.execute("DEL", name)
        await writer.execute("HDEL", catalog_key(ns), name)


async def _catalog(
    writer: PipelineWriter,
    ns: str,
    selected: dict[str, list[MarketMessage]],
    caps: StreamCaps,
    *,
    last: bool,
) -> None:
    """Catalog entries: at the start the first message's run, at the end the last's."""
    for name, messages in sorted(selected.items()):
        _, exchange, kind, symbol = split_name(name)
        message = messages[-1] if last else messages[0]
        info = FeedInfo(
            exchange=exchange,
            symbol=symbol,
            kind=kind,
            timeframe=timeframe_of(kind),
            run=message.run,
            stream_maxlen=caps.for_kind(kind),
            updated_ms=event_ms(message),
        )
        await writer.execute("HSET", catalog_key(ns), name, encode_feed_info(info))
