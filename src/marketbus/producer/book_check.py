"""Book integrity checks ccxt 4.5.90 does not do: okx's `books` checksum and a
sequence gap in kucoin's level2 deltas.

Pure: the ccxt hooks in `marketbus.producer.watch` hand the raw pushes in and act on
the answer (make ccxt resync, announce it). okx documents its checksum as the CRC32
of the top 25 levels interleaved ``bid price:bid size:ask price:ask size:...``, built
from the exchange's own strings, as a signed 32-bit integer. ccxt keeps the book as
floats, and a float does not say how okx wrote it (``"0.10"`` or ``"0.1"``), so
`OkxBook` keeps the pushed strings themselves, keyed by numeric price so the top 25
sort as okx sorts them. It is rebuilt from every snapshot, so it holds at most what
okx's book holds (400 levels a side).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CHECKSUM_LEVELS = 25
"""How many levels of each side okx's checksum covers."""

StringLevel = tuple[str, str]
"""A level as okx wrote it: ``(price, size)``."""


def okx_checksum(bids: Sequence[StringLevel], asks: Sequence[StringLevel]) -> int:
    """okx's book checksum of the best-first *bids* and *asks* (their top 25 each)."""
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class OkxBook:
    """One symbol's okx book as okx's strings, from its `books` pushes."""

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids: dict[float, StringLevel] = {}
        self._asks: dict[float, StringLevel] = {}

    def apply(self, snapshot: bool, bids: Iterable[Any], asks: Iterable[Any]) -> None:
        """Apply one push's levels (``[price, size, ...]`` strings); a *snapshot*
        replaces the book, a size of zero removes its level."""
        if snapshot:
            self._bids.clear()
            self._asks.clear()
        _store(self._bids, bids)
        _store(self._asks, asks)

    def top(self) -> tuple[list[StringLevel], list[StringLevel]]:
        """The best 25 bids and asks, best first."""
        bids = heapq.nlargest(CHECKSUM_LEVELS, self._bids.items())
        asks = heapq.nsmallest(CHECKSUM_LEVELS, self._asks.items())
        return [level for _, level in bids], [level for _, level in asks]

    def checksum(self) -> int:
        """okx's checksum of this book."""
        bids, asks = self.top()
        return okx_checksum(bids, asks)


def _store(side: dict[float, StringLevel], levels: Iterable[Any]) -> None:
    for level in levels:
        price, size = str(level[0]), str(level[1])
        key = float(price)
        if float(size) == 0:
            side.pop(key, None)
        else:
            side[key] = (price, size)


class OkxChecksums:
    """okx `books` checksums of the symbols being watched, one `OkxBook` each.

    A symbol's book starts at its snapshot; an update for a symbol with no snapshot
    (after `forget`, until the resubscription's snapshot) is not checked."""

    def __init__(self) -> None:
        self._books: dict[str, OkxBook] = {}

    def on_push(self, symbol: str, snapshot: bool, push: Mapping[str, Any]) -> str | None:
        """Apply one entry of a `books` push for *symbol*; why the book is wrong (the
        checksum okx sent disagrees with the book its pushes make), or None."""
        book = self._books.get(symbol)
        if book is None:
            if not snapshot:
                return None
            book = self._books[symbol] = OkxBook()
        book.apply(snapshot, push.get("bids") or (), push.get("asks") or ())
        sent = push.get("checksum")
        if sent is None:
            return None
        ours = book.checksum()
        if ours == int(sent):
            return None
        seq = push.get("seqId")
        return f"okx books checksum {sent} != {ours} of the book its pushes make (seqId {seq})"

    def forget(self, symbol: str) -> None:
        """Drop *symbol*'s book (it is being resynced; the next snapshot starts anew)."""
        self._books.pop(symbol, None)


def sequence_gap(nonce: int | None, first: int | None) -> bool:
    """Whether a delta whose first sequence number is *first* leaves a hole after a book
    at *nonce* (the last sequence applied): it must be at most ``nonce + 1``. An older
    delta (ccxt skips it) or an unknown number is no gap."""
    return nonce is not None and first is not None and first > nonce + 1
