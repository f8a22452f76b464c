"""Netlink messages for rules, neighbours, links and route notifications, encoded and
decoded with `struct`: pure functions over bytes, no sockets.

The layouts are the kernel's uapi headers: linux/netlink.h (nlmsghdr, nlattr),
linux/fib_rules.h (fib_rule_hdr, FRA_*), linux/neighbour.h (ndmsg, NDA_*, NUD_*),
linux/rtnetlink.h (rtmsg, RTA_*, RTM_*, RTMGRP_*) and linux/if_link.h (ifinfomsg, IFLA_*).
Rules can number 10,000 and are read every reconcile: these structs decode one in
microseconds, where a general decoder takes a fraction of a millisecond.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Container, Iterator

from nra.config.intent import IPNetwork
from nra.kernel.model import (
    FULL_MASK,
    NRA_PROTOCOL,
    KernelRoute,
    KernelRule,
    NeighbourEntry,
    Nexthop,
)

# -- linux/netlink.h ------------------------------------------------------------------------
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA_HDR = struct.Struct("=HH")  # length, type
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

# -- linux/rtnetlink.h -----------------------------------------------------------------------
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTMGRP_LINK, RTMGRP_NEIGH = 0x1, 0x4
RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE = 0x40, 0x80
RTMGRP_IPV6_ROUTE, RTMGRP_IPV6_RULE = 0x400, 0x40000
RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table protocol scope type flags
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE, RTA_VIA = 1, 4, 5, 6, 9, 15, 18
RTA_NH_ID = 30  # a route through a nexthop object (FRR's zebra installs its routes so)
# -- linux/nexthop.h: nexthop objects (`ip nexthop`). With net.ipv4.nexthop_compat_mode=0 a
# route through one carries only RTA_NH_ID: its gateways are the object's.
RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106
RTNLGRP_NEXTHOP = 32  # (above 31: joined with NETLINK_ADD_MEMBERSHIP, not in the bind mask)
NHMSG = struct.Struct("=BBBBI")  # family scope protocol resvd flags
NHA_ID, NHA_GROUP, NHA_OIF, NHA_GATEWAY = 1, 2, 5, 6
NEXTHOP_GRP = struct.Struct("=IBBH")  # id weight resvd1 resvd2
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
RTNH_FLAGS = {1: "dead", 2: "pervasive", 4: "onlink", 8: "offload", 16: "linkdown"}
RTNEXTHOP = struct.Struct("=HBBi")  # length flags hops ifindex, then the hop's own attributes
RT_TABLE_COMPAT = 252  # the 8-bit table field when the real id (> 255) is in an attribute
RT_TABLE_LOCAL = 255
RTN_LOCAL, RTN_BROADCAST, RTN_ANYCAST = 2, 3, 4

# -- linux/fib_rules.h ------------------------------------------------------------------------
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table res1 res2 action flags
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_GOTO = 1, 2, 3, 4
FRA_PRIORITY, FRA_FWMARK, FRA_FLOW, FRA_TUN_ID = 6, 10, 11, 12
FRA_SUPPRESS_IFGROUP, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_FWMASK = 13, 14, 15, 16
FRA_OIFNAME, FRA_PAD, FRA_L3MDEV, FRA_UID_RANGE = 17, 18, 19, 20
FRA_PROTOCOL, FRA_IP_PROTO, FRA_SPORT_RANGE, FRA_DPORT_RANGE = 21, 22, 23, 24
FR_ACT_TO_TBL = 1
FIB_RULE_INVERT = 0x2
UNSET_U32 = 0xFFFFFFFF  # suppress_prefixlen / suppress_ifgroup when not set
# How other selectors and modifiers are shown (`ip rule`-like) in a rule's `extra`.
RULE_EXTRA_NAMES = {
    FRA_IIFNAME: "iifname", FRA_GOTO: "goto", FRA_FLOW: "flow", FRA_TUN_ID: "tun_id",
    FRA_SUPPRESS_IFGROUP: "suppress_ifgroup", FRA_SUPPRESS_PREFIXLEN: "suppress_prefixlen",
    FRA_OIFNAME: "oifname", FRA_L3MDEV: "l3mdev", FRA_UID_RANGE: "uid_range",
    FRA_IP_PROTO: "ip_proto", FRA_SPORT_RANGE: "sport_range", FRA_DPORT_RANGE: "dport_range",
}
# Attributes that are ours to compare, or select nothing.
RULE_OWN_ATTRS = {FRA_SRC, FRA_DST, FRA_PRIORITY, FRA_FWMARK, FRA_FWMASK, FRA_TABLE, FRA_PAD, FRA_PROTOCOL}

# -- linux/neighbour.h -------------------------------------------------------------------------
NDMSG = struct.Struct("=BBHiHBB")  # family pad pad ifindex state flags type
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NDA_FLAGS_EXT = 15
NTF_EXT_MANAGED = 0x1  # the kernel keeps the entry resolved (Linux 5.16)
NTF_USE = 0x01  # (ndm_flags) resolve the entry now, as a packet to it would; made if absent
RTM_SETNEIGHTBL = 67
NDTMSG = struct.Struct("=BBH")  # family pad pad
NDTA_NAME, NDTA_PARMS = 1, 6
NDTPA_IFINDEX = 1
#: neighbour table parameters nra may set: name -> (NDTPA_* attribute, payload struct)
NDTPA = {"base_reachable_ms": (4, "=Q"), "retrans_ms": (5, "=Q"), "delay_probe_ms": (7, "=Q"),
         "ucast_probes": (10, "=I"), "mcast_probes": (11, "=I")}
NEIGH_TABLE_NAMES = {socket.AF_INET: b"arp_cache\0", socket.AF_INET6: b"ndisc_cache\0"}
NLA_F_NESTED = 0x8000
NUD_NAMES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
             0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}

# -- linux/if_link.h, linux/if.h --------------------------------------------------------------
IFINFOMSG = struct.Struct("=BBHiII")  # family pad type index flags change
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000

U32 = struct.Struct("=I")
VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
AF = {4: socket.AF_INET, 6: socket.AF_INET6}


# -- messages and attributes ------------------------------------------------------------------


class Message:
    """One netlink message inside a received buffer: its header, and where its body is.
    (A plain class with slots: 20,000 are made per steady read.)"""

    __slots__ = ("kind", "flags", "seq", "data", "body", "end")

    def __init__(self, kind: int, flags: int, seq: int, data: bytes, body: int, end: int):
        self.kind = kind
        self.flags = flags
        self.seq = seq
        self.data = data  # the whole buffer
        self.body = body  # offset of the body (after the header)
        self.end = end  # offset just past the message

    def body_bytes(self) -> bytes:
        return self.data[self.body:self.end]

    def error_code(self) -> int:
        """For an NLMSG_ERROR: the errno (0 = an ack)."""
        return -struct.unpack_from("=i", self.data, self.body)[0]


def messages(data: bytes) -> Iterator[Message]:
    """Each message in one buffer read from a netlink socket, in order."""
    offset, size, header, unpack = 0, len(data), NLMSG_HDR.size, NLMSG_HDR.unpack_from
    while offset + header <= size:
        length, kind, flags, seq, _ = unpack(data, offset)
        if length < header or offset + length > size:
            return  # truncated: the kernel never sends this; stop rather than misread
        yield Message(kind, flags, seq, data, offset + header, offset + length)
        offset += (length + 3) & ~3


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute between two offsets."""
    at = start
    while at + NLA_HDR.size <= end:
        length, kind = NLA_HDR.unpack_from(data, at)
        if length < NLA_HDR.size:
            return
        yield kind & NLA_TYPE_MASK, data[at + NLA_HDR.size:at + length]
        at += (length + 3) & ~3


