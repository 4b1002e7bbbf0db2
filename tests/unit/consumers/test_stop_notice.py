"""A failed subscriber's last word to queued ``on_stale`` listeners (no Redis)."""

from __future__ import annotations

import logging

import pytest

from marketbus.consumers.events import Staleness
from marketbus.consumers.listeners import Listener
from marketbus.consumers.options import SubscriberOptions
from marketbus.consumers.stop_notice import StopNotice

DEFAULTS = SubscriberOptions()


def stale(feed: str) -> Staleness:
    return Staleness(feed=feed, stale=True, reason="subscriber stopped: ValueError: x", age_s=1.0)


async def test_queued_listeners_hear_their_feeds_once_and_inline_ones_are_left_out() -> None:
    heard: list[tuple[str, str]] = []

    async def later(event: Staleness) -> None:
        heard.append(("async", event.feed))

    notice = StopNotice()
    notice.add(
        Listener.make(None, None, lambda e: heard.append(("all", e.feed)), defaults=DEFAULTS)
    )
    notice.add(Listener.make(None, None, later, defaults=DEFAULTS, feeds=["b"]))
    inline = Listener.make(None, None, heard.append, defaults=DEFAULTS, delivery="inline")
    notice.add(inline)  # told by the engine itself, at once
    notice.add(Listener.make(heard.append, None, None, defaults=DEFAULTS))  # no on_stale
    notice.record([stale("a"), stale("b")])
    await notice.deliver()
    await notice.deliver()  # once only
    assert heard == [("all", "a"), ("all", "b"), ("async", "b")]


async def test_a_failing_on_stale_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[str] = []

    def broken(event: Staleness) -> None:
        raise RuntimeError("strategy bug")

    notice = StopNotice()
    notice.add(Listener.make(None, None, broken, defaults=DEFAULTS))
    notice.add(Listener.make(None, None, lambda e: heard.append(e.feed), defaults=DEFAULTS))
    notice.record([stale("a")])
    with caplog.at_level(logging.ERROR, logger="marketbus.consumers"):
        await notice.deliver()
    assert heard == ["a"] and "on_stale failed" in caplog.text
