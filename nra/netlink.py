"""The kernel adapter: read the managed table and rules, apply planned operations, watch.

A thin layer around the pure planner, in the adapter's network namespace (or the current
one). Routes (a handful) go through pyroute2's AsyncIPRoute on one long-lived socket, with
the kernel-side table filter (strict checking). Rules can number 10,000, so they take a lean
path on a second, plain netlink socket: one dump per family decoded with `struct`, and
changes sent many requests per write with the acks read after; deletes echo the kernel's
own bytes for the rule, so exactly that rule goes. The neighbour table (thousands of entries
on a busy node) takes the same lean path: one dump per family, and a plain event socket of
its own, decoded only for the peers' addresses.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator, Container, Iterable, Iterator, Mapping, Sequence

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTM_DELRULE, RTM_GETNEIGH, RTM_NEWLINK, RTM_NEWNEIGH,
    RTM_NEWROUTE, RTM_NEWRULE, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE, RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE, RTMGRP_LINK, RTMGRP_NEIGH,
)
from pyroute2.netlink.rtnl.fibmsg import FR_ACT_TO_TBL

from nra.intent import IPAddress, IPNetwork, Peer
from nra.planner import (
    AddRule, DeleteRoute, DeleteRule, KernelRoute, KernelRule, KernelState, Nexthop,
    Operation, ReplaceRoute, RoutingPolicy,
)

AF = {4: socket.AF_INET, 6: socket.AF_INET6}
VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
RT_TABLE_MAIN = 254
RT_TABLE_COMPAT = 252  # the 8-bit table field when the real id (> 255) is in an attribute
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
RTNH_FLAGS = {1: "dead", 2: "pervasive", 4: "onlink", 8: "offload", 16: "linkdown"}
FIB_RULE_INVERT = 0x2
UNSET_U32 = 0xFFFFFFFF
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
# Rule attributes that are ours to compare (or carry no selection): everything else
# on a rule pointing at our table makes it an imposter.
RULE_PLAIN_ATTRS = {"FRA_TABLE", "FRA_PRIORITY", "FRA_SRC", "FRA_FWMARK", "FRA_FWMASK",
                    "FRA_PROTOCOL", "FRA_PAD"}
# A route replace the kernel refuses because of one of its nexthops.
NEXTHOP_ERRORS = {errno.ENETUNREACH, errno.ENETDOWN, errno.EINVAL, errno.EHOSTUNREACH, errno.ENODEV}
# Requests per write; their acks must fit the socket's receive buffer.
PIPELINE_CHUNK = 256
EVENT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE
SO_RCVBUFFORCE = 33
EVENT_RCVBUF = 32 * 1024 * 1024


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return f"{os.strerror(code)} (errno {code})"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class ApplyReport:
    applied: list[Operation] = field(default_factory=list)
    failed: list[tuple[Operation, str]] = field(default_factory=list)
    #: route replaces that went in without some nexthops the kernel refused
    dropped: list[tuple[Operation, tuple[IPAddress, ...]]] = field(default_factory=list)


# -- decoding kernel messages (pure) ------------------------------------------------------


def table_of(msg) -> int:
    return msg.get("FRA_TABLE") or msg.get("RTA_TABLE") or msg["table"]


def rule_from_message(msg) -> KernelRule:
    version = VERSION[msg["family"]]
    src = None
    if msg["src_len"]:
        src = ipaddress.ip_network(f"{msg.get('FRA_SRC')}/{msg['src_len']}", strict=False)
    extra: list[str] = []
    if msg["flags"] & FIB_RULE_INVERT:
        extra.append("not")
    if msg["action"] != FR_ACT_TO_TBL:
        extra.append(f"action {msg['action']}")
    if msg["dst_len"]:
        extra.append(f"to {msg.get('FRA_DST')}/{msg['dst_len']}")
    if msg["tos"]:
        extra.append(f"tos {msg['tos']:#x}")
    for name, value in msg["attrs"]:
        if name in RULE_PLAIN_ATTRS or name == "FRA_DST":
            continue
        if name in ("FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP") and value == UNSET_U32:
            continue
        label = name[4:].lower() if name.startswith("FRA_") else name.lower()
        extra.append(f"{label} {value}")
    fwmark = msg.get("FRA_FWMARK") or None
    return KernelRule(
        family=version, src=src, priority=msg.get("FRA_PRIORITY") or 0, table=table_of(msg),
        fwmark=fwmark, fwmask=msg.get("FRA_FWMASK") if fwmark else None, extra=tuple(extra),
        raw=msg,
    )


def _nh_flags(value: int) -> frozenset[str]:
    return frozenset(name for bit, name in RTNH_FLAGS.items() if value & bit)


def route_from_message(msg) -> KernelRoute:
    version = VERSION[msg["family"]]
    dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
    nexthops: list[Nexthop] = []
    multipath = msg.get("RTA_MULTIPATH")
    if multipath:
        for nh in multipath:
            gateway = nh.get("RTA_GATEWAY")
            nexthops.append(Nexthop(ipaddress.ip_address(gateway) if gateway else None, nh["hops"] + 1,
                                    _nh_flags(nh["flags"]), nh.get("oif")))
    elif msg.get("RTA_GATEWAY") or msg.get("RTA_OIF"):
        gateway = msg.get("RTA_GATEWAY")
        nexthops.append(Nexthop(ipaddress.ip_address(gateway) if gateway else None, 1,
                                _nh_flags(msg["flags"]), msg.get("RTA_OIF")))
    return KernelRoute(
        family=version, dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
        table=table_of(msg), nexthops=tuple(nexthops),
        type=ROUTE_TYPES.get(msg["type"], str(msg["type"])), metric=msg.get("RTA_PRIORITY") or 0,
        tos=msg["tos"], proto=msg["proto"], oif=msg.get("RTA_OIF"),
    )


# -- a lean rule dump (10,000 rules are read every reconcile) ------------------------------
# pyroute2 decodes ~0.2 ms per message; these few structs do it in microseconds.

NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table res1 res2 action flags
NLA_HDR = struct.Struct("=HH")
NLMSG_ERROR, NLMSG_DONE, RTM_GETRULE = 2, 3, 34
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
RULE_ATTRS = {1: "FRA_DST", 2: "FRA_SRC", 3: "FRA_IIFNAME", 4: "FRA_GOTO", 6: "FRA_PRIORITY",
              10: "FRA_FWMARK", 11: "FRA_FLOW", 12: "FRA_TUN_ID", 13: "FRA_SUPPRESS_IFGROUP",
              14: "FRA_SUPPRESS_PREFIXLEN", 15: "FRA_TABLE", 16: "FRA_FWMASK", 17: "FRA_OIFNAME",
              18: "FRA_PAD", 19: "FRA_L3MDEV", 20: "FRA_UID_RANGE", 21: "FRA_PROTOCOL",
              22: "FRA_IP_PROTO", 23: "FRA_SPORT_RANGE", 24: "FRA_DPORT_RANGE"}


class ListedRule(dict):
    """One dumped rule: header fields as keys, `attrs` as (name, value) pairs, `get(FRA_..)`
    like a pyroute2 message, and the kernel's own bytes (`raw`) for an exact delete."""

    def __init__(self, fields: dict, attrs: list, raw: bytes):
        super().__init__(fields, attrs=attrs)
        self.attr_map = dict(attrs)
        self.raw = raw

    def get(self, key, default=None):
        if key in self.attr_map:
            return self.attr_map[key]
        return super().get(key, default)