def attribute(kind: int, payload: bytes) -> bytes:
    data = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One whole netlink message (header, body, padding)."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body + b"\0" * (-len(body) % 4)


def error_text(code: int) -> str:
    return f"{os.strerror(code)} (errno {code})"


# -- rules ---------------------------------------------------------------------------------------


def encode_rule(family: int, src: IPNetwork | None, priority: int, table: int,
                fwmark: int | None = None, fwmask: int | None = None) -> bytes:
    """The body of an RTM_NEWRULE/RTM_DELRULE: `from src [fwmark M[/mask]] lookup table
    priority P protocol nra`. A mark of 0 with a mask is a real selector and is sent as one."""
    src_len = src.prefixlen if src is not None else 0
    body = FIB_RULE_HDR.pack(AF[family], 0, src_len, 0, table if table < 256 else RT_TABLE_COMPAT,
                             0, 0, FR_ACT_TO_TBL, 0)
    body += attribute(FRA_TABLE, U32.pack(table)) + attribute(FRA_PRIORITY, U32.pack(priority))
    body += attribute(FRA_PROTOCOL, bytes([NRA_PROTOCOL]))
    if src_len:
        body += attribute(FRA_SRC, src.network_address.packed)
    if fwmark is not None and (fwmark or fwmask):
        body += attribute(FRA_FWMARK, U32.pack(fwmark))
        if fwmask is not None:
            body += attribute(FRA_FWMASK, U32.pack(fwmask))
    return body


