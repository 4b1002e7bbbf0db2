"""Run ids and sequence numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from marketbus.producer.sequencing import (
    MAX_RUN_AHEAD_MS,
    Sequencer,
    Top,
    choose_run,
    classify_top,
    of_feed,
)
from marketbus.shared.codecs import encode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import entry_id, parse_entry_id
from marketbus.shared.schema import OHLCV, Status, Ticker, Trades


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


NOW = 1_800_000_000_000
TRADES = "md:x:trades:A/B"


def _trades(run: int, seq: int, symbol: str = "A/B") -> bytes:
    return encode(
        Trades(exchange="x", symbol=symbol, ts_ms=1, recv_ns=0, run=run, seq=seq, trades=())
    )


def test_a_run_from_the_future_is_never_followed() -> None:
    forged = (9_999_999_999_999, 1)
    assert choose_run(NOW, [forged, (NOW - 5, 2)]) == NOW
    assert choose_run(NOW, [(NOW + MAX_RUN_AHEAD_MS, 1)]) == NOW + MAX_RUN_AHEAD_MS + 1
    assert choose_run(NOW, [(NOW + MAX_RUN_AHEAD_MS + 1, 1)]) == NOW


@given(st.lists(st.none() | st.tuples(st.integers(0, 2 * NOW), st.integers(0, 10**9))))
def test_the_chosen_run_is_never_far_ahead_and_above_every_plausible_run(
    last: list[tuple[int, int] | None],
) -> None:
    run = choose_run(NOW, last)
    assert NOW <= run <= NOW + MAX_RUN_AHEAD_MS + 1
    assert all(ids is None or ids[0] < run or ids[0] > NOW + MAX_RUN_AHEAD_MS for ids in last)


def test_only_a_real_message_of_this_feed_from_a_later_run_is_a_rival() -> None:
    def top(top_id: bytes, payload: bytes | None, next_seq: int = 5) -> Top:
        return classify_top(TRADES, top_id, payload, run=1000, next_seq=next_seq, now_ms=NOW)

    assert top(b"2000-1", _trades(2000, 1)) is Top.RIVAL
    assert top(b"1000-4", b"x") is Top.OURS  # a seq we handed out
    assert top(b"1000-1000004", _trades(1000, 1000004)) is Top.FOREIGN  # not handed out
    assert top(b"2000-0", b"x") is Top.FOREIGN  # a '*' id
    assert top(b"2000-1", None) is Top.FOREIGN
    assert top(b"2000-1", b'{"a":' * 1000) is Top.FOREIGN
    assert top(b"2000-1", _trades(2000, 2)) is Top.FOREIGN  # payload disagrees with its id
    assert top(b"2000-1", _trades(2000, 1, symbol="C/D")) is Top.FOREIGN  # another feed
    assert top(b"999-1", _trades(999, 1)) is Top.FOREIGN  # an older run cannot refuse us
    assert top(b"9999999999999-1", _trades(9999999999999, 1)) is Top.FUTURE
    assert top(b"not-an-id", b"x") is Top.FOREIGN


def test_a_message_belongs_to_a_feed_by_type_exchange_symbol_and_timeframe() -> None:
    candle = OHLCV(
        exchange="x",
        symbol="A/B",
        ts_ms=0,
        recv_ns=0,
        timeframe="1m",
        open=1,
        high=1,
        low=1,
        close=1,
        volume=1,
        closed=True,
    )
    assert of_feed(candle, "md:x:ohlcv.1m:A/B")
    assert not of_feed(candle, "md:x:ohlcv.1h:A/B")
    assert not of_feed(candle, TRADES)
    ticker = Ticker(exchange="x", symbol="A/B:C", ts_ms=0, recv_ns=0)
    assert of_feed(ticker, "md:x:ticker:A/B:C")
    assert not of_feed(replace(ticker, exchange="y"), "md:x:ticker:A/B:C")
    status = Status(exchange="x", ts_ms=None, recv_ns=0, event="heartbeat")
    assert of_feed(status, "md:x:status")
    assert not of_feed(status, TRADES)
