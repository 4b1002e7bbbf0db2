"""What an operator sees of a running producer: Prometheus metrics, heartbeats with
per-feed stats, and ``marketbus status`` built from Redis alone."""

from __future__ import annotations

import io

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from marketbus.producer import Producer
from marketbus.producer.stats import parse_heartbeat
from marketbus.shared.config import RedisConfig
from marketbus.shared.schema import Status
from marketbus.sim import SimServer
from marketbus.status_report import print_status
from tests.integration.producer.conftest import SYMBOLS, messages, producer_config
from tests.support.waiting import wait_until

KINDS = ("ohlcv.1s", "ticker", "trades")


async def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name: ``{name: [(labels, value), ...]}``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def test_metrics_heartbeats_and_status_show_every_feed(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(redis_url, binance_sim, kinds=KINDS, metrics_port=0, heartbeat_s=0.3)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with Producer(config) as producer:
            port = producer.metrics_port
            assert port
            names = [f.name for f in producer.feeds]
            await wait_until(
                lambda: all(
                    producer.stats[n].published > 2 and producer.stats[n].state == "connected"
                    for n in names
                ),
                what="every feed live",
            )

            metrics = await scrape(port)
            published = {
                labels["feed"]: (labels["kind"], labels["exchange"], value)
                for labels, value in metrics["marketbus_producer_messages_published_total"]
            }
            for name in names:
                kind, exchange, value = published[name]
                assert (kind, exchange) == (name.split(":")[2], "binance") and value > 0
            assert published["md:binance:status"][0] == "status"
            latency = {
                labels.get("le"): value
                for labels, value in metrics["marketbus_producer_publish_latency_seconds_bucket"]
            }
            count = metrics["marketbus_producer_publish_latency_seconds_count"][0][1]
            assert count > 0 and latency["+Inf"] == count
            assert metrics["marketbus_producer_queue_depth"][0][1] >= 0
            assert metrics["marketbus_producer_lease_held"][0][1] == 1
            ages = {
                labels["feed"]: v
                for labels, v in metrics["marketbus_producer_last_message_age_seconds"]
            }
            assert all(0 <= ages[n] < 5 for n in names), ages
            connected = {
                labels["feed"]: v for labels, v in metrics["marketbus_producer_feed_connected"]
            }
            assert all(connected[n] == 1 for n in names), connected
            for counter in ("messages_dropped", "reconnects", "errors"):
                samples = metrics[f"marketbus_producer_{counter}_total"]
                assert {labels["feed"] for labels, _ in samples} >= set(names)

            async def heartbeat_with_stats() -> bool:
                # The newest heartbeat may predate the wait above: a candle feed has
                # published its backfill (msgs > 0) while still "starting". `print_status`
                # reads the newest heartbeat, so wait for one taken with every feed live.
                for event in reversed(await messages(redis, "md:binance:status", newest=20)):
                    if isinstance(event, Status) and event.event == "heartbeat":
                        beat = parse_heartbeat(event.detail)
                        return beat is not None and all(
                            beat.feeds[n.split(":", 2)[2]].msgs > 0
                            and beat.feeds[n.split(":", 2)[2]].state == "connected"
                            for n in names
                        )
                return False

            await wait_until(
                heartbeat_with_stats, what="a heartbeat with every feed connected and its stats"
            )
            out = io.StringIO()
            await print_status(RedisConfig(url=redis_url), out)
            report = out.getvalue()
            assert f"lease held by {producer.holder}" in report
        for name in names:
            row = next(line.split() for line in report.splitlines() if line.startswith(name))
            assert row[4] == "connected" and int(row[5]) > 0, report
        assert f"{len(names)} feed(s)" in report
        for symbol in SYMBOLS:
            assert f"md:binance:ticker:{symbol}" in report
    finally:
        await redis.aclose()
