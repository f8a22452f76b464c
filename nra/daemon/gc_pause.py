"""The cyclic garbage collector paused from reading a changed configuration to the end of the
reconcile that brings it to the kernel.

At 100,000 prefixes the daemon holds a million objects or more; a collection that comes due
while a change is on its way (a young one, and now and then a full pass over all of them,
tens to hundreds of milliseconds) delays that change. Nothing the change allocates is in a
cycle that must be freed at once, so the collector waits until the reconcile is over
(Agent._reconciled releases it first thing) and then runs as it would have. The static file's
read holds it (Agent._loading, the source's `loading` context). It never waits longer than
MAX_HOLD_S: a read that publishes nothing or a change that needs no reconcile (the same
intent) releases it at once, and a timer releases it anyway.
"""

from __future__ import annotations

import asyncio
import gc

#: the longest the collector stays paused for one change
MAX_HOLD_S = 2.0

_held = False
_timer: asyncio.TimerHandle | None = None


def hold() -> None:
    """Pause the collector (when it runs and is not already held) until release()."""
    global _held, _timer
    if _held or not gc.isenabled():
        return
    gc.disable()
    _held = True
    try:
        _timer = asyncio.get_running_loop().call_later(MAX_HOLD_S, release)
    except RuntimeError:  # no loop (a one-off read): the caller releases it
        _timer = None


def release() -> None:
    """Let the collector run again, if hold() paused it."""
    global _held, _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None
    if _held:
        _held = False
        gc.enable()


def held() -> bool:
    return _held
