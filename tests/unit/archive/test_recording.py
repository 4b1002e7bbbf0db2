"""The recorder's core without Redis or files: entries in, files and positions out."""

from __future__ import annotations

import msgspec

from marketbus.archive.continuity import Position
from marketbus.archive.options import RecordOptions
from marketbus.archive.recording import Recording
from marketbus.shared.codecs import encode
from marketbus.shared.schema import Message, Status, Trade, Trades

FEED = "md:binance:trades:BTC/USDT"
STATUS = "md:binance:status"
OPTIONS = RecordOptions(feeds=["md:binance:*"], out="unused", roll_s=60, file_rows=1000)


def _trades(seq: int, ts: int = 1_000, n: int = 2) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=7,
        seq=seq,
        ts_ms=ts,
        recv_ns=ts * 10**6,
        trades=tuple(
            Trade(id=str(i), ts_ms=ts, price=1.0, amount=1.0, side="buy") for i in range(n)
        ),
    )


def _entry(message: Message, run: int = 7, seq: int | None = None) -> list[object]:
    seq = message.seq if seq is None else seq
    return [f"{run}-{seq}".encode(), [b"d", encode(message)]]


def test_entries_become_rows_and_the_commit_carries_the_last_position() -> None:
    rec = Recording(OPTIONS, {})
    assert rec.add_stream(FEED) is None
    assert rec.read_positions() == {FEED: "0-0"}
    rec.ingest(FEED, [_entry(_trades(1)), _entry(_trades(2))], now=0.0)
    assert rec.stats.entries == 2 and rec.stats.rows == 4 and rec.buffered == 4
    assert rec.read_positions() == {FEED: "7-2"}
    assert rec.due(now=30.0) == [] and rec.due(now=60.0) == [FEED]
    commit = rec.take([FEED])
    assert commit.positions == {FEED: Position(7, 2, 1_000)}
    [file] = commit.files
    assert file.partition.kind == "trades" and file.table.num_rows == 4
    assert file.metadata == {"feed": FEED, "first_entry_id": "7-1", "last_entry_id": "7-2"}
    rec.written(commit)
    assert rec.buffered == 0 and rec.pending() == [] and rec.stats.commits == 1


def test_a_restart_resumes_after_the_saved_position_and_sees_the_hole_before_the_next() -> None:
    rec = Recording(OPTIONS, {FEED: Position(7, 2, 1_000)})
    assert rec.add_stream(FEED) == Position(7, 2, 1_000)
    assert rec.read_positions() == {FEED: "7-2"}
    gap = rec.hole_before(FEED, _entry(_trades(5)))
    assert gap is not None and (gap.first_seq, gap.last_seq, gap.reason) == (3, 4, "missing")
    assert rec.hole_before(FEED, _entry(_trades(3))) is None


def test_holes_inside_a_read_and_undecodable_entries_become_gap_rows() -> None:
    rec = Recording(OPTIONS, {})
    rec.add_stream(FEED)
    bad = [b"7-2", [b"d", b"{not json"]]
    rec.ingest(FEED, [_entry(_trades(1)), bad, _entry(_trades(6))], now=0.0)
    assert rec.stats.undecodable == 1 and rec.stats.gaps == 1
    commit = rec.take(rec.pending())
    gap_rows = [r for f in commit.files if f.partition.kind == "gap" for r in f.table.to_pylist()]
    assert sorted((r["reason"], r["first_seq"], r["last_seq"]) for r in gap_rows) == [
        ("missing", 3, 5),
        ("undecodable", 2, 2),
    ]
    assert commit.positions[FEED] == Position(7, 6, 1_000)


def test_producer_gap_events_are_filed_under_the_feed_they_name() -> None:
    rec = Recording(OPTIONS, {})
    rec.add_stream(STATUS)
    event = Status(
        exchange="binance",
        run=3,
        seq=1,
        ts_ms=None,
        recv_ns=86_400_000 * 10**6,
        event="gap",
        feed=FEED,
        detail=f"dropped 2 message(s) of {FEED}: seq 4..5 of run 3 (...)",
    )
    heartbeat = msgspec.structs.replace(event, seq=2, event="heartbeat", feed=None)
    rec.ingest(STATUS, [_entry(event, 3), _entry(heartbeat, 3)], now=0.0)
    [file] = rec.take([STATUS]).files
    assert file.partition.path.startswith("exchange=binance/kind=gap/symbol=BTC%2FUSDT/")
    [row] = file.table.to_pylist()
    assert (row["reason"], row["run"], row["first_seq"], row["last_seq"]) == ("producer", 3, 4, 5)


def test_a_message_of_the_wrong_type_for_the_feed_is_not_recorded_as_data() -> None:
    rec = Recording(OPTIONS, {})
    rec.add_stream(FEED)
    status = Status(exchange="binance", run=7, seq=1, ts_ms=None, recv_ns=1, event="heartbeat")
    rec.ingest(FEED, [_entry(status)], now=0.0)
    assert rec.stats.rows == 0 and rec.stats.undecodable == 1


def test_the_status_stream_of_a_recorded_exchange_is_followed_for_matching_feeds_only() -> None:
    options = msgspec.structs.replace(OPTIONS, feeds=["md:binance:trades:*"])
    rec = Recording(options, {})
    rec.add_stream(FEED)
    assert rec.missing_status_streams() == [STATUS]
    rec.add_stream(STATUS)
    assert rec.missing_status_streams() == []

    def gap(seq: int, feed: str) -> Status:
        return Status(
            exchange="binance", run=3, seq=seq, ts_ms=None, recv_ns=1, event="gap", feed=feed
        )

    rec.ingest(STATUS, [_entry(gap(1, FEED), 3), _entry(gap(2, "md:binance:ticker:X"), 3)], 0.0)
    assert rec.stats.gaps == 1
