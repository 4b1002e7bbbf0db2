"""Ordering of one feed's messages by ``(run, seq)``: SPEC consumer rules 2 and 3 (pure).

A feed's messages are numbered 1, 2, 3... within a producer run, and a later run is
larger. Given the last applied position, every incoming position is either the next
one (apply), not newer (duplicate, rule 2), a jump within the run (gap) or the start
of a later run (new run); the last two are repaired from the stream (rule 3).
"""

from __future__ import annotations

import enum
from typing import TypeAlias

Position: TypeAlias = tuple[int, int]
"""``(run, seq)`` of a message; tuples compare in feed order."""


class Verdict(enum.Enum):
    """What to do with an incoming message, relative to the last applied one."""

    APPLY = "apply"
    """The next message in order (or the first one this consumer sees): apply it."""
    DUPLICATE = "duplicate"
    """Not newer than the last applied message: drop it (rule 2)."""
    GAP = "gap"
    """Same run, but seq jumped: read the skipped messages from the stream first."""
    NEW_RUN = "new_run"
    """A later producer run: read the old run's tail and the new run's head first."""


def classify(last: Position | None, position: Position) -> Verdict:
    """The verdict for a message at *position* when *last* was applied last."""
    if last is None:
        return Verdict.APPLY
    if position <= last:
        return Verdict.DUPLICATE
    run, seq = position
    if run == last[0]:
        return Verdict.APPLY if seq == last[1] + 1 else Verdict.GAP
    return Verdict.NEW_RUN


def missing_seqs(last: Position | None, position: Position) -> tuple[int, int] | None:
    """The inclusive seq range known to be skipped between *last* and *position*.

    Within one run that is ``last.seq + 1 .. position.seq - 1``; across runs it is the
    head of the new run, ``1 .. position.seq - 1`` (how long the old run went on after
    *last* cannot be known). None when nothing is known to be missing.
    """
    if last is None or position <= last:
        return None
    run, seq = position
    first = last[1] + 1 if run == last[0] else 1
    return (first, seq - 1) if seq > first else None
