"""An in-memory kernel (nra.kernel.protocol.Kernel) for the unit tests of the reconcile loop:
it holds routes, rules and nra's nft table as plain facts, applies operations to them the
way the kernel does, and can refuse chosen operations. No netlink, no root.

Kernel tests keep the real kernel (tests/kernel/); this only stands in where what is tested
is the loop around it: the reconciler, the return paths' plans applied, faults.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import AsyncIterator, Callable, Iterable, Mapping, Sequence

from nra.config.intent import IPAddress, PeerSpec
from nra.config.uplinks import NodeFacts
from nra.kernel.events import KernelEvent, Resync
from nra.kernel.model import KernelReads, KernelRoute, KernelRule, KernelState
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

LINK = 2  # the one link every on-link peer is found on


class FakeKernel:
    def __init__(self, table: int, reads: KernelReads = KernelReads(), *,
                 off_link: Iterable[IPAddress] = (), neighbours: Mapping[IPAddress, str] | None = None,
                 lladdrs: Mapping[IPAddress, str] | None = None,
                 refuse: Callable[[Operation], str | None] = lambda op: None):
        self.table, self.reads = table, reads
        self.off_link = set(off_link)
        self.neighbours = dict(neighbours or {})
        self.lladdrs = dict(lladdrs or {})
        #: an operation it refuses gets this error text (None: applied)
        self.refuse = refuse
        #: what the node's tables say about multihop and unnumbered peers (a test sets it)
        self.uplinks = NodeFacts()
        self.routes: list[KernelRoute] = []
        self.rules: list[KernelRule] = []
        self.nft: NftTable | None = None
        self.reads_done = 0
        #: reads that would dump everything on the real kernel: the first, and the first
        #: after resync() or a Resync event (KernelAdapter answers the others from its view)
        self.full_reads = 0
        self._in_step = False
        self._events: asyncio.Queue[KernelEvent] = asyncio.Queue()

    def _ours(self, table: int) -> bool:
        return table == self.table or table in self.reads.route_tables

    def resync(self) -> None:
        self._in_step = False

    def adopt_rule_members(self, sets) -> None:
        """Nothing to share: the fake holds decoded rules (KernelAdapter's view adopts them)."""

    async def read_state(self, candidates: Iterable[IPAddress]) -> KernelState:
        self.reads_done += 1
        if not self._in_step:
            self.full_reads += 1
            self._in_step = True
        addresses = set(candidates)
        links = {a: frozenset({LINK}) for a in addresses - self.off_link}
        state = KernelState(tuple(r for r in self.routes if r.table == self.table),
                            tuple(r for r in self.rules if self._ours(r.table)),
                            frozenset(addresses & self.off_link),
                            {a: s for a, s in self.neighbours.items() if a in links}, links)
        if self.reads.peer_links:
            state = replace(state, lladdrs={a: m for a, m in self.lladdrs.items() if a in links},
                            link_names={LINK: "eth0"})
        if self.reads.nftables:
            state = replace(state, nft=self.nft)
        if self.reads.route_tables:
            state = replace(state, router_routes=tuple(r for r in self.routes if r.table in self.reads.route_tables))
        return state

    async def apply(self, ops: Sequence[Operation]) -> ApplyReport:
        report = ApplyReport()
        for op in ops:
            error = self.refuse(op)
            if error:
                report.failed.append((op, error))
                continue
            if isinstance(op, ReplaceRoute):
                self.routes = [r for r in self.routes if (r.table, r.family, r.dst, r.metric) !=
                               (op.table, op.family, op.dst, op.metric)]
                self.routes.append(KernelRoute(op.family, op.dst, op.table, op.nexthops, metric=op.metric))
            elif isinstance(op, DeleteRoute):
                self.routes.remove(op.route)
            elif isinstance(op, AddRule):
                self.rules.append(KernelRule(op.family, op.src, op.priority, op.table, op.fwmark,
                                             op.fwmask if op.fwmask is not None or op.fwmark is None else 0xFFFFFFFF))
            elif isinstance(op, DeleteRule):
                self.rules.remove(op.rule)
            elif isinstance(op, ApplyNft):
                if not self.reads.nftables:
                    raise TypeError("an nftables change, but the return path declared no nftables read")
                self.nft = op.desired
            else:
                raise TypeError(f"unknown operation {op!r}")
            report.applied.append(op)
        return report

    def notify(self, event: KernelEvent) -> None:
        """What another writer's change would make the real kernel say (a Resync: what an
        overflow makes it say; the next read is then a full one, as the adapter's)."""
        if isinstance(event, Resync):
            self._in_step = False
        self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[KernelEvent]:
        while True:
            yield await self._events.get()

    async def subscribed(self) -> None:
        return None

    async def set_up_peer_neighbours(self, state: KernelState) -> list[str]:
        return []

    async def resolve_peers(self, entries: Mapping[IPAddress, str | None]) -> list[str]:
        return []

    async def uplink_facts(self, specs: Iterable[PeerSpec]) -> NodeFacts:
        return self.uplinks

    async def resolve_fresh_peers(self, peers: Iterable[IPAddress], wait_s: float) -> list[str]:
        return []  # (its entries are what the test set: nothing to resolve)
