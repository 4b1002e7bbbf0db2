"""Reading the archive: find a feed's files, read them with clear errors, in order.

Only files named ``*.parquet`` inside ``exchange=/kind=/symbol=/date=`` directories
are archive files; other files (notes, temporaries) are ignored. A ``.parquet`` file
that is corrupt, foreign (no marketbus metadata, other columns) or misplaced raises
`ArchiveFileError` naming it, or with ``on_bad_file="skip"`` is logged and left out;
either way no other file is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, TypeAlias

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from marketbus.archive.errors import ArchiveFileError
from marketbus.archive.partitions import Partition, PartitionError
from marketbus.archive.rows import family, schema_for
from marketbus.archive.store import META_VERSION

log = logging.getLogger(__name__)

BadFilePolicy: TypeAlias = Literal["raise", "skip"]


class ArchiveFile(msgspec.Struct, frozen=True):
    path: Path
    partition: Partition


class FeedKey(msgspec.Struct, frozen=True, order=True):
    """One archived feed (or its gap rows): exchange x kind x symbol."""

    exchange: str
    kind: str
    symbol: str

    def name(self, ns: str) -> str:
        return f"{ns}:{self.exchange}:{self.kind}:{self.symbol}"


def archive_files(root: Path, *, on_bad_file: BadFilePolicy = "raise") -> list[ArchiveFile]:
    """Every archive file under *root*, sorted by partition then name."""
    found = []
    for path in sorted(root.rglob("*.parquet")):
        if path.name.startswith((".", "_")):
            continue
        relative = path.parent.relative_to(root).as_posix()
        try:
            partition = Partition.parse(relative)
        except PartitionError as exc:
            _bad(ArchiveFileError(str(path), f"not in an archive partition ({exc})"), on_bad_file)
            continue
        found.append(ArchiveFile(path, partition))
    return found


def _bad(error: ArchiveFileError, policy: BadFilePolicy) -> None:
    if policy == "raise":
        raise error
    log.error("archive: skipping %s", error)


def feeds(files: list[ArchiveFile]) -> list[FeedKey]:
    """The feeds (exchange, kind, symbol) that *files* hold, sorted."""
    keys = {FeedKey(f.partition.exchange, f.partition.kind, f.partition.symbol) for f in files}
    return sorted(keys)


def read_file(file: ArchiveFile, *, on_bad_file: BadFilePolicy = "raise") -> pa.Table | None:
    """The rows of *file* in its kind's schema; None if it is bad and skipped."""
    schema = schema_for(file.partition.kind)
    try:
        table = pq.read_table(file.path)
    except (pa.ArrowException, OSError) as exc:
        _bad(ArchiveFileError(str(file.path), f"unreadable Parquet ({exc})"), on_bad_file)
        return None
    if not table.schema.metadata or META_VERSION not in table.schema.metadata:
        _bad(ArchiveFileError(str(file.path), "no marketbus archive metadata"), on_bad_file)
        return None
    try:
        return table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowException) as exc:
        reason = f"columns do not match the {file.partition.kind} schema ({exc})"
        _bad(ArchiveFileError(str(file.path), reason), on_bad_file)
        return None


def read_feed(
    files: list[ArchiveFile],
    key: FeedKey,
    *,
    first_day: int | None = None,
    last_day: int | None = None,
    on_bad_file: BadFilePolicy = "raise",
) -> pa.Table:
    """*key*'s rows within the day range, sorted by ``(run, seq[, batch_index])``, each
    stream entry once (an entry found twice keeps one copy)."""
    tables = [
        table
        for file in files
        if (file.partition.exchange, file.partition.kind, file.partition.symbol)
        == (key.exchange, key.kind, key.symbol)
        and (first_day is None or file.partition.day >= first_day)
        and (last_day is None or file.partition.day <= last_day)
        and (table := read_file(file, on_bad_file=on_bad_file)) is not None
    ]
    schema = schema_for(key.kind)
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    if family(key.kind) == "gap":
        return table
    order = [("run", "ascending"), ("seq", "ascending")]
    if family(key.kind) == "trades":
        order.append(("batch_index", "ascending"))
    table = table.sort_by(order)
    return _unique_rows(table, family(key.kind) == "trades")


def _unique_rows(table: pa.Table, trades: bool) -> pa.Table:
    """Drop rows repeating the previous row's entry (and trade index): sorted input."""
    if table.num_rows < 2:
        return table
    columns = ["run", "seq", *(["batch_index"] if trades else [])]
    same = None
    for name in columns:
        column = table.column(name)
        equal = pc.equal(column.slice(1), column.slice(0, table.num_rows - 1))
        same = equal if same is None else pc.and_(same, equal)
    assert same is not None
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same).combine_chunks()])
    return table.filter(keep)
