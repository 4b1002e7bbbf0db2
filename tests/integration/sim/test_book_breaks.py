"""Book sequence breaks (`Faults.break_book`) as ccxt.pro 4.5.90 handles them, per venue.

Each test pauses the market, lets ccxt's book reach the truth, breaks the next book
change, makes a few more, and records what ccxt does: rejects the watch (it noticed
and will resync on the next call) or keeps resolving a book that differs from the
truth (it did not notice). The findings are listed in `marketbus.sim.faults`.
"""

from __future__ import annotations

from typing import Any

import ccxt.pro
import pytest

from marketbus.sim.faults import BookBreak
from marketbus.sim.protocols.okx import checksum
from tests.integration.sim.conftest import VENUES, Rig, Venue, live_book_when, rig_for, within

BOOK_VENUES = [
    v
    for v in VENUES
    if (v.exchange, ":" in v.symbol)
    in {
        ("binance", False),
        ("binance", True),
        ("okx", True),
        ("kucoinfutures", True),
        ("bingx", False),
    }
]
"""binance spot (`U`/`u`) and USD-M (`pu`), okx swap (contracts), kucoinfutures, bingx spot."""

NOTICED: dict[tuple[str, BookBreak], bool] = {
    ("binance", "gap"): True,
    ("okx", "gap"): True,
    ("kucoinfutures", "gap"): False,
    ("bingx", "gap"): False,
    ("binance", "corrupt"): False,
    ("okx", "corrupt"): False,
    ("kucoinfutures", "corrupt"): False,
    ("bingx", "corrupt"): False,
}
"""Whether ccxt rejects the watch after the break."""

HEALS = {"bingx"}
"""Venues whose book pushes are whole snapshots: the next push repairs any break."""

STEPS_AFTER_BREAK: dict[BookBreak, int] = {"gap": 1, "corrupt": 0}
"""A gap shows on the next change; a corrupt level shows at once (and lasts until a
later change rewrites that level, which a test with more steps would race)."""


def _truth(rig: Rig) -> tuple[list[list[float]], list[list[float]]]:
    """The simulator's book in the venue's units (contracts where it prints them)."""
    inst = rig.sim.market.instrument(rig.venue.symbol)
    spec = inst.contract(rig.venue.exchange)
    book = rig.sim.market.book(rig.venue.symbol)

    def side(levels: tuple[tuple[float, float], ...]) -> list[list[float]]:
        return [[p, float(spec.contracts(inst.amount_str(a)))] for p, a in levels]

    return side(book.bids), side(book.asks)


def _view(book: Any, depth: int) -> tuple[list[list[float]], list[list[float]]]:
    return [list(x) for x in book["bids"][:depth]], [list(x) for x in book["asks"][:depth]]


def _matches(rig: Rig, book: Any) -> bool:
    bids, asks = _truth(rig)
    depth = min(len(book["bids"]), len(bids))
    return depth > 0 and _view(book, depth) == (bids[:depth], asks[:depth])


async def _settle(rig: Rig) -> Any:
    """ccxt's live book once it is at the truth's last update (market paused)."""
    target = rig.sim.market.book(rig.venue.symbol).update_id
    return await live_book_when(rig.exchange, rig.venue.symbol, lambda b: b["nonce"] == target)


@pytest.mark.parametrize("kind", ["gap", "corrupt"])
@pytest.mark.parametrize("venue", BOOK_VENUES, ids=str)
async def test_what_ccxt_does_with_a_broken_book_sequence(venue: Venue, kind: BookBreak) -> None:
    async with rig_for(venue) as rig:
        await within(rig.exchange.watch_order_book(venue.symbol))
        rig.sim.pause()
        assert _matches(rig, await _settle(rig))
        rig.sim.faults.break_book(kind, [venue.symbol])
        rig.sim.step(venue.symbol, 1 + STEPS_AFTER_BREAK[kind])
        assert rig.sim.faults.book_breaks_pending == 0
        noticed = False
        try:
            book = await _settle(rig)
        except (ccxt.ChecksumError, ccxt.InvalidNonce):
            noticed = True
        assert noticed == NOTICED[venue.exchange, kind]
        if noticed:  # the next watch resyncs from a fresh snapshot
            assert _matches(rig, await _settle(rig))
        elif venue.exchange in HEALS:
            assert _matches(rig, book)
        else:  # the book ccxt hands out is wrong
            assert not _matches(rig, book)


def _okx_checksum(book: Any) -> int:
    """OKX's checksum of a ccxt book of BTC-USDT-SWAP (sizes in contracts, 2 decimals)."""
    bids = [[f"{p:.2f}", f"{a:.2f}"] for p, a in book["bids"][:25]]
    asks = [[f"{p:.2f}", f"{a:.2f}"] for p, a in book["asks"][:25]]
    return checksum(bids, asks)


async def test_okx_checksum_exposes_the_corrupt_book_ccxt_keeps() -> None:
    """ccxt 4.5.90 ignores okx's `checksum`; recomputed from ccxt's book it agrees with
    the one okx sent while the book is right, and disagrees once a level is wrong."""
    [venue] = [v for v in BOOK_VENUES if v.exchange == "okx"]
    async with rig_for(venue) as rig:
        sent: list[int] = []
        client_books = []
        await within(rig.exchange.watch_order_book(venue.symbol))
        rig.sim.pause()
        client_books.append(_okx_checksum(await _settle(rig)))
        sent.append(_truth_checksum(rig))
        rig.sim.faults.break_book("corrupt", [venue.symbol])
        rig.sim.step(venue.symbol)
        client_books.append(_okx_checksum(await _settle(rig)))
        sent.append(_truth_checksum(rig))
        assert client_books[0] == sent[0]
        assert client_books[1] != sent[1]


def _truth_checksum(rig: Rig) -> int:
    bids, asks = _truth(rig)
    return checksum(
        [[f"{p:.2f}", f"{a:.2f}"] for p, a in bids[:25]],
        [[f"{p:.2f}", f"{a:.2f}"] for p, a in asks[:25]],
    )
