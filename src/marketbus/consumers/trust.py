"""What a reader trusts (pure): the stream is the authority, a live message only a claim.

A live message that jumps (a seq gap, or a new run) would move the feed's position far
ahead if it were applied as it comes, so a forged or buggy one (``seq + 1_000_000``)
would turn every real message after it into a "duplicate" and freeze the feed. So a
jumping message is held while the repair reads the stream up to and including its
``(run, seq)``; only if the stream has an entry there is it applied (the stream's copy:
the stream is the authority). Otherwise it is *suspect*: dropped, counted, and the
feed's position does not move. Runs are the producer's start time (epoch ms), so a
run far ahead of the reader's clock cannot be real: it is rejected outright, even when
it comes from the stream.

Ticker and book feeds follow the same rule, with a cheaper read: their newest message
is the whole state, so nothing skipped needs reading, only the held message's own entry
(one ``XREVRANGE ... COUNT 1`` ending at its ID), and so does their first message
when the backfill found nothing. Without this, one forged ticker at
``seq + 1_000_000`` would show a fake price and freeze the feed just the same. The cost
is latency on a real jump (a publish lost to a reconnect): its state is shown one
stream read later. Forming candles cannot be confirmed (the stream holds closed candles
only): a jump to one is trusted, as before.
"""

from __future__ import annotations

from typing import Final

from marketbus.consumers.sequencing import Position
from marketbus.shared.schema import OHLCV, Message

MAX_RUN_AHEAD_S: Final = 3600.0
"""Default of how far ahead of the reader's clock a run may be (clock skew between the
producer's host and the reader's, with margin)."""


def from_future(run: int, now_ms: float, max_ahead_ms: float) -> bool:
    """True when *run* starts more than *max_ahead_ms* after *now_ms* (epoch ms): no
    producer can have started then, so its messages are rejected."""
    return run > now_ms + max_ahead_ms


def confirmable(message: Message) -> bool:
    """True when the stream must hold *message* (every message but a forming candle),
    so a jump to it can be checked against the stream."""
    return not isinstance(message, OHLCV) or message.closed


def confirmed(found: Position | None, claimed: Position) -> bool:
    """True when the stream read found the entry at *claimed* (*found*: the position of
    the entry the read met there, None if none)."""
    return found == claimed