def _rule_attr(kind: int, payload: bytes, family: int):
    if kind in (1, 2):
        return str(ipaddress.ip_address(payload))
    if kind in (3, 17):
        return payload.split(b"\0", 1)[0].decode(errors="replace")
    if kind in (4, 6, 10, 11, 13, 14, 15, 16) and len(payload) >= 4:
        return struct.unpack_from("=I", payload)[0]
    if kind in (19, 21, 22) and payload:
        return payload[0]
    if kind == 20 and len(payload) >= 8:
        return "%d:%d" % struct.unpack_from("=II", payload)
    if kind in (23, 24) and len(payload) >= 4:
        return "%d:%d" % struct.unpack_from("=HH", payload)
    return payload.hex()


def netlink_messages(data: bytes, what: str) -> Iterator[tuple[int, int, int, int]]:
    """(kind, flags, offset, length) of each message in one buffer read from a netlink
    socket. An error message raises OSError naming `what`; NLMSG_DONE is yielded, then the
    walk ends."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, flags, _, _ = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, offset + NLMSG_HDR.size)[0]
            if code:
                raise OSError(code, f"{what}: {os.strerror(code)}")
        else:
            yield kind, flags, offset, length
            if kind == NLMSG_DONE:
                return
        offset += (length + 3) & ~3


def decode_rule_dump(data: bytes) -> tuple[list[ListedRule], bool]:
    """Rules in one buffer of a dump answer, and whether the dump is complete."""
    rules: list[ListedRule] = []
    for kind, flags, offset, length in netlink_messages(data, "rule dump"):
        if kind == NLMSG_DONE:
            return rules, True
        if kind != RTM_NEWRULE:
            continue
        if flags & NLM_F_DUMP_INTR:
            raise InterruptedError("rule dump interrupted by a change")
        body = offset + NLMSG_HDR.size
        values = FIB_RULE_HDR.unpack_from(data, body)
        fields = dict(zip(("family", "dst_len", "src_len", "tos", "table", "res1", "res2",
                           "action", "flags"), values))
        attrs = []
        at, end = body + FIB_RULE_HDR.size, offset + length
        while at + NLA_HDR.size <= end:
            nla_len, nla_kind = NLA_HDR.unpack_from(data, at)
            if nla_len < NLA_HDR.size:
                break
            nla_kind &= 0x3FFF  # drop the nested/byte-order bits
            payload = data[at + NLA_HDR.size:at + nla_len]
            attrs.append((RULE_ATTRS.get(nla_kind, f"FRA_{nla_kind}"),
                          _rule_attr(nla_kind, payload, fields["family"])))
            at += (nla_len + 3) & ~3
        rules.append(ListedRule(fields, attrs, data[offset:offset + length]))
    return rules, False


# Stands, in the cache of decoded rules, for a rule that points at another table.
FOREIGN_RULE = KernelRule(family=0, src=None, priority=0, table=0)


def dump_rules_blocking(sock: socket.socket, family: int, seq: int,
                        known: dict[bytes, KernelRule] | None = None) -> list[ListedRule | KernelRule]:
    """Every rule of a family. A message whose bytes (after the header) are in `known` is
    not decoded again: the KernelRule found there stands for it. On a node whose rules did
    not change, that turns a steady read into a dump and dictionary look-ups."""
    request = NLMSG_HDR.pack(NLMSG_HDR.size + FIB_RULE_HDR.size, RTM_GETRULE,
                             NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    known = known if known is not None else {}
    for _ in range(5):  # a dump interrupted by a concurrent change is simply redone
        sock.send(request)
        rules: list[ListedRule | KernelRule] = []
        try:
            while True:
                batch, done = _decode_rule_dump_known(sock.recv(1 << 20), known)
                rules += batch
                if done:
                    return rules
        except InterruptedError:
            while not decode_rule_dump(sock.recv(1 << 20))[1]:  # drain the rest
                pass
    raise OSError(errno.EINTR, "rule dump kept being interrupted")


def _decode_rule_dump_known(data: bytes, known: dict[bytes, KernelRule]) -> tuple[list, bool]:
    if not known:
        return decode_rule_dump(data)
    out: list[ListedRule | KernelRule] = []
    for kind, flags, offset, length in netlink_messages(data, "rule dump"):
        rule = None
        if kind == RTM_NEWRULE and not flags & NLM_F_DUMP_INTR:
            rule = known.get(data[offset + NLMSG_HDR.size:offset + length])
        if rule is not None:
            out.append(rule)
        else:  # anything else (unknown rules, DONE, interrupted) the full way
            batch, done = decode_rule_dump(data[offset:offset + length])
            out += batch
            if done:
                return out, True
    return out, False


def _nla(kind: int, payload: bytes) -> bytes:
    data = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def encode_rule_add(op: AddRule) -> bytes:
    """The body (after the netlink header) of an RTM_NEWRULE for one of our rules."""
    src_len = op.src.prefixlen if op.src is not None else 0
    body = FIB_RULE_HDR.pack(AF[op.family], 0, src_len, 0, op.table if op.table < 256 else RT_TABLE_COMPAT,
                             0, 0, FR_ACT_TO_TBL, 0)
    body += _nla(15, struct.pack("=I", op.table)) + _nla(6, struct.pack("=I", op.priority))
    if src_len:
        body += _nla(2, op.src.network_address.packed)
    if op.fwmark:
        body += _nla(10, struct.pack("=I", op.fwmark))
        if op.fwmask is not None:
            body += _nla(16, struct.pack("=I", op.fwmask))
    return body


def encode_rule_delete(rule: KernelRule) -> bytes:
    """The body of an RTM_DELRULE for exactly this listed rule: the kernel's own bytes."""
    if isinstance(rule.raw, ListedRule):
        return rule.raw.raw[NLMSG_HDR.size:]
    return encode_rule_add(AddRule(rule.family, rule.src, rule.priority, rule.table, rule.fwmark, rule.fwmask))