def encode_dump_request(kind: int, family: int, seq: int, selector: int = 0, protocol: int = 0) -> bytes:
    """A dump of one family's rules (RTM_GETRULE), neighbours (RTM_GETNEIGH; of one link if
    `selector` is its index) or routes (RTM_GETROUTE; of one table if `selector` is the
    table, of one `protocol` if given). The kernel filters by link, table or protocol on a
    socket with NETLINK_GET_STRICT_CHK."""
    if kind == RTM_GETNEIGH:
        body = NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
        if selector:
            body += attribute(NDA_IFINDEX, U32.pack(selector))
    elif kind == RTM_GETROUTE:
        body = RTMSG.pack(family, 0, 0, 0, selector if selector < 256 else RT_TABLE_COMPAT, protocol, 0, 0, 0)
        if selector:
            body += attribute(RTA_TABLE, U32.pack(selector))
    elif kind == RTM_GETNEXTHOP:
        body = NHMSG.pack(family, 0, 0, 0, 0)
    else:
        body = FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return request(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def _address(payload: bytes) -> str:
    return str(ipaddress.ip_address(payload))


def _rule_extra_value(kind: int, payload: bytes) -> str:
    if kind in (FRA_IIFNAME, FRA_OIFNAME):
        return payload.split(b"\0", 1)[0].decode(errors="replace")
    if kind == FRA_UID_RANGE and len(payload) >= 8:
        return "%d:%d" % struct.unpack_from("=II", payload)
    if kind in (FRA_SPORT_RANGE, FRA_DPORT_RANGE) and len(payload) >= 4:
        return "%d:%d" % struct.unpack_from("=HH", payload)
    if kind in (FRA_L3MDEV, FRA_IP_PROTO) and payload:
        return str(payload[0])
    if len(payload) == 4:
        return str(U32.unpack(payload)[0])
    return payload.hex()


def rule_owner(body: bytes) -> tuple[int, int | None]:
    """(the table a rule body points at: FRA_TABLE, else the 8-bit header field; its
    FRA_PROTOCOL, None when the kernel gives none)."""
    table, protocol = body[4], None
    for kind, payload in attributes(body, FIB_RULE_HDR.size, len(body)):
        if kind == FRA_TABLE and len(payload) >= 4:
            table = U32.unpack_from(payload)[0]
        elif kind == FRA_PROTOCOL and payload:
            protocol = payload[0]
    return table, protocol


def decode_rule(body: bytes) -> KernelRule:
    """The rule in one RTM_NEWRULE/RTM_DELRULE body (the message without its header)."""
    family, dst_len, src_len, tos, table8, _, _, action, flags = FIB_RULE_HDR.unpack_from(body)
    values: dict[int, bytes] = {}
    extra: list[str] = []
    if flags & FIB_RULE_INVERT:
        extra.append("not")
    if action != FR_ACT_TO_TBL:
        extra.append(f"action {action}")
    if tos:
        extra.append(f"tos {tos:#x}")
    for kind, payload in attributes(body, FIB_RULE_HDR.size, len(body)):
        if kind == FRA_PROTOCOL and payload and payload[0] != NRA_PROTOCOL:
            extra.append(f"protocol {payload[0]}")  # someone else's (or an older nra's): not ours
        if kind in RULE_OWN_ATTRS:
            values[kind] = payload
            continue
        if kind in (FRA_SUPPRESS_PREFIXLEN, FRA_SUPPRESS_IFGROUP) and payload == U32.pack(UNSET_U32):
            continue
        extra.append(f"{RULE_EXTRA_NAMES.get(kind, f'attribute{kind}')} {_rule_extra_value(kind, payload)}")
    if dst_len:
        extra.append(f"to {_address(values.get(FRA_DST, b''))}/{dst_len}" if FRA_DST in values else f"to /{dst_len}")
    src = None
    if src_len and FRA_SRC in values:
        network = ipaddress.IPv4Network if len(values[FRA_SRC]) == 4 else ipaddress.IPv6Network
        src = network((values[FRA_SRC], src_len), strict=False)

    def u32(kind: int) -> int | None:
        payload = values.get(kind)
        return U32.unpack_from(payload)[0] if payload is not None and len(payload) >= 4 else None

    # The kernel lists FRA_FWMARK only when the mark is not 0, and FRA_FWMASK when the mask is
    # not 0: `fwmark 0/0xff` comes as a mask alone. Mask 0 means no fwmark selector at all.
    fwmark, fwmask = u32(FRA_FWMARK), u32(FRA_FWMASK)
    if fwmark and fwmask is None:
        fwmask = FULL_MASK  # (the default mask of a mark given without one)
    if fwmask:
        fwmark = fwmark or 0
    else:
        fwmark = fwmask = None
    table = u32(FRA_TABLE)
    return KernelRule(family=VERSION.get(family, family), src=src, priority=u32(FRA_PRIORITY) or 0,
                      table=table8 if table is None else table, fwmark=fwmark, fwmask=fwmask,
                      extra=tuple(extra), wire=body)


# -- neighbours ----------------------------------------------------------------------------------


def decode_neighbour(message: Message, wanted: Container[bytes] | None) -> NeighbourEntry | None:
    """The entry of one RTM_NEWNEIGH/RTM_DELNEIGH if its address (packed) is `wanted` (None:
    any); other entries are skipped after reading their destination, without building anything."""
    data = message.data
    if message.end - message.body < NDMSG.size:
        return None
    _, _, _, ifindex, nud, _, _ = NDMSG.unpack_from(data, message.body)
    address = lladdr = None
    for kind, payload in attributes(data, message.body + NDMSG.size, message.end):
        if kind == NDA_DST:
            if wanted is not None and payload not in wanted:
                return None
            address = ipaddress.ip_address(payload)
        elif kind == NDA_LLADDR and payload:
            lladdr = ":".join(f"{b:02x}" for b in payload)
    if address is None:
        return None
    return NeighbourEntry(address, ifindex, NUD_NAMES.get(nud, "NONE"), message.kind == RTM_DELNEIGH, lladdr)


# -- notifications: links and routes (only what an event reason needs) -------------------------


@dataclass(frozen=True)
class LinkState:
    index: int
    name: str
    admin_up: bool
    carrier_up: bool


def decode_link(message: Message) -> LinkState:
    _, _, _, index, flags, _ = IFINFOMSG.unpack_from(message.data, message.body)
    name = ""
    for kind, payload in attributes(message.data, message.body + IFINFOMSG.size, message.end):
        if kind == IFLA_IFNAME:
            name = payload.split(b"\0", 1)[0].decode(errors="replace")
            break
    return LinkState(index, name or f"#{index}", bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP))


