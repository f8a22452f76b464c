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

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from nra.config.intent import Intent, IPAddress, IPNetwork, Peer
from nra.kernel.marks import MarkField
from nra.kernel.model import DEFAULT_METRIC, KernelRoute, KernelState, Nexthop, rule_key
from nra.kernel.nft_table import DesiredTables, NftTable, diff, removal
from nra.kernel.operations import AddRule, ApplyNft, DeleteRoute, DeleteRule, ReplaceRoute
from nra.plan.peer_health import Verdict
from nra.plan.planner import Plan, RoutingPolicy, is_managed_route, plan


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
            peers = [p for p in router.peers if p.address.version == family]
            usable = [p for p in peers if facts.get(p.address, PeerFacts()).usable]
            withdrawn.update(p.address for p in peers if p not in usable)
            routes.append(RouterRoute(policy.table_of(router.index), family,
                                      tuple(sorted((p.address, p.weight) for p in usable))))
    families = {p.address.version for p in intent.peers if destinations.get(p.address.version) is not None}
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


# -- the plan of one reconcile (the planner's steps, then the router tables and nft) ------


def table_policy(policy: RoutingPolicy, rp: ReturnPathPolicy) -> RoutingPolicy:
    """The multipath table's rule in conntrack mode: `from all fwmark V/V lookup TABLE
    priority P+1`, i.e. the rules return path with one `from all` prefix and the mark."""
    return RoutingPolicy(table=policy.table, priority=rp.priority + 1, fwmark=rp.field.value,
                         fwmask=rp.field.value, destinations=policy.destinations)


def table_intent(intent: Intent) -> Intent:
    """The intent as the multipath table's planner sees it: its peers, and `from all` for
    each family that has prefixes."""
    everything = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
    return Intent(intent.peers, frozenset(everything[v] for v, n in intent.prefix_counts.items() if n))


def _link_name(state: KernelState, address: IPAddress) -> str | None:
    indexes = state.links.get(address)
    return state.link_names.get(min(indexes)) if indexes else None


def plan_conntrack(intent: Intent, state: KernelState, policy: RoutingPolicy, rp: ReturnPathPolicy,
                   verdicts: Mapping[IPAddress, Verdict] | None = None,
                   tables: DesiredTables | None = None) -> Plan:
    """The conntrack return path's operations: the multipath table and its one rule (the
    planner's own steps), the router tables' routes and rules, and nra's nft table.
    `tables`: the caller's DesiredTables, kept between reconciles."""
    tpolicy = table_policy(policy, rp)
    table_rules = tuple(r for r in state.rules if r.table == policy.table)
    base = plan(table_intent(intent), replace(state, rules=table_rules), tpolicy, verdicts)
    facts = {p.address: PeerFacts(state.lladdrs.get(p.address), _link_name(state, p.address),
                                  p.address not in base.unusable_peers) for p in intent.peers}
    current = state.nft if isinstance(state.nft, NftTable) else None
    gateways: dict[int, set[IPAddress]] = {}
    for route in state.router_routes:
        index = rp.index_of_table(route.table)
        if index is not None:
            gateways.setdefault(index, set()).update(nh.gateway for nh in route.nexthops if nh.gateway)
    want = plan_return_path(intent, facts, rp, current.routers if current else {}, gateways,
                            {v: tpolicy.destination_of(v) for v in (4, 6)}, tables)
    ops: list = []
    if intent.peers:
        change = diff(want.nft, current)
        if change:
            ops.append(ApplyNft(change, want.nft, rp.field, current, reason=change.reason))
    elif current is not None:
        ops.append(ApplyNft(removal(current), None, None, current, reason="no peers: nra's nft table goes"))
    ops += _router_route_ops(want, state, tpolicy)
    ops += _router_rule_ops(want, state, rp)
    ordered = [op for op in ops if isinstance(op, ApplyNft)]
    for kind in (ReplaceRoute, AddRule, DeleteRule, DeleteRoute):
        ordered += sorted((op for op in [*base.operations, *ops] if isinstance(op, kind)), key=kind.sort_key)
    warnings = (*base.warnings, *want.warnings)
    return Plan(tuple(ordered), warnings, base.left_out, base.unusable_peers)


def _router_route_ops(want: ReturnPathState, state: KernelState, tpolicy: RoutingPolicy) -> list:
    ops: list = []
    slots: dict[tuple[int, int], KernelRoute] = {}
    for route in state.router_routes:
        key = (route.table, route.family)
        if is_managed_route(route, tpolicy.destination_of(route.family)) and key not in slots:
            slots[key] = route
        else:
            ops.append(DeleteRoute(route, reason="not the router table's route"))
    wanted = {(r.table, r.family): r for r in want.routes}
    for key, route in slots.items():
        if key not in wanted:
            ops.append(DeleteRoute(route, reason="no router uses this table"))
    for (table, family), route in wanted.items():
        current = slots.get((table, family))
        hops = tuple(Nexthop(gateway, weight) for gateway, weight in route.nexthops)
        if not hops:
            if current is not None:
                ops.append(DeleteRoute(current, reason="router unusable: withdrawn, its connections use "
                                                      f"table {tpolicy.table}"))
        elif current is None or sorted(current.nexthops) != sorted(hops) and not (
                len(hops) == 1 and len(current.nexthops) == 1 and hops[0].gateway == current.nexthops[0].gateway):
            ops.append(ReplaceRoute(family, tpolicy.destination_of(family), table, DEFAULT_METRIC[family], hops,
                                    reason="router route missing" if current is None else "router's peers differ"))
    return ops


def _router_rule_ops(want: ReturnPathState, state: KernelState, rp: ReturnPathPolicy) -> list:
    wanted = {rule_key(r.family, None, r.priority, r.table, r.fwmark, r.fwmask): r
              for r in want.rules if r.table in rp.tables}
    ops: list = []
    seen: set[tuple] = set()
    for rule in state.rules:
        if rule.table not in rp.tables:
            continue
        key = rule.key()
        if key in wanted and key not in seen:
            seen.add(key)
        else:
            ops.append(DeleteRule(rule, reason="duplicate" if key in seen else "not a router's rule"))
    for key, r in wanted.items():
        if key not in seen:
            ops.append(AddRule(r.family, None, r.priority, r.table, r.fwmark, r.fwmask, reason="router rule missing"))
    return ops
