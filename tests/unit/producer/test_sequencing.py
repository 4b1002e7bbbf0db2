"""Run ids and sequence numbers."""

from __future__ import annotations

import pytest

from marketbus.producer.sequencing import Sequencer, choose_run
from marketbus.shared.errors import ContractError
from marketbus.shared.names import entry_id, parse_entry_id


def test_run_is_now_unless_a_stream_already_has_a_later_run() -> None:
    assert choose_run(1_000, []) == 1_000
    assert choose_run(1_000, [None, (500, 9)]) == 1_000
    assert choose_run(1_000, [(1_000, 3), None]) == 1_001
    assert choose_run(1_000, [(2_000, 1), (1_500, 7)]) == 2_001


def test_entry_ids_round_trip_and_bad_ids_are_contract_errors() -> None:
    assert parse_entry_id(b"1700000000000-42") == (1_700_000_000_000, 42)
    assert parse_entry_id(entry_id(5, 6)) == (5, 6)
    for bad in ("5", "a-1", "5-", "-5"):
        with pytest.raises(ContractError):
            parse_entry_id(bad)


def test_seq_counts_per_feed_from_one_and_skips_reserve_ranges() -> None:
    s = Sequencer(run=7)
    assert [s.next("a"), s.next("a"), s.next("b")] == [1, 2, 1]
    assert s.next("a", skip=3) == 6
    assert s.reserve("b", 4) == 2
    assert s.peek("b") == 6 and s.next("b") == 6