@dataclass(frozen=True)
class RouteHeader:
    """What a route message says about where it goes (not its nexthops)."""

    table: int
    version: int
    type: int  # RTN_*: 1 unicast, 2 local, 3 broadcast, 4 anycast ...
    dst: bytes  # packed; empty for a default route
    dst_len: int

    def dst_text(self) -> str:
        address = _address(self.dst) if self.dst else ("0.0.0.0" if self.version == 4 else "::")
        return f"{address}/{self.dst_len}"


def decode_route_header(message: Message) -> RouteHeader:
    family, dst_len, _, _, table8, _, _, kind, _ = RTMSG.unpack_from(message.data, message.body)
    table, dst = table8, b""
    for attr, payload in attributes(message.data, message.body + RTMSG.size, message.end):
        if attr == RTA_TABLE and len(payload) >= 4:
            table = U32.unpack_from(payload)[0]
        elif attr == RTA_DST:
            dst = payload
    return RouteHeader(table, VERSION.get(family, family), kind, dst, dst_len)


def nexthop_flags(value: int) -> frozenset[str]:
    return frozenset(name for bit, name in RTNH_FLAGS.items() if value & bit)


def _via(payload: bytes) -> bytes:
    """The address of an RTA_VIA (struct rtvia: a u16 family, then the address)."""
    return payload[2:]


