"""The `conntrack` return path, planned: which router each BGP peer is, the nft table that
marks connections by the router they came through, one table per router with a route via
that router only, and a constant number of rules. Pure, no I/O.

Rules (RULE_PRIORITY = P): `fwmark <router i's mark>/<mask> lookup <router i's table>
priority P` for every router, then `fwmark V/V lookup TABLE_WEIGHT priority P+1` for the
external mark and for any router whose own table is empty because it is unusable (its
route withdrawn): its connections then leave through the multipath table.

A router is a link-layer address: the peers (IPv4 and IPv6) that answer from it are one box.
Its number (mark, table) is kept as long as it exists: the nft map says which address has
which number, and a router's table says which peers it routes through, so a restart or a
new link-layer address for the same peer address keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from nra.config.intent import Intent, IPAddress, IPNetwork, Peer
from nra.kernel.marks import MarkField
from nra.kernel.model import (
    DEFAULT_METRIC,
    KernelReads,
    KernelRoute,
    KernelState,
    Nexthop,
    rule_key,
)
from nra.kernel.nft_table import DesiredTables, NftTable, diff, removal
from nra.kernel.operations import (
    AddRule,
    ApplyNft,
    ApplyReport,
    DeleteRoute,
    ReplaceRoute,
)
from nra.plan.peer_health import Verdict, verdicts_from_states
from nra.plan.planner import (
    Plan,
    PlanSteps,
    RoutingPolicy,
    is_managed_route,
    leftovers,
    rule_diff,
    same_nexthops,
    table_routes,
)
from nra.plan.return_path.base import Counts, counts_after


@dataclass(frozen=True)
class ReturnPathPolicy:
    field: MarkField
    tables: range  # one per router: router i uses tables[i - 1]
    table: int  # the multipath table (TABLE_WEIGHT)
    priority: int

    @property
    def capacity(self) -> int:
        return min(self.field.capacity, len(self.tables))

    def table_of(self, index: int) -> int:
        return self.tables[index - 1]

    def index_of_table(self, table: int) -> int | None:
        return self.tables.index(table) + 1 if table in self.tables else None


@dataclass(frozen=True)
class PeerFacts:
    """What the kernel says about one peer of the intent."""
    lladdr: str | None = None  # its link-layer address in the neighbour table, if known
    link: str | None = None  # the interface of its connected route
    usable: bool = True  # carries replies (on a connected network, answering ARP/ND)


@dataclass(frozen=True)
class Router:
    index: int
    lladdr: str
    peers: tuple[Peer, ...]  # the intent's peers answering from this address


@dataclass(frozen=True)
class RouterRoute:
    """The route a router's table should hold for one family (no nexthops: withdrawn)."""
    table: int
    family: int
    nexthops: tuple[tuple[IPAddress, int], ...]  # (gateway, weight)


@dataclass(frozen=True)
class RouterRule:
    family: int
    fwmark: int
    fwmask: int
    table: int
    priority: int


@dataclass(frozen=True)
class ReturnPathState:
    routers: tuple[Router, ...]
    nft: NftTable
    routes: tuple[RouterRoute, ...]
    rules: frozenset[RouterRule]
    warnings: tuple[str, ...] = ()
    withdrawn: frozenset[IPAddress] = field(default_factory=frozenset)


def assign_routers(lladdrs: Iterable[str], current_map: Mapping[str, int],
                   current_gateways: Mapping[int, set[IPAddress]],
                   peers_of: Mapping[str, Iterable[IPAddress]], capacity: int) -> tuple[dict[str, int], list[str]]:
    """A number 1..capacity for every router (link-layer address), keeping numbers already
    given: by the nft map first, then by the peers a router's table routes through. New
    routers take the lowest free numbers."""
    taken: dict[str, int] = {}
    used: set[int] = set()
    pending = []
    for lladdr in sorted(set(lladdrs)):
        index = current_map.get(lladdr)
        if index is not None and 1 <= index <= capacity and index not in used:
            taken[lladdr], _ = index, used.add(index)
        else:
            pending.append(lladdr)
    still = []
    for lladdr in pending:
        peers = set(peers_of.get(lladdr, ()))
        match = next((i for i, gws in sorted(current_gateways.items())
                      if 1 <= i <= capacity and i not in used and gws & peers), None)
        if match is not None:
            taken[lladdr], _ = match, used.add(match)
        else:
            still.append(lladdr)
    warnings = []
    free = (i for i in range(1, capacity + 1) if i not in used)
    for lladdr in still:
        index = next(free, None)
        if index is None:
            warnings.append(f"router {lladdr}: no mark or table left (capacity {capacity}: widen the "
                            f"mark mask or the table range); its connections use the multipath table")
            continue
        taken[lladdr] = index
    return taken, warnings