def request_batch_blocking(sock: socket.socket, kind: int, flags: int, bodies: Sequence[bytes],
                           first_seq: int) -> list[int]:
    """Send many requests in one write (the kernel handles them in order) and return each
    one's errno from its ack (0 = done)."""
    data = b"".join(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, first_seq + i, 0) + body
                    + b"\0" * (-len(body) % 4) for i, body in enumerate(bodies))
    sock.send(data)
    results: dict[int, int] = {}
    while len(results) < len(bodies):
        answer = sock.recv(1 << 20)
        offset = 0
        while offset + NLMSG_HDR.size <= len(answer):
            length, msg_kind, _, seq, _ = NLMSG_HDR.unpack_from(answer, offset)
            if length < NLMSG_HDR.size:
                break
            if msg_kind == NLMSG_ERROR and first_seq <= seq < first_seq + len(bodies):
                results[seq - first_seq] = -struct.unpack_from("=i", answer, offset + NLMSG_HDR.size)[0]
            offset += (length + 3) & ~3
    return [results[i] for i in range(len(bodies))]


# -- neighbour entries (lean, like the rules) ---------------------------------------------

NDMSG = struct.Struct("=BBHiHBB")  # family pad pad ifindex state flags type
NDA_DST, NDA_IFINDEX = 1, 8
NUD_NAMES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
             0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}
