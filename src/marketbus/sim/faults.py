"""Misbehaviour a test can switch on at runtime: `sim.faults.go_silent()` etc.

The switches are plain state read by the server on every send; the two one-shot
actions (dropping connections, injecting garbage) are carried out by the server
through the `FaultTarget` it registers.
"""

from __future__ import annotations

from typing import Literal, Protocol

GarbageKind = Literal["invalid_json", "poison"]


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

    def reset(self) -> None:
        """Back to normal behaviour."""
        self.silent = False
        self.delay_s = 0.0
        self.refuse_subscribe = False
