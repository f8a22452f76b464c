"""The routes of the managed table, and the main table's connected routes (which peers
the kernel accepts as a nexthop). Routes are a handful: they are written through pyroute2,
and read through nra's own socket and codec (a reconcile reads three or four tables, and
pyroute2's dump costs ~1.5 ms each, a third of a 10,000-prefix change's budget)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import Container, Iterable, Mapping, Sequence

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nra.config.intent import IPAddress, IPNetwork
from nra.kernel.codec import (
    AF,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_VIA,
    RTM_GETROUTE,
    RTMSG,
    Message,
    attributes,
    decode_route,
    decode_route_header,
)
from nra.kernel.model import NRA_PROTOCOL, KernelRoute, Nexthop
from nra.kernel.socket import NetlinkSocket, in_netns

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
# A route replace the kernel refuses because of one of its nexthops.
NEXTHOP_ERRORS = {errno.ENETUNREACH, errno.ENETDOWN, errno.EINVAL, errno.EHOSTUNREACH, errno.ENODEV}


async def open_route_socket(netns: str | None) -> AsyncIPRoute:
    """pyroute2's socket in `netns`, with strict checking (the kernel filters dumps by table)."""
    if netns:
        def make() -> int:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE).detach()
        ipr = AsyncIPRoute(fileno=await asyncio.to_thread(in_netns, netns, make), strict_check=True)
    else:
        ipr = AsyncIPRoute(strict_check=True)
    await ipr.setup_endpoint()
    return ipr


def connected_network(address: IPAddress, connected: Sequence[tuple[IPNetwork, int | None]],
                      zone: int | None = None) -> tuple[IPNetwork | None, frozenset[int]]:
    """The most specific connected network holding `address` (only on link `zone`, if
    given), and its link(s): where the kernel resolves it as a nexthop. (None, {}) if none."""
    matches = [(n, oif) for n, oif in connected
               if n.version == address.version and address in n and (zone is None or oif == zone)]
    if not matches:
        return None, frozenset()
    longest = max(n.prefixlen for n, _ in matches)
    best = next(n for n, _ in matches if n.prefixlen == longest)
    return best, frozenset(oif for n, oif in matches if n.prefixlen == longest and oif is not None)


def links_of(addresses: Iterable[IPAddress], connected: Sequence[tuple[IPNetwork, int | None]],
             zones: Mapping[IPAddress, int] | None = None) -> dict[IPAddress, frozenset[int]]:
    """For each address on a connected network, the link(s) where the kernel resolves it as
    a nexthop (a zoned link-local address: its zone's link only); off-link ones are left out."""
    result: dict[IPAddress, frozenset[int]] = {}
    for address in addresses:
        network, oifs = connected_network(address, connected, (zones or {}).get(address))
        if network is not None:
            result[address] = oifs
    return result


def network_addresses(links: Mapping[IPAddress, frozenset[int]],
                      connected: Sequence[tuple[IPNetwork, int | None]]) -> dict[IPAddress, str]:
    """On-link addresses that are their connected network's own address (IPv4: the network
    address; IPv6: the subnet-router anycast address): not a host, so not a nexthop."""
    found = {}
    for address in links:
        network, _ = connected_network(address, connected)
        if network is not None and network.num_addresses > 2 and address == network.network_address:
            what = "the network address" if address.version == 4 else "the subnet-router anycast address"
            found[address] = f"{what} of {network}"
    return found


def read_tables(sock: NetlinkSocket, tables: Iterable[int]) -> list[KernelRoute]:
    """Every route of these tables, both families (blocking: run it in a thread); the
    kernel filters each dump by table (strict checking), and so does this."""
    routes = []
    for table in tables:
        for family in (socket.AF_INET, socket.AF_INET6):
            routes += [r for r in sock.dump(RTM_GETROUTE, family, decode_route, selector=table) if r.table == table]
    return routes


def read_leftovers(sock: NetlinkSocket, owned: Container[int]) -> list[KernelRoute]:
    """nra's routes (NRA_PROTOCOL, any table, both families) in tables not `owned`: left by
    earlier settings. The kernel filters the dump by protocol: a handful of routes."""
    return [route for family in (socket.AF_INET, socket.AF_INET6)
            for route in sock.dump(RTM_GETROUTE, family, decode_route, protocol=NRA_PROTOCOL)
            if route.proto == NRA_PROTOCOL and route.table not in owned]


def _read_connected(sock: NetlinkSocket, versions: Iterable[int]) -> list[tuple[IPNetwork, int | None]]:
    networks = []
    for version in sorted(set(versions)):
        networks += sock.dump(RTM_GETROUTE, AF[version], _connected, selector=RT_TABLE_MAIN)
    return networks


