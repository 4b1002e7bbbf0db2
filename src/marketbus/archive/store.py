"""The recorder's side of the archive directory: lock, recover, stage files, commit.

Commit protocol (see `marketbus.archive.manifest`): each file is written to a
temporary name that no reader globs (``.part-*.parquet.tmp``) and fsynced; the
manifest naming those files and the positions they reach is written to a temporary
name, fsynced and renamed over the old one (the commit point); then the files are
renamed into place and their directories fsynced. One recorder per directory: an
exclusive ``flock`` on ``_marketbus.lock`` says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from marketbus.archive.continuity import Position
from marketbus.archive.errors import ArchiveError
from marketbus.archive.manifest import Manifest, Rename, decode_manifest, encode_manifest
from marketbus.archive.partitions import Partition
from marketbus.archive.rows import family

log = logging.getLogger(__name__)

MANIFEST: Final = "_marketbus_manifest.json"
LOCK: Final = "_marketbus.lock"
TEMP_PREFIX: Final = ".part-"
TEMP_SUFFIX: Final = ".parquet.tmp"
META_PREFIX: Final = "marketbus."
META_VERSION: Final = b"marketbus.archive"

_DELTA: Final = "DELTA_BINARY_PACKED"
_SPLIT: Final = "BYTE_STREAM_SPLIT"
_ENCODINGS: Final[dict[str, dict[str, str]]] = {
    "ohlcv": {"recv_ns": _DELTA, "entry_id": "DELTA_BYTE_ARRAY"},
    "ticker": {"recv_ns": _DELTA, "entry_id": "DELTA_BYTE_ARRAY"},
    "trades": {
        "recv_ns": _DELTA,
        "trade_ts_ms": _DELTA,
        "price": _SPLIT,
        "amount": _SPLIT,
        "entry_id": "DELTA_BYTE_ARRAY",
        "trade_id": "DELTA_BYTE_ARRAY",
    },
    "book": {"recv_ns": _DELTA, "entry_id": "DELTA_BYTE_ARRAY"},
    "gap": {},
}


def write_parquet(path: Path, kind: str, table: pa.Table, metadata: dict[str, str]) -> None:
    """Write *table* to *path* with the kind's encodings (zstd, delta ints, split floats)."""
    encodings = _ENCODINGS[family(kind)]
    dictionary = [name for name in table.schema.names if name not in encodings]
    meta = {META_VERSION: b"1"} | {
        (META_PREFIX + k).encode(): v.encode() for k, v in metadata.items()
    }
    pq.write_table(
        table.replace_schema_metadata(meta),
        path,
        compression="zstd",
        use_dictionary=dictionary,
        column_encoding=encodings or None,
        write_statistics=True,
    )


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace *path* with *data* so that a reader sees the old or the new content only."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(temp, path)
    if fsync:
        _fsync(path.parent, directory=True)


class ArchiveWriter:
    """One recorder's hold on an archive directory (`open` ... `close`)."""

    def __init__(self, root: Path, namespace: str, *, fsync: bool = True) -> None:
        self.root = root
        self.namespace = namespace
        self.fsync = fsync
        self._lock_fd: int | None = None
        self._manifest = Manifest(namespace=namespace)
        self._staged = 0

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def open(self) -> Manifest:
        """Lock the directory, finish an interrupted commit, drop uncommitted files."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArchiveError(
                f"another recorder is writing {self.root} (it holds {self.root / LOCK}); "
                "give each recorder its own --out directory"
            ) from None
        self._lock_fd = fd
        path = self.root / MANIFEST
        if path.exists():
            try:
                manifest = decode_manifest(path.read_bytes())
            except ValueError as exc:
                self.close()
                raise ArchiveError(
                    f"{path}: {exc}. It holds the resume positions: restore it, or move it "
                    "away to record again from the start of each stream"
                ) from None
            if manifest.namespace != self.namespace:
                self.close()
                raise ArchiveError(
                    f"{self.root} records namespace {manifest.namespace!r}, not "
                    f"{self.namespace!r}: use another --out directory"
                )
            self._manifest = manifest
        self._roll_forward()
        return self._manifest

    def _roll_forward(self) -> None:
        pending = {self.root / r.temp for r in self._manifest.pending}
        for rename in self._manifest.pending:
            temp, final = self.root / rename.temp, self.root / rename.final
            if temp.exists():
                os.replace(temp, final)
                log.info("archive: completed the interrupted commit of %s", final)
            elif not final.exists():
                log.error("archive: committed file %s is gone (deleted by hand?)", final)
        for temp in self.root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            if temp not in pending:
                temp.unlink()
                log.info("archive: removed uncommitted %s (its rows are re-read)", temp)

    def stage(self, partition: Partition, table: pa.Table, metadata: dict[str, str]) -> Rename:
        """Write *table* under a temporary name in *partition*'s directory."""
        directory = self.root / partition.path
        directory.mkdir(parents=True, exist_ok=True)
        self._staged += 1
        name = f"part-{self._manifest.generation + 1:08d}-{self._staged:05d}.parquet"
        temp = directory / f"{TEMP_PREFIX}{name[5:]}{TEMP_SUFFIX}"
        try:
            write_parquet(temp, partition.kind, table, metadata)
            if self.fsync:
                _fsync(temp)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Rename(temp=str(temp.relative_to(self.root)), final=f"{partition.path}/{name}")

    def commit(self, positions: dict[str, Position], staged: list[Rename]) -> None:
        """Make *staged* visible and *positions* durable, atomically (see module doc)."""
        manifest = self._manifest.committed(positions, staged)
        write_atomically(self.root / MANIFEST, encode_manifest(manifest), fsync=self.fsync)
        self._manifest = manifest
        self._staged = 0
        directories = set()
        for rename in staged:
            final = self.root / rename.final
            os.replace(self.root / rename.temp, final)
            directories.add(final.parent)
        if self.fsync:
            for directory in directories:
                _fsync(directory, directory=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
