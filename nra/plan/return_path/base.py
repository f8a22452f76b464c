"""The one protocol every return path speaks, and what the strategies share.

A return path is how replies to traffic that came in through a BGP peer leave through
a peer again. The reconciler holds one `ReturnPath` and never asks which: it hands the
kernel side `reads` (what to read beyond the table and its rules), then `plan()`s each read
against the intent, and shows `describe()` on /status and `in_kernel()` on the gauges.

A strategy is pure: it imports the planner's primitives (nra.plan.planner) and the kernel's
vocabulary, never the reconciler; the planner imports no strategy. A strategy that plans
one table per group of peers (per uplink) does so inside `plan()`, declaring those tables
in `reads.route_tables`: the reconciler does not change.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from nra.config.intent import Intent, IPAddress
from nra.kernel.model import KernelReads, KernelState
from nra.kernel.operations import (
    AddRule,
    ApplyReport,
    DeleteRoute,
    DeleteRule,
    ReplaceRoute,
)
from nra.kernel.rule_set import RuleSet
from nra.plan.peer_health import Verdict
from nra.plan.planner import Plan, RoutingPolicy, managed_route

#: peers in the multipath route, rules installed: family (4 or 6) -> count
Counts = tuple[dict[int, int], dict[int, int]]


class ReturnPath(Protocol):
    #: the mode, as RETURN_PATH spells it ("rules", "conntrack")
    name: str
    #: what the kernel side reads for it beyond the table and its rules
    reads: KernelReads

    def plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        """The ordered operations that bring `state` to `intent` (`verdicts`: each peer's
        liveness, nra.plan.peer_health). May keep what it built for the same intent."""

    def in_kernel(self, state: KernelState, report: ApplyReport) -> Counts:
        """What the kernel holds after `report`'s operations were applied to `state`, for
        the gauges (nra_peers_in_route, nra_rules_installed)."""

    def describe(self) -> dict[str, Any]:
        """What /status shows of it: the mode and the tables and marks it owns."""


def counts_after(state: KernelState, report: ApplyReport, table: RoutingPolicy) -> Counts:
    """(nexthops of `table`'s managed route, every rule read), by family, as the kernel
    holds them after `report`'s operations were applied to `state`."""
    peers: dict[int, int] = {}
    families = RuleSet.of(state.rules).families()  # (per template: no rule decoded)
    rules: dict[int, int] = {4: families[4], 6: families[6]}
    for version in (4, 6):
        route = managed_route(state, table, version)
        peers[version] = len(route.nexthops) if route else 0
    dropped = {id(op): len(gateways) for op, gateways in report.dropped}
    for op in report.applied:
        if isinstance(op, ReplaceRoute) and op.table == table.table and op.dst == table.destination_of(op.family):
            peers[op.family] = len(op.nexthops) - dropped.get(id(op), 0)
        elif isinstance(op, DeleteRoute) and op.route == managed_route(state, table, op.route.family):
            peers[op.route.family] = 0
        elif isinstance(op, AddRule):
            rules[op.family] += 1
        elif isinstance(op, DeleteRule):
            rules[op.rule.family] -= 1
    return peers, rules