def _connected(message: Message) -> tuple[IPNetwork, int | None] | None:
    """A main-table unicast route without a gateway (RTA_GATEWAY, RTA_VIA or a multipath)."""
    header = decode_route_header(message)
    if header.table != RT_TABLE_MAIN or header.type != RTN_UNICAST:
        return None
    if any(kind in (RTA_GATEWAY, RTA_MULTIPATH, RTA_VIA)
           for kind, _ in attributes(message.data, message.body + RTMSG.size, message.end)):
        return None
    route = decode_route(message)
    return route.dst, route.oif


class Routes:
    """Owns the routes of one table (reads through `sock`, writes through pyroute2)."""

    def __init__(self, ipr: AsyncIPRoute, table: int, sock: NetlinkSocket):
        self.ipr = ipr
        self.table = table
        self.sock = sock

    async def read(self) -> list[KernelRoute]:
        return await asyncio.to_thread(read_tables, self.sock, (self.table,))

    async def connected(self, versions: Iterable[int]) -> list[tuple[IPNetwork, int | None]]:
        """(prefix, link index) of the main table's connected routes (unicast, no gateway):
        the only routes through which the kernel accepts a gateway (its nexthop check looks
        for a link-scope route). Read from the main table itself, not by a policy lookup, so
        a stray rule pointing somewhere else cannot hide a connected peer."""
        return await asyncio.to_thread(_read_connected, self.sock, tuple(versions))

    async def replace(self, family: int, dst: IPNetwork, metric: int, nexthops: Sequence[Nexthop]) -> None:
        # Always a multipath, even of one: the kernel lists a lone one as a plain gateway.
        multipath = []
        for nh in nexthops:
            gateway, oif = nh.gateway, nh.oif
            zone = getattr(gateway, "scope_id", None)
            if gateway is not None and zone:  # fe80::1%eth0: the address, on its zone's link
                gateway = ipaddress.ip_address(gateway.packed)
                if oif is None:
                    found = await self.ipr.link_lookup(ifname=zone)
                    oif = found[0] if found else None
            hop: dict = {"gateway": str(gateway), "hops": nh.weight - 1}
            if gateway is not None and gateway.version != family:
                # an IPv4 route via an IPv6 nexthop (RFC 8950; Linux 5.2): RTA_VIA, not RTA_GATEWAY
                hop = {"via": {"family": AF[gateway.version], "addr": str(gateway)}, "hops": nh.weight - 1}
            if oif is not None:
                hop["oif"] = oif
            multipath.append(hop)
        await self.ipr.route("replace", family=AF[family], dst=str(dst), table=self.table, priority=metric,
                             multipath=multipath, proto=NRA_PROTOCOL)

    async def delete(self, route: KernelRoute) -> None:
        """Delete exactly this route: its type, tos, metric and scope (a device route is
        link-scoped, a local one host-scoped: under the default universe scope the kernel
        finds neither). Already gone is fine."""
        try:
            await self.ipr.route("del", family=AF[route.family], dst=str(route.dst), table=route.table,
                                 tos=route.tos, type=route.type, priority=route.metric, scope=route.scope)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise

    async def replace_leaving_out_refused(self, family: int, dst: IPNetwork, metric: int,
                                          nexthops: Sequence[Nexthop]) -> tuple[IPAddress, ...]:
        """One atomic replace; if the kernel refuses a nexthop, retry without it. Returns the
        gateways left out (none if all went in); raises if no subset went in."""
        try:
            await self.replace(family, dst, metric, nexthops)
            return ()
        except NetlinkError as exc:
            if exc.code not in NEXTHOP_ERRORS or len(nexthops) < 2:
                raise
            first_error = exc
        # Which nexthops does the kernel refuse? Those not on a connected network.
        gateways = [nh.gateway for nh in nexthops]
        on_link = links_of(gateways, await self.connected(g.version for g in gateways if g is not None))
        candidates = [nh for nh in nexthops if nh.gateway in on_link]
        attempts = []
        if candidates and len(candidates) < len(nexthops):
            attempts.append(candidates)
        # still refused (e.g. a gateway the kernel treats differently): leave one out at a time
        attempts += [[nh for nh in nexthops if nh is not left_out] for left_out in nexthops]
        for kept in attempts:
            try:
                await self.replace(family, dst, metric, kept)
            except NetlinkError as exc:
                if exc.code not in NEXTHOP_ERRORS:
                    raise
                continue
            return tuple(nh.gateway for nh in nexthops if nh not in kept)
        raise first_error
