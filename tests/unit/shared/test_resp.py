"""marketbus.shared.resp: commands packed to RESP2 bytes, checked by parsing them back."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from marketbus.shared.resp import (
    FeedCommands,
    bulk_header,
    entry_id,
    is_xadd_id_error,
    pack_command,
    pack_commands,
)


def parse_all(data: bytes) -> list[Any]:
    """A RESP request is an array of bulk strings: hiredis reads it back like a reply."""
    reader = hiredis.Reader()
    reader.feed(data)
    commands = []
    while (command := reader.gets()) is not False:
        commands.append(command)
    assert not reader.has_data()
    return commands


def test_pack_command_is_an_array_of_bulk_strings() -> None:
    assert pack_command("PUBLISH", "chan", b"hi") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nchan\r\n$2\r\nhi\r\n"
    )


def test_pack_command_encodes_str_as_utf8_and_numbers_as_repr() -> None:
    data = pack_command("SET", "k\u00e9", 12, 1.5, bytearray(b"x"), memoryview(b"yz"))
    assert parse_all(data) == [[b"SET", "k\u00e9".encode(), b"12", b"1.5", b"x", b"yz"]]


def test_pack_command_keeps_binary_payloads_verbatim() -> None:
    payload = bytes(range(256)) + b"\r\n$3\r\n"
    assert parse_all(pack_command("PUBLISH", "c", payload)) == [[b"PUBLISH", b"c", payload]]


def test_pack_command_rejects_bool_empty_and_unknown_types() -> None:
    with pytest.raises(TypeError, match="bool"):
        pack_command("SET", "k", True)
    with pytest.raises(TypeError, match="list"):
        pack_command("SET", "k", [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        pack_command()


def test_pack_commands_concatenates_a_pipeline() -> None:
    data = pack_commands([("PING",), ("SELECT", 2)])
    assert parse_all(data) == [[b"PING"], [b"SELECT", b"2"]]


def test_bulk_header_beyond_the_cache_and_negative() -> None:
    assert bulk_header(0) == b"$0\r\n"
    assert bulk_header(4095) == b"$4095\r\n"
    assert bulk_header(1_000_000) == b"$1000000\r\n"
    with pytest.raises(ValueError):
        bulk_header(-1)


def test_entry_id_is_run_dash_seq() -> None:
    assert entry_id(1_790_000_000_000, 7) == b"1790000000000-7"


def test_feed_commands_publish_xadd_follows_the_spec_entry_layout() -> None:
    feed = "md:kucoinfutures:ticker:BTC/USDT:USDT"
    payload = b'{"type":"ticker"}' * 300  # longer than the cached bulk headers
    out: list[bytes] = []
    commands = FeedCommands(feed, 10_000)
    commands.append_publish_xadd(out, commands.entry_id(1_790_000_000_000, 42), payload)
    assert parse_all(b"".join(out)) == [
        [b"PUBLISH", feed.encode(), payload],
        [b"XADD", feed.encode(), b"MAXLEN", b"~", b"10000", b"1790000000000-42", b"d", payload],
    ]


def test_feed_commands_single_commands_and_a_new_run() -> None:
    commands = FeedCommands("md:okx:trades:ETH/USDT", 5)
    out: list[bytes] = []
    commands.append_xadd(out, commands.entry_id(1, 1), b"a")
    commands.append_xadd(out, commands.entry_id(2, 9), b"b")
    commands.append_publish(out, b"c")
    assert parse_all(b"".join(out)) == [
        [b"XADD", b"md:okx:trades:ETH/USDT", b"MAXLEN", b"~", b"5", b"1-1", b"d", b"a"],
        [b"XADD", b"md:okx:trades:ETH/USDT", b"MAXLEN", b"~", b"5", b"2-9", b"d", b"b"],
        [b"PUBLISH", b"md:okx:trades:ETH/USDT", b"c"],
    ]


def test_feed_commands_rejects_a_non_positive_cap() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        FeedCommands("md:okx:trades:ETH/USDT", 0)


def test_is_xadd_id_error_recognises_redis_text() -> None:
    assert is_xadd_id_error(
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    )
    assert not is_xadd_id_error("WRONGTYPE Operation against a key holding the wrong kind")
