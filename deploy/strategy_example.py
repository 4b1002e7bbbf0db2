"""Example strategy for the compose deployment: print each ticker's last price.

It shows the deployment side of a strategy, not the consumer SDK: credentials come
from the environment (``MARKETBUS__REDIS__URL``, as in consumer.env), it logs in as
the read-only ``marketbus-consumer`` ACL user, subscribes to a pattern and decodes
each payload with `marketbus.shared.codecs.decode`. A real strategy uses the consumer
SDK, which adds history backfill, dedupe and gap repair on top of the same login.

    python strategy_example.py --pattern 'md:*' [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import msgspec

from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig, build_config
from marketbus.shared.connection import connect, redact
from marketbus.shared.errors import ContractError, MarketbusError
from marketbus.shared.schema import Ticker

log = logging.getLogger("strategy_example")


class StrategyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Only ``[redis]``, filled from ``MARKETBUS__REDIS__*`` environment variables."""

    redis: RedisConfig = RedisConfig()


async def run(pattern: str, count: int | None) -> int:
    """Print ``feed last bid ask`` for ticker messages; stop after *count* messages."""
    config = build_config(StrategyConfig, {}, source="environment").redis
    redis = await connect(config)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.psubscribe(pattern)
        log.info("subscribed to %s at %s", pattern, redact(config.url))
        seen = 0
        while count is None or seen < count:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            seen += 1
            try:
                decoded = decode(message["data"])
            except ContractError as exc:
                log.warning("skipping undecodable payload: %s", exc)
                continue
            if isinstance(decoded, Ticker):
                feed = message["channel"].decode()
                print(f"{feed} last={decoded.last} bid={decoded.bid} ask={decoded.ask}")
            sys.stdout.flush()
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pattern", default="md:*", help="PSUBSCRIBE pattern (ACL: &md:*)")
    parser.add_argument("--count", type=int, default=None, help="stop after N messages")
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