def hops(payload: bytes) -> Iterator[tuple[int, int, int, bytes | None]]:
    """(flags, hops, link index, packed gateway or None) of each rtnexthop of an
    RTA_MULTIPATH; the gateway is the hop's RTA_GATEWAY, or its RTA_VIA (an IPv4 route via
    an IPv6 nexthop). The one multipath decoder: routes and notifications both use it."""
    at = 0
    while at + RTNEXTHOP.size <= len(payload):
        length, hop_flags, weight, ifindex = RTNEXTHOP.unpack_from(payload, at)
        if length < RTNEXTHOP.size:
            return
        gateway = None
        for kind, hop_payload in attributes(payload, at + RTNEXTHOP.size, at + length):
            if kind == RTA_GATEWAY:
                gateway = hop_payload
            elif kind == RTA_VIA and gateway is None:
                gateway = _via(hop_payload)
        yield hop_flags, weight, ifindex, gateway
        at += (length + 3) & ~3


def decode_route(message: Message) -> KernelRoute:
    """A route message as a KernelRoute: its destination, table, type, metric, tos,
    protocol, scope, link, and nexthops (each hop of a multipath with its weight and flags;
    a gateway is an RTA_GATEWAY, or the address of an RTA_VIA)."""
    family, dst_len, _, tos, table, protocol, scope, kind, flags = RTMSG.unpack_from(message.data, message.body)
    version = VERSION[family]
    dst = b""
    gateway: bytes | None = None
    oif: int | None = None
    metric = 0
    multipath: list[Nexthop] | None = None
    nh_id = 0
    for attr, payload in attributes(message.data, message.body + RTMSG.size, message.end):
        if attr == RTA_DST:
            dst = payload
        elif attr == RTA_NH_ID and len(payload) >= 4:
            nh_id = U32.unpack_from(payload)[0]
        elif attr == RTA_TABLE and len(payload) >= 4:
            table = U32.unpack_from(payload)[0]
        elif attr == RTA_GATEWAY:
            gateway = payload
        elif attr == RTA_VIA and gateway is None:
            gateway = _via(payload)
        elif attr == RTA_OIF and len(payload) >= 4:
            oif = U32.unpack_from(payload)[0]
        elif attr == RTA_PRIORITY and len(payload) >= 4:
            metric = U32.unpack_from(payload)[0]
        elif attr == RTA_MULTIPATH:
            multipath = [Nexthop(ipaddress.ip_address(hop_gateway) if hop_gateway else None, weight + 1,
                                 nexthop_flags(hop_flags), ifindex)
                         for hop_flags, weight, ifindex, hop_gateway in hops(payload)]
    if multipath:
        nexthops: tuple[Nexthop, ...] = tuple(multipath)
    elif gateway or oif:
        nexthops = (Nexthop(ipaddress.ip_address(gateway) if gateway else None, 1, nexthop_flags(flags), oif),)
    else:
        nexthops = ()
    address = ipaddress.ip_address(dst) if dst else ("0.0.0.0" if version == 4 else "::")
    return KernelRoute(family=version, dst=ipaddress.ip_network(f"{address}/{dst_len}", strict=False),
                       table=table, nexthops=nexthops, type=ROUTE_TYPES.get(kind, str(kind)), metric=metric,
                       tos=tos, proto=protocol, oif=oif, scope=scope, nh_id=nh_id)


