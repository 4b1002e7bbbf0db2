"""Codecs: every message round-trips in both encodings; garbage is a ContractError."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared import codecs
from marketbus.shared.errors import ContractError
from marketbus.shared.schema import (
    OHLCV,
    Book,
    FeedInfo,
    Message,
    Status,
    Ticker,
    Trade,
    Trades,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
maybe = st.none() | finite
ints = st.integers(min_value=0, max_value=2**62)
common = {
    "exchange": st.text(min_size=1, max_size=10),
    "symbol": st.text(min_size=1, max_size=15),
    "run": ints,
    "seq": ints,
    "ts_ms": st.none() | ints,
    "recv_ns": ints,
}
trade = st.builds(
    Trade,
    id=st.none() | st.text(max_size=10),
    ts_ms=st.none() | ints,
    price=finite,
    amount=finite,
    side=st.sampled_from([None, "buy", "sell"]),
)
level = st.tuples(finite, finite)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        OHLCV,
        **common,
        timeframe=st.sampled_from(["1m", "1h"]),
        open=maybe,
        high=maybe,
        low=maybe,
        close=maybe,
        volume=maybe,
        closed=st.booleans(),
    ),
    st.builds(Ticker, **common, bid=maybe, ask=maybe, last=maybe, mark=maybe),
    st.builds(Trades, **common, trades=st.lists(trade, max_size=5).map(tuple)),
    st.builds(
        Book,
        **common,
        depth=st.integers(1, 50),
        bids=st.lists(level, max_size=5).map(tuple),
        asks=st.lists(level, max_size=5).map(tuple),
    ),
    st.builds(
        Status,
        exchange=common["exchange"],
        run=ints,
        seq=ints,
        ts_ms=st.none() | ints,
        recv_ns=ints,
        event=st.sampled_from(["started", "connected", "gap", "heartbeat"]),
        feed=st.none() | st.text(max_size=20),
        detail=st.text(max_size=20),
    ),
)


@given(message=messages)
def test_round_trip_json(message: Message) -> None:
    payload = codecs.encode(message, "json")
    assert payload[:1] == b"{"
    assert codecs.decode(payload) == message


@given(message=messages)
def test_round_trip_msgpack_detected_by_first_byte(message: Message) -> None:
    payload = codecs.encode(message, "msgpack")
    assert payload[:1] != b"{"
    assert codecs.decode(payload) == message


def test_json_has_the_spec_fields_in_plain_view() -> None:
    candle = OHLCV(
        exchange="binance",
        symbol="BTC/USDT",
        run=1700000000000,
        seq=7,
        ts_ms=1700000040000,
        recv_ns=1700000041000000000,
        timeframe="1m",
        open=1.5,
        high=2.0,
        low=1.0,
        close=1.75,
        volume=10.0,
        closed=True,
    )
    fields = json.loads(codecs.encode(candle))
    assert fields == {
        "type": "ohlcv",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "run": 1700000000000,
        "seq": 7,
        "ts_ms": 1700000040000,
        "recv_ns": 1700000041000000000,
        "timeframe": "1m",
        "open": 1.5,
        "high": 2.0,
        "low": 1.0,
        "close": 1.75,
        "volume": 10.0,
        "closed": True,
    }


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    payload = (
        b'{"type":"ticker","exchange":"x","symbol":"A/B","run":1,"seq":2,"ts_ms":null,'
        b'"recv_ns":3,"bid":1.5,"new_field_from_v2":[1,2]}'
    )
    message = codecs.decode(payload)
    assert isinstance(message, Ticker)
    assert message.bid == 1.5


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b'{"type":"candle","exchange":"x"}',
        b'{"type":"ticker"}',
        b"\xc1\xc1garbage",
        msgspec.msgpack.encode({"type": "ohlcv", "exchange": 5}),
    ],
)
def test_garbage_is_a_contract_error(payload: bytes) -> None:
    with pytest.raises(ContractError):
        codecs.decode(payload)


def test_encoder_for_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="encoding"):
        codecs.encoder_for("xml")  # type: ignore[arg-type]


def test_feed_info_round_trip_and_error() -> None:
    info = FeedInfo(
        exchange="binance",
        symbol="BTC/USDT",
        kind="ohlcv.1m",
        timeframe="1m",
        run=1,
        stream_maxlen=100,
        updated_ms=2,
    )
    assert codecs.decode_feed_info(codecs.encode_feed_info(info)) == info
    with pytest.raises(ContractError):
        codecs.decode_feed_info(b"[]")


DEEP_PAYLOADS = [
    b'{"a":' * 1000,
    b"[" * 100_000,
    b'{"type":"trades","trades":' + b"[" * 5000,
    b"\x91" * 5000,  # msgpack: arrays of one, nested
    b"\x81\xa1a" * 5000,  # msgpack: maps of one, nested
]


@pytest.mark.parametrize("payload", DEEP_PAYLOADS)
def test_a_deeply_nested_payload_is_a_contract_error_not_a_recursion_error(
    payload: bytes,
) -> None:
    with pytest.raises(ContractError):
        codecs.decode(payload)
    with pytest.raises(ContractError):
        codecs.decode_feed_info(payload)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=40,
)


@given(st.binary(max_size=512))
def test_any_bytes_decode_to_a_message_or_a_contract_error(payload: bytes) -> None:
    try:
        message = codecs.decode(payload)
    except ContractError:
        return
    assert isinstance(message, Message)


@given(json_values, st.sampled_from(["ohlcv", "ticker", "trades", "book", "status", "x"]))
def test_any_nested_structure_decodes_to_a_message_or_a_contract_error(
    value: object, type_: str
) -> None:
    for payload in (
        msgspec.json.encode({"type": type_, "exchange": "x", "run": 1, "seq": 1, "v": value}),
        msgspec.msgpack.encode({"type": type_, "trades": value, "bids": value}),
        msgspec.json.encode(value),
    ):
        with contextlib.suppress(ContractError):
            codecs.decode(payload)
        with contextlib.suppress(ContractError):
            codecs.decode_feed_info(payload)
