"""The one way tests wait: for a fact, polled until it holds or the time is up.

`wait_for` polls a predicate from plain code; `wait_for_async` does the same inside a
running event loop (the predicate may be a coroutine function), so the loop keeps running
while it waits; given `wake` (an asyncio.Event its producer sets on each change), it looks
again on each change instead of polling. Both return the predicate's first truthy value and fail naming `what` and
the last value seen. Never a fixed sleep as a barrier: wait for what the barrier stands for.

`holds` and `holds_async` are the other half: a fact that must stay true for a while (nothing
happens within a hold time, a last good state is kept). They look at it throughout the window,
not once at its end, and fail at the first moment it is false.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

INTERVAL = 0.02


def _watch(predicate: Callable[[], Any], seconds: float, interval: float, until_true: bool) -> Any:
    """Look at `predicate` every `interval` for `seconds`; stop early at the first value whose
    truth is `until_true`. Returns the last value seen."""
    deadline = time.monotonic() + seconds
    while True:
        last = predicate()
        if bool(last) == until_true or time.monotonic() >= deadline:
            return last
        time.sleep(interval)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = INTERVAL,
             what: str = "condition") -> Any:
    last = _watch(predicate, timeout, interval, until_true=True)
    if not last:
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
    return last


def holds(predicate: Callable[[], Any], seconds: float, interval: float = INTERVAL, what: str = "condition") -> None:
    last = _watch(predicate, seconds, interval, until_true=False)
    if not last:
        raise AssertionError(f"{what} stopped holding within {seconds} s (last: {last!r})")


async def _watch_async(predicate: Callable[[], Any], seconds: float, interval: float, until_true: bool,
                       wake: asyncio.Event | None = None) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        if wake is not None:
            wake.clear()
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        left = deadline - time.monotonic()
        if bool(last) == until_true or left <= 0:
            return last
        if wake is None:
            await asyncio.sleep(interval)
        else:
            try:
                await asyncio.wait_for(wake.wait(), left)
            except asyncio.TimeoutError:
                pass


async def wait_for_async(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = INTERVAL,
                         what: str = "condition", wake: asyncio.Event | None = None) -> Any:
    last = await _watch_async(predicate, timeout, interval, True, wake)
    if not last:
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
    return last


async def holds_async(predicate: Callable[[], Any], seconds: float, interval: float = INTERVAL,
                      what: str = "condition") -> None:
    last = await _watch_async(predicate, seconds, interval, False)
    if not last:
        raise AssertionError(f"{what} stopped holding within {seconds} s (last: {last!r})")
