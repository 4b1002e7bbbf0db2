"""Reconnect delays: exponential, capped, jittered, reset after a healthy period."""

from __future__ import annotations

import random

from marketbus.shared.backoff import Backoff as PolicyBackoff
from marketbus.shared.backoff import BackoffState


def test_delays_grow_exponentially_within_half_to_full_ceiling_and_cap() -> None:
    b = BackoffState(0.5, 4.0, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        delay = b.failure()
        assert ceiling / 2 <= delay <= ceiling
    assert b.attempt == len(ceilings)


def test_reset_only_after_being_healthy_long_enough() -> None:
    b = BackoffState(1.0, 8.0, healthy_after_s=10.0, rng=random.Random(2))
    b.failure()
    b.failure()
    b.success(100.0)
    b.success(105.0)
    assert b.attempt == 2
    b.success(110.0)
    assert b.attempt == 0
    assert b.failure() <= 1.0


def test_a_failure_restarts_the_healthy_period() -> None:
    b = BackoffState(1.0, 8.0, healthy_after_s=10.0)
    b.failure()
    b.success(0.0)
    b.failure()
    b.success(9.0)
    b.success(15.0)
    assert b.attempt == 2


def test_policy_delays_double_up_to_the_cap_and_never_reach_zero() -> None:
    policy = PolicyBackoff(initial_s=0.1, maximum_s=0.8)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (9, 0.8)]:
        delay = policy.delay(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling
