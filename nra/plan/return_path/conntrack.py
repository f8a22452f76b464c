"""The `conntrack` return path, planned: which router each BGP peer is, the nft table that
marks connections by the router they came through, one table per router with a route via
that router only, and a constant number of rules. Pure, no I/O.

Rules (RULE_PRIORITY = P): `fwmark <router i's mark>/<mask> lookup <router i's table>
priority P` for every router, then `fwmark V/V lookup TABLE_WEIGHT priority P+1` for the
external mark and for any router whose own table is empty because it is unusable (its
route withdrawn): its connections then leave through the multipath table.

A router is (ingress link, link-layer address): the peers (IPv4 and IPv6) that answer from
it on that link are one box. The same MAC on two uplinks is two routers; two peers of one
family sharing one MAC on one link (a VRRP/HSRP/MLAG virtual MAC) are one router whose table
holds a multipath route via both (said once, as a warning naming them). Its number (mark,
table) is kept as long as it exists: the nft map says which (link, address) has which number,
and a router's table says which peers it routes through, so a restart or a new link-layer
address for the same peer address keeps it.

Uplink groups (nra.config.uplinks: pools grouped by the peers that announce them): when the
pools form a group other than the one of every peer, each such group gets a fallback, numbered
like a router (a mark, a table of the router range, one rule per family), whose table holds a
multipath route via the group's peers only. The nft group maps send a connection whose router
is not known to its prefix's group's fallback: a reply for a pool announced to uplink A leaves
by A's routers, never by another uplink's. The group of every peer keeps the external mark and
TABLE_WEIGHT, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import islice
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Iterable, Mapping, Sequence

from nra.config.intent import Intent, IPAddress, IPNetwork, Peer
from nra.config.uplinks import pool_groups, prefixes_union
from nra.kernel.marks import MarkField
from nra.kernel.model import (
    DEFAULT_METRIC,
    KernelReads,
    KernelRoute,
    KernelState,
    Nexthop,
    rule_key,
)
from nra.kernel.nft_table import (
    DesiredTables,
    GroupInterval,
    NftTable,
    RouterKey,
    diff,
    prefix_intervals,
    removal,
)
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
class UplinkFallback:
    """An uplink group other than the one of every peer: its connections whose router is not
    known leave by its peers only."""
    peers: frozenset[str]  # PeerSpec keys
    pools: tuple[str, ...]
    prefixes: frozenset[IPNetwork]

    @property
    def key(self) -> str:
        return "group:" + ",".join(sorted(self.peers))


def uplink_fallbacks(intent: Intent) -> tuple[tuple[UplinkFallback, ...], tuple[str, ...]]:
    """The groups that need a fallback of their own (none when every pool goes to every peer:
    the external mark serves them), and the problem lines of the grouping."""
    groups, problems = pool_groups(intent)
    every = frozenset(s.key for s in intent.specs if not s.vrf)
    addressed = {str(p.address) for p in intent.peers}
    lines = [str(p) for p in problems]
    found = []
    for peers, pools in sorted(groups.items(), key=lambda g: sorted(g[0])):
        if peers == every:
            continue
        if not peers & addressed:  # (VRF or unnumbered peers only: not wired in this mode yet)
            lines.append(f"uplink group of pools {', '.join(p.name for p in pools)}: none of its peers "
                         f"({', '.join(sorted(peers))}) is an addressed peer of the default VRF; its connections "
                         "from an unknown router use the multipath table")
            continue
        # (a group of one pool takes its set as it is: a patched pool's set says what it
        # differs by from the last, where a copy costs passes over it to merge, ~5 ms at 50,000)
        found.append(UplinkFallback(peers, tuple(p.name for p in pools), prefixes_union(p.prefixes for p in pools)))
    return tuple(found), tuple(lines)


@dataclass(frozen=True)
class Router:
    index: int
    lladdr: str  # "" for an uplink group's fallback
    peers: tuple[Peer, ...]  # the intent's peers answering from this address (a fallback: its group's)
    link: str = ""
    group: UplinkFallback | None = None  # set for an uplink group's fallback

    @property
    def key(self) -> Hashable:
        return self.group.key if self.group is not None else (self.link, self.lladdr)


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


def assign_routers(lladdrs: Iterable[Hashable], current_map: Mapping[Any, int],
                   current_gateways: Mapping[int, set[IPAddress]],
                   peers_of: Mapping[Any, Iterable[IPAddress]], capacity: int,
                   groups: Sequence[str] = ()) -> tuple[dict[Any, int], list[str]]:
    """A number 1..capacity for every router ((link, link-layer address)) and uplink group
    fallback (`groups`, their keys), keeping numbers already given: by the nft maps first (a
    group's: the index its prefixes go to), then a router by the peers its table routes
    through. New routers take the lowest free numbers, then new groups."""
    taken: dict[Any, int] = {}
    used: set[int] = set()
    pending = []
    for lladdr in [*sorted(set(lladdrs)), *groups]:
        index = current_map.get(lladdr)
        if index is not None and 1 <= index <= capacity and index not in used:
            taken[lladdr], _ = index, used.add(index)
        elif lladdr not in groups:
            pending.append(lladdr)
    still: list[Any] = []
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
    for lladdr in [*still, *(g for g in groups if g not in taken)]:
        index = next(free, None)
        if index is None:
            what = f"uplink {lladdr}" if lladdr in groups else "router " + (
                " ".join(lladdr) if isinstance(lladdr, tuple) else str(lladdr))
            warnings.append(f"{what}: no mark or table left (capacity {capacity}: widen the "
                            f"mark mask or the table range); its connections use the multipath table")
            continue
        taken[lladdr] = index
    return taken, warnings


def current_group_indexes(current: Mapping[int, frozenset[GroupInterval]],
                          fallbacks: Sequence[UplinkFallback]) -> dict[str, int]:
    """The index each group's prefixes go to in the group maps now (by a few of its prefixes:
    the maps hold one group per interval), so a group keeps its mark while it exists."""
    found: dict[str, int] = {}
    for family in (4, 6):
        elements = sorted(current.get(family, ()))
        if not elements:
            continue
        starts = [e[0] for e in elements]
        for group in fallbacks:
            if group.key in found:
                continue
            for prefix in islice((p for p in group.prefixes if p.version == family), 4):
                low, _ = next(iter(prefix_intervals([prefix], (family,))[family]))
                at = bisect_right(starts, low) - 1
                if at >= 0 and elements[at][0] <= low <= elements[at][1]:
                    found[group.key] = elements[at][2]
                    break
    return found


def plan_return_path(intent: Intent, facts: Mapping[IPAddress, PeerFacts], policy: ReturnPathPolicy,
                     current_map: Mapping[RouterKey, int], current_gateways: Mapping[int, set[IPAddress]],
                     destinations: Mapping[int, IPNetwork | None],
                     tables: DesiredTables | None = None,
                     fallbacks: Sequence[UplinkFallback] | None = None,
                     current_groups: Mapping[int, frozenset[GroupInterval]] | None = None) -> ReturnPathState:
    """The whole desired state of the conntrack return path for this intent and these facts.
    `fallbacks`: uplink_fallbacks(intent)[0] if the caller kept it; `current_groups`: the
    group maps' elements now (the nft table's `groups`)."""
    if fallbacks is None:
        fallbacks = uplink_fallbacks(intent)[0]
    by_router: dict[RouterKey, list[Peer]] = {}
    unknown: list[Peer] = []
    for peer in sorted(intent.peers, key=lambda p: (p.address.version, p.address)):
        fact = facts.get(peer.address, PeerFacts())
        if fact.lladdr:
            by_router.setdefault((fact.link or "", fact.lladdr.lower()), []).append(peer)
        else:
            unknown.append(peer)
    desired = tables or DesiredTables()
    known = dict(current_map)
    if current_groups is not None and current_groups is desired.last_groups():
        known.update(desired.group_numbers)  # (nra's own last write: numbered as last time)
    else:
        known.update(current_group_indexes(current_groups or {}, fallbacks))
    numbers, warnings = assign_routers(by_router, known, current_gateways,
                                       {m: [p.address for p in ps] for m, ps in by_router.items()}, policy.capacity,
                                       [g.key for g in fallbacks])
    # A peer whose link-layer address is not known now (its neighbour entry failed) keeps
    # the map elements nobody else claims: its connections keep their mark, and with its
    # table empty they leave through the multipath table.
    if unknown:
        for key, index in current_map.items():
            if key not in numbers and index not in numbers.values() and 1 <= index <= policy.capacity:
                numbers[key] = index
    groups = {g.key: g for g in fallbacks}
    routers = []
    for key, index in sorted(numbers.items(), key=lambda x: x[1]):
        group = groups.get(key) if isinstance(key, str) else None
        if group is not None:
            peers = tuple(sorted((p for p in intent.peers if str(p.address) in group.peers),
                                 key=lambda p: (p.address.version, p.address)))
            routers.append(Router(index, "", peers, "", group))
        else:
            link, lladdr = key
            routers.append(Router(index, lladdr, tuple(by_router.get(key, ())), link))
    routes: list[RouterRoute] = []
    withdrawn: set[IPAddress] = set()
    for router in routers:
        for family in (4, 6):
            if destinations.get(family) is None:
                continue
            peers = [p for p in router.peers if p.family == family]  # (an IPv6 hop may serve IPv4)
            usable = [p for p in peers if facts.get(p.address, PeerFacts()).usable]
            if router.group is None:
                withdrawn.update(p.address for p in peers if p not in usable)
                if len(peers) > 1:
                    warnings.append(f"peers {', '.join(_named(p) for p in peers)} share link-layer address "
                                    f"{router.lladdr} on {router.link}: one router (a VRRP-style pair); its table "
                                    f"{policy.table_of(router.index)} holds a multipath route via all of them")
            routes.append(RouterRoute(policy.table_of(router.index), family,
                                      tuple(sorted((p.address, p.weight) for p in usable))))
    families = {p.family for p in intent.peers if destinations.get(p.family) is not None}
    rules = {RouterRule(f, policy.field.router(r.index), policy.field.mask, policy.table_of(r.index), policy.priority)
             for r in routers for f in families}
    rules |= {RouterRule(f, policy.field.value, policy.field.value, policy.table, policy.priority + 1) for f in families}
    links = {facts[p.address].link for p in intent.peers if p.address in facts and facts[p.address].link}
    group_prefixes = {r.index: r.group.prefixes for r in routers if r.group is not None}
    desired.group_numbers = {r.group.key: r.index for r in routers if r.group is not None}
    table = desired.get(intent.prefixes, frozenset(families), links,
                        {(r.link, r.lladdr): r.index for r in routers if r.group is None}, policy.field,
                        group_prefixes, policy.capacity)
    warnings += desired.group_problems
    for peer in unknown:
        warnings.append(f"peer {peer.address}: link-layer address unknown (no valid neighbour entry); new "
                        f"connections through it get " + ("the mark of their pool's uplink group (or the external mark)"
                                                         if fallbacks else "the external mark") + " until it is known")
    return ReturnPathState(tuple(routers), table, tuple(routes), frozenset(rules), tuple(warnings),
                           frozenset(withdrawn))


def _named(peer: Peer) -> str:
    return f"{peer.name} ({peer.address})" if peer.name and peer.name != str(peer.address) else str(peer.address)


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
                   tables: DesiredTables | None = None,
                   fallbacks: tuple[tuple[UplinkFallback, ...], tuple[str, ...]] | None = None) -> Plan:
    """The conntrack return path's operations: the multipath table's route and its one rule,
    the router tables' routes and rules, and nra's nft table. `policy`: the multipath
    table's (multipath_policy). `tables`: the caller's DesiredTables, kept between
    reconciles."""
    if verdicts is None:
        verdicts = verdicts_from_states(state.neighbours)
    if fallbacks is None:
        fallbacks = uplink_fallbacks(intent)
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
                            {v: policy.destination_of(v) for v in (4, 6)}, tables, fallbacks[0],
                            current.groups if current else None)
    if intent.peers:
        change = diff(want.nft, current)
        if change:
            steps.nft.append(ApplyNft(change, want.nft, rp.field, current, reason=change.reason))
    elif current is not None:
        steps.nft.append(ApplyNft(removal(current), None, None, current, reason="no peers: nra's nft table goes"))
    _router_routes(steps, want, state, policy)
    _router_rules(steps, want, state, rp)
    leftovers(steps, state)
    steps.warnings += [*fallbacks[1], *want.warnings]
    return replace(steps.plan(), uplinks=describe_uplinks(intent, want, rp, policy.table))


def describe_uplinks(intent: Intent, want: ReturnPathState, rp: ReturnPathPolicy, table: int) -> tuple[dict, ...]:
    """Each uplink group: its peers, pools, prefix count, the table and mark of its
    connections from an unknown router, and the routers of its peers (each one's table and
    mark). One group of every peer (no `pools` known: the legacy sources) when there are none."""
    groups, _ = pool_groups(intent)
    if not groups:
        groups = {frozenset(str(p.address) for p in intent.peers): ()}
    fallback = {r.group.peers: r for r in want.routers if r.group is not None}
    out = []
    for peers, pools in sorted(groups.items(), key=lambda g: sorted(g[0])):
        own = fallback.get(peers)
        routers = [{"link": r.link, "lladdr": r.lladdr, "peers": [_named(p) for p in r.peers],
                    "table": rp.table_of(r.index), "mark": f"{rp.field.router(r.index):#x}"}
                   for r in want.routers if r.group is None and any(str(p.address) in peers for p in r.peers)]
        out.append({"peers": sorted(peers), "pools": [p.name for p in pools],
                    "prefixes": sum(len(p.prefixes) for p in pools) if pools else len(intent.prefixes),
                    "table": rp.table_of(own.index) if own else table,
                    "mark": f"{rp.field.router(own.index):#x}" if own else f"{rp.field.value:#x}",
                    "routers": routers})
    return tuple(out)


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
        self._fallbacks: tuple[Intent | None, tuple[tuple[UplinkFallback, ...], tuple[str, ...]]] = (None, ((), ()))

    def plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        # Once per intent: the same groups (and prefix sets) keep the desired table cached.
        if self._fallbacks[0] is not intent:
            self._fallbacks = (intent, uplink_fallbacks(intent))
        return plan_conntrack(intent, state, self.policy, self.rp, verdicts, self._tables, self._fallbacks[1])

    def in_kernel(self, state: KernelState, report: ApplyReport) -> Counts:
        return counts_after(state, report, self.policy)

    def describe(self) -> dict[str, Any]:
        tables = self.rp.tables
        return {"mode": self.name, "table": self.policy.table, "rule_priority": self.rp.priority,
                "mark": f"{self.rp.field.value:#x}/{self.rp.field.mask:#x}",
                "router_tables": f"{tables.start}-{tables.stop - 1}" if tables else "",
                "routers_max": self.rp.capacity}
