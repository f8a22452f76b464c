"""The peers' ARP/ND entries: which link each on-link peer resolves on, and the state of its
entry there. Facts only; what a state means for the route is nra.plan.peer_health's business."""

from __future__ import annotations

import asyncio
from typing import Iterable, Mapping

from nra.config.intent import IPAddress
from nra.kernel.codec import (
    AF,
    RTM_DELNEIGH,
    RTM_GETNEIGH,
    RTM_NEWNEIGH,
    Message,
    decode_neighbour,
)
from nra.kernel.model import NeighbourEntry
from nra.kernel.socket import NetlinkSocket


class Neighbours:
    """Reads the neighbour entries of the peers (one dump per family, of the peers' link
    when they share one: a node's pod interfaces are then not even sent)."""

    def __init__(self, sock: NetlinkSocket):
        self.sock = sock

    async def read_entries(self, links: Mapping[IPAddress, frozenset[int]]) -> dict[IPAddress, NeighbourEntry]:
        """Each peer's entry on its own link (state and link-layer address); a peer without
        one is absent. A dump interrupted by a change is still a usable snapshot: the change
        comes as an event."""
        return await asyncio.to_thread(self.read_blocking, dict(links))

    def read_blocking(self, links: Mapping[IPAddress, frozenset[int]]) -> dict[IPAddress, NeighbourEntry]:
        """read_entries(), in the calling thread (a worker thread: it blocks)."""
        wanted = by_packed(links)
        states: dict[IPAddress, NeighbourEntry] = {}

        def keep(message: Message) -> NeighbourEntry | None:
            if message.kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                return None
            return decode_neighbour(message, wanted)

        for version in sorted({a.version for a in links}):
            family_links = set().union(*(links[a] for a in links if a.version == version))
            ifindex = next(iter(family_links)) if len(family_links) == 1 else 0
            for entry in self.sock.dump(RTM_GETNEIGH, AF[version], keep, ifindex, True):
                for address in wanted[entry.address.packed]:
                    if entry.ifindex in links[address]:
                        states[address] = entry
        return states


def by_packed(addresses: Iterable[IPAddress]) -> dict[bytes, list[IPAddress]]:
    """Addresses by their bytes: a zoned link-local peer (fe80::1%eth0) and the kernel's entry
    for it (fe80::1 on eth0) meet there."""
    result: dict[bytes, list[IPAddress]] = {}
    for address in addresses:
        result.setdefault(address.packed, []).append(address)
    return result
