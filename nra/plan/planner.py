"""The planner's primitives: the steps every return path (nra.plan.return_path) plans
with. Pure functions, no I/O, no state between calls; nothing here knows a return path.

Modelled on Calico Felix's route/rule resync: build the desired set, compare it with what
the kernel lists, and emit the adds and removes. A return path composes these steps,
collecting into one `PlanSteps`:
- `table_routes`: one table's route per family (`choose_route`: which peers are nexthops,
  `same_nexthops`: when the kernel's route already is the wanted one) and the removal of
  the table's other routes (`route_imposters`);
- `rule_diff`: the rules pointing at a table against the wanted ones, by the kernel's key
  (it removes the others and returns the missing ones for the caller to add);
- `PlanSteps.plan()`, through `order`: nft first, then the new routes and rules, removals
  after; each kind sorted, so the same plan always comes out in the same order.

What a return path owns in a table: one route per family (to that family's destination),
and every rule of either family whose action is "lookup <table>". Anything else there is an
imposter.

Choices worth knowing:
- A peer the kernel would refuse as a nexthop (not on a connected network) is left out of
  the route with a warning; the route is built from the others.
- So is a peer that does not answer ARP/ND, or whose learned routes are gone (its BGP
  session dropped; nra.plan.peer_health says SILENT, with the reason). One still UNSURE
  (a first resolution) keeps its place: in the route if it is there or there is no route
  yet, out otherwise. If every on-link peer of a family is silent, the route is kept as it
  is (never remove the last nexthops over liveness).
- If every peer of a family is unusable, the existing route is kept, not deleted: the kernel
  already marks nexthops through a down link dead/linkdown, and deleting would only lose
  state that comes back by itself; we just add nothing.
- Rules follow the peers of the intent, not their reachability, so a link flap never churns
  thousands of rules.
- A family without peers gets no route and no rules (the original agent wiped both).
- A route with a single nexthop is compared by gateway only: the kernel does not keep or
  report a weight for a lone nexthop.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from operator import attrgetter
from typing import AbstractSet, Iterable, Mapping, TypeVar

from nra.config.intent import Intent, IPAddress, IPNetwork, Peer
from nra.kernel.model import (
    DEFAULT_METRIC,
    FULL_MASK,
    KernelRoute,
    KernelRule,
    KernelState,
    Nexthop,
)
from nra.kernel.nft_table import NftChange
from nra.kernel.operations import (
    AddRule,
    ApplyNft,
    DeleteRoute,
    DeleteRule,
    Operation,
    ReplaceRoute,
)
from nra.plan.peer_health import Liveness, Verdict

#: what a left-out reason says in a warning ("... left out of the route until it does")
SILENT_TEXT = {"no-arp": "does not answer ARP/ND (neighbour entry failed)",
               "bgp-down": "has no route learned over BGP any more (its session is down)"}


@dataclass(frozen=True)
class RoutingPolicy:
    """How one table and the rules pointing at it are rendered (from the settings)."""

    table: int
    priority: int
    fwmark: int | None = None  # None: the rules match no fwmark
    fwmask: int | None = None  # None: no mask given
    destinations: tuple[IPNetwork, ...] = (
        ipaddress.IPv4Network("0.0.0.0/0"),
        ipaddress.IPv6Network("::/0"),
    )

    def destination_of(self, version: int) -> IPNetwork | None:
        for dst in self.destinations:
            if dst.version == version:
                return dst
        return None

    @property
    def effective_fwmask(self) -> int | None:
        """The mask the kernel lists for our rules."""
        if self.fwmark is None:
            return None
        return FULL_MASK if self.fwmask is None else self.fwmask


@dataclass(frozen=True)
class Plan:
    """The operations in the order to apply them, and what the planner has to say."""

    operations: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()
    #: intent peers the planned route goes without, and why ("off-link", "no-arp")
    left_out: Mapping[IPAddress, str] = field(default_factory=dict)
    #: intent peers judged unusable (off-link, or not answering ARP/ND), including any kept
    #: in the route only because every peer of their family is unusable
    unusable_peers: frozenset[IPAddress] = frozenset()
    #: families with peers whose route gets no usable nexthop (the kernel's, if any, is kept)
    unrouted: tuple[int, ...] = ()
    #: the uplink groups the return path serves (peers, pools, tables, marks; in conntrack
    #: mode each router's table and mark), for `nra plan` and /status
    uplinks: tuple[dict, ...] = field(default=(), compare=False)
    #: the desired rules' members (rules mode: sets of ints, nra.kernel.rule_set), which the
    #: kernel's view may hold once they are written instead of equal sets of its own
    rule_members: tuple[AbstractSet[int], ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.operations)


@dataclass
class PlanSteps:
    """What the steps of one plan collect; `plan()` orders it into the Plan."""

    nft: list[ApplyNft] = field(default_factory=list)
    replaces: list[ReplaceRoute] = field(default_factory=list)
    route_deletes: list[DeleteRoute] = field(default_factory=list)
    rule_adds: list[AddRule] = field(default_factory=list)
    #: rule_adds are in AddRule.sort_key's order already (the rules return path sorts its
    #: 100,000 of a first start by their ints: no tuple of six made per rule to sort them)
    rule_adds_sorted: bool = False
    rule_deletes: list[DeleteRule] = field(default_factory=list)
    unusable: set[IPAddress] = field(default_factory=set)
    left_out: dict[IPAddress, str] = field(default_factory=dict)
    unrouted: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def plan(self) -> Plan:
        return Plan(order(self), tuple(self.warnings), self.left_out, frozenset(self.unusable),
                    tuple(self.unrouted))


def order(steps: PlanSteps) -> tuple[Operation, ...]:
    """Never a gap: nra's nft table first (its marks are what the new rules match), the new
    routes and rules next, removals after; each kind sorted."""
    return (
        *steps.nft,
        *sorted(steps.replaces, key=ReplaceRoute.sort_key),
        *(steps.rule_adds if steps.rule_adds_sorted else sorted(steps.rule_adds, key=AddRule.sort_key)),
        *sorted(steps.rule_deletes, key=DeleteRule.sort_key),
        *sorted(steps.route_deletes, key=DeleteRoute.sort_key),
    )


def is_managed_route(route: KernelRoute, dst: IPNetwork | None) -> bool:
    """The one route we replace in place: our destination, unicast, tos 0, default metric."""
    return (dst is not None and route.dst == dst and route.type == "unicast" and route.tos == 0
            and route.metric == DEFAULT_METRIC[route.family])


def managed_route(state: KernelState, policy: RoutingPolicy, version: int) -> KernelRoute | None:
    dst = policy.destination_of(version)
    return next((r for r in state.routes if r.family == version and is_managed_route(r, dst)), None)


def table_routes(steps: PlanSteps, intent: Intent, prefix_counts: Mapping[int, int], policy: RoutingPolicy,
                 routes: Iterable[KernelRoute], state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> set[int]:
    """One table's routes (`routes`: what it holds): for each family with peers and a
    destination, its route (choose_route); every other route of the table goes. Returns
    those families, the ones whose rules are wanted. `prefix_counts`: how many prefixes each
    family's rules serve (for the warnings)."""
    routes = tuple(routes)
    families: set[int] = set()
    for version in (4, 6):
        peers = intent.peers_of(version)
        prefixes = prefix_counts.get(version, 0)
        dst = policy.destination_of(version)
        if not peers:
            if prefixes:
                steps.warnings.append(f"no IPv{version} peers: {prefixes} IPv{version} prefix(es) "
                                      f"get no rule and no route")
            continue
        if dst is None:
            steps.warnings.append(f"no IPv{version} destination configured: {len(peers)} IPv{version} "
                                  f"peer(s) and {prefixes} prefix(es) ignored")
            continue
        families.add(version)
        choose_route(steps, version, peers, dst, policy.table, routes, state, verdicts)
    route_imposters(steps, routes, policy, families)
    return families


