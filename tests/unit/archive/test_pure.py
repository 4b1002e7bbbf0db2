"""The archive's pure parts: partition names, rows, continuity, last-wins, order, commits."""

from __future__ import annotations

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.archive.batches import FlushPolicy, StreamBatch
from marketbus.archive.candles import latest_by_time, latest_candles
from marketbus.archive.continuity import Position, hole, producer_gap
from marketbus.archive.manifest import Manifest, Rename, decode_manifest, encode_manifest
from marketbus.archive.options import RecordOptions, parse_time_ms
from marketbus.archive.ordering import Pace, event_ms, merge
from marketbus.archive.partitions import Partition, PartitionError, escape, unescape
from marketbus.archive.rows import RowBuilder, iter_messages, messages_of
from marketbus.shared.errors import ConfigError
from marketbus.shared.schema import OHLCV, Book, Status, Ticker, Trade, Trades

M = 60_000
DAY = 86_400_000


@given(st.text(min_size=1))
def test_escape_is_reversible_and_filesystem_safe(symbol: str) -> None:
    text = escape(symbol)
    assert unescape(text) == symbol
    assert "/" not in text and ":" not in text and "\\" not in text and "=" not in text
    assert not text.startswith(".")


def test_partition_path_round_trips_and_rejects_foreign_directories() -> None:
    part = Partition("binance", "ohlcv.1m", "BTC/USDT:USDT", 19_000)
    assert part.path == "exchange=binance/kind=ohlcv.1m/symbol=BTC%2FUSDT%3AUSDT/date=2022-01-08"
    assert Partition.parse(part.path) == part
    with pytest.raises(PartitionError):
        Partition.parse("exchange=binance/kind=trades/other=x/date=2022-01-08")


def _candle(ts: int, close: float, seq: int, run: int = 1) -> OHLCV:
    return OHLCV(
        exchange="binance",
        symbol="BTC/USDT",
        run=run,
        seq=seq,
        ts_ms=ts,
        recv_ns=ts * 10**6,
        timeframe="1m",
        open=1.0,
        high=None,
        low=0.5,
        close=close,
        volume=2.0,
        closed=True,
    )


trade_st = st.builds(
    Trade,
    id=st.one_of(st.none(), st.text(max_size=8)),
    ts_ms=st.one_of(st.none(), st.integers(0, 2 * DAY)),
    price=st.floats(allow_nan=False),
    amount=st.floats(allow_nan=False),
    side=st.sampled_from([None, "buy", "sell"]),
)


@given(st.lists(st.lists(trade_st, max_size=4), min_size=1, max_size=6), st.integers(0, 3 * DAY))
def test_trade_rows_rebuild_the_batches_exactly(batches: list[list[Trade]], ts: int) -> None:
    builder = RowBuilder("trades")
    messages = [
        Trades(
            exchange="x",
            symbol="A/B",
            run=7,
            seq=i + 1,
            ts_ms=ts + i * 1000,
            recv_ns=5,
            trades=tuple(b),
        )
        for i, b in enumerate(batches)
    ]
    for m in messages:
        builder.add(f"7-{m.seq}", m)
    tables = builder.take()
    assert len(builder) == 0
    table = pa.concat_tables([t for _, t in tables]).sort_by([("seq", "ascending")])
    assert list(messages_of("trades", "x", "A/B", table)) == messages


def test_candle_ticker_book_rows_rebuild_the_messages() -> None:
    cases = {
        "ohlcv.1m": [_candle(0, 1.0, 1), _candle(M, 2.0, 5)],
        "ticker": [
            Ticker(exchange="x", symbol="A/B", run=1, seq=1, ts_ms=None, recv_ns=9, bid=1.0)
        ],
        "book": [
            Book(
                exchange="x",
                symbol="A/B",
                run=1,
                seq=2,
                ts_ms=3,
                recv_ns=9,
                depth=2,
                bids=((1.0, 2.0), (0.5, 1.0)),
                asks=(),
            )
        ],
    }
    for kind, messages in cases.items():
        builder = RowBuilder(kind)
        for m in messages:
            builder.add(f"{m.run}-{m.seq}", m)
        ((_, table),) = builder.take()
        assert table.column("entry_id").to_pylist()[0] == f"{messages[0].run}-{messages[0].seq}"
        rebuilt = list(
            messages_of(
                kind,
                "x" if kind != "ohlcv.1m" else "binance",
                "A/B" if kind != "ohlcv.1m" else "BTC/USDT",
                table,
            )
        )
        assert rebuilt == messages


