"""Example strategy for the compose deployment: print each ticker's last price.

It follows the bus with the consumer SDK, as a real strategy does: credentials come
from the environment (``MARKETBUS__REDIS__URL`` as in consumer.env, and
``MARKETBUS__REDIS__CLUSTER=true`` on a Redis Cluster), it logs in as the read-only
``marketbus-consumer`` ACL user, and `Subscriber.subscribe_pattern` follows every
matching feed: backfilled from its stream, deduplicated, gap-repaired and resumed
after reconnects. Gaps that cannot be repaired and stale feeds are logged.

    python strategy_example.py --pattern 'md:*' [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import msgspec

from marketbus.consumers import Gap, Staleness, Subscriber, Ticker
from marketbus.shared.config import RedisConfig, build_config
from marketbus.shared.errors import MarketbusError
from marketbus.shared.names import feed_name
from marketbus.shared.urls import redact

log = logging.getLogger("strategy_example")


class StrategyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Only ``[redis]``, filled from ``MARKETBUS__REDIS__*`` environment variables."""

    redis: RedisConfig = RedisConfig()


async def run(pattern: str, count: int | None) -> int:
    """Print ``feed last bid ask`` for ticker updates; stop after *count* of them."""
    config = build_config(StrategyConfig, {}, source="environment").redis
    async with Subscriber(config, candles=100, trades=1_000) as sub:
        feeds = await sub.subscribe_pattern(pattern)
        log.info("following %s at %s (%d feed(s) so far)", pattern, redact(config.url), len(feeds))
        seen = 0
        async for event in sub:
            match event:
                case Ticker(symbol=str(symbol)):
                    feed = feed_name(sub.namespace, event.exchange, "ticker", symbol)
                    print(f"{feed} last={event.last} bid={event.bid} ask={event.ask}", flush=True)
                    seen += 1
                    if count is not None and seen >= count:
                        break
                case Gap():
                    log.warning("gap on %s: %s %s", event.feed, event.reason, event.detail)
                case Staleness(stale=True):
                    log.warning("%s is stale: %s %s", event.feed, event.reason, event.detail)
        log.info("stats: %s", sub.stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pattern", default="md:*", help="feed name glob (ACL: &md:*)")
    parser.add_argument("--count", type=int, default=None, help="stop after N ticker updates")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return asyncio.run(run(args.pattern, args.count))
    except MarketbusError as exc:
        print(f"strategy_example: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
