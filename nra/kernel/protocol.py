"""What the reconciler asks of the kernel (`Kernel`): one read of the state, applying
operations, the event stream and when it is subscribed, the peers' neighbour machinery.

`nra.kernel.adapter.KernelAdapter` is the real one (netlink, in a network namespace); the
unit tests of the reconcile loop use an in-memory one (tests/fake_kernel.py).
"""

from __future__ import annotations

from typing import AbstractSet, AsyncIterator, Iterable, Mapping, Protocol, Sequence

from pyroute2.netlink.exceptions import NetlinkError

from nra.config.intent import IPAddress, PeerSpec
from nra.config.uplinks import NodeFacts
from nra.kernel.events import KernelEvent
from nra.kernel.model import KernelState
from nra.kernel.operations import ApplyReport, Operation

#: faults of the kernel or its sockets, as opposed to bugs (a Kernel raises these, or a bug)
KERNEL_ERRORS = (OSError, NetlinkError)


class Kernel(Protocol):
    async def read_state(self, candidates: Iterable[IPAddress]) -> KernelState:
        """The table's routes and rules, what the return path declared (KernelReads), and
        for the candidate peers: which are on-link (and where), their neighbour entries."""

    def resync(self) -> None:
        """Make the next read_state a full read of everything (the periodic resync): a Kernel
        may otherwise answer from what the kernel's notifications told it since its last one."""

    async def apply(self, ops: Sequence[Operation]) -> ApplyReport:
        """Apply in the given order; failures are collected, never raised."""

    def adopt_rule_members(self, sets: Iterable[AbstractSet[int]]) -> None:
        """After apply(): where the rules of nra's template now hold exactly one of `sets`
        (the planner's desired members, never changed), keep that set rather than a copy."""

    def events(self) -> AsyncIterator[KernelEvent]:
        """Every change that may call for a reconcile, until cancelled."""

    async def subscribed(self) -> None:
        """Returns once events() is listening: a change made after this is seen."""

    async def set_up_peer_neighbours(self, state: KernelState) -> list[str]:
        """Managed entries and link timers for the on-link peers, if configured; warnings."""

    async def resolve_peers(self, entries: Mapping[IPAddress, str | None]) -> list[str]:
        """Start resolving silent peers' neighbour entries again; warnings."""

    async def uplink_facts(self, specs: Iterable[PeerSpec]) -> NodeFacts:
        """What the node's tables say about the peers that need them (multihop: the route to
        them; unnumbered: their interface's link-local neighbours); their changes become events."""

    async def resolve_fresh_peers(self, peers: Iterable[IPAddress], wait_s: float) -> list[str]:
        """Resolve peers seen for the first time without a valid entry, waiting for the
        answers at most `wait_s`; warnings."""
