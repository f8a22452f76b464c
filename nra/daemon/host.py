"""Host settings nra depends on, checked (and set) at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loguru import logger

from nra.kernel.socket import in_netns

MULTIPATH_USE_NEIGH = "net.ipv4.fib_multipath_use_neigh"


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_and_set_sysctl(netns: str | None, key: str, value: str, set_it: bool) -> tuple[str, str]:
    """The sysctl's value in `netns` before and after setting it to `value` (if `set_it` and
    it differs). /proc/sys/net shows the namespace of the thread that opens it, so this runs
    in a thread that joined the namespace (no `ip netns exec sysctl` process)."""
    def work() -> tuple[str, str]:
        path = _sysctl_path(key)
        before = current = path.read_text().strip()
        if current != value and set_it:
            path.write_text(value + "\n")
            current = path.read_text().strip()
        return before, current

    return in_netns(netns, work)


async def check_multipath_use_neigh(netns: str | None, set_it: bool) -> None:
    """ECMP must skip peers whose neighbour entry failed, or a dead router keeps its share of
    flows: net.ipv4.fib_multipath_use_neigh=1. Set it, or warn."""
    try:
        before, value = await asyncio.to_thread(read_and_set_sysctl, netns, MULTIPATH_USE_NEIGH, "1", set_it)
        if before != value:
            logger.info("set {}=1 so ECMP avoids peers whose neighbour entry failed", MULTIPATH_USE_NEIGH)
    except OSError as exc:
        logger.warning("could not check/set {}: {}; set it to 1 on the node so a dead peer stops receiving "
                       "its share of replies", MULTIPATH_USE_NEIGH, exc.strerror or exc)
        return
    if value != "1":
        logger.warning("{}={}: ECMP keeps sending replies to a dead peer until BGP drops it; set it to 1",
                       MULTIPATH_USE_NEIGH, value)
