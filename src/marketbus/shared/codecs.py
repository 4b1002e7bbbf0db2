"""Encoding and decoding of wire messages: JSON by default, MessagePack as an option.

A reader tells the two apart by the first byte: ``{`` is JSON, anything else is
MessagePack (a msgpack map never starts with 0x7B). Encoders and decoders are built
once per module, as msgspec's performance notes advise.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

from marketbus.shared.errors import ContractError
from marketbus.shared.schema import FeedInfo, Message

Encoding: TypeAlias = Literal["json", "msgpack"]
ENCODINGS: Final = ("json", "msgpack")

_JSON_OPEN: Final = ord("{")

DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
"""What msgspec raises for a payload that is not a valid message. RecursionError: a
hostile payload nested deeper than msgspec follows (``'{"a":' * 1000``, 5 KB) must cost
only itself, like any other undecodable payload (SPEC consumer rule 5)."""

_json_encoder: Final = msgspec.json.Encoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_json_decoder: Final = msgspec.json.Decoder(Message)
_msgpack_decoder: Final = msgspec.msgpack.Decoder(Message)
_feed_info_decoder: Final = msgspec.json.Decoder(FeedInfo)


def encode(message: Message, encoding: Encoding = "json") -> bytes:
    """Serialize *message*; the bytes are both published and stored in the stream."""
    if encoding == "json":
        return _json_encoder.encode(message)
    return _msgpack_encoder.encode(message)


def encoder_for(encoding: Encoding) -> msgspec.json.Encoder | msgspec.msgpack.Encoder:
    """The module's encoder for *encoding*, for hot loops that call ``.encode`` directly."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not one of {ENCODINGS}")
    return _json_encoder if encoding == "json" else _msgpack_encoder


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """Decode a payload of either encoding into its typed message.

    Raises ContractError (with the reason) for anything that is not a valid message.
    """
    if not payload:
        raise ContractError("empty payload")
    try:
        if payload[0] == _JSON_OPEN:
            message: Message = _json_decoder.decode(payload)
            return message
        message = _msgpack_decoder.decode(payload)
        return message
    except DECODE_ERRORS as exc:
        raise ContractError(f"undecodable payload ({exc}): {bytes(payload[:80])!r}") from exc


def encode_feed_info(info: FeedInfo) -> bytes:
    """Catalog entries are always JSON, so ``HGETALL`` stays readable."""
    return _json_encoder.encode(info)


def decode_feed_info(payload: bytes | str) -> FeedInfo:
    try:
        return _feed_info_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise ContractError(f"bad catalog entry ({exc}): {payload!r:.80}") from exc
