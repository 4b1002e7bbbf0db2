"""Logging setup for marketbus processes: readable lines, or one JSON object per line."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

_json = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """One JSON object per record (ts, level, logger, msg, and exc when present)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _json.encode(entry).decode()


def configure(level: int = logging.INFO, *, as_json: bool = False) -> None:
    """Route marketbus logs to stderr; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("ccxt", "asyncio", "aiohttp.access", "redis"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
