"""Rules 2 and 3 as a pure function: every relation between last and incoming."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.sequencing import Verdict, classify, missing_seqs


def test_first_message_is_applied() -> None:
    assert classify(None, (5, 17)) is Verdict.APPLY


def test_exhaustive_small_space() -> None:
    for last, pos in itertools.product(itertools.product((1, 2, 3), range(1, 5)), repeat=2):
        verdict = classify(last, pos)
        if pos <= last:
            assert verdict is Verdict.DUPLICATE
        elif pos[0] == last[0] and pos[1] == last[1] + 1:
            assert verdict is Verdict.APPLY
        elif pos[0] == last[0]:
            assert verdict is Verdict.GAP
        else:
            assert verdict is Verdict.NEW_RUN


def test_older_run_is_duplicate_even_with_larger_seq() -> None:
    assert classify((2, 1), (1, 999)) is Verdict.DUPLICATE


def test_missing_seqs_within_run() -> None:
    assert missing_seqs((1, 3), (1, 7)) == (4, 6)
    assert missing_seqs((1, 3), (1, 4)) is None
    assert missing_seqs((1, 3), (1, 3)) is None
    assert missing_seqs(None, (1, 7)) is None


def test_missing_seqs_across_runs_is_the_new_runs_head() -> None:
    assert missing_seqs((1, 3), (2, 5)) == (1, 4)
    assert missing_seqs((1, 3), (2, 1)) is None


@given(
    st.tuples(st.integers(1, 5), st.integers(1, 50)),
    st.tuples(st.integers(1, 5), st.integers(1, 50)),
)
def test_missing_seqs_agrees_with_classify(last: tuple[int, int], pos: tuple[int, int]) -> None:
    verdict = classify(last, pos)
    hole = missing_seqs(last, pos)
    if verdict in (Verdict.APPLY, Verdict.DUPLICATE):
        assert hole is None
    if verdict is Verdict.GAP:
        assert hole == (last[1] + 1, pos[1] - 1)