def test_rows_of_two_days_go_to_two_partitions() -> None:
    builder = RowBuilder("ohlcv.1m")
    builder.add("1-1", _candle(DAY - M, 1.0, 1))
    builder.add("1-2", _candle(DAY, 1.0, 2))
    assert [(day, t.num_rows) for day, t in builder.take()] == [(0, 1), (1, 1)]


def test_seq_jump_is_a_hole_of_known_seqs_and_new_run_from_one_is_not() -> None:
    last = Position(5, 10, 100)
    gap = hole("f", "trades", last, Position(5, 14, 200), evicted=True, recorded_ns=1)
    assert gap is not None and (gap.run, gap.first_seq, gap.last_seq) == (5, 11, 13)
    assert gap.reason == "evicted" and gap.after_entry_id == "5-10"
    assert hole("f", "trades", last, Position(5, 11), evicted=False, recorded_ns=1) is None
    assert hole("f", "ticker", last, Position(6, 1), evicted=False, recorded_ns=1) is None
    new_run = hole("f", "book", last, Position(6, 3), evicted=False, recorded_ns=1)
    assert new_run is not None and (new_run.first_seq, new_run.last_seq) == (1, 2)
    assert hole("f", "trades", None, Position(9, 9), evicted=True, recorded_ns=1) is None


def test_candle_holes_are_missing_periods_not_seq_jumps() -> None:
    last = Position(1, 10, 0)
    assert hole("f", "ohlcv.1m", last, Position(1, 70, M), evicted=False, recorded_ns=1) is None
    gap = hole("f", "ohlcv.1m", last, Position(1, 200, 4 * M), evicted=False, recorded_ns=1)
    assert gap is not None and (gap.start_ms, gap.end_ms, gap.reason) == (M, 4 * M, "missing")
    assert gap.detail.startswith("3 candle")


def test_producer_gap_events_become_rows_with_their_ranges() -> None:
    def status(detail: str) -> Status:
        return Status(
            exchange="x", ts_ms=None, recv_ns=1, event="gap", feed="md:x:trades:A", detail=detail
        )

    seqs = producer_gap(status("dropped 3 message(s) of f: seq 4..6 of run 77 (...)"), 5)
    assert seqs is not None and (seqs.run, seqs.first_seq, seqs.last_seq) == (77, 4, 6)
    window = producer_gap(
        status("trades between 100 (the last one published) and 200 (the first one after)"), 5
    )
    assert window is not None and (window.start_ms, window.end_ms) == (100, 200)
    heartbeat = Status(exchange="x", ts_ms=None, recv_ns=1, event="heartbeat")
    assert producer_gap(heartbeat, 5) is None


def test_latest_candles_keeps_the_last_value_of_each_candle() -> None:
    table = pa.table(
        {
            "symbol": ["A", "A", "A", "B"],
            "ts_ms": [0, M, 0, 0],
            "run": [1, 1, 2, 1],
            "seq": [1, 2, 1, 1],
            "close": [1.0, 2.0, 9.0, 3.0],
        }
    )
    latest = latest_candles(table)
    assert latest.column("close").to_pylist() == [9.0, 2.0, 3.0]
    assert [
        c.close
        for c in latest_by_time([_candle(0, 1.0, 1), _candle(0, 9.0, 3), _candle(M, 2.0, 2)])
    ] == [9.0, 2.0]


