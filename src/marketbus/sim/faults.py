"""Misbehaviour a test can switch on at runtime: `sim.faults.go_silent()` etc.

The switches are plain state read by the server on every send; the two one-shot
actions (dropping connections, injecting garbage) are carried out by the server
through the `FaultTarget` it registers. Every fault acts on every simulated venue
(binance, okx, kucoinfutures, bingx): abrupt drop (`drop_connections`), a stall
longer than any staleness deadline (`go_silent` ... `resume`), garbage
(`send_garbage`: text that is not JSON, or a `poison` frame each venue module builds
so that ccxt's handler for that venue raises), `delay`, `refuse_subscriptions`, and
book breaks (`break_book`).

Book breaks, and what ccxt 4.5.90 does with them (tests/integration/sim/test_faults.py
proves each line; the producer must act where ccxt does not):

- `gap`: the next change of each symbol's book is lost (never sent), so the next
  delta does not chain: binance spot `U` != previous `u`+1, binance USD-M `pu` !=
  previous `u`, okx `prevSeqId` != previous `seqId`, kucoinfutures `sequence` skips one.
  binance (spot and USD-M) and okx NOTICE: the pending `watch_order_book` is
  rejected (binance `ChecksumError`, okx `InvalidNonce`), ccxt forgets the book and
  the next watch resyncs (binance: new REST snapshot; okx: re-subscribe, new WS
  snapshot). kucoinfutures does NOT notice: ccxt applies the following deltas over
  the hole and keeps a WRONG book, silently. bingx pushes whole top-N snapshots
  with no sequence, so a lost push is healed by the next one: nothing to notice.
- `corrupt`: the next change of each symbol's book carries one wrong size (its
  first changed level) while the sequence numbers chain. No venue's ccxt notices:
  the book stays wrong until that level changes again. okx's `books` push carries
  the real CRC32 `checksum` of the true book (top 25 levels interleaved `bid:ask`
  price and size strings as sent, signed 32-bit), which then disagrees with the book
  ccxt holds, but ccxt 4.5.90 never verifies it: only a consumer that recomputes it
  (`sim.protocols.okx.checksum` shows how) can notice. binance and kucoin send no
  checksum; bingx's next snapshot heals the book.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Literal, Protocol

from marketbus.sim.instruments import Instrument
from marketbus.sim.market import BookEvent, Level

GarbageKind = Literal["invalid_json", "poison"]
BookBreak = Literal["gap", "corrupt"]


class FaultTarget(Protocol):
    def drop_all(self) -> int:
        """Close every websocket connection abruptly; return how many were open."""

    def inject(self, kind: GarbageKind) -> int:
        """Send one garbage frame on every connection; return on how many."""


class Faults:
    """Runtime fault switches of one `SimServer`."""

    def __init__(self, target: FaultTarget) -> None:
        self._target = target
        self.silent = False
        self.delay_s = 0.0
        self.refuse_subscribe = False
        self._book_breaks: dict[str, BookBreak] = {}

    def drop_connections(self) -> int:
        """Close every open websocket now (clients see a disconnect)."""
        return self._target.drop_all()

    def go_silent(self) -> None:
        """Stop sending anything (data, acks, pongs) but keep sockets open.

        Websocket-level ping frames are still answered by the transport, like an
        exchange whose feed is stuck while its gateway lives.
        """
        self.silent = True

    def resume(self) -> None:
        """Undo `go_silent`; frames produced while silent are gone, not replayed."""
        self.silent = False

    def send_garbage(self, kind: GarbageKind = "invalid_json") -> int:
        """Send one bad frame on every connection.

        `invalid_json` is text that does not parse; `poison` is valid JSON on a
        subscribed topic that makes ccxt's message handler raise.
        """
        return self._target.inject(kind)

    def delay(self, seconds: float) -> None:
        """Hold every outgoing websocket frame for `seconds` (0 turns it off)."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self.delay_s = seconds

    def refuse_subscriptions(self, refuse: bool = True) -> None:
        """Answer subscribe requests with the exchange's error reply."""
        self.refuse_subscribe = refuse

    def break_book(self, kind: BookBreak, symbols: Iterable[str]) -> None:
        """Break the next book change of each of `symbols`, once: `gap` loses it,
        `corrupt` sends it with one wrong size (see the module docstring)."""
        for symbol in symbols:
            self._book_breaks[symbol] = kind

    @property
    def book_breaks_pending(self) -> int:
        """Symbols whose book break has not happened yet."""
        return len(self._book_breaks)

    def book_event(self, event: BookEvent, instrument: Instrument) -> BookEvent | None:
        """The book change to send for `event` (None: lose it), consuming a pending break."""
        kind = self._book_breaks.pop(event.symbol, None)
        if kind is None:
            return event
        if kind == "gap":
            return None
        return corrupt_book_event(event, instrument)

    def reset(self) -> None:
        """Back to normal behaviour."""
        self.silent = False
        self.delay_s = 0.0
        self.refuse_subscribe = False
        self._book_breaks.clear()


def corrupt_book_event(event: BookEvent, instrument: Instrument) -> BookEvent:
    """`event` with its first changed level (the best bid restated if it changed none)
    one amount step too large. The number of changed levels, the update ids and `book`
    (the truth, and okx's checksum) stay as they were, so every sequence still chains
    (kucoin numbers each changed level)."""
    step = instrument.amount(instrument.amount_step_lots)
    delta = event.delta
    source = delta.bids or delta.asks or event.book.bids[:1]
    price, amount = source[0]
    wrong: tuple[Level, ...] = ((price, round(amount + step, instrument.amount_decimals)),)
    if delta.bids or not delta.asks:
        delta = replace(delta, bids=wrong + delta.bids[1:])
    else:
        delta = replace(delta, asks=wrong + delta.asks[1:])
    return replace(event, delta=delta)
