"""`fed`: socket reads go to hiredis a slice at a time, and no reply is lost or split."""

from __future__ import annotations

from typing import Any

import hiredis
from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared.resp import pack_command
from marketbus.shared.transport.connection import FEED_SLICE_BYTES, fed

PAYLOADS = st.lists(
    st.one_of(st.binary(max_size=300), st.binary(min_size=FEED_SLICE_BYTES, max_size=30_000)),
    max_size=20,
)


def pubsub_messages(payloads: list[bytes]) -> bytes:
    """As Redis sends them: ["message", channel, payload] arrays (the RESP of a command)."""
    return b"".join(pack_command("message", f"c{i}", p) for i, p in enumerate(payloads))


def replies_of(reads: list[bytes]) -> list[Any]:
    reader = hiredis.Reader()
    replies = []
    for data in reads:
        for _ in fed(reader, data):
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    assert not reader.has_data()
    return replies


@given(PAYLOADS, st.integers(min_value=0, max_value=100_000))
def test_every_reply_comes_out_whole_and_in_order_wherever_the_reads_split(
    payloads: list[bytes], cut: int
) -> None:
    data = pubsub_messages(payloads)
    cut = min(cut, len(data))
    expected = [[b"message", f"c{i}".encode(), p] for i, p in enumerate(payloads)]
    assert replies_of([data]) == expected
    assert replies_of([data[:cut], data[cut:]]) == expected


def test_a_read_is_fed_in_slices_of_at_most_feed_slice_bytes() -> None:
    fed_sizes: list[int] = []

    class Recording:
        def feed(self, data: bytes, offset: int, length: int) -> None:
            fed_sizes.append(length)

    data = bytes(2 * FEED_SLICE_BYTES + 5)
    assert sum(1 for _ in fed(Recording(), data)) == 3  # type: ignore[arg-type]
    assert fed_sizes == [FEED_SLICE_BYTES, FEED_SLICE_BYTES, 5]
    assert list(fed(Recording(), b"")) == []  # type: ignore[arg-type]
