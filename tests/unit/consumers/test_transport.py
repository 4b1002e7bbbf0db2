"""Transport bookkeeping without a server: what is handed over, what is remembered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from marketbus.consumers.engine import Live
from marketbus.consumers.transport import ShardedPubSubTransport, hand_over
from marketbus.shared.config import RedisConfig

A, B = "md:binance:trades:A/USDT", "md:binance:trades:B/USDT"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        for channel, _pattern, payload in batch:
            name = channel.decode() if isinstance(channel, bytes) else channel
            self.events.append((name, payload.decode()))

    def on_subscribed(self, channel: str) -> None:
        self.events.append((channel, "SUBSCRIBED"))

    def on_psubscribed(self, pattern: str) -> None:
        self.events.append((pattern, "PSUBSCRIBED"))


class EmptyCatalogCluster:
    """Stands in for a `RedisCluster` whose catalog is empty (nothing else is asked)."""

    async def hscan_iter(self, key: str) -> AsyncIterator[tuple[bytes, bytes]]:
        for item in ():
            yield item


def test_a_pattern_confirmation_before_its_first_message_is_reported_once() -> None:
    sink = Recorder()
    patterns = {b"md:*": "md:*"}
    hand_over([(A.encode(), b"md:*", b"1"), (B.encode(), b"md:*", b"2")], sink, {}, patterns)
    assert sink.events == [("md:*", "PSUBSCRIBED"), (A, "1"), (B, "2")] and not patterns


async def test_unsubscribed_channels_are_remembered_only_while_a_pattern_covers_them() -> None:
    """Feeds coming and going leave nothing behind unless a pattern would bring them back."""
    cluster: Any = EmptyCatalogCluster()
    transport = ShardedPubSubTransport(
        RedisConfig(url="redis://127.0.0.1:1/0"), cluster, namespace="md"
    )
    try:
        for i in range(500):
            await transport.unsubscribe([f"md:okx:trades:C{i}/USDT"])
        assert transport.excluded == frozenset()
        await transport.psubscribe(["md:binance:*"])
        await transport.unsubscribe([A, "md:okx:trades:X/USDT"])
        assert transport.excluded == {A}
    finally:
        await transport.close()
