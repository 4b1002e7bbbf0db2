"""Reconnect delays: exponential, capped, jittered, reset after a healthy period."""

from __future__ import annotations

import random

from marketbus.producer.backoff import Backoff


def test_delays_grow_exponentially_within_half_to_full_ceiling_and_cap() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        delay = b.failure()
        assert ceiling / 2 <= delay <= ceiling
    assert b.attempt == len(ceilings)


def test_reset_only_after_being_healthy_long_enough() -> None:
    b = Backoff(1.0, 8.0, healthy_after_s=10.0, rng=random.Random(2))
    b.failure()
    b.failure()
    b.success(100.0)
    b.success(105.0)
    assert b.attempt == 2
    b.success(110.0)
    assert b.attempt == 0
    assert b.failure() <= 1.0


def test_a_failure_restarts_the_healthy_period() -> None:
    b = Backoff(1.0, 8.0, healthy_after_s=10.0)
    b.failure()
    b.success(0.0)
    b.failure()
    b.success(9.0)
    b.success(15.0)
    assert b.attempt == 2
