"""Kernel notifications, merged from two sockets into one stream of events.

One socket carries what concerns the managed table: its routes and the rules pointing at
it, and links going up, down or away; and, with learned-route liveness, the routes the
configured routing daemons install or withdraw via a watched peer. Neighbour notifications come on a socket of their own:
a busy node refreshes ARP/ND entries all the time, so only the peers' entries are decoded
(on the peers' own links). A lost notification (socket overflow) becomes a Resync event.

The table socket also keeps the rules' view between full reads (nra.kernel.rules.KeptRules):
every buffer it receives is applied to it whole, in the order the kernel sent it, before any
of its events is handed on; drain() does the same for what waits in the socket when a read
begins. Anything that may have lost or garbled a notification (the socket opened anew or
closed, an overflow, a message of a kind it does not expect, one it cannot decode) makes
the next read a full one, and a message nobody can attribute is also a Resync event.
The notifications of nra's own rule writes (they name the writing socket's port id) change
the view and are no event: the writer knows what it did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Container, Iterable, Mapping, Union

from nra.config.intent import IPAddress
from nra.kernel.codec import (
    IFINFOMSG,
    NLM_F_DUMP,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLM_F_REQUEST,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETLINK,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV4_RULE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    NDMSG,
    RTNLGRP_NEXTHOP,
    LinkState,
    Message,
    decode_link,
    decode_neighbour,
    decode_nexthop,
    decode_route,
    decode_route_gateways,
    decode_route_header,
    error_text,
    messages,
    request,
)
from nra.kernel.model import NRA_PROTOCOL, NeighbourEntry
from nra.kernel.rule_set import OURS, RuleBook, Shape
from nra.kernel.rules import KeptRules
from nra.kernel.socket import open_netlink

TABLE_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE
TABLE_RCVBUF = 32 << 20  # a burst of 10,000 rule notifications must fit (KernelEvents.table_rcvbuf)
NEIGH_RCVBUF = 4 << 20
RESYNC_PAUSE_S = 0.1
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1


@dataclass(frozen=True)
class _Reasoned:
    reason: str


class TableChange(_Reasoned):
    """A route of the table or a rule pointing at it changed, or a link went up/down/away."""


@dataclass(frozen=True)
class NeighbourChange:
    """A watched peer's entry changed on its own link."""

    entry: NeighbourEntry


class LearnedRouteChange(_Reasoned):
    """A routing daemon installed or withdrew a route via a watched peer."""


class UplinkChange(_Reasoned):
    """What a peer resolved through the node's tables was resolved from changed: a route to
    a multihop peer, a link-local neighbour of an unnumbered peer's link."""


class Resync(_Reasoned):
    """Notifications were lost: the whole state must be read again."""


KernelEvent = Union[TableChange, NeighbourChange, LearnedRouteChange, UplinkChange, Resync]


async def merge(*sources: AsyncIterator) -> AsyncIterator:
    """The items of several async iterators as they come, until cancelled; an exception in
    one of them (a bug) ends the merged stream with it."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(source: AsyncIterator) -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer
            queue.put_nowait(exc)

    pumps = [asyncio.create_task(pump(source), name=f"kernel-events-{i}") for i, source in enumerate(sources)]
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


def _sender(message: Message) -> int:
    """The port id a notification names (nlmsg_pid): the socket whose request made the
    change, 0 for the kernel's own."""
    return _PID.unpack_from(message.data, message.body - _PID.size)[0]


_PID = struct.Struct("=I")


def _socket_error(exc: OSError) -> str:
    code = exc.errno if isinstance(exc.errno, int) else 0
    return f"netlink socket error ({error_text(code) if code else exc}): resync"


def _link_reason(old: LinkState | None, new: LinkState) -> str | None:
    if old is None or (old.admin_up, old.carrier_up) == (new.admin_up, new.carrier_up):
        return None
    up = new.admin_up and new.carrier_up
    return (f"link {new.name} {'up' if up else 'down'} (admin {'up' if new.admin_up else 'down'}, "
            f"carrier {'up' if new.carrier_up else 'down'})")