def plan_return_path(intent: Intent, facts: Mapping[IPAddress, PeerFacts], policy: ReturnPathPolicy,
                     current_map: Mapping[str, int], current_gateways: Mapping[int, set[IPAddress]],
                     destinations: Mapping[int, IPNetwork | None],
                     tables: DesiredTables | None = None) -> ReturnPathState:
    """The whole desired state of the conntrack return path for this intent and these facts."""
    by_lladdr: dict[str, list[Peer]] = {}
    unknown: list[Peer] = []
    for peer in sorted(intent.peers, key=lambda p: (p.address.version, p.address)):
        lladdr = facts.get(peer.address, PeerFacts()).lladdr
        if lladdr:
            by_lladdr.setdefault(lladdr.lower(), []).append(peer)
        else:
            unknown.append(peer)
    numbers, warnings = assign_routers(by_lladdr, current_map, current_gateways,
                                       {m: [p.address for p in ps] for m, ps in by_lladdr.items()}, policy.capacity)
    # A peer whose link-layer address is not known now (its neighbour entry failed) keeps
    # the map elements nobody else claims: its connections keep their mark, and with its
    # table empty they leave through the multipath table.
    if unknown:
        for lladdr, index in current_map.items():
            if lladdr not in numbers and index not in numbers.values() and 1 <= index <= policy.capacity:
                numbers[lladdr] = index
    routers = tuple(Router(i, m, tuple(by_lladdr.get(m, ()))) for m, i in sorted(numbers.items(), key=lambda x: x[1]))
    routes: list[RouterRoute] = []
    withdrawn: set[IPAddress] = set()
    for router in routers:
        for family in (4, 6):
            if destinations.get(family) is None:
                continue
            peers = [p for p in router.peers if p.family == family]  # (an IPv6 hop may serve IPv4)
            usable = [p for p in peers if facts.get(p.address, PeerFacts()).usable]
            withdrawn.update(p.address for p in peers if p not in usable)
            routes.append(RouterRoute(policy.table_of(router.index), family,
                                      tuple(sorted((p.address, p.weight) for p in usable))))
    families = {p.family for p in intent.peers if destinations.get(p.family) is not None}
    rules = {RouterRule(f, policy.field.router(r.index), policy.field.mask, policy.table_of(r.index), policy.priority)
             for r in routers for f in families}
    rules |= {RouterRule(f, policy.field.value, policy.field.value, policy.table, policy.priority + 1) for f in families}
    links = {facts[p.address].link for p in intent.peers if p.address in facts and facts[p.address].link}
    table = (tables or DesiredTables()).get(intent.prefixes, frozenset(families), links,
                                            {r.lladdr: r.index for r in routers}, policy.field)
    for peer in unknown:
        warnings.append(f"peer {peer.address}: link-layer address unknown (no valid neighbour entry); new "
                        f"connections through it get the external mark until it is known")
    return ReturnPathState(routers, table, tuple(routes), frozenset(rules), tuple(warnings), frozenset(withdrawn))


# -- the plan of one reconcile: the planner's steps on the multipath table, then the router
# tables and nft, into one PlanSteps --------------------------------------------------------


def multipath_policy(policy: RoutingPolicy, rp: ReturnPathPolicy) -> RoutingPolicy:
    """The multipath table and its rule in conntrack mode: `from all fwmark V/V lookup
    TABLE priority P+1`, one per family with prefixes."""
    return RoutingPolicy(table=policy.table, priority=rp.priority + 1, fwmark=rp.field.value,
                         fwmask=rp.field.value, destinations=policy.destinations)


def _link_name(state: KernelState, address: IPAddress) -> str | None:
    indexes = state.links.get(address)
    return state.link_names.get(min(indexes)) if indexes else None