def _peer_label(peer: Peer) -> str:
    return f"peer {peer.address} ({peer.name})" if peer.name else f"peer {peer.address}"


def same_nexthops(have: tuple[Nexthop, ...], want: tuple[Nexthop, ...]) -> bool:
    """Whether a route holding `have` already is one with `want` (a lone nexthop: by gateway)."""
    if len(have) == 1 and len(want) == 1:
        return have[0].gateway == want[0].gateway
    return sorted(have, key=hop_order) == sorted(want, key=hop_order)


def hop_order(hop: Nexthop) -> tuple:
    """Nexthops sorted IPv4 gateways first: an IPv4 route may hold IPv6 ones (RFC 8950), and
    addresses of two families do not compare."""
    return (hop.gateway.version if hop.gateway is not None else 0, hop)


def _gateway(address: IPAddress) -> IPAddress:
    """The address as the kernel lists a gateway: without a zone (fe80::1%eth0 -> fe80::1)."""
    return ipaddress.ip_address(address.packed) if getattr(address, "scope_id", None) else address


def _nexthop(peer: Peer, state: KernelState) -> Nexthop:
    """A link-local gateway needs its link (the one where it was found); others do not."""
    links = state.links.get(peer.address, frozenset())
    oif = next(iter(links)) if peer.address.is_link_local and len(links) == 1 else None
    return Nexthop(_gateway(peer.address), peer.weight, oif=oif)


