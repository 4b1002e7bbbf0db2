"""`marketbus tail`'s outage reporting: one line when Redis is lost, one when it is back,
and waits that grow instead of a busy loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared.backoff import Backoff
from marketbus.tail import RECONNECT, Outage


def test_an_outage_is_told_once_when_lost_and_once_when_restored() -> None:
    outage = Outage()
    assert outage.read(0.0) is None
    said, _ = outage.lost(ConnectionError("refused"), 1.0)
    assert said is not None and "connection lost (refused)" in said
    for i in range(50):
        again, _ = outage.lost(ConnectionError("refused"), 1.0 + i)
        assert again is None
    assert outage.ongoing
    back = outage.read(61.0)
    assert back == "# Redis connection restored after 60.0s (51 failed attempt(s)); tailing again"
    assert outage.read(62.0) is None
    assert not outage.ongoing


@given(st.integers(min_value=1, max_value=200))
def test_waits_are_never_zero_and_never_beyond_the_maximum(failures: int) -> None:
    outage = Outage(Backoff(initial_s=0.1, maximum_s=5.0))
    waits = [outage.lost(OSError("down"), 0.0)[1] for _ in range(failures)]
    assert all(0.05 <= w <= 5.0 for w in waits)
    assert sum(waits) >= 0.05 * failures


def test_the_backoff_keeps_growing_while_the_server_flaps() -> None:
    """A server that accepts then drops at once does not reset the waits."""
    outage = Outage(RECONNECT)
    now = 0.0
    for _ in range(12):
        _, wait_s = outage.lost(OSError("reset"), now)
        now += wait_s
        outage.read(now)
    _, last = outage.lost(OSError("reset"), now)
    assert last >= RECONNECT.maximum_s / 2
