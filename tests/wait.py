"""The one way tests wait: for a fact, polled until it holds or the time is up.

`wait_for` polls a predicate from plain code; `wait_for_async` does the same inside a
running event loop (the predicate may be a coroutine function), so the loop keeps running
while it waits; given `wake` (an asyncio.Event its producer sets on each change), it looks
again on each change instead of polling. Both return the predicate's first truthy value and fail naming `what` and
the last value seen. Never a fixed sleep as a barrier: wait for what the barrier stands for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

INTERVAL = 0.02


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = INTERVAL,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if not last:
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
    return last


async def wait_for_async(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = INTERVAL,
                         what: str = "condition", wake: asyncio.Event | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if wake is not None:
            wake.clear()
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        left = deadline - time.monotonic()
        if last or left <= 0:
            break
        if wake is None:
            await asyncio.sleep(interval)
        else:
            try:
                await asyncio.wait_for(wake.wait(), left)
            except asyncio.TimeoutError:
                pass
    if not last:
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
    return last