NEIGH_EVENT_RCVBUF = 4 * 1024 * 1024


@dataclass(frozen=True)
class NeighbourEntry:
    address: IPAddress
    ifindex: int
    state: str  # a NUD_NAMES value, or "NONE"
    deleted: bool = False  # an RTM_DELNEIGH notification


def decode_neighbours(data: bytes, wanted: Container[bytes]) -> tuple[list[NeighbourEntry], bool]:
    """The entries for `wanted` addresses (packed bytes) in one buffer of neighbour messages
    (a dump answer or notifications), and whether it ended a dump. Other entries are skipped
    after reading their destination, without building anything."""
    entries: list[NeighbourEntry] = []
    for kind, _, offset, length in netlink_messages(data, "neighbour dump"):
        if kind == NLMSG_DONE:
            return entries, True
        if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH) or length < NLMSG_HDR.size + NDMSG.size:
            continue
        body = offset + NLMSG_HDR.size
        _, _, _, ifindex, nud, _, _ = NDMSG.unpack_from(data, body)
        at, end = body + NDMSG.size, offset + length
        while at + NLA_HDR.size <= end:
            nla_len, nla_kind = NLA_HDR.unpack_from(data, at)
            if nla_len < NLA_HDR.size:
                break
            if nla_kind & 0x3FFF == NDA_DST:
                dst = data[at + NLA_HDR.size:at + nla_len]
                if dst in wanted:
                    entries.append(NeighbourEntry(ipaddress.ip_address(dst), ifindex,
                                                  NUD_NAMES.get(nud, "NONE"), kind == RTM_DELNEIGH))
                break
            at += (nla_len + 3) & ~3
    return entries, False


def dump_neighbours_blocking(sock: socket.socket, family: int, seq: int, wanted: Container[bytes],
                             ifindex: int = 0) -> list[NeighbourEntry]:
    """One neighbour table dump (ARP for AF_INET, ND for AF_INET6), of one link if `ifindex`
    (the kernel filters: a node's pod interfaces are not even sent), kept for `wanted` only.
    A dump interrupted by a change is still a fine snapshot: the change comes as an event."""
    body = NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
    if ifindex:
        body += _nla(NDA_IFINDEX, struct.pack("=I", ifindex))
    request = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
    sock.send(request)
    entries: list[NeighbourEntry] = []
    while True:
        batch, done = decode_neighbours(sock.recv(1 << 20), wanted)
        entries += batch
        if done:
            return entries