def not_a_nexthop(address: IPAddress, state: KernelState) -> str:
    """What the address is if it can never be a nexthop ("" if it can)."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return "a loopback address"
    if address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if address in state.invalid:
        return state.invalid[address]
    links = state.links.get(address, frozenset())
    if address.is_link_local and len(links) > 1:
        return (f"a link-local address on {len(links)} links: name one as {address}%<link> "
                f"(an IPv6 zone)")
    return ""


def _silent(verdict: Verdict, in_route: bool, route_exists: bool) -> bool:
    """Whether a peer is left out for not answering: SILENT always; UNSURE keeps its place
    (out only when the route exists without it: a new or retried peer joins once resolved)."""
    if verdict.liveness is Liveness.SILENT:
        return True
    return verdict.liveness is Liveness.UNSURE and route_exists and not in_route


def choose_route(steps: PlanSteps, version: int, peers: list[Peer], dst: IPNetwork, table: int,
                 routes: Iterable[KernelRoute], state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> None:
    """The family's route in `table` (whose routes are `routes`): reachable, answering
    peers as nexthops, one atomic replace."""
    warnings = steps.warnings
    slots = [r for r in routes if r.family == version and is_managed_route(r, dst)]
    current = slots[0] if slots else None
    in_route = {nh.gateway for nh in current.nexthops} if current else set()

    on_link: list[Peer] = []
    for peer in peers:
        what = not_a_nexthop(peer.address, state)
        if what:
            steps.left_out[peer.address] = "invalid"
            warnings.append(f"{_peer_label(peer)} is {what}: not a usable nexthop; left out of the "
                            f"IPv{version} route")
        elif peer.address in state.unreachable:
            steps.left_out[peer.address] = "off-link"
            warnings.append(f"{_peer_label(peer)} is not on a connected network (or its link is "
                            f"down); left out of the IPv{version} route")
        else:
            on_link.append(peer)
    answering: list[Peer] = []
    silent: list[Peer] = []
    for peer in on_link:
        verdict = verdicts.get(peer.address, Verdict(Liveness.ANSWERS))
        in_it = _gateway(peer.address) in in_route
        (silent if _silent(verdict, in_it, current is not None) else answering).append(peer)
    # (an invalid peer does not make the route degraded: no retry changes a configuration)
    steps.unusable.update(a for a, reason in steps.left_out.items() if reason != "invalid")
    steps.unusable.update(p.address for p in silent)
    if answering:
        for peer in silent:
            reason = verdicts[peer.address].reason or "no-arp"
            steps.left_out[peer.address] = reason
            warnings.append(f"{_peer_label(peer)} {SILENT_TEXT.get(reason, reason)}; "
                            f"left out of the IPv{version} route until it does")
        chosen = answering
    elif silent:
        # Never remove the last nexthops over liveness: keep the route as it is
        # (those of its nexthops still configured), or install them all if there is none.
        kept = [p for p in silent if _gateway(p.address) in in_route]
        chosen = kept or silent
        for peer in silent:
            if peer not in chosen:
                steps.left_out[peer.address] = verdicts[peer.address].reason or "no-arp"
        judged = ("fails to answer ARP/ND" if all(verdicts[p.address].reason != "bgp-down" for p in silent)
                  else "is judged down (no ARP/ND answer, or BGP session down)")
        warnings.append(f"every on-link IPv{version} peer {judged}: "
                        + ("the route is kept as it is" if kept else "route installed with all of them"))
    else:
        chosen = []
    wanted = tuple(sorted((_nexthop(p, state) for p in chosen), key=hop_order))
    if not wanted:
        steps.unrouted.append(version)
        warnings.append(f"every IPv{version} peer is unusable: "
                        + ("the existing route is kept as it is" if current else "no route installed"))
    elif current is None:
        steps.replaces.append(ReplaceRoute(version, dst, table, DEFAULT_METRIC[version], wanted,
                                           reason="route missing"))
    elif not same_nexthops(current.nexthops, wanted):
        steps.replaces.append(ReplaceRoute(version, dst, table, DEFAULT_METRIC[version], wanted,
                                           reason="nexthops or weights differ"))
    # extra copies of the slot route (cannot normally exist, but be total)
    for extra in slots[1:]:
        steps.route_deletes.append(DeleteRoute(extra, reason="duplicate route"))


def _route_imposter_reason(route: KernelRoute, dst: IPNetwork | None, has_peers: bool) -> str:
    if not has_peers:
        return f"no IPv{route.family} peers configured"
    if dst is None:
        return f"no IPv{route.family} destination configured"
    if route.dst != dst:
        return f"imposter: destination {route.dst} is not {dst}"
    if route.type != "unicast":
        return f"imposter: type {route.type}"
    if route.tos:
        return f"imposter: tos {route.tos:#x}"
    return f"imposter: metric {route.metric}"


def route_imposters(steps: PlanSteps, routes: Iterable[KernelRoute], policy: RoutingPolicy,
                    families: set[int]) -> None:
    """Every route of the table but the families' managed ones goes."""
    for route in routes:
        dst = policy.destination_of(route.family) if route.family in families else None
        if not is_managed_route(route, dst):
            steps.route_deletes.append(DeleteRoute(route, reason=_route_imposter_reason(
                route, policy.destination_of(route.family), route.family in families)))