def plan_conntrack(intent: Intent, state: KernelState, policy: RoutingPolicy, rp: ReturnPathPolicy,
                   verdicts: Mapping[IPAddress, Verdict] | None = None,
                   tables: DesiredTables | None = None) -> Plan:
    """The conntrack return path's operations: the multipath table's route and its one rule,
    the router tables' routes and rules, and nra's nft table. `policy`: the multipath
    table's (multipath_policy). `tables`: the caller's DesiredTables, kept between
    reconciles."""
    if verdicts is None:
        verdicts = verdicts_from_states(state.neighbours)
    steps = PlanSteps()
    counts = intent.prefix_counts
    families = table_routes(steps, intent, counts, policy, state.routes, state, verdicts)
    wanted = {rule_key(v, None, policy.priority, policy.table, policy.fwmark, policy.effective_fwmask): v
              for v in sorted(families) if counts[v]}
    table_rules = [r for r in state.rules if r.table == policy.table]
    for version in rule_diff(steps, table_rules, wanted, policy, families):
        steps.rule_adds.append(AddRule(version, None, policy.priority, policy.table, policy.fwmark, policy.fwmask,
                                       reason="missing"))
    facts = {p.address: PeerFacts(state.lladdrs.get(p.address), _link_name(state, p.address),
                                  p.address not in steps.unusable) for p in intent.peers}
    current = state.nft
    gateways: dict[int, set[IPAddress]] = {}
    for route in state.router_routes:
        index = rp.index_of_table(route.table)
        if index is not None:
            gateways.setdefault(index, set()).update(nh.gateway for nh in route.nexthops if nh.gateway)
    want = plan_return_path(intent, facts, rp, current.routers if current else {}, gateways,
                            {v: policy.destination_of(v) for v in (4, 6)}, tables)
    if intent.peers:
        change = diff(want.nft, current)
        if change:
            steps.nft.append(ApplyNft(change, want.nft, rp.field, current, reason=change.reason))
    elif current is not None:
        steps.nft.append(ApplyNft(removal(current), None, None, current, reason="no peers: nra's nft table goes"))
    _router_routes(steps, want, state, policy)
    _router_rules(steps, want, state, rp)
    leftovers(steps, state)
    steps.warnings += want.warnings
    return steps.plan()


def _router_routes(steps: PlanSteps, want: ReturnPathState, state: KernelState, policy: RoutingPolicy) -> None:
    slots: dict[tuple[int, int], KernelRoute] = {}
    for route in state.router_routes:
        key = (route.table, route.family)
        if is_managed_route(route, policy.destination_of(route.family)) and key not in slots:
            slots[key] = route
        else:
            steps.route_deletes.append(DeleteRoute(route, reason="not the router table's route"))
    wanted = {(r.table, r.family): r for r in want.routes}
    for key, route in slots.items():
        if key not in wanted:
            steps.route_deletes.append(DeleteRoute(route, reason="no router uses this table"))
    for (table, family), route in wanted.items():
        current = slots.get((table, family))
        hops = tuple(Nexthop(gateway, weight) for gateway, weight in route.nexthops)
        if not hops:
            if current is not None:
                steps.route_deletes.append(DeleteRoute(current, reason="router unusable: withdrawn, its "
                                                                       f"connections use table {policy.table}"))
        elif current is None or not same_nexthops(current.nexthops, hops):
            steps.replaces.append(ReplaceRoute(family, policy.destination_of(family), table, DEFAULT_METRIC[family],
                                               hops, reason="router route missing" if current is None
                                               else "router's peers differ"))


def _router_rules(steps: PlanSteps, want: ReturnPathState, state: KernelState, rp: ReturnPathPolicy) -> None:
    wanted = {rule_key(r.family, None, r.priority, r.table, r.fwmark, r.fwmask): r
              for r in want.rules if r.table in rp.tables}
    router_rules = [r for r in state.rules if r.table in rp.tables]
    for r in rule_diff(steps, router_rules, wanted, "not a router's rule"):
        steps.rule_adds.append(AddRule(r.family, None, r.priority, r.table, r.fwmark, r.fwmask,
                                       reason="router rule missing"))


class ConntrackReturnPath:
    """The strategy (nra.plan.return_path.base.ReturnPath) for RETURN_PATH=conntrack."""

    name = "conntrack"

    def __init__(self, policy: RoutingPolicy, rp: ReturnPathPolicy):
        self.policy = multipath_policy(policy, rp)
        self.rp = rp
        self.reads = KernelReads(route_tables=rp.tables, nftables=True, peer_links=True)
        self._tables = DesiredTables()  # the merged prefixes, updated by each intent's change

    def plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        return plan_conntrack(intent, state, self.policy, self.rp, verdicts, self._tables)

    def in_kernel(self, state: KernelState, report: ApplyReport) -> Counts:
        return counts_after(state, report, self.policy)

    def describe(self) -> dict[str, Any]:
        tables = self.rp.tables
        return {"mode": self.name, "table": self.policy.table, "rule_priority": self.rp.priority,
                "mark": f"{self.rp.field.value:#x}/{self.rp.field.mask:#x}",
                "router_tables": f"{tables.start}-{tables.stop - 1}" if tables else "",
                "routers_max": self.rp.capacity}