def neighbour_class(previous: str | None, nud: str | None) -> str:
    """What a peer's neighbour state means for its place in the route (see the planner):
    "silent" once FAILED, and through the INCOMPLETE retries that follow; "resolving" for
    another INCOMPLETE; "usable" for a valid state, NONE or no entry. The event watcher
    wakes the agent only when this class changes, not on every state change."""
    if nud == "FAILED":
        return "silent"
    if nud == "INCOMPLETE":
        return "silent" if previous == "silent" else "resolving"
    return "usable"


# -- sockets in a named namespace --------------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netlink_socket_in(netns: str) -> int:
    """A NETLINK_ROUTE socket inside the named namespace (or a namespace file path); returns
    its fd. Made in a short-lived thread, since setns() moves only the calling thread. (Not
    pyroute2's netns= helper: it forks, and the child's exit signal reaches asyncio's
    signal wakeup fd in the parent as if the agent got SIGTERM.) Never creates a namespace."""
    path = netns if "/" in netns else f"/var/run/netns/{netns}"
    result: dict[str, object] = {}

    def work() -> None:
        try:
            with open(path) as ns_file:
                if _libc.setns(ns_file.fileno(), CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns {path}: {os.strerror(code)}")
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
            result["fd"] = sock.detach()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=work, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["fd"]  # type: ignore[return-value]


# -- the adapter --------------------------------------------------------------------------


class KernelAdapter:
    """Reads and writes the managed table and its rules through netlink."""

    def __init__(self, policy: RoutingPolicy, netns: str | None = None):
        self.policy = policy
        self.netns = netns
        self._ipr: AsyncIPRoute | None = None
        # blocking, for the lean rule dump and the batched rule changes
        self._dump_sock: socket.socket | None = None
        self._dump_seq = 0
        #: message bytes -> decoded rule, of the last read (see dump_rules_blocking)
        self._known_rules: dict[bytes, KernelRule] = {}
        # The peers' neighbour entries the event watcher looks at, from the last read_state:
        # packed address -> (links of its connected route, neighbour_class).
        self._watched: dict[bytes, tuple[frozenset[int], str]] = {}

    async def _socket(self, groups: int = 0) -> AsyncIPRoute:
        if not self.netns:
            sock = AsyncIPRoute(groups=groups, strict_check=True)
        else:
            fd = await asyncio.to_thread(netlink_socket_in, self.netns)
            sock = AsyncIPRoute(fileno=fd, groups=groups, strict_check=True)
        await sock.setup_endpoint()
        return sock

    async def __aenter__(self) -> "KernelAdapter":
        self._ipr = await self._socket()
        if self.netns:
            fd = await asyncio.to_thread(netlink_socket_in, self.netns)
            self._dump_sock = socket.socket(fileno=fd)
        else:
            self._dump_sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                            socket.NETLINK_ROUTE)
        self._dump_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._dump_sock.bind((0, 0))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._dump_sock is not None:
            self._dump_sock.close()
            self._dump_sock = None

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise RuntimeError("KernelAdapter used outside `async with`")
        return self._ipr

    # -- reading --------------------------------------------------------------------------

    async def _rules(self) -> list[KernelRule]:
        if self._dump_sock is None:
            raise RuntimeError("KernelAdapter used outside `async with`")
        rules = []
        known: dict[bytes, KernelRule] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            self._dump_seq += 1
            listed = await asyncio.to_thread(dump_rules_blocking, self._dump_sock, family, self._dump_seq,
                                             self._known_rules)
            for item in listed:
                if item is FOREIGN_RULE:
                    continue
                if isinstance(item, ListedRule):
                    key = item.raw[NLMSG_HDR.size:]
                    if table_of(item) != self.policy.table:
                        known[key] = FOREIGN_RULE  # another table's rule: skipped from now on
                        continue
                    item = rule_from_message(item)
                    known[key] = item
                else:
                    known[item.raw.raw[NLMSG_HDR.size:]] = item
                rules.append(item)
        # only what the kernel holds now: the cache never outgrows the table's rules
        self._known_rules = known
        return rules

    async def _routes(self) -> list[KernelRoute]:
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            async for msg in await self.ipr.route("dump", family=family, table=self.policy.table):
                if table_of(msg) == self.policy.table:
                    routes.append(route_from_message(msg))
        return routes

    async def connected_routes(self, versions: Iterable[int]) -> list[tuple[IPNetwork, int | None]]:
        """(prefix, link index) of the main table's connected routes (unicast, no gateway):
        the only routes through which the kernel accepts a gateway (its nexthop check looks
        for a link-scope route). Read from the main table itself, not by a policy lookup, so
        a stray rule pointing somewhere else cannot hide a connected peer."""
        networks = []
        for version in sorted(set(versions)):
            async for msg in await self.ipr.route("dump", family=AF[version], table=RT_TABLE_MAIN):
                if table_of(msg) != RT_TABLE_MAIN or msg["type"] != 1:
                    continue
                if msg.get("RTA_GATEWAY") or msg.get("RTA_MULTIPATH") or msg.get("RTA_VIA"):
                    continue
                route = route_from_message(msg)
                networks.append((route.dst, route.oif))
        return networks

    async def connected_networks(self, versions: Iterable[int]) -> list[IPNetwork]:
        return [network for network, _ in await self.connected_routes(versions)]

    async def unreachable_of(self, addresses: Iterable[IPAddress]) -> frozenset[IPAddress]:
        addresses = list(addresses)
        links = links_of(addresses, await self.connected_routes(a.version for a in addresses))
        return frozenset(a for a in addresses if a not in links)

    async def read_state(self, candidates: Iterable[Peer]) -> KernelState:
        rules = await self._rules()
        routes = await self._routes()
        addresses = {p.address for p in candidates}
        links = links_of(addresses, await self.connected_routes(a.version for a in addresses))
        unreachable = frozenset(a for a in addresses if a not in links)
        neighbours, failing = await self._neighbours(links)
        return KernelState(tuple(routes), tuple(rules), unreachable, neighbours, failing)

    async def _neighbours(self, links: Mapping[IPAddress, frozenset[int]]
                          ) -> tuple[dict[IPAddress, str], frozenset[IPAddress]]:
        """The NUD state of each on-link peer's entry on its connected link (one dump per
        family), and the peers whose entry failed and has not been valid since (from this
        dump, the previous ones and the event watcher, which compares notifications with
        what is recorded here)."""
        if self._dump_sock is None:
            raise RuntimeError("KernelAdapter used outside `async with`")
        wanted = {a.packed: a for a in links}
        states: dict[IPAddress, str] = {}
        for version in sorted({a.version for a in links}):
            family_links = set().union(*(links[a] for a in links if a.version == version))
            self._dump_seq += 1
            entries = await asyncio.to_thread(dump_neighbours_blocking, self._dump_sock, AF[version],
                                              self._dump_seq, wanted,
                                              family_links.pop() if len(family_links) == 1 else 0)
            for entry in entries:
                if entry.ifindex in links[entry.address]:
                    states[entry.address] = entry.state
        old = self._watched
        self._watched = {
            a.packed: (links[a], neighbour_class(old.get(a.packed, (None, None))[1], states.get(a)))
            for a in links
        }
        return states, frozenset(a for a in links if self._watched[a.packed][1] == "silent")

    # -- writing --------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Operation]) -> ApplyReport:
        """Apply in the given order; failures are collected, never raised."""
        report = ApplyReport()
        i = 0
        while i < len(ops):
            op = ops[i]
            if isinstance(op, (AddRule, DeleteRule)):
                j = i
                while j < len(ops) and type(ops[j]) is type(op):
                    j += 1
                await self._apply_rules(ops[i:j], report)
                i = j
                continue
            try:
                if isinstance(op, ReplaceRoute):
                    await self._replace_route(op, report)
                elif isinstance(op, DeleteRoute):
                    await self._delete_route(op.route)
                else:
                    raise TypeError(f"unknown operation {op!r}")
                report.applied.append(op)
            except Exception as exc:  # one bad operation must not stop the others
                report.failed.append((op, _error_text(exc)))
            i += 1
        return report

    async def _apply_rules(self, ops: Sequence[AddRule | DeleteRule], report: ApplyReport) -> None:
        # EEXIST on add and ENOENT on delete mean the kernel is already as wanted.
        if isinstance(ops[0], AddRule):
            kind, flags, ok = RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, errno.EEXIST
            bodies = [encode_rule_add(op) for op in ops]
        else:
            kind, flags, ok = RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, errno.ENOENT
            bodies = [encode_rule_delete(op.rule) for op in ops]
        for start in range(0, len(ops), PIPELINE_CHUNK):
            chunk = ops[start:start + PIPELINE_CHUNK]
            first_seq = self._dump_seq + 1
            self._dump_seq += len(chunk)
            try:
                codes = await asyncio.to_thread(request_batch_blocking, self._dump_sock, kind, flags,
                                                bodies[start:start + PIPELINE_CHUNK], first_seq)
            except OSError as exc:
                report.failed += [(op, _error_text(exc)) for op in chunk]
                continue
            for op, code in zip(chunk, codes):
                if code in (0, ok, errno.ESRCH):
                    report.applied.append(op)
                else:
                    report.failed.append((op, f"{os.strerror(code)} (errno {code})"))

    async def _send_route_replace(self, op: ReplaceRoute, nexthops: Sequence[Nexthop]) -> None:
        # Always a multipath, even of one: the kernel lists a lone one as a plain gateway.
        await self.ipr.route(
            "replace", family=AF[op.family], dst=str(op.dst), table=op.table, priority=op.metric,
            multipath=[{"gateway": str(nh.gateway), "hops": nh.weight - 1} for nh in nexthops],
        )

    async def _replace_route(self, op: ReplaceRoute, report: ApplyReport) -> None:
        """One atomic replace; if the kernel refuses a nexthop, retry without it."""
        try:
            await self._send_route_replace(op, op.nexthops)
            return
        except NetlinkError as exc:
            if exc.code not in NEXTHOP_ERRORS or len(op.nexthops) < 2:
                raise
            first_error = exc
        # Which nexthops does the kernel refuse? Those not on a connected network.
        refused = await self.unreachable_of(nh.gateway for nh in op.nexthops)
        candidates = [nh for nh in op.nexthops if nh.gateway not in refused]
        attempts = []
        if candidates and len(candidates) < len(op.nexthops):
            attempts.append(candidates)
        # still refused (e.g. a gateway the kernel treats differently): leave one out at a time
        attempts += [[nh for nh in op.nexthops if nh is not left_out] for left_out in op.nexthops]
        for kept in attempts:
            try:
                await self._send_route_replace(op, kept)
            except NetlinkError as exc:
                if exc.code not in NEXTHOP_ERRORS:
                    raise
                continue
            dropped = tuple(nh.gateway for nh in op.nexthops if nh not in kept)
            report.dropped.append((op, dropped))
            return
        raise first_error

    async def _delete_route(self, route: KernelRoute) -> None:
        spec = {"family": AF[route.family], "dst": str(route.dst), "table": route.table,
                "tos": route.tos, "type": route.type, "priority": route.metric}
        try:
            await self.ipr.route("del", **spec)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise

    # -- CLEANANDEXIT ---------------------------------------------------------------------

    async def clean(self) -> int:
        """Remove every rule of either family pointing at the table and flush the table
        (both families). Returns how many objects went; 0 when there was nothing."""
        rules = await self._rules()
        routes = await self._routes()
        ops: list[Operation] = [DeleteRule(r, reason="clean") for r in rules]
        ops += [DeleteRoute(r, reason="clean") for r in routes]
        report = await self.apply(ops)
        if report.failed:
            op, error = report.failed[0]
            raise RuntimeError(f"{len(report.failed)} removal(s) failed, first: {op}: {error}")
        return len(report.applied)

    # -- events ---------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[str]:
        """Yield a short reason for each change to our rules/table, each link that goes up
        or down, and each peer whose neighbour entry starts or stops failing. On a socket
        overflow, yield a resync reason and start over."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(source: AsyncIterator[str]) -> None:
            try:
                async for reason in source:
                    queue.put_nowait(reason)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the consumer, as before the split
                queue.put_nowait(exc)

        pumps = [asyncio.create_task(pump(self._table_events()), name="netlink-table-events"),
                 asyncio.create_task(pump(self._neighbour_events()), name="netlink-neighbour-events")]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _table_events(self) -> AsyncIterator[str]:
        while True:
            sock = await self._socket(EVENT_GROUPS)
            try:
                await sock.bind(groups=EVENT_GROUPS)  # a socket made in a netns is not bound yet
                try:  # a burst of 10,000 rule notifications must fit (we are root)
                    sock.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, EVENT_RCVBUF)
                except OSError:
                    pass
                links: dict[int, tuple[bool, bool]] = {}
                async for msg in await sock.link("dump"):
                    links[msg["index"]] = _link_state(msg)
                while True:
                    async for msg in sock.get():
                        reason = self._event_reason(msg, links)
                        if reason:
                            yield reason
            except (OSError, NetlinkError) as exc:
                yield f"netlink event socket error ({_error_text(exc)}): resync"
                await asyncio.sleep(0.1)
            finally:
                sock.close()

    async def _neighbour_socket(self) -> socket.socket:
        if self.netns:
            sock = socket.socket(fileno=await asyncio.to_thread(netlink_socket_in, self.netns))
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, NEIGH_EVENT_RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NEIGH_EVENT_RCVBUF)
        sock.bind((0, RTMGRP_NEIGH))
        sock.setblocking(False)
        return sock

    async def _neighbour_events(self) -> AsyncIterator[str]:
        """Neighbour notifications on a plain socket of their own: a busy node refreshes
        ARP/ND entries all the time, so only the peers' addresses are decoded, and only a
        change of neighbour_class on the peer's link wakes the agent."""
        loop = asyncio.get_running_loop()
        while True:
            sock = await self._neighbour_socket()
            try:
                while True:
                    data = await loop.sock_recv(sock, 1 << 16)
                    for entry in decode_neighbours(data, self._watched)[0]:
                        reason = self._neighbour_reason(entry)
                        if reason:
                            yield reason
            except OSError as exc:  # ENOBUFS: notifications were lost
                yield f"netlink neighbour socket error ({_error_text(exc)}): resync"
                await asyncio.sleep(0.1)
            finally:
                sock.close()

    def _neighbour_reason(self, entry: NeighbourEntry) -> str | None:
        watched = self._watched.get(entry.address.packed)
        if watched is None:
            return None
        links, old = watched
        if entry.ifindex not in links:
            return None
        new = neighbour_class(old, None if entry.deleted else entry.state)
        if new == old:
            return None
        self._watched[entry.address.packed] = (links, new)
        what = "entry removed" if entry.deleted else entry.state
        return f"neighbour {entry.address}: {what} ({old} -> {new})"

    def _event_reason(self, msg, links: dict[int, tuple[bool, bool]]) -> str | None:
        kind = msg["header"]["type"]
        if kind in (RTM_NEWRULE, RTM_DELRULE) and table_of(msg) == self.policy.table:
            rule = rule_from_message(msg)
            return f"rule {'added' if kind == RTM_NEWRULE else 'deleted'}: IPv{rule.family} from " \
                   f"{rule.src or 'all'} priority {rule.priority}"
        if kind in (RTM_NEWROUTE, RTM_DELROUTE) and table_of(msg) == self.policy.table:
            route = route_from_message(msg)
            return f"route {'added' if kind == RTM_NEWROUTE else 'deleted'}: IPv{route.family} {route.dst}"
        if kind == RTM_NEWLINK:
            index, new = msg["index"], _link_state(msg)
            old = links.get(index)
            links[index] = new
            if old is not None and old != new:
                name = msg.get("IFLA_IFNAME") or f"#{index}"
                admin, carrier = new
                return f"link {name} {'up' if admin and carrier else 'down'}" \
                       f" (admin {'up' if admin else 'down'}, carrier {'up' if carrier else 'down'})"
        if kind == RTM_DELLINK:
            links.pop(msg["index"], None)
            return f"link {msg.get('IFLA_IFNAME') or msg['index']} removed"
        return None


def links_of(addresses: Iterable[IPAddress],
             connected: Sequence[tuple[IPNetwork, int | None]]) -> dict[IPAddress, frozenset[int]]:
    """For each address on a connected network, the link(s) of the most specific one (where
    the kernel resolves it as a nexthop); off-link addresses are left out."""
    result: dict[IPAddress, frozenset[int]] = {}
    for address in addresses:
        matches = [(n.prefixlen, oif) for n, oif in connected if n.version == address.version and address in n]
        if matches:
            longest = max(length for length, _ in matches)
            result[address] = frozenset(oif for length, oif in matches if length == longest and oif is not None)
    return result


def _link_state(msg) -> tuple[bool, bool]:
    flags = msg["flags"]
    return bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP)