def test_merge_orders_by_event_time_keeps_stream_order_and_is_deterministic() -> None:
    a = [_candle(0, 1.0, 1), _candle(M, 1.0, 2), _candle(0, 5.0, 3)]  # a late correction
    b = [
        Ticker(exchange="x", symbol="B", run=1, seq=s, ts_ms=t, recv_ns=0)
        for s, t in ((1, 30_000), (2, M), (3, 3 * M))
    ]
    order = [(f, m.seq) for f, m in merge({"a": a, "b": b})]
    assert order == [("b", 1), ("a", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert order == [(f, m.seq) for f, m in merge({"b": b, "a": a})]
    assert event_ms(a[0]) == M


def test_manifest_commit_advances_positions_and_round_trips() -> None:
    m = Manifest(namespace="md").committed({"s": Position(1, 2, 3)}, [Rename("t", "f")])
    m = m.committed({"u": Position(4, 5)}, [])
    assert m.generation == 2 and set(m.positions) == {"s", "u"} and m.pending == ()
    assert decode_manifest(encode_manifest(m)) == m
    with pytest.raises(ValueError, match="not a marketbus archive manifest"):
        decode_manifest(b"{")


def test_flush_policy_bounds_total_memory_largest_first() -> None:
    options = RecordOptions(feeds=["md:*"], out="x", roll_s=10, file_rows=100, max_buffered_rows=60)
    batches = {}
    for name, rows in (("a", 40), ("b", 25), ("c", 5)):
        builder = RowBuilder("ticker")
        batch = StreamBatch(name, builder, None)
        for i in range(rows):
            builder.add(
                f"1-{i}", Ticker(exchange="x", symbol="A", run=1, seq=i, ts_ms=0, recv_ns=0)
            )
            batch.consumed(Position(1, i), Position(1, i), 1, now=0.0)
        batches[name] = batch
    policy = FlushPolicy(options)
    assert policy.due(batches, now=1.0) == ["a"]  # 70 rows > 60: the largest until <= 30
    assert FlushPolicy(msgspec.structs.replace(options, max_buffered_rows=1000)).due(
        batches, now=11.0
    ) == ["a", "b", "c"]
    assert (
        FlushPolicy(msgspec.structs.replace(options, max_buffered_rows=1000)).due(batches, now=1.0)
        == []
    )


def test_options_validate_namespace_and_times() -> None:
    with pytest.raises(ConfigError):
        RecordOptions(feeds=["*:binance:*"], out="x")
    with pytest.raises(ConfigError):
        RecordOptions(feeds=["md:a:*", "bt:a:*"], out="x")
    assert RecordOptions(feeds=["md:binance:*"], out="x").namespace == "md"
    assert parse_time_ms("1970-01-02", "--start") == DAY
    with pytest.raises(ConfigError, match="--end"):
        parse_time_ms("yesterday", "--end")


def test_pace_spreads_exchange_time_over_wall_time_divided_by_speed() -> None:
    pace = Pace(10.0)
    assert pace.wait_s(1_000, now=100.0) == 0.0  # the first message sets the origin
    assert pace.wait_s(11_000, now=100.0) == pytest.approx(1.0)
    assert pace.wait_s(11_000, now=100.5) == pytest.approx(0.5)
    assert pace.wait_s(2_000, now=105.0) == 0.0  # late: no wait, never negative
    assert Pace(None).wait_s(10**12, now=0.0) == 0.0


def test_messages_are_rebuilt_a_chunk_at_a_time_without_splitting_a_batch() -> None:
    builder = RowBuilder("trades")
    trade = Trade(id=None, ts_ms=1, price=1.0, amount=1.0, side=None)
    messages = [
        Trades(exchange="x", symbol="A", run=1, seq=s, ts_ms=1, recv_ns=1, trades=(trade,) * 3)
        for s in range(1, 6)
    ]
    for m in messages:
        builder.add(f"1-{m.seq}", m)
    ((_, table),) = builder.take()
    assert list(iter_messages("trades", "x", "A", table, chunk_rows=4)) == messages


@given(st.dictionaries(st.sampled_from("abcd"), st.lists(st.integers(0, 50), max_size=8)))
def test_merge_keeps_each_feed_in_order_and_takes_the_earliest_head(
    times: dict[str, list[int]],
) -> None:
    feeds = {
        name: [
            Ticker(exchange="x", symbol=name, run=1, seq=i + 1, ts_ms=t, recv_ns=0)
            for i, t in enumerate(ts)
        ]
        for name, ts in times.items()
    }
    merged = list(merge(feeds))
    assert sorted(merged, key=lambda item: (item[0], item[1].seq)) == [
        (name, m) for name in sorted(feeds) for m in feeds[name]
    ]
    for name in feeds:  # stream order within a feed
        seqs = [m.seq for f, m in merged if f == name]
        assert seqs == sorted(seqs)
    if all(ts == sorted(ts) for ts in times.values()):  # sorted inputs: a sorted output
        keys = [(m.ts_ms, f) for f, m in merged]
        assert keys == sorted(keys)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(1, 30)), max_size=20))
def test_latest_candles_and_latest_by_time_agree(rows: list[tuple[int, int, int]]) -> None:
    candles = [_candle(t * M, float(run * 100 + seq), seq, run) for t, run, seq in rows]
    unique = list({(c.run, c.seq): c for c in candles}.values())  # (run, seq) is unique
    builder = RowBuilder("ohlcv.1m")
    for c in unique:
        builder.add(f"{c.run}-{c.seq}", c)
    tables = [t for _, t in builder.take()]
    latest = latest_candles(pa.concat_tables(tables)) if tables else None
    expected = latest_by_time(unique)
    got = latest.column("close").to_pylist() if latest is not None else []
    assert got == [c.close for c in expected]
