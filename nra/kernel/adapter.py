"""The kernel façade the reconciler talks to (nra.kernel.protocol.Kernel): read the state,
apply operations, events.

It composes one component per kernel object (rules, routes, neighbours, addresses; and
what the return path declares in its KernelReads: more route tables, nra's nftables table,
the peers' links) and the event source, in one network namespace (or the current one). It
knows no return-path mode: it reads what it is told to and applies each operation through
the component that owns its object.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from functools import partial
from typing import AbstractSet, AsyncIterator, Iterable, Mapping, Sequence

from loguru import logger
from pyroute2.iproute.linux import AsyncIPRoute

from nra.config.intent import IPAddress, PeerSpec
from nra.config.uplinks import NodeFacts, needs_lookup
from nra.kernel.addresses import LocalAddresses
from nra.kernel.codec import (
    IFINFOMSG,
    NLM_F_REQUEST,
    RTM_GETLINK,
    RTM_NEWLINK,
    decode_link,
    error_text,
    request,
)
from nra.kernel.events import KernelEvent, KernelEvents, TableChange, merge
from nra.kernel.learned import LearnedRoutes
from nra.kernel.libnft import NftError
from nra.kernel.model import UNRESOLVED, KernelReads, KernelRoute, KernelState, NeighbourEntry
from nra.kernel.neighbours import Neighbours
from nra.kernel.nft import LeftoverTable, NftState
from nra.kernel.nft_table import NftTable
from nra.kernel.operations import (
    AddRule,
    ApplyNft,
    ApplyReport,
    DeleteRoute,
    DeleteRule,
    Operation,
    ReplaceRoute,
)
from nra.kernel.peer_neighbours import PeerNeighbours
from nra.kernel.protocol import KERNEL_ERRORS
from nra.kernel.routes import (
    Routes,
    links_of,
    network_addresses,
    open_route_socket,
    read_connected,
    read_leftovers,
    read_tables,
)
from nra.kernel.rule_set import RuleSet
from nra.kernel.rules import Rules
from nra.kernel.socket import NetlinkSocket, in_netns
from nra.kernel.uplink_facts import read_node_facts


def _fault_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return error_text(code)
    return f"{type(exc).__name__}: {exc}"


#: how often resolve_fresh_peers looks at the entries it started resolving
RESOLVE_POLL_S = 0.02

class KernelAdapter:
    """Reads and writes the managed table and its rules; use as `async with`."""

    def __init__(self, table: int, netns: str | None = None, reads: KernelReads = KernelReads(),
                 learned_protos: frozenset[int] = frozenset(), managed_neighbours: bool = False,
                 neigh_timers: Mapping[str, int] | None = None, nft_library_optional: bool = False):
        """reads: what the return path needs beyond the table and its rules (its
        ReturnPath.reads). nft_library_optional: without libnftables, nra's nft table can
        still be read for presence and removed (CLEANANDEXIT)."""
        self.table = table
        self.netns = netns
        self.reads = reads
        self._sock = NetlinkSocket(netns)
        self._ipr: AsyncIPRoute | None = None
        self._route_table: Routes | None = None
        self._rules = Rules(self._sock, table, reads.route_tables)
        self._neighbours = Neighbours(self._sock)
        self._local = LocalAddresses(self._sock)
        self._peer_neighbours = PeerNeighbours(self._sock, managed_neighbours, neigh_timers)
        own_tables = (table, *reads.route_tables)  # a route there is nra's, never learned
        self._learned = LearnedRoutes(learned_protos, own_tables) if learned_protos else None
        self._events = KernelEvents(netns, table, reads.route_tables, learned_protos, self._rules.kept,
                                    lambda: self._sock.portid)
        self._nft: NftState | None = None
        self._nft_library_optional = nft_library_optional
        #: nra's nft table seen from a return path that does not own it (KernelReads.nft_leftover)
        self._nft_leftover_table = LeftoverTable(netns) if reads.nft_leftover and not reads.nftables else None
        #: whether that table was there at the last full read (less its removal)
        self._nft_leftover = False
        self._route_tables_read = False
        #: nra's routes in tables not its own now, as of the last full read (less those deleted)
        self._leftover_routes: tuple[KernelRoute, ...] | None = None
        #: the on-link peers' links, from the last read
        self._links: Mapping[IPAddress, frozenset[int]] = {}

    async def __aenter__(self) -> "KernelAdapter":
        await asyncio.to_thread(self._sock.open)
        self._ipr = await open_route_socket(self.netns)
        self._route_table = Routes(self._ipr, self.table, self._sock)
        if self.reads.nftables:
            self._nft = await asyncio.to_thread(NftState, self.netns, self._nft_library_optional)
            if self._nft.missing_library:
                logger.warning("{}: nra's nft table is read and removed through nf_tables netlink alone",
                               self._nft.missing_library)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = self._route_table = None
        if self._nft is not None:
            self._nft.close()
            self._nft = None
        if self._nft_leftover_table is not None:
            self._nft_leftover_table.close()
        self._sock.close()

    @property
    def _routes(self) -> Routes:
        if self._route_table is None:
            raise RuntimeError("KernelAdapter used outside `async with`")
        return self._route_table

    # -- reading ----------------------------------------------------------------------

    async def read_state(self, candidates: Iterable[IPAddress]) -> KernelState:
        """The table's routes and rules, and for the candidate peers: which are on-link (and
        where), and their neighbour entries there. Also tells the event source which
        neighbour entries to report. The rules come from the view the notifications keep
        (nra.kernel.rules.KeptRules) while it is in step, else from a full read."""
        self._events.drain()
        full_reads = self._rules.full_reads
        rules, rule_leftovers = await self._rules.current()
        addresses = set(candidates)
        invalid: dict[IPAddress, str] = {}
        zones = await self._zones(addresses, invalid) if addresses else {}
        table_routes, links, entries = await asyncio.to_thread(self._read_small, addresses, zones, invalid)
        learned = await self._learned.read(self._sock, addresses, links) if self._learned else None
        self._events.watch(links)
        self._links = links
        owned = {self.table, *self.reads.route_tables}
        if self._leftover_routes is None or self._rules.full_reads != full_reads:
            # (a dump of every table, filtered by protocol in the kernel: with the full reads
            # only; nra's own route writes go to its tables, and a route of its protocol
            # added elsewhere makes the next read a full one: nra.kernel.events)
            self._leftover_routes = tuple(await asyncio.to_thread(read_leftovers, self._sock, owned))
            if self._nft_leftover_table is not None:  # (one GETTABLE, with the full reads only)
                self._nft_leftover = await asyncio.to_thread(self._nft_leftover_table.present)
        leftovers = (*rule_leftovers, *self._leftover_routes)
        state = KernelState(tuple(table_routes), rules, frozenset(addresses - links.keys()),
                            {a: e.state for a, e in entries.items()}, links, invalid, learned, leftovers=leftovers,
                            nft_leftover=self._nft_leftover)
        return await self._read_declared(state, entries)

    def _read_small(self, addresses: set[IPAddress], zones: Mapping[IPAddress, int], invalid: dict[IPAddress, str],
                    ) -> tuple[list[KernelRoute], dict[IPAddress, frozenset[int]], dict[IPAddress, NeighbourEntry]]:
        """The table's routes, which candidates are on-link (and where: `invalid` gets those
        that cannot be a nexthop) and their neighbour entries: a handful of objects each, read
        in one worker thread (one hand-off, not five: each costs a wake-up of the thread and
        of the loop, which a loaded machine makes milliseconds)."""
        table_routes = read_tables(self._sock, (self.table,))
        links: dict[IPAddress, frozenset[int]] = {}
        if addresses:
            connected = read_connected(self._sock, (a.version for a in addresses))
            links = links_of(addresses, connected, zones)
            invalid.update(self._local.kinds_blocking(addresses))
            invalid.update(network_addresses(links, connected))
        entries = self._neighbours.read_blocking(links) if links else {}
        return table_routes, links, entries

    def resync(self) -> None:
        """The next read reads all rules again (the periodic resync), whatever the view says."""
        self._rules.kept.forget("resync")

    @property
    def full_reads(self) -> int:
        """How many reads dumped all rules (the others used the kept view)."""
        return self._rules.full_reads

    async def _zones(self, addresses: Iterable[IPAddress], invalid: dict[IPAddress, str]) -> dict[IPAddress, int]:
        """The link index of each zoned address's zone (fe80::1%eth0: eth0's); an unknown
        zone goes to `invalid`."""
        zones: dict[IPAddress, int] = {}
        for address in addresses:
            zone = getattr(address, "scope_id", None)
            if not zone:
                continue
            try:
                zones[address] = await asyncio.to_thread(in_netns, self.netns, partial(socket.if_nametoindex, zone))
            except OSError:
                invalid[address] = f"on link {zone}, which does not exist"
        return zones

    async def _read_declared(self, state: KernelState, entries: Mapping[IPAddress, NeighbourEntry]) -> KernelState:
        """What the return path declared (KernelReads) beyond the table: the peers'
        link-layer addresses and link names, nra's nft table, the other route tables."""
        parts: dict = {}
        if self.reads.peer_links:
            parts.update(lladdrs={a: e.lladdr for a, e in entries.items() if e.lladdr},
                         link_names=await self._link_names(state.links))
        # the first read of the route tables reads every declared one, whatever the nft
        # table says: it goes on while the nft table is read (at start, its read is the
        # longest part of the first reconcile at 100,000 intervals)
        every_table = None
        if self.reads.route_tables and not self._route_tables_read and self._nft is not None:
            every_table = asyncio.ensure_future(self._read_route_tables(state, None))
        try:
            nft_table = await self._nft.read() if self._nft is not None else None
        except BaseException:
            if every_table is not None:
                every_table.cancel()
                await asyncio.gather(every_table, return_exceptions=True)
            raise
        if self._nft is not None:
            parts["nft"] = nft_table
        if every_table is not None:
            parts["router_routes"] = await every_table
        elif self.reads.route_tables:
            parts["router_routes"] = await self._read_route_tables(state, nft_table)
        return replace(state, **parts) if parts else state

    async def _link_names(self, links: Mapping[IPAddress, frozenset[int]]) -> dict[int, str]:
        """The names of the peers' links: an RTM_GETLINK each on nra's own socket, decoded for
        the name alone (pyroute2's request and full decode cost ~2.5 ms a link per reconcile)."""
        indexes = sorted(set().union(*links.values())) if links else []
        if not indexes:
            return {}

        def read() -> dict[int, str]:
            return {index: self._sock.query(
                lambda seq, index=index: request(RTM_GETLINK, NLM_F_REQUEST, seq, IFINFOMSG.pack(0, 0, 0, index, 0, 0)),
                lambda message: decode_link(message).name if message.kind == RTM_NEWLINK else None)
                for index in indexes}

        return await asyncio.to_thread(read)

    async def _read_route_tables(self, state: KernelState, nft_table: NftTable | None) -> tuple:
        """Every declared table once (leftovers of an earlier run go); after that the ones a
        rule points at or the nft map numbers: a read costs a dump per table and family."""
        assert self._ipr is not None
        declared = self.reads.route_tables
        tables: Iterable[int] = declared
        if self._route_tables_read:
            used = {t for t in RuleSet.of(state.rules).tables() if t in declared}
            if nft_table is not None:
                used |= {declared[i - 1] for i in nft_table.routers.values() if 1 <= i <= len(declared)}
            tables = sorted(used)
        routes = []
        for table in tables:
            routes += await Routes(self._ipr, table, self._sock).read()
        self._route_tables_read = True
        return tuple(routes)

    async def uplink_facts(self, specs: Iterable[PeerSpec]) -> NodeFacts:
        """What the kernel says about the peers that need the node's tables (multihop: the
        route to them; unnumbered: the link-local neighbours of their interface; see
        nra.kernel.uplink_facts). Also tells the event source to report a change of the
        routes to those peers and of those link-local neighbours."""
        wanted = [s for s in specs if needs_lookup(s)]
        if not wanted:
            self._events.watch_uplinks((), ())
            return NodeFacts()
        own = {self.table, *self.reads.route_tables}

        def index_of(name: str) -> int | None:
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return None

        def name_of(index: int) -> str:
            try:
                return socket.if_indextoname(index)
            except OSError:
                return f"if{index}"

        def read() -> tuple[NodeFacts, list[int]]:
            facts = read_node_facts(self._sock, wanted, own, index_of, name_of,
                                    self._learned.protos if self._learned else ())
            links = [i for s in wanted if s.address is None and (i := index_of(s.interface)) is not None]
            return facts, links

        facts, links = await asyncio.to_thread(in_netns, self.netns, read)
        self._events.watch_uplinks([s.address for s in wanted if s.address is not None], links)
        return facts

    # -- writing ----------------------------------------------------------------------

    async def set_up_peer_neighbours(self, state: KernelState) -> list[str]:
        """Managed entries and link timers for the on-link peers of `state`, if configured
        (see nra.kernel.peer_neighbours); returns warnings. Not part of a plan: `nra plan`
        never calls it."""
        if not self._peer_neighbours.active:
            return []
        return await self._peer_neighbours.set_up(state.links, state.neighbours)

    async def resolve_peers(self, entries: Mapping[IPAddress, str | None]) -> list[str]:
        """Start resolving the neighbour entries of silent peers (`entries`: each one's entry
        state, None when gone; see nra.kernel.peer_neighbours), on the links the last read
        found them on; returns warnings. The caller bounds the rate."""
        links = {a: self._links[a] for a in entries if a in self._links}
        if not links:
            return []
        return await self._peer_neighbours.resolve(links, entries)

    async def resolve_fresh_peers(self, peers: Iterable[IPAddress], wait_s: float) -> list[str]:
        """Have the kernel resolve the entries of peers seen for the first time without a valid
        one (a node fresh from start: nothing has sent to its routers yet), and wait until
        each is resolved or failed, at most `wait_s`: the router map is then complete before
        the first connections come. Returns warnings."""
        links = {a: self._links[a] for a in peers if a in self._links}
        if not links:
            return []
        warnings = await self._peer_neighbours.resolve(links, dict.fromkeys(links))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            entries = await self._neighbours.read_entries(links)
            if all(a in entries and entries[a].state not in UNRESOLVED for a in links):
                break
            await asyncio.sleep(RESOLVE_POLL_S)
        return warnings

    async def apply(self, ops: Sequence[Operation]) -> ApplyReport:
        """Apply in the given order, runs of rule changes in one batch; failures are
        collected, never raised (a bug still raises)."""
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
                    dropped = await Routes(self._ipr, op.table, self._sock).replace_leaving_out_refused(
                        op.family, op.dst, op.metric, op.nexthops) if self._ipr else ()
                    if dropped:
                        report.dropped.append((op, dropped))
                elif isinstance(op, DeleteRoute):
                    await self._routes.delete(op.route)
                    if self._leftover_routes and op.route in self._leftover_routes:
                        self._leftover_routes = tuple(r for r in self._leftover_routes if r != op.route)
                elif isinstance(op, ApplyNft) and self._nft is None and op.change.remove \
                        and self._nft_leftover_table is not None:
                    await asyncio.to_thread(self._nft_leftover_table.remove)
                    self._nft_leftover = False
                elif isinstance(op, ApplyNft):
                    if self._nft is None:
                        raise TypeError("an nftables change, but the return path declared no nftables read")
                    await self._nft.apply(op.change, op.desired, op.marks, op.current)
                else:
                    raise TypeError(f"unknown operation {op!r}")
                report.applied.append(op)
            except (*KERNEL_ERRORS, NftError) as exc:  # one refused operation must not stop the others
                report.failed.append((op, _fault_text(exc)))
            i += 1
        return report

    def adopt_rule_members(self, sets: Iterable[AbstractSet[int]]) -> None:
        """The kept rules' view holds these sets (the planner's desired members, just
        written) instead of its own equal ones (nra.kernel.rule_set.RuleBook.adopt): at
        100,000 rules one set, made before the write, not a second one made during it."""
        self._events.drain()  # (the writes' notifications came before their acks: all in now)
        for members in sets:
            self._rules.kept.adopt(members)

    async def _apply_rules(self, ops: Sequence[AddRule | DeleteRule], report: ApplyReport) -> None:
        if isinstance(ops[0], AddRule):
            codes = await self._rules.add(ops)  # type: ignore[arg-type]
        else:
            codes = await self._rules.delete([op.rule for op in ops])  # type: ignore[union-attr]
        for op, code in zip(ops, codes):
            if code == 0:
                report.applied.append(op)
            else:
                report.failed.append((op, error_text(code)))

    # -- events -----------------------------------------------------------------------

    def events(self) -> AsyncIterator[KernelEvent]:
        """Changes to the table, its rules, the links, the watched peers' neighbour entries
        and the learned routes via them (see nra.kernel.events); with nra's nft table
        declared, also anyone else's change to it (netfilter's notifications: at once)."""
        streams = [self._events.stream()]
        if self._nft is not None:
            streams.append(TableChange(reason) async for reason in self._nft.changes())
        return streams[0] if len(streams) == 1 else merge(*streams)

    async def subscribed(self) -> None:
        """Returns once every notification socket of events() is bound: a change made after
        this is seen."""
        await self._events.subscribed.wait()
        if self._nft is not None:
            await self._nft.watching.wait()
