"""What the kernel says about the peers that need the node's tables to be resolved
(nra.config.uplinks.needs_lookup): the route the node uses to reach a multihop peer, and the
IPv6 link-local neighbours on an unnumbered peer's interface. Facts only (NodeFacts); the
model (nra.config.uplinks) decides what they mean.

A multihop peer is looked up as `ip route get fibmatch <peer> [vrf V]` does: RTM_GETROUTE
with RTM_F_FIB_MATCH, so the answer is the FIB entry itself with every hop of a multipath (a
plain lookup returns the one hop the hash picks; for IPv4 also RTM_F_LOOKUP_TABLE, so the
answer names the table it came from, which IPv6 answers always do), and for a VRF peer with RTA_OIF set to the
VRF device (the l3mdev rule then selects the VRF's table). The lookup carries no source
address and no mark, so nra's own rules (`from <LB prefix>`, `fwmark`) do not select it: it
finds the route the node would use without nra. Should an answer still come from one of nra's
tables (a rule of nra's without a source, for a 0.0.0.0/0 pool), it is refused: nra would
otherwise route via its own choice, a loop.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Callable, Container, Iterable, Mapping

from nra.config.intent import IPAddress, PeerSpec
from nra.config.uplinks import Neighbour, NodeFacts, RouteLookup, needs_lookup
from nra.kernel.codec import (
    AF,
    NDA_DST,
    NDA_LLADDR,
    NDMSG,
    NLM_F_REQUEST,
    NUD_NAMES,
    RTA_DST,
    RTA_OIF,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTMSG,
    U32,
    Message,
    attribute,
    attributes,
    decode_route,
    request,
)
from nra.kernel.socket import KernelRefused, NetlinkSocket

RTM_F_FIB_MATCH = 0x2000  # linux/rtnetlink.h: return the FIB entry, not the cached route
RTM_F_LOOKUP_TABLE = 0x1000  # say the table the lookup found it in (else IPv4 answers "main")
NTF_ROUTER = 0x80
RTPROT_RA = 9  # a route from a router advertisement (its gateway: the router's link-local address)
#: entries that carry no usable link-layer address
_NOT_VALID = {"INCOMPLETE", "FAILED", "NONE"}


def encode_route_get(address: IPAddress, oif: int, seq: int) -> bytes:
    """RTM_GETROUTE for `address` (RTA_OIF: a VRF device, 0: none), answered by the FIB entry."""
    packed = address.packed
    # IPv4 names the table only when asked; IPv6 always does, and refuses the flag (EINVAL
    # under strict checking)
    flags = RTM_F_FIB_MATCH | (RTM_F_LOOKUP_TABLE if address.version == 4 else 0)
    body = RTMSG.pack(AF[address.version], len(packed) * 8, 0, 0, 0, 0, 0, 0, flags)
    body += attribute(RTA_DST, packed)
    if oif:
        body += attribute(RTA_OIF, U32.pack(oif))
    return request(RTM_GETROUTE, NLM_F_REQUEST, seq, body)


def lookup(sock: NetlinkSocket, address: IPAddress, oif: int, own_tables: Container[int],
           name_of: Callable[[int], str]) -> RouteLookup | str:
    """The route the node uses to reach `address`, or why there is none usable (blocking)."""
    where = f"{address}"
    try:
        route = sock.query(lambda seq: encode_route_get(address, oif, seq),
                           lambda m: decode_route(m) if m.kind == RTM_NEWROUTE else None)
    except KernelRefused as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENOENT, errno.ESRCH):
            return f"no route to {where}"
        raise
    if route.table in own_tables:
        return (f"the node's route to {where} is in nra's own table {route.table} (a rule of nra's without a "
                "source?): not used, it would route via nra's own choice")
    if route.type != "unicast":
        return f"the node's route to {where} is {route.type}"
    gateways = [(nh.gateway, nh.oif if nh.oif is not None else route.oif) for nh in route.nexthops
                if nh.gateway is not None and "dead" not in nh.flags and "linkdown" not in nh.flags]
    if not gateways and any(nh.gateway is not None for nh in route.nexthops):
        return f"every hop of the node's route to {where} is down (dead or linkdown)"
    if not gateways:  # a connected network: on-link
        oif_ = route.oif if route.oif is not None else next((nh.oif for nh in route.nexthops if nh.oif), None)
        return RouteLookup(name_of(oif_) if oif_ else "")
    links = tuple(name_of(i) if i else "" for _, i in gateways)
    return RouteLookup(links[0], tuple(g for g, _ in gateways), links if len(set(links)) > 1 else ())


def link_local_neighbours(sock: NetlinkSocket, ifindex: int, link: str) -> list[Neighbour]:
    """The valid IPv6 link-local entries of one link, with their router flag (blocking)."""

    def keep(message: Message) -> Neighbour | None:
        if message.kind != RTM_NEWNEIGH or message.end - message.body < NDMSG.size:
            return None
        _, _, _, index, nud, flags, _ = NDMSG.unpack_from(message.data, message.body)
        if index != ifindex or NUD_NAMES.get(nud, "NONE") in _NOT_VALID:
            return None
        address = lladdr = None
        for kind, payload in attributes(message.data, message.body + NDMSG.size, message.end):
            if kind == NDA_DST and len(payload) == 16 and payload[0] == 0xFE and payload[1] & 0xC0 == 0x80:
                address = ipaddress.IPv6Address(payload)
            elif kind == NDA_LLADDR and payload:
                lladdr = ":".join(f"{b:02x}" for b in payload)
        if address is None:
            return None
        return Neighbour(address, link, lladdr or "", bool(flags & NTF_ROUTER))

    return sock.dump(RTM_GETNEIGH, socket.AF_INET6, keep, ifindex, True)


def learned_link_locals(sock: NetlinkSocket, protos: Iterable[int], links: Mapping[int, str],
                        own_tables: Container[int]) -> dict[str, tuple[IPAddress, ...]]:
    """The IPv6 link-local gateways, per unnumbered link, of the routes the routing daemons
    (`protos`, LEARNED_ROUTE_PROTOS) installed over it: the router the BGP session runs with
    (blocking). The kernel filters each dump by protocol."""
    found: dict[str, set[IPAddress]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):  # IPv4 routes learned via an IPv6 next hop too
        for proto in sorted(protos):
            for route in sock.dump(RTM_GETROUTE, family, decode_route, protocol=proto):
                if route.proto != proto or route.table in own_tables:
                    continue
                for nh in route.nexthops:
                    oif = nh.oif if nh.oif is not None else route.oif
                    if (oif in links and nh.gateway is not None and nh.gateway.version == 6
                            and nh.gateway.is_link_local):
                        found.setdefault(links[oif], set()).add(nh.gateway)
    return {link: tuple(sorted(hops)) for link, hops in found.items()}


def read_node_facts(sock: NetlinkSocket, specs: Iterable[PeerSpec], own_tables: Container[int],
                    index_of: Callable[[str], int | None], name_of: Callable[[int], str],
                    learned_protos: Iterable[int] = ()) -> NodeFacts:
    """NodeFacts for the peers that need a lookup (blocking: run it in a thread). `index_of`
    (a link name -> index, None when absent) and `name_of` run in the right namespace;
    `learned_protos`: the routing daemons' protocols, whose link-local next hops on an
    unnumbered link name its router."""
    lookups: dict[str, RouteLookup] = {}
    unresolved: dict[str, str] = {}
    neighbours: list[Neighbour] = []
    seen_links: set[str] = set()
    unnumbered: dict[int, str] = {}
    for spec in sorted((s for s in specs if needs_lookup(s)), key=lambda s: s.key):
        if spec.address is not None:
            oif = 0
            if spec.vrf:
                found = index_of(spec.vrf)
                if found is None:
                    unresolved[spec.key] = f"vrf {spec.vrf} does not exist on this node"
                    continue
                oif = found
            answer = lookup(sock, spec.address, oif, own_tables, name_of)
            if isinstance(answer, str):
                unresolved[spec.key] = answer + (f" in vrf {spec.vrf}" if spec.vrf else "")
            else:
                lookups[spec.key] = answer
        elif spec.interface not in seen_links:
            seen_links.add(spec.interface)
            index = index_of(spec.interface)
            if index is None:
                unresolved[spec.key] = f"interface {spec.interface} does not exist on this node"
                continue
            unnumbered[index] = spec.interface
            neighbours += link_local_neighbours(sock, index, spec.interface)
    # the routes router advertisements installed (proto ra) name the router too, always
    protos = {*learned_protos, RTPROT_RA}
    learned = learned_link_locals(sock, protos, unnumbered, own_tables) if unnumbered else {}
    return NodeFacts(lookups, unresolved, tuple(neighbours), learned)