def decode_route_gateways(message: Message) -> tuple[int, frozenset[bytes], frozenset[int], int]:
    """(protocol, packed gateway addresses, link indexes, nexthop object id or 0) of a route
    message: its RTA_GATEWAY / RTA_VIA and RTA_OIF, or those of each hop of its RTA_MULTIPATH
    (a notification's reason needs no more, and builds no addresses)."""
    protocol = RTMSG.unpack_from(message.data, message.body)[5]
    gateways: set[bytes] = set()
    links: set[int] = set()
    nh_id = 0
    for kind, payload in attributes(message.data, message.body + RTMSG.size, message.end):
        if kind == RTA_NH_ID and len(payload) >= 4:
            nh_id = U32.unpack_from(payload)[0]
        elif kind == RTA_GATEWAY:
            gateways.add(payload)
        elif kind == RTA_VIA:
            gateways.add(_via(payload))
        elif kind == RTA_OIF and len(payload) >= 4:
            links.add(U32.unpack_from(payload)[0])
        elif kind == RTA_MULTIPATH:
            for _, _, ifindex, gateway in hops(payload):
                links.add(ifindex)
                if gateway is not None:
                    gateways.add(gateway)
    return protocol, frozenset(gateways), frozenset(links), nh_id


@dataclass(frozen=True)
class NexthopObject:
    """A nexthop object (`ip nexthop`): a gateway on a link, or a group of other objects."""

    id: int
    gateway: bytes | None = None  # packed
    oif: int = 0
    group: tuple[int, ...] = ()  # member ids


def decode_nexthop(message: Message) -> NexthopObject:
    """An RTM_NEWNEXTHOP / RTM_DELNEXTHOP message as a NexthopObject."""
    nh_id, gateway, oif, group = 0, None, 0, ()
    for kind, payload in attributes(message.data, message.body + NHMSG.size, message.end):
        if kind == NHA_ID and len(payload) >= 4:
            nh_id = U32.unpack_from(payload)[0]
        elif kind == NHA_GATEWAY:
            gateway = payload
        elif kind == NHA_OIF and len(payload) >= 4:
            oif = U32.unpack_from(payload)[0]
        elif kind == NHA_GROUP:
            group = tuple(NEXTHOP_GRP.unpack_from(payload, at)[0]
                          for at in range(0, len(payload) - NEXTHOP_GRP.size + 1, NEXTHOP_GRP.size))
    return NexthopObject(nh_id, gateway, oif, group)


def nexthop_hops(objects: dict[int, NexthopObject], nh_id: int) -> set[tuple[bytes, int]]:
    """(packed gateway, link) of each gateway a nexthop object leads to: its own, or its
    group members' (a group holds plain objects only: the kernel refuses nesting)."""
    top = objects.get(nh_id)
    if top is None:
        return set()
    members = [objects.get(m) for m in top.group] if top.group else [top]
    return {(m.gateway, m.oif) for m in members if m is not None and m.gateway is not None}


def encode_neighbour(address: bytes, family: int, ifindex: int, managed: bool, use: bool = False) -> bytes:
    """The body of an RTM_NEWNEIGH (with `managed`: an entry the kernel keeps resolved, no
    link-layer address given; with `use`: start resolving the entry now) or RTM_DELNEIGH
    for `address` on link `ifindex`."""
    body = NDMSG.pack(family, 0, 0, ifindex, 0, NTF_USE if use else 0, 0) + attribute(NDA_DST, address)
    if managed:
        body += attribute(NDA_FLAGS_EXT, U32.pack(NTF_EXT_MANAGED))
    return body


def encode_neighbour_timers(family: int, ifindex: int, timers: dict[str, int]) -> bytes:
    """The body of an RTM_SETNEIGHTBL setting `timers` (NDTPA names, see NDTPA) on one link's
    ARP (AF_INET) or ND (AF_INET6) parameters."""
    parms = attribute(NDTPA_IFINDEX, U32.pack(ifindex))
    for name, value in sorted(timers.items()):
        kind, layout = NDTPA[name]
        parms += attribute(kind, struct.pack(layout, value))
    return (NDTMSG.pack(family, 0, 0) + attribute(NDTA_NAME, NEIGH_TABLE_NAMES[family])
            + attribute(NDTA_PARMS | NLA_F_NESTED, parms))
