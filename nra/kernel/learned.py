"""Routes the node's routing daemons installed (learned over BGP, say), counted by gateway:
the facts behind learned-route liveness. What they mean for a peer is nra.peer_health's
business; the routes themselves are the daemons', never touched here."""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

from pyroute2.iproute.linux import AsyncIPRoute

from nra.intent import IPAddress


def gateways_of(msg) -> set[bytes]:
    """The packed gateway addresses of a pyroute2 route message: its gateway or via (an IPv4
    route through an IPv6 nexthop), or those of each hop of a multipath route."""
    hops = msg.get("RTA_MULTIPATH") or [msg]
    found = set()
    for hop in hops:
        gateway = hop.get("RTA_GATEWAY")
        via = hop.get("RTA_VIA")
        if via and not gateway:
            gateway = via.get("addr") if isinstance(via, dict) else None
        if gateway:
            found.add(ipaddress.ip_address(gateway).packed)
    return found


class LearnedRoutes:
    """Reads, in every table and both families, the routes whose `proto` is one of the
    configured routing daemons' (the kernel filters the dump by protocol)."""

    def __init__(self, protos: frozenset[int]):
        self.protos = protos

    async def read(self, ipr: AsyncIPRoute, peers: Iterable[IPAddress]) -> dict[IPAddress, int]:
        """How many such routes go via each of `peers` (a peer via none is absent)."""
        wanted = {a.packed: a for a in peers}
        counts: dict[IPAddress, int] = {}
        if not wanted:
            return counts
        for family in (socket.AF_INET, socket.AF_INET6):  # an IPv4 route may go via an IPv6 peer
            for proto in sorted(self.protos):
                async for msg in await ipr.route("dump", family=family, proto=proto):
                    if msg["proto"] != proto:
                        continue
                    for packed in gateways_of(msg) & wanted.keys():
                        counts[wanted[packed]] = counts.get(wanted[packed], 0) + 1
        return counts
