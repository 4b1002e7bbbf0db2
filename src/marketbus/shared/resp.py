"""RESP2 command encoding without I/O: turn Redis commands into the bytes sent on a socket.

The fast transport (`marketbus.shared.transport`) writes these bytes and hiredis parses
the replies; this module owns only the request side. It is pure, so it is tested with
no server.

A command is an array of bulk strings::

    *3\\r\\n$7\\r\\nPUBLISH\\r\\n$4\\r\\nchan\\r\\n$5\\r\\nhello\\r\\n

Everything about a feed's XADD and PUBLISH except the entry ID and the payload is the
same for every message, so `FeedCommands` encodes those heads once; packing one message
is then a handful of list appends (about 0.5 us) instead of a generic encoder walking
each argument. Callers collect parts in a list and ``b"".join`` it once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypeAlias

Arg: TypeAlias = bytes | bytearray | memoryview | str | int | float
"""What a command argument may be: bytes as is, str as UTF-8, numbers as their repr."""

CRLF: Final = b"\r\n"
_CACHED_LENGTHS: Final = 4096
_BULK_HEADERS: Final = tuple(b"$%d\r\n" % n for n in range(_CACHED_LENGTHS))
_DATA_FIELD: Final = b"\r\n$1\r\nd\r\n"
"""Ends the entry-ID bulk and holds the field name ``d`` of a SPEC stream entry."""

XADD_ID_ERROR_PREFIX: Final = "ERR The ID specified in XADD is equal or smaller"
"""Start of Redis's reply when an XADD entry ID is not above the stream's top item."""


def bulk_header(length: int) -> bytes:
    """``$<length>\\r\\n``: the header of a bulk string of *length* bytes."""
    if 0 <= length < _CACHED_LENGTHS:
        return _BULK_HEADERS[length]
    if length < 0:
        raise ValueError(f"a bulk string cannot have length {length}")
    return b"$%d\r\n" % length


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytearray | memoryview):
        return bytes(arg)
    if isinstance(arg, bool):
        raise TypeError("a bool is not a Redis argument; pass 0/1 or b'true'/b'false'")
    if isinstance(arg, int | float):
        return repr(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r:.40}")


def pack_command(*args: Arg) -> bytes:
    """One command as RESP2 bytes, e.g. ``pack_command("SELECT", 3)``."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        parts.append(bulk_header(len(data)))
        parts.append(data)
        parts.append(CRLF)
    return b"".join(parts)


def pack_commands(commands: Iterable[tuple[Arg, ...]]) -> bytes:
    """Several commands back to back: a pipeline in one write."""
    return b"".join(pack_command(*command) for command in commands)


def entry_id(run: int, seq: int) -> bytes:
    """The stream entry ID ``{run}-{seq}`` of SPEC "Streams"."""
    return b"%d-%d" % (run, seq)


def is_xadd_id_error(message: str) -> bool:
    """True if an error reply says an XADD entry ID is not above the stream's top.

    Under SPEC "Streams" that means another producer already wrote this ``{run}-{seq}``
    (or a later one): the writer is fenced, it must not carry on publishing.
    """
    return message.startswith(XADD_ID_ERROR_PREFIX)


class FeedCommands:
    """Pre-encoded XADD and PUBLISH for one feed (SPEC "Streams": channel = stream key).

    ``append_*`` add the parts of one command to *out*, a list the caller joins once per
    batch. Each XADD and each PUBLISH is one reply on the connection.
    """

    __slots__ = ("_publish_head", "_run_prefix", "_xadd_head", "feed", "maxlen")

    def __init__(self, feed: str, maxlen: int) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, not {maxlen}")
        name = feed.encode()
        cap = b"%d" % maxlen
        self.feed: Final = feed
        self.maxlen: Final = maxlen
        self._xadd_head = (
            b"*8\r\n$4\r\nXADD\r\n"
            + bulk_header(len(name))
            + name
            + b"\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n"
            + bulk_header(len(cap))
            + cap
            + CRLF
        )
        self._publish_head = b"*3\r\n$7\r\nPUBLISH\r\n" + bulk_header(len(name)) + name + CRLF
        self._run_prefix: tuple[int, bytes] = (-1, b"")

    def entry_id(self, run: int, seq: int) -> bytes:
        """`entry_id` with the ``{run}-`` prefix cached (a run changes once per process)."""
        cached_run, prefix = self._run_prefix
        if cached_run != run:
            prefix = b"%d-" % run
            self._run_prefix = (run, prefix)
        return prefix + str(seq).encode()

    def append_xadd(self, out: list[bytes], entry_id: bytes, payload: bytes) -> None:
        """``XADD {feed} MAXLEN ~ {cap} {entry_id} d {payload}``."""
        out += (
            self._xadd_head,
            bulk_header(len(entry_id)),
            entry_id,
            _DATA_FIELD,
            bulk_header(len(payload)),
            payload,
            CRLF,
        )

    def append_publish(self, out: list[bytes], payload: bytes) -> None:
        """``PUBLISH {feed} {payload}``."""
        out += (self._publish_head, bulk_header(len(payload)), payload, CRLF)

    def append_publish_xadd(self, out: list[bytes], entry_id: bytes, payload: bytes) -> None:
        """PUBLISH then XADD of the same payload (two replies): a stored message."""
        header = bulk_header(len(payload))
        out += (
            self._publish_head,
            header,
            payload,
            CRLF,
            self._xadd_head,
            bulk_header(len(entry_id)),
            entry_id,
            _DATA_FIELD,
            header,
            payload,
            CRLF,
        )