#: why nra's nft table goes in a mode that does not own it (what the log line says)
NFT_LEFTOVER = ("left over: nra's table of the conntrack return path (RETURN_PATH=conntrack), "
                "which the current return path does not use")


def leftovers(steps: PlanSteps, state: KernelState) -> None:
    """nra's own rules and routes in tables the settings no longer name go (every return
    path calls it: they are found by nra's protocol, whatever the mode that wrote them); so
    does nra's nft table when the return path does not own it (state.nft_leftover: only the
    conntrack mode writes `inet nra`, a table name nra owns in every mode)."""
    if state.nft_leftover:
        steps.nft.append(ApplyNft(NftChange(remove=True, reason=NFT_LEFTOVER), None, None, None,
                                  reason=NFT_LEFTOVER))
    for item in state.leftovers:
        reason = f"left over: table {item.table} is not nra's under the current settings"
        if isinstance(item, KernelRule):
            steps.rule_deletes.append(DeleteRule(item, reason=reason))
        else:
            steps.route_deletes.append(DeleteRoute(item, reason=reason))


def imposter_reason(rule: KernelRule, policy: RoutingPolicy, families: AbstractSet[int]) -> str:
    """Why a rule pointing at the policy's table is not one of the wanted ones (the reason
    its DeleteRule gives)."""
    if rule.family not in families:
        return f"no IPv{rule.family} peers configured"
    if rule.extra:
        return f"imposter: extra selector {' '.join(rule.extra)}"
    if rule.priority != policy.priority:
        return f"imposter: priority {rule.priority} is not {policy.priority}"
    if rule.fwmark != policy.fwmark or (rule.fwmark is not None and rule.fwmask != policy.effective_fwmask):
        return "imposter: fwmark/mask differ"
    if rule.src is None:
        return "imposter: no from"
    return f"imposter: {rule.src} is not an announced prefix"


Wanted = TypeVar("Wanted")
_IDENTITY = attrgetter("identity")  # KernelRule.key(), read at C speed


def rule_diff(steps: PlanSteps, rules: Iterable[KernelRule], wanted: Mapping[bytes, Wanted],
              imposter: RoutingPolicy | str, families: AbstractSet[int] = frozenset()) -> list[Wanted]:
    """Rules whose key (KernelRule.key) is wanted stay, one copy; all else goes, with
    its imposter reason against the `imposter` policy as the reason (or `imposter` itself, a
    text). Returns what `wanted` holds for the keys the kernel lacks: the caller builds
    their AddRule (only the missing ones: a steady plan of 10,000 rules builds none)."""
    rules = rules if isinstance(rules, (tuple, list)) else tuple(rules)
    keys = set(map(_IDENTITY, rules))
    if len(keys) == len(rules):
        # each rule once (no duplicates, at most one never ours): set operations, not a step
        # per rule (10,000 rules: about 1 ms instead of 5)
        unwanted = keys.difference(wanted)  # (a dict argument: its stored hashes)
        for rule in [r for r in rules if r.identity in unwanted] if unwanted else ():
            reason = imposter if isinstance(imposter, str) else imposter_reason(rule, imposter, families)
            steps.rule_deletes.append(DeleteRule(rule, reason=reason))
        return [wanted[key] for key in wanted.keys() - keys]
    seen: set[bytes] = set()
    for rule in rules:
        key = rule.key()
        if key is not None and key in wanted:
            if key in seen:
                steps.rule_deletes.append(DeleteRule(rule, reason="duplicate"))
            seen.add(key)
        else:
            reason = imposter if isinstance(imposter, str) else imposter_reason(rule, imposter, families)
            steps.rule_deletes.append(DeleteRule(rule, reason=reason))
    return [value for key, value in wanted.items() if key not in seen]
