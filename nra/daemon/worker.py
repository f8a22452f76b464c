"""The trigger loop: triggers mark work as pending and wake one worker, which reconciles
everything pending at once.

A configuration change, netlink drift, the timer, a retry or SIGHUP only add a reason to
the pending set; the worker waits a few milliseconds to merge a burst of netlink events,
then runs one reconcile. So reconciles never overlap and a storm of events costs one
reconcile, not one each. While degraded (a peer unusable, a change failed) it retries on
its own, backing off.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from nra.daemon.reconciler import Outcome

# Merge netlink triggers that arrive within this window into one reconcile.
COALESCE_S = 0.01
# While degraded, reconcile again after RETRY_S, doubling up to RETRY_MAX_S. Netlink events
# (link, neighbour) still trigger at once.
RETRY_S = 1.0
RETRY_MAX_S = 30.0


class Worker:
    def __init__(self, reconcile: Callable[[str], Awaitable[Outcome]],
                 finished: Callable[[set[str], Outcome], None] = lambda triggers, outcome: None):
        self._reconcile = reconcile
        self._finished = finished
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._retry: asyncio.Task | None = None
        self._retry_delay = RETRY_S
        self._hold: asyncio.Task | None = None
        self.last_outcome: Outcome | None = None

    def trigger(self, why: str) -> None:
        self._pending.add(why)
        self._wake.set()

    def trigger_later(self, why: str, delay_s: float) -> asyncio.Task:
        return asyncio.create_task(self._later(why, delay_s))

    async def _later(self, why: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.trigger(why)

    def _recheck(self, delay_s: float) -> None:
        """One pending "hold" reconcile at a time: a later one replaces it."""
        if self._hold is not None:
            self._hold.cancel()
        self._hold = self.trigger_later("hold", delay_s)

    async def run(self) -> None:
        """Never returns (until cancelled)."""
        try:
            while True:
                await self._wake.wait()
                if "config" not in self._pending:
                    # netlink events come in bursts (one per rule or route); a configuration
                    # change was already debounced by its source and goes at once
                    await asyncio.sleep(COALESCE_S)
                self._wake.clear()
                triggers, self._pending = self._pending, set()
                outcome = await self._reconcile("+".join(sorted(triggers)) or "unknown")
                self.last_outcome = outcome
                self._finished(triggers, outcome)
                if outcome.recheck_in_s is not None:  # a liveness hold time runs out then
                    self._recheck(outcome.recheck_in_s)
                if outcome.degraded or not outcome.ok:
                    # A peer unusable now (link down, address not yet back, no ARP answer) or
                    # a failed change: retry soon rather than at the next timer tick, backing
                    # off so a long outage does not cost a full kernel read every second.
                    if self._retry is None or self._retry.done():
                        self._retry = self.trigger_later("retry", self._retry_delay)
                        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
                else:
                    self._retry_delay = RETRY_S
        finally:
            for task in (self._retry, self._hold):
                if task is not None:
                    task.cancel()
