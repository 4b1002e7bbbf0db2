"""Wait on a condition with a deadline: the only synchronization tests use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 10.0,
    what: str = "condition",
    poll_s: float = 0.01,
) -> None:
    """Poll *condition* until true; fail the test naming *what* after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(poll_s)