class KernelEvents:
    """The event source. `watch()` says which peers' neighbour entries matter, and on which
    links; the adapter updates it on every read."""

    def __init__(self, netns: str | None, table: int, also: Container[int] = (),
                 learned_protos: frozenset[int] = frozenset(), kept: KeptRules | None = None,
                 own_port: Callable[[], int] | None = None):
        """kept: the rules' view the table socket keeps in step (None: the rules' events
        are still told, nothing is kept). own_port: the netlink port id nra writes its rules
        through (NetlinkSocket.portid, 0 when closed): the notifications of those writes
        change `kept` and are no event (a first start in rules mode writes 100,000 rules:
        100,000 TableChanges, their texts and their queues' wake-ups, to be told that nra
        did what it just did)."""
        self.netns = netns
        self.table = table
        self.also = also  # more tables whose routes and rules are ours (the router tables)
        self.learned_protos = learned_protos
        self.kept = kept
        self._own_port = own_port
        #: how many notifications of nra's own rule writes were applied without an event
        self.own_echoes = 0
        #: the table socket's receive buffer (a test makes it small to overflow it)
        self.table_rcvbuf = TABLE_RCVBUF
        self._table_sock: socket.socket | None = None
        self._table_queue: asyncio.Queue | None = None
        self._links: dict[int, LinkState] = {}
        self._links_listed = asyncio.Event()
        self._watched: dict[bytes, list[tuple[IPAddress, frozenset[int]]]] = {}
        self._uplink_addresses: tuple[IPAddress, ...] = ()
        self._uplink_links: frozenset[int] = frozenset()
        self._link_local: dict[tuple[int, bytes], tuple[bool, str | None]] = {}
        #: set once both sockets are bound (and the link dump asked): a change made after
        #: it is seen; what a test or a caller awaits instead of sleeping
        self.subscribed = asyncio.Event()
        self._bound: set[int] = set()

    def watch_uplinks(self, addresses: Iterable[IPAddress], links: Iterable[int]) -> None:
        """Peers resolved through the node's tables: a route added or deleted in any table
        whose destination holds one of `addresses` (a multihop peer: its gateways may have
        changed), and an IPv6 link-local neighbour changing on one of `links` (an unnumbered
        peer's interface), are events."""
        self._uplink_addresses = tuple(addresses)
        self._uplink_links = frozenset(links)

    def watch(self, links: Mapping[IPAddress, frozenset[int]]) -> None:
        watched: dict[bytes, list[tuple[IPAddress, frozenset[int]]]] = {}
        for address, oifs in links.items():
            watched.setdefault(address.packed, []).append((address, oifs))
        self._watched = watched

    def stream(self) -> AsyncIterator[KernelEvent]:
        """Every event, until cancelled. An unexpected exception (a bug) in either socket's
        reader ends the stream with it."""
        return merge(self._table_events(), self._neighbour_events())

    async def _socket(self, groups: int, rcvbuf: int) -> socket.socket:
        sock = await asyncio.to_thread(open_netlink, self.netns, groups, rcvbuf)
        if groups == TABLE_GROUPS and self.learned_protos:
            # learned routes through nexthop objects (FRR's zebra): an object's change, or its
            # removal (which takes its routes with it, unannounced), is a learned-route change
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
        sock.setblocking(False)
        return sock

    async def _buffers(self, groups: int, rcvbuf: int) -> AsyncIterator[bytes | Resync]:
        """What arrives on a socket bound to `groups`, one receive at a time; after a socket
        error, a Resync and a fresh socket."""
        loop = asyncio.get_running_loop()
        while True:
            sock = await self._socket(groups, rcvbuf)
            try:
                self._bound_to(groups)
                while True:
                    yield await loop.sock_recv(sock, 1 << 20)
            except OSError as exc:  # ENOBUFS: notifications were lost
                yield Resync(_socket_error(exc))
                await asyncio.sleep(RESYNC_PAUSE_S)
            finally:
                sock.close()

    def _bound_to(self, groups: int) -> None:
        self._bound.add(groups)
        if self._bound >= {TABLE_GROUPS, RTMGRP_NEIGH}:
            self.subscribed.set()

    def _kept_forget(self, why: str, listening: bool | None = None) -> None:
        if self.kept is not None:
            self.kept.forget(why)
            if listening is not None:
                self.kept.listening = listening

    async def _table_events(self) -> AsyncIterator[KernelEvent]:
        """The table socket's events. Whoever receives from it applies what came at once, in
        order (drain(): called when the socket is readable, and by a read before it uses the
        kept rules); the events wait in a queue for this generator."""
        loop = asyncio.get_running_loop()
        # The link dump answers on the same socket as the notifications: both update `links`.
        link_dump = request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, IFINFOMSG.pack(0, 0, 0, 0, 0, 0))
        while True:
            sock = await self._socket(TABLE_GROUPS, self.table_rcvbuf)
            queue: asyncio.Queue[KernelEvent | BaseException] = asyncio.Queue()
            # nothing heard before this socket counts: the next read is a full one
            self._table_sock, self._table_queue = sock, queue
            self._kept_forget("listening anew", listening=True)
            try:
                self._links_listed = asyncio.Event()
                await loop.sock_sendall(sock, link_dump)
                loop.add_reader(sock.fileno(), self.drain)
                await self._links_listed.wait()  # (the links' states known: a change is told)
                self._bound_to(TABLE_GROUPS)
                while True:
                    item = await queue.get()
                    if isinstance(item, BaseException):  # the socket's error, or a bug
                        raise item
                    yield item
            except OSError as exc:  # ENOBUFS: notifications were lost
                why = _socket_error(exc)
                self._kept_forget(why)
                self._links.clear()
                yield Resync(why)
                await asyncio.sleep(RESYNC_PAUSE_S)
            finally:
                self._table_sock = self._table_queue = None
                loop.remove_reader(sock.fileno())
                self._kept_forget("not listening", listening=False)
                sock.close()

    def drain(self) -> None:
        """Receive what waits in the table socket now: apply it to the kept rules at once and
        queue its events. A read calls it before it uses the kept rules."""
        sock, queue = self._table_sock, self._table_queue
        while sock is not None and queue is not None and self._table_sock is sock:
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                why = _socket_error(exc)
                self._kept_forget(why)  # (the read that follows is a full one)
                if exc.errno == errno.ENOBUFS:  # notifications were lost; the socket is fine
                    queue.put_nowait(Resync(why))
                    continue
                self._table_sock = None  # (received no more: the generator opens a fresh one)
                queue.put_nowait(exc)
                self._links_listed.set()  # (the generator waits no longer)
                return
            try:
                events = self._table_buffer(data)
            except Exception as exc:  # a bug: it ends the stream (the view is not trusted)
                self._kept_forget(f"{type(exc).__name__}: {exc}")
                self._table_sock = None
                queue.put_nowait(exc)
                self._links_listed.set()
                return
            for event in events:
                queue.put_nowait(event)

    def _table_buffer(self, data: bytes) -> list[KernelEvent]:
        events: list[KernelEvent] = []
        for message in messages(data):
            try:
                reason = self._table_reason(message, self._links)
            except (struct.error, ValueError, IndexError) as exc:
                reason = f"a message it cannot decode (type {message.kind}: {exc})"
                self._kept_forget(reason)
                events.append(Resync(reason))
                continue
            if isinstance(reason, Resync):
                events.append(reason)
            elif reason:
                events.append(TableChange(reason))
            elif self._uplink_addresses and message.kind in (RTM_NEWROUTE, RTM_DELROUTE) and (
                    uplink := self._lookup_reason(message)):
                events.append(UplinkChange(uplink))
            elif self.learned_protos and message.kind in (RTM_NEWROUTE, RTM_DELROUTE):
                learned = self._learned_reason(message)
                if learned:
                    events.append(LearnedRouteChange(learned))
            elif self.learned_protos and message.kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
                learned = self._nexthop_reason(message)
                if learned:
                    events.append(LearnedRouteChange(learned))
        return events

    def _table_reason(self, message: Message, links: dict[int, LinkState]) -> str | Resync | None:
        kind = message.kind
        if kind in (RTM_NEWRULE, RTM_DELRULE):
            found = self._rule_notified(kind == RTM_NEWRULE, message.body_bytes())
            if found is None or found[0].kind != OURS:  # anyone else's rule elsewhere, or a leftover of nra's
                return None
            if self._own_port is not None and _sender(message) == self._own_port() != 0:
                self.own_echoes += 1  # (nra's own write: in the view now; the writer knows it)
                return None
            return f"rule {'added' if kind == RTM_NEWRULE else 'deleted'}: {found[0].text(found[1])}"
        if kind in (RTM_NEWROUTE, RTM_DELROUTE):
            route = decode_route_header(message)
            if route.table != self.table and route.table not in self.also:
                if kind == RTM_NEWROUTE and route.protocol == NRA_PROTOCOL:
                    # nra's protocol in a table not nra's now: a leftover the next read must find
                    # (reads take leftover routes from the last full one)
                    why = f"route of nra's protocol added in table {route.table}: IPv{route.version} {route.dst_text()}"
                    self._kept_forget(why)
                    return why
                return None
            return f"route {'added' if kind == RTM_NEWROUTE else 'deleted'}: IPv{route.version} {route.dst_text()}"
        if kind == RTM_NEWLINK:
            new = decode_link(message)
            old, links[new.index] = links.get(new.index), new
            return _link_reason(old, new)
        if kind == RTM_DELLINK:
            gone = decode_link(message)
            links.pop(gone.index, None)
            return f"link {gone.name} removed"
        if kind in (NLMSG_DONE, NLMSG_ERROR):  # the end of the link dump, its answer
            self._links_listed.set()
            return None
        if kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):  # (nexthop objects: learned-route liveness)
            return None
        why = f"a message it cannot attribute (type {kind}): resync"
        self._kept_forget(why)
        return Resync(why)

    def _rule_notified(self, added: bool, body: bytes) -> tuple[Shape, int] | None:
        if self.kept is not None:
            return self.kept.notified(added, body)
        return RuleBook(self.table, self.also).split(body)

    def _link_local_reason(self, message: Message) -> str | None:
        """An IPv6 link-local neighbour of an unnumbered peer's link became valid, stopped
        being valid, or changed its link-layer address (its refreshes are no event)."""
        if (message.end - message.body < NDMSG.size
                or NDMSG.unpack_from(message.data, message.body)[3] not in self._uplink_links):
            return None  # (a busy node's other links: not even decoded)
        found = decode_neighbour(message, None)
        if (found is None or found.ifindex not in self._uplink_links or found.address.version != 6
                or not found.address.is_link_local):
            return None
        key = (found.ifindex, found.address.packed)
        valid = not found.deleted and found.state not in ("INCOMPLETE", "FAILED", "NONE")
        now = (valid, found.lladdr if valid else None)
        if self._link_local.get(key) == now:
            return None
        self._link_local[key] = now
        return (f"link-local neighbour {found.address} on link {found.ifindex} "
                f"{'valid' if valid else 'not valid'}" + (f" ({found.lladdr})" if valid and found.lladdr else ""))

    def _lookup_reason(self, message: Message) -> str | None:
        """A route of the node's own tables changed the lookup of a multihop peer: its
        destination holds one (its gateways are resolved again)."""
        header = decode_route_header(message)
        if not any(a.version == header.version for a in self._uplink_addresses):
            return None
        route = decode_route(message)
        if route.type not in ("unicast", "blackhole", "unreachable", "prohibit"):
            return None
        peers = [a for a in self._uplink_addresses if a.version == route.family and a in route.dst]
        if not peers:
            return None
        change = "added" if message.kind == RTM_NEWROUTE else "deleted"
        return (f"route to multihop peer {', '.join(map(str, peers))} {change}: "
                f"IPv{route.family} {route.dst} table {route.table}")

    def _learned_reason(self, message: Message) -> str | None:
        """Why a daemon's route matters: it goes via a watched peer, or via a link-local
        address on a watched peer's link (which peer that is, the next read tells)."""
        proto, gateways, links, nh_id = decode_route_gateways(message)
        if proto not in self.learned_protos:
            return None
        if not gateways and nh_id:  # its gateways are the object's (nexthop_compat_mode=0): the read tells
            route = decode_route_header(message)
            return (f"learned route {'added' if message.kind == RTM_NEWROUTE else 'withdrawn'}: "
                    f"IPv{route.version} {route.dst_text()} via nexthop object {nh_id} (proto {proto})")
        peers = gateways & self._watched.keys()
        watched_links = {oif for entries in self._watched.values() for _, oifs in entries for oif in oifs}
        watched_links |= self._uplink_links  # an unnumbered peer's link: its router's address may be new
        if not peers and links & watched_links:
            peers = {g for g in gateways if len(g) == 16 and g[0] == 0xFE and g[1] & 0xC0 == 0x80}  # fe80::/10
        if not peers:
            return None
        route = decode_route_header(message)
        via = ", ".join(sorted(str(ipaddress.ip_address(p)) for p in peers))
        return (f"learned route {'added' if message.kind == RTM_NEWROUTE else 'withdrawn'}: "
                f"IPv{route.version} {route.dst_text()} via {via} (proto {proto})")

    def _nexthop_reason(self, message: Message) -> str | None:
        """A nexthop object via a watched peer (or a link-local address on a watched peer's
        link), or a group (its members may be), added, changed or removed. (Objects carry
        the protocol of whoever made them, FRR's zebra for FRR's: not the learned routes'.)"""
        obj = decode_nexthop(message)
        verb = "changed" if message.kind == RTM_NEWNEXTHOP else "removed"
        if obj.group:
            return f"nexthop group {obj.id} {verb}"
        if obj.gateway is None:
            return None
        watched_links = {oif for entries in self._watched.values() for _, oifs in entries for oif in oifs}
        link_local = len(obj.gateway) == 16 and obj.gateway[0] == 0xFE and obj.gateway[1] & 0xC0 == 0x80
        if obj.gateway in self._watched or (link_local and obj.oif in watched_links):
            return f"nexthop object {obj.id} via {ipaddress.ip_address(obj.gateway)} {verb}"
        return None

    async def _neighbour_events(self) -> AsyncIterator[KernelEvent]:
        async for data in self._buffers(RTMGRP_NEIGH, NEIGH_RCVBUF):
            if isinstance(data, Resync):
                yield data
                continue
            for message in messages(data):
                if message.kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    continue
                watched = self._watched
                entry = decode_neighbour(message, watched)
                if entry is None:
                    if self._uplink_links and (reason := self._link_local_reason(message)):
                        yield UplinkChange(reason)  # a router's address on an unnumbered peer's link
                    continue
                for address, oifs in watched[entry.address.packed]:
                    if entry.ifindex in oifs:  # as the peer's own address (a zone included)
                        yield NeighbourChange(dataclasses.replace(entry, address=address))
