"""The `marketbus` command: produce, sim, tail, status, demo.

Each subcommand imports its machinery lazily, so `marketbus tail` and `marketbus status`
work on the light install (no ccxt). Errors marketbus raises on purpose, and errors Redis
answers with (a refused command, a lost connection), print one clear line and exit 2
(bad usage or configuration) or 1 (anything else), never a traceback.

``--redis`` defaults to ``MARKETBUS_REDIS_URL``, else the first line of the file
``MARKETBUS_REDIS_URL_FILE`` names (`marketbus.shared.config.redis_url_from`): a password
given there is not shown by ``ps``, as one on the command line is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

from redis.exceptions import NoPermissionError, RedisError

from marketbus.shared.config import (
    DEFAULT_REDIS_URL,
    REDIS_URL_ENV,
    REDIS_URL_FILE_ENV,
    RedisConfig,
    redis_url_from,
)
from marketbus.shared.errors import ConfigError, FeedNameError, MarketbusError
from marketbus.shared.names import DEFAULT_NS, check_part


class UsageError(ConfigError):
    """The command line is wrong in a way argparse cannot tell (exit 2)."""


def _redis_config(args: argparse.Namespace) -> RedisConfig:
    return RedisConfig(
        url=redis_url_from(args.redis), namespace=args.namespace, cluster=args.cluster
    )


def check_usage(args: argparse.Namespace) -> None:
    """UsageError for what the parser accepts but no run can mean."""
    repeated = sorted(e for e, n in Counter(getattr(args, "exchange", None) or []).items() if n > 1)
    if args.command == "produce" and repeated:
        raise UsageError(
            f"--exchange {repeated[0]} is given twice: one producer runs each exchange once"
        )
    namespace = getattr(args, "namespace", None)
    if namespace is not None:
        try:
            check_part("--namespace", namespace)
        except FeedNameError as exc:
            raise UsageError(str(exc)) from None


def _cmd_produce(args: argparse.Namespace) -> int:
    from marketbus.producer.config import ProducerConfig
    from marketbus.shared.config import load_config

    config = load_config(args.config, ProducerConfig)
    from marketbus.producer.process import run

    code: int = asyncio.run(run(config, args.exchange or None))
    return code


def _cmd_sim(args: argparse.Namespace) -> int:
    from marketbus.sim.server import serve

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.exchange, args.port, symbols, args.rate, args.seed))
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from marketbus.tail import tail

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(_redis_config(args), args.pattern, limit=args.count))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from marketbus.status_report import print_status

    asyncio.run(print_status(_redis_config(args)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from marketbus.demo import run_demo

    configured = args.redis is not None or any(
        os.environ.get(name) for name in (REDIS_URL_ENV, REDIS_URL_FILE_ENV)
    )
    url = redis_url_from(args.redis) if configured else None
    try:
        return asyncio.run(run_demo(duration_s=args.duration, redis_url=url))
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketbus", description="A market-data bus: ccxt.pro -> Redis -> strategies."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True)

    def redis_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--redis",
            default=None,
            help=f"Redis URL (default: ${REDIS_URL_ENV}, else the file ${REDIS_URL_FILE_ENV} "
            f"names, else {DEFAULT_REDIS_URL}); a password here shows in ps",
        )
        p.add_argument("--namespace", default=DEFAULT_NS, help="key namespace (default md)")
        p.add_argument(
            "--cluster",
            action="store_true",
            help="--redis is a node of a Redis Cluster (sharded pub/sub, Redis 7+)",
        )

    p = sub.add_parser("produce", help="run the producer for the exchanges of a config file")
    p.add_argument("--config", required=True, help="producer TOML file")
    p.add_argument(
        "--exchange", action="append", help="only this exchange id (repeatable; default: all)"
    )
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("sim", help="run the loopback exchange simulator")
    p.add_argument("exchange", help="binance, okx, kucoinfutures or bingx")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--symbols", default="BTC/USDT,ETH/USDT", help="comma-separated")
    p.add_argument("--rate", type=float, default=10.0, help="events per second per symbol")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("tail", help="print live messages of channels matching a pattern")
    p.add_argument("pattern", help="e.g. 'md:binance:*' or 'md:*:ticker:*'")
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    redis_options(p)
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("status", help="every producer's feeds, their age and errors")
    redis_options(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("demo", help="simulator + producer + consumer, live in the terminal")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    p.add_argument(
        "--redis",
        default=None,
        help=f"Redis URL (default: ${REDIS_URL_ENV}, else the file ${REDIS_URL_FILE_ENV} "
        "names, else start a private redis-server)",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def configure_logging(verbose: bool, as_json: bool) -> None:
    from marketbus.logs import configure

    configure(logging.DEBUG if verbose else logging.INFO, as_json=as_json)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.log_json)
    try:
        check_usage(args)
        code: int = args.func(args)
    except UsageError as exc:
        print(f"marketbus {args.command}: usage error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"marketbus: configuration error: {exc}", file=sys.stderr)
        return 2
    except MarketbusError as exc:
        print(f"marketbus: {exc}", file=sys.stderr)
        return 1
    except NoPermissionError as exc:
        print(
            f"marketbus {args.command}: Redis refused a command to this user ({exc}); "
            "use a user whose ACL allows it (deploy/users.acl: marketbus-ops reads everything)",
            file=sys.stderr,
        )
        return 1
    except RedisError as exc:
        print(
            f"marketbus {args.command}: Redis failed: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
