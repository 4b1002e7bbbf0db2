"""The producer: ccxt.pro watch loops -> normalized messages -> Redis (pub/sub + streams).

`Producer` runs in-process (tests, ``marketbus demo``); `run` is the CLI entry point.
The core (normalize, candles, sequencing, outbox) is pure; watch loops and the
publisher are the thin asyncio shell around it. Only this package imports ccxt.
"""

from marketbus.producer.process import Producer, run

__all__ = ["Producer", "run"]
