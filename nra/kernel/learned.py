"""Routes the node's routing daemons installed (learned over BGP, say), counted by peer: the
facts behind learned-route liveness. What they mean for a peer is nra.plan.peer_health's business;
the routes themselves are the daemons', never touched here.

An IPv6 route learned from a peer on a shared link often goes via the peer's link-local
address (FRR's zebra prefers it), not the address nra knows the peer by; such a gateway counts
for the peer whose neighbour entry on that link has the same link-layer address: the
gateway's own entry's or, before anything was sent to it (no entry yet), the one its EUI-64
interface identifier carries. When that cannot be told (no entry for the gateway and a
stable-privacy identifier, or no entry for an IPv6 peer of that link), the route counts for
each IPv6 peer of the link whose link-layer address is unknown: a peer is never judged down
for want of a neighbour entry.

A route through a nexthop object (FRR's zebra installs its routes so) lists its gateways
only while the namespace's `net.ipv4.nexthop_compat_mode` is 1 (the default); at 0 it names
just the object, and the objects are dumped to find them (`ip nexthop`: a gateway, or a group
of them).

Cost: every reconcile dumps these routes (the kernel filters by proto) through nra's own
socket and codec, and the nexthop objects when a route names only one: meant for nodes that
receive a handful of routes from their peers, not a full table.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Iterable, Mapping

from nra.config.intent import IPAddress
from nra.kernel.codec import (
    RTM_GETNEIGH,
    RTM_GETNEXTHOP,
    RTM_GETROUTE,
    decode_neighbour,
    decode_nexthop,
    decode_route,
    nexthop_hops,
)
from nra.kernel.socket import NetlinkSocket

LINK_LOCAL6 = ipaddress.ip_network("fe80::/10")


def eui64_mac(packed: bytes) -> str | None:
    """The link-layer address inside a modified EUI-64 interface identifier (fe80::xxff:fexx:..,
    what a router that does not use stable-privacy addresses has); None for any other."""
    if len(packed) != 16 or packed[11:13] != b"\xff\xfe":
        return None
    mac = (packed[8] ^ 0x02, packed[9], packed[10], packed[13], packed[14], packed[15])
    return ":".join(f"{b:02x}" for b in mac)


class LearnedRoutes:
    """Reads, in every table and both families, the routes whose `proto` is one of the
    configured routing daemons' (the kernel filters the dump by protocol), through nra's
    netlink socket and codec."""

    def __init__(self, protos: frozenset[int], own_tables: Iterable[int] = ()):
        self.protos = protos
        # nra's own tables: a route there is nra's, whatever its proto, never learned
        self.own_tables = frozenset(own_tables)

    async def read(self, sock: NetlinkSocket, peers: Iterable[IPAddress],
                   links: Mapping[IPAddress, frozenset[int]] | None = None) -> dict[IPAddress, int]:
        """How many such routes go via each of `peers` (a peer via none is absent); `links`:
        each on-link peer's links, for routes via a link-local gateway."""
        return await asyncio.to_thread(self.read_blocking, sock, tuple(peers), links or {})

    def read_blocking(self, sock: NetlinkSocket, peers: Iterable[IPAddress],
                      links: Mapping[IPAddress, frozenset[int]]) -> dict[IPAddress, int]:
        wanted = {a.packed: a for a in peers}
        counts: dict[IPAddress, int] = {}
        if not wanted:
            return counts
        link_local: dict[tuple[bytes, int], int] = {}
        routes_hops: list[set[tuple[bytes, int]]] = []
        through_objects: list[int] = []  # routes that name only their nexthop object
        for family in (socket.AF_INET, socket.AF_INET6):  # an IPv4 route may go via an IPv6 peer
            for proto in sorted(self.protos):
                for route in sock.dump(RTM_GETROUTE, family, decode_route, protocol=proto):
                    # (a kernel without strict checking filters nothing)
                    if route.proto != proto or route.table in self.own_tables:
                        continue
                    hops = {(nh.gateway.packed, nh.oif or 0) for nh in route.nexthops if nh.gateway is not None}
                    if hops:
                        routes_hops.append(hops)
                    elif route.nh_id:
                        through_objects.append(route.nh_id)
        if through_objects:  # nexthop_compat_mode=0 (FRR's zebra): the objects hold the gateways
            objects = {o.id: o for o in sock.dump(RTM_GETNEXTHOP, socket.AF_UNSPEC, decode_nexthop)}
            routes_hops += [nexthop_hops(objects, nh_id) for nh_id in through_objects]
        for hops in routes_hops:
            for hop in hops:
                packed, oif = hop
                if packed in wanted:
                    counts[wanted[packed]] = counts.get(wanted[packed], 0) + 1
                elif oif and len(packed) == 16 and ipaddress.ip_address(packed) in LINK_LOCAL6:
                    link_local[hop] = link_local.get(hop, 0) + 1
        if link_local:
            for peer, count in self._by_link_layer(sock, link_local, wanted, links).items():
                counts[peer] = counts.get(peer, 0) + count
        return counts

    @staticmethod
    def _by_link_layer(sock: NetlinkSocket, link_local: dict[tuple[bytes, int], int],
                       wanted: dict[bytes, IPAddress],
                       links: Mapping[IPAddress, frozenset[int]]) -> dict[IPAddress, int]:
        """Link-local gateways -> the peers with the same link-layer address on that link (or,
        when that cannot be told, the link's IPv6 peers whose link-layer address is unknown)."""
        lladdr: dict[tuple[bytes, int], str] = {}
        for oif in sorted({oif for _, oif in link_local}):
            for entry in sock.dump(RTM_GETNEIGH, socket.AF_INET6, lambda m: decode_neighbour(m, None), selector=oif):
                if entry.lladdr and entry.ifindex == oif:
                    lladdr[(entry.address.packed, oif)] = entry.lladdr
        macs: dict[int, dict[IPAddress, str]] = {}  # link -> its peers known by their address -> mac
        for (packed, oif), mac in lladdr.items():
            if packed in wanted:
                macs.setdefault(oif, {})[wanted[packed]] = mac
        counts: dict[IPAddress, int] = {}
        for (packed, oif), count in link_local.items():
            here = macs.get(oif, {})
            mac = lladdr.get((packed, oif)) or eui64_mac(packed)
            if mac is None:  # the gateway's own entry is missing: it may be any IPv6 peer of the link
                owners = [p for p in wanted.values() if p.version == 6 and oif in links.get(p, ())]
            else:  # the peer with that address; else one whose own is unknown; else nobody's
                owners = [p for p, m in here.items() if m == mac] or [
                    p for p in wanted.values() if p.version == 6 and oif in links.get(p, ()) and p not in here]
            for owner in owners:
                counts[owner] = counts.get(owner, 0) + count
        return counts
