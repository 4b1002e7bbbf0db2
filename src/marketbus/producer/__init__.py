"""The producer: ccxt.pro watch loops -> normalized messages -> Redis (pub/sub + streams).

`Producer` runs in-process (tests, ``marketbus demo``); `run` is the CLI entry point.
The core (normalize, candles, feeds, sequencing, outbox, stats) is pure; watch loops,
the lease and its store, the transports and the publisher are the thin asyncio shell
around it. Only this package imports ccxt, and only when `Producer` or `run` is used:
`marketbus status` reads `marketbus.producer.stats` on the light install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from marketbus.producer.process import Producer, run

__all__ = ["Producer", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from marketbus.producer import process

        return getattr(process, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
