"""``python -m marketbus.producer --config FILE [--exchange ID ...]``: run one producer.

The same as ``marketbus produce`` without the rest of the CLI; used by process-level
tests (signals, kill -9) and handy under a process supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from marketbus.producer.process import run
from marketbus.shared.config import ProducerConfig, load_config
from marketbus.shared.errors import MarketbusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketbus.producer")
    parser.add_argument("--config", required=True, help="producer TOML file")
    parser.add_argument("--exchange", action="append", help="run only this exchange id")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config, ProducerConfig)
        return asyncio.run(run(config, args.exchange))
    except MarketbusError as exc:
        print(f"marketbus producer: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
