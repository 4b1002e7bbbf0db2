"""`replay`: publish an archive onto a namespace exactly as a producer would.

Each recorded message is PUBLISHed on ``{namespace}:{exchange}:{kind}:{symbol}`` and
XADDed to the stream of the same name as ``{run}-{seq} d {payload}`` (``MAXLEN ~`` the
default cap of its kind), with its original run, seq and fields; the catalog
``{namespace}:feeds`` lists every replayed feed. A strategy built on the SDK runs
unchanged against it. Order: `marketbus.archive.ordering` (exchange time across feeds,
stream order within each), so two replays give identical streams. Pacing: `Pace`.

Memory: the selected rows are held as Arrow tables (compact columns) and turned into
messages a chunk at a time as the merge reaches them.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from marketbus.archive.dataset import BadFilePolicy, archive_files, feeds, read_feed
from marketbus.archive.errors import ArchiveError
from marketbus.archive.manifest import decode_manifest
from marketbus.archive.options import ReplayOptions
from marketbus.archive.ordering import Pace, event_ms, merge
from marketbus.archive.partitions import DAY_MS, GAP_KIND
from marketbus.archive.rows import iter_messages
from marketbus.archive.store import MANIFEST
from marketbus.shared.codecs import encode_feed_info, encoder_for
from marketbus.shared.config import RedisConfig, StreamCaps
from marketbus.shared.names import DEFAULT_NS, catalog_key, split_name, timeframe_of
from marketbus.shared.resp import FeedCommands
from marketbus.shared.schema import FeedInfo, MarketMessage
from marketbus.shared.transport import PipelineWriter

log = logging.getLogger(__name__)


class ReplayStats(msgspec.Struct, kw_only=True):
    """What one replay published, and how long it took."""

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


class Selection(msgspec.Struct):
    """What a replay publishes: per target feed name, its messages in stream order
    (consumed lazily) and the first of them (for the catalog)."""

    messages: dict[str, Iterator[MarketMessage]]
    first: dict[str, MarketMessage]


def load(options: ReplayOptions) -> Selection:
    """The messages *options* select; feeds with nothing in the window are left out."""
    root = Path(options.source)
    if not root.is_dir():
        raise ArchiveError(f"archive directory {root} does not exist")
    policy: BadFilePolicy = "skip" if options.skip_bad_files else "raise"
    files = archive_files(root, on_bad_file=policy)
    source_ns = source_namespace(root)
    if options.namespace == source_ns:
        raise ArchiveError(
            f"{root} was recorded from namespace {source_ns!r}: replay it into another one "
            "(--namespace bt), never over the live data"
        )
    first_day = (options.start_ms // DAY_MS) - 1 if options.start_ms is not None else None
    last_day = options.end_ms // DAY_MS if options.end_ms is not None else None
    start = options.start_ms if options.start_ms is not None else -(2**63)
    end = options.end_ms if options.end_ms is not None else 2**63
    selection = Selection({}, {})
    for key in feeds(files):
        if key.kind == GAP_KIND or not fnmatch.fnmatchcase(key.name(source_ns), options.feeds):
            continue
        table = read_feed(files, key, first_day=first_day, last_day=last_day, on_bad_file=policy)
        messages = (
            m
            for m in iter_messages(key.kind, key.exchange, key.symbol, table)
            if start <= event_ms(m) < end
        )
        first = next(messages, None)
        if first is not None:
            name = key.name(options.namespace)
            selection.messages[name] = itertools.chain([first], messages)
            selection.first[name] = first
    return selection


async def replay(
    redis: RedisConfig, options: ReplayOptions, *, replace: bool = False
) -> ReplayStats:
    """Publish the archive *options* select onto ``options.namespace`` of *redis*."""
    selection = load(options)
    stats = ReplayStats(feeds=len(selection.first))
    writer = await PipelineWriter.open(redis)
    began = time.perf_counter()
    try:
        await _prepare(writer, options.namespace, sorted(selection.first), replace)
        await _catalog(writer, options.namespace, selection.first)
        last = await _publish(writer, options, encoder_for(redis.encoding), selection, stats)
        await _catalog(writer, options.namespace, last)
    finally:
        await writer.aclose()
    stats.seconds = time.perf_counter() - began
    return stats


async def _publish(
    writer: PipelineWriter,
    options: ReplayOptions,
    encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder,
    selection: Selection,
    stats: ReplayStats,
) -> dict[str, MarketMessage]:
    """PUBLISH + XADD every message in replay order; returns each feed's last one."""
    caps = StreamCaps()
    commands = {
        name: FeedCommands(name, caps.for_kind(split_name(name)[2])) for name in selection.first
    }
    encode = encoder.encode
    pace = Pace(options.speed)
    last: dict[str, MarketMessage] = {}
    out: list[bytes] = []
    pending = 0
    for name, message in merge(selection.messages):
        wait = pace.wait_s(event_ms(message), time.monotonic())
        if wait > 0:
            if pending:
                writer.send_parts(out, 2 * pending)
                out, pending = [], 0
            await writer.flush()
            await asyncio.sleep(wait)
        feed = commands[name]
        feed.append_publish_xadd(out, feed.entry_id(message.run, message.seq), encode(message))
        last[name] = message
        pending += 1
        stats.messages += 1
        if pending >= options.batch:
            writer.send_parts(out, 2 * pending)
            out, pending = [], 0
            await writer.drain()
    if pending:
        writer.send_parts(out, 2 * pending)
    await writer.flush()
    return last


async def _prepare(writer: PipelineWriter, ns: str, names: list[str], replace: bool) -> None:
    """Refuse (or with *replace*, delete) target streams that already exist."""
    existing = [name for name in names if await writer.execute("EXISTS", name)]
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


async def _catalog(writer: PipelineWriter, ns: str, messages: dict[str, MarketMessage]) -> None:
    """Catalog entries as a producer keeps them: the run of *messages* (each feed's first
    at the start, its last at the end), updated at its event time."""
    caps = StreamCaps()
    for name, message in sorted(messages.items()):
        _, exchange, kind, symbol = split_name(name)
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
