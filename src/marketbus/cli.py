"""The `marketbus` command: produce, sim, tail, status, demo, record, replay.

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

import msgspec
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


def _redis_url_in_env() -> bool:
    """True when the environment names a Redis URL (`redis_url_from` would use it)."""
    return any(os.environ.get(name) for name in (REDIS_URL_ENV, REDIS_URL_FILE_ENV))


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


def _cmd_record(args: argparse.Namespace) -> int:
    import signal

    from marketbus.archive.options import RecordFile, RecordOptions
    from marketbus.archive.recorder import Recorder
    from marketbus.shared.config import build_config, load_config

    flags = {
        key: value
        for key, value in (
            ("feeds", args.feeds),
            ("out", args.out),
            ("roll_s", args.roll_s),
            ("file_rows", args.file_rows),
            ("max_buffered_rows", args.max_buffered_rows),
        )
        if value is not None
    }
    if args.config:
        file = load_config(args.config, RecordFile)
        record_data = msgspec.structs.asdict(file.record) | flags
        options = build_config(RecordOptions, record_data, environ={}, source=args.config)
    else:
        file = build_config(RecordFile, {"record": flags}, source="command line")
        options = file.record
    redis = file.redis  # the config file's [redis], with MARKETBUS__REDIS__* overrides
    if args.redis is not None or _redis_url_in_env():
        redis = msgspec.structs.replace(file.redis, url=redis_url_from(args.redis))

    async def record() -> None:
        recorder = Recorder(redis, options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, recorder.stop)
        stats = await recorder.run(until_idle=args.exit_when_idle)
        print(f"recorded: {stats}")

    asyncio.run(record())
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from marketbus.archive.options import ReplayOptions, parse_time_ms
    from marketbus.archive.replay import replay

    options = ReplayOptions(
        source=args.source,
        namespace=args.namespace,
        speed=None if args.fast else args.speed,
        start_ms=parse_time_ms(args.start, "--start") if args.start else None,
        end_ms=parse_time_ms(args.end, "--end") if args.end else None,
        feeds=args.feeds,
        skip_bad_files=args.skip_bad_files,
    )
    redis = RedisConfig(url=redis_url_from(args.redis), namespace=args.namespace)
    with contextlib.suppress(KeyboardInterrupt):
        stats = asyncio.run(replay(redis, options, replace=args.replace))
        print(f"replayed {stats.messages} messages of {stats.feeds} feeds in {stats.seconds:.2f}s")
    return 0


def _add_archive_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``record`` and ``replay`` (the ``record`` extra: pyarrow)."""
    p = sub.add_parser("record", help="record feeds from their streams into a Parquet archive")
    p.add_argument("--config", help="TOML file with a [record] section (and [redis])")
    p.add_argument(
        "--redis",
        default=None,
        help=f"Redis URL (default: {REDIS_URL_ENV}, the config file's, {DEFAULT_REDIS_URL})",
    )
    p.add_argument(
        "--feeds", action="append", help="stream pattern, e.g. 'md:binance:*' (repeatable)"
    )
    p.add_argument("--out", help="archive directory")
    p.add_argument("--roll-s", type=float, help="write each feed at least this often")
    p.add_argument("--file-rows", type=int, help="write a feed once it holds this many rows")
    p.add_argument("--max-buffered-rows", type=int, help="memory bound, all feeds together")
    p.add_argument(
        "--exit-when-idle", action="store_true", help="stop once every stream is read to its end"
    )
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("replay", help="publish an archive onto a namespace, as a producer would")
    p.add_argument("--from", dest="source", required=True, help="archive directory")
    p.add_argument("--redis", default=None, help=f"Redis URL (default: {DEFAULT_REDIS_URL})")
    p.add_argument("--namespace", required=True, help="target namespace, e.g. bt")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="x real time (default 1)")
    pace.add_argument("--fast", action="store_true", help="as fast as Redis takes it")
    p.add_argument("--start", help="ISO time, inclusive (UTC unless a zone is given)")
    p.add_argument("--end", help="ISO time, exclusive")
    p.add_argument("--feeds", default="*", help="glob over recorded feed names")
    p.add_argument("--replace", action="store_true", help="delete existing target streams")
    p.add_argument("--skip-bad-files", action="store_true", help="log and skip corrupt files")
    p.set_defaults(func=_cmd_replay)


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

    _add_archive_commands(sub)
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
