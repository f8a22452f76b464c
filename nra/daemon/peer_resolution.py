"""Silent peers are resolved again, at a bounded rate, so a router that is back is seen.

nra.plan.peer_health keeps a peer whose ARP/ND entry FAILED out of the route until its entry is
valid again, also when the kernel's neighbour GC drops that entry meanwhile. But out of the
route, nothing on the node sends to it any more (only the node's BGP speaker might, if it
retries), so its entry would stay FAILED, or gone, after the router is back, and the peer
out for good. This task starts their resolution again: woken by a neighbour event or a
reconcile, it waits RESOLVE_INTERVAL_S, then asks the kernel to resolve every peer that
PeerHealth.to_resolve lists (SILENT by its entry, entry FAILED or gone; how: one netlink
message per peer, see nra.kernel.peer_neighbours), and again every RESOLVE_INTERVAL_S while
there are such peers. So a dead router costs at most one resolution (the kernel's few ARP
requests or neighbour solicitations) per RESOLVE_INTERVAL_S, and a router that is back
answers the next one: its entry turns valid, and that neighbour event puts it back.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping

from loguru import logger

from nra.config.intent import IPAddress
from nra.kernel.protocol import KERNEL_ERRORS
from nra.observe import metrics

#: the least time between two resolutions of a silent peer; the kernel re-probes a managed
#: entry as often (interval_probe_time_ms, 5 s by default)
RESOLVE_INTERVAL_S = 5.0

ToResolve = Callable[[], Mapping[IPAddress, "str | None"]]
Resolve = Callable[[Mapping[IPAddress, "str | None"]], Awaitable[list[str]]]


class PeerResolution:
    def __init__(self, to_resolve: ToResolve, resolve: Resolve, interval_s: float = RESOLVE_INTERVAL_S):
        """to_resolve: the silent peers to resolve now (PeerHealth.to_resolve); resolve: starts
        their resolution and returns warnings (KernelAdapter.resolve_peers)."""
        self.to_resolve = to_resolve
        self.resolve = resolve
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._last_warnings: tuple[str, ...] = ()

    def wake(self) -> None:
        """Something may have changed which peers to resolve: look again (after the interval)."""
        self._wake.set()

    async def run(self) -> None:
        """Never returns (until cancelled). A bug is logged and ends the task: the rest of the
        agent keeps working (a returned router then waits for the BGP speaker's traffic)."""
        try:
            await self._run()
        except Exception as exc:  # (not a cancellation: that is no Exception)
            metrics.unexpected_error("peer-resolution")
            logger.opt(exception=exc).error("silent peers are no longer resolved again: {}: {}",
                                            type(exc).__name__, exc)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval_s)  # the bound on the rate, per peer
            self._wake.clear()
            peers = dict(self.to_resolve())
            if not peers:
                continue
            logger.debug("resolving silent peers again: {}", ", ".join(str(a) for a in sorted(peers, key=str)))
            try:
                warnings = tuple(await self.resolve(peers))
            except KERNEL_ERRORS as exc:  # the next round tries again
                warnings = (f"resolution of silent peers not started: {exc}",)
            for warning in warnings:
                if warning not in self._last_warnings:
                    logger.warning(warning)
            self._last_warnings = warnings
            self._wake.set()  # the next round, while any are left
