"""Every consumer decode path counts and skips what does not decode (SPEC consumer rule
5): arbitrary bytes, JSON and MessagePack structures, and nesting deeper than msgspec
follows, fed to the live path (batch and single), to stream history (backfill and
repair, with foreign entries) and to a slow listener's read-back. No exception escapes,
the counters add up, and the feed goes on with the next real message."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.engine import Entry
from marketbus.shared.codecs import decode, encode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import STREAM_FIELD_BYTES
from marketbus.shared.schema import Trades
from tests.unit.consumers.test_engine import TRADES, entries, prices, trade
from tests.unit.consumers.test_trust import ready, take

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_structures = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["trades", "ticker", "ohlcv", "book", "status", "nope"])},
    optional={
        "exchange": _scalars,
        "symbol": _scalars,
        "run": _scalars,
        "seq": _scalars,
        "trades": _structures,
    },
)


def _encoded(value: Any, json: bool) -> bytes:
    return msgspec.json.encode(value) if json else msgspec.msgpack.encode(value)


def _deep(depth: int, unit: bytes) -> bytes:
    return unit * depth


payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(_encoded, _structures | _message_like, st.booleans()),
    st.builds(
        _deep,
        st.integers(1, 3000),
        st.sampled_from([b'{"a":', b"[", b'{"type":', b"\x91", b"\x81\xa1a", b"\xdc\x00\x01"]),
    ),
)


def undecodable(batch: list[bytes]) -> int:
    """How many of *batch* `codecs.decode` rejects (the reference every path agrees with)."""
    count = 0
    for payload in batch:
        try:
            decode(payload)
        except ContractError:
            count += 1
    return count


def misfits(batch: list[bytes]) -> int:
    """How many of *batch* decode into a message that is not a trades batch."""
    count = 0
    for payload in batch:
        try:
            message = decode(payload)
        except ContractError:
            continue
        count += not isinstance(message, Trades)
    return count


@given(st.lists(payloads, max_size=12))
def test_live_batches_count_and_skip_what_does_not_decode(batch: list[bytes]) -> None:
    engine, _ = ready()
    engine.on_live_batch([(TRADES.encode(), None, p) for p in batch])
    engine.on_live_batch([(TRADES, None, encode(trade(1, 4)))])
    stats = engine.stats
    assert stats.undecodable == undecodable(batch)
    assert stats.rejected == misfits(batch)
    assert stats.received == len(batch) + 1
    assert prices(engine) == [1, 2, 3, 4]


@given(st.lists(payloads, max_size=12))
def test_single_live_messages_count_and_skip_what_does_not_decode(batch: list[bytes]) -> None:
    engine, _ = ready()
    for payload in batch:
        engine.on_live(TRADES, payload)
    engine.on_live(TRADES, encode(trade(1, 4)))
    assert engine.stats.undecodable == undecodable(batch)
    assert engine.stats.rejected == misfits(batch)
    assert prices(engine) == [1, 2, 3, 4]


@given(st.lists(payloads, max_size=12), st.booleans())
def test_stream_history_counts_and_skips_what_does_not_decode(
    batch: list[bytes], foreign_ids: bool
) -> None:
    engine, _ = ready()
    engine.on_live(TRADES, encode(trade(1, 6)))  # a jump: repaired from the stream
    repair = take(engine)
    bad: list[Entry] = [
        (b"1700000000000-0" if foreign_ids else f"1-{4}".encode(), {STREAM_FIELD_BYTES: p})
        for p in batch
    ]
    no_field: Entry = (b"1-4", {b"x": b"y"})
    history = [*entries([trade(1, 4)]), *bad, no_field, *entries([trade(1, 5), trade(1, 6)])]
    engine.on_history(repair, history, done=True, stream_first=(1, 1))
    assert engine.stats.undecodable == undecodable(batch) + 1
    assert engine.stats.rejected == misfits(batch)
    assert prices(engine) == [1, 2, 3, 4, 5, 6]
    assert engine.stats.suspect == 0 and not engine.wants_fetches


@given(st.lists(payloads, max_size=12))
def test_backfill_counts_and_skips_what_does_not_decode(batch: list[bytes]) -> None:
    engine, _ = ready()
    engine.track("md:binance:trades:ETH/USDT", engine.feeds[TRADES].sizes)
    engine.on_subscribed("md:binance:trades:ETH/USDT")
    backfill = take(engine)
    history: list[Entry] = [(b"1-1", {STREAM_FIELD_BYTES: p}) for p in batch]
    engine.on_history(backfill, history, done=True, stream_first=(1, 1))
    assert engine.stats.undecodable == undecodable(batch)
    assert engine.feeds["md:binance:trades:ETH/USDT"].ready


@given(st.lists(payloads, max_size=12))
def test_read_back_counts_and_skips_what_does_not_decode(batch: list[bytes]) -> None:
    engine, _ = ready()
    history: list[Entry] = [(b"1-4", {STREAM_FIELD_BYTES: p}) for p in batch]
    updates = engine.read_back([*history, (b"1-5", {}), *entries([trade(1, 6)])])
    assert engine.stats.undecodable == undecodable(batch) + 1
    assert updates[-1] == trade(1, 6)
