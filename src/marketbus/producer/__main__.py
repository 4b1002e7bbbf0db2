"""``python -m marketbus.producer --config FILE [--exchange ID ...]``: run one producer.

The same as ``marketbus produce`` without the rest of the CLI; used by process-level
tests (signals, kill -9, standby takeover) and handy under a process supervisor.
Exit codes: 0 stopped cleanly, 1 failed (FencedError included: another producer owns
the exchange), 2 bad configuration, 130 a second signal cut the shutdown short.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from marketbus.logs import configure
from marketbus.producer.config import ProducerConfig
from marketbus.producer.process import run
from marketbus.shared.config import load_config
from marketbus.shared.errors import ConfigError, MarketbusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketbus.producer")
    parser.add_argument("--config", required=True, help="producer TOML file")
    parser.add_argument("--exchange", action="append", help="run only this exchange id")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--log-json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    configure(getattr(logging, args.log_level), as_json=args.log_json)
    try:
        config = load_config(args.config, ProducerConfig)
        return asyncio.run(run(config, args.exchange))
    except ConfigError as exc:
        print(f"marketbus producer: configuration error: {exc}", file=sys.stderr)
        return 2
    except MarketbusError as exc:
        print(f"marketbus producer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
