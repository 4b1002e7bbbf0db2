"""Human-readable one-line renderings of wire messages, for `marketbus tail` and the demo."""

from __future__ import annotations

from datetime import UTC, datetime

from marketbus.shared.names import entry_id
from marketbus.shared.schema import OHLCV, Book, Message, Status, Ticker, Trades


def clock(ts_ms: int | None) -> str:
    """``HH:MM:SS.mmm`` UTC, or ``-`` when the exchange gave no time."""
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def number(value: float | None) -> str:
    """A price or size compactly: up to 10 significant digits, ``-`` for null."""
    return "-" if value is None else f"{value:.10g}"


def describe(message: Message) -> str:
    """The message's payload in a few words (no exchange/symbol: `line` adds those)."""
    match message:
        case OHLCV():
            state = "closed" if message.closed else "forming"
            return (
                f"{message.timeframe} {clock(message.ts_ms)} o={number(message.open)} "
                f"h={number(message.high)} l={number(message.low)} c={number(message.close)} "
                f"v={number(message.volume)} {state}"
            )
        case Ticker():
            return (
                f"bid={number(message.bid)} ask={number(message.ask)} "
                f"last={number(message.last)} chg={number(message.change_pct)}%"
            )
        case Trades():
            parts = [
                f"{t.side or '?'} {number(t.amount)}@{number(t.price)}" for t in message.trades
            ]
            return (
                f"{len(message.trades)} trade(s): "
                + ", ".join(parts[:5])
                + (" ..." if len(parts) > 5 else "")
            )
        case Book():
            best_bid = message.bids[0] if message.bids else None
            best_ask = message.asks[0] if message.asks else None
            bid = f"{number(best_bid[1])}@{number(best_bid[0])}" if best_bid else "-"
            ask = f"{number(best_ask[1])}@{number(best_ask[0])}" if best_ask else "-"
            levels = f"{len(message.bids)}x{len(message.asks)}"
            return f"top{message.depth} bid {bid} | ask {ask} ({levels} levels)"
        case Status():
            feed = f" {message.feed}" if message.feed else ""
            detail = f": {message.detail}" if message.detail else ""
            return f"{message.event}{feed}{detail}"


def line(message: Message) -> str:
    """One tail line: position, type, exchange, symbol and the payload's gist."""
    where = message.exchange if message.symbol is None else f"{message.exchange} {message.symbol}"
    return (
        f"{clock(message.ts_ms)} {entry_id(message.run, message.seq)} "
        f"{message.__struct_config__.tag:<7} "
        f"{where}  {describe(message)}"
    )
