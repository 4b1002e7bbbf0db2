"""A private loopback redis-server for one benchmark run (never the shared 6379)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.redis_process import RedisProcess

BENCH_OPTIONS = {
    # Subscriber benchmarks let a backlog build up on purpose: never cut it off.
    "--client-output-buffer-limit": "pubsub 0 0 0",
    "--maxmemory": "0",
}
BENCH_ARGS = [arg for option in BENCH_OPTIONS.items() for arg in option]


@contextmanager
def redis_server() -> Iterator[RedisProcess]:
    """Start a private redis-server; always stopped, even if the benchmark fails."""
    with tempfile.TemporaryDirectory(prefix="marketbus-bench-") as tmp:
        server = RedisProcess(Path(tmp), extra_args=BENCH_ARGS)
        server.start()
        try:
            yield server
        finally:
            server.stop()
