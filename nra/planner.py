"""The planner: diff the desired state (Intent + RoutingPolicy) against the kernel's listing.

Pure functions only, no I/O. Modelled on Calico Felix's route/rule resync: build the desired
set, compare it with what the kernel lists for our table, and emit the adds and removes.

What we own: one route per family (to that family's destination) in the table, and every
rule of either family whose action is "lookup <table>". Anything else there is an imposter.

Choices worth knowing:
- A peer the kernel would refuse as a nexthop (not on a connected network) is left out of
  the route with a warning; the route is built from the others.
- So is a peer that does not answer ARP/ND: its neighbour entry is FAILED, or INCOMPLETE
  after having failed (the adapter saw it FAILED and not valid since), or INCOMPLETE while
  the peer is already out of the route. INCOMPLETE alone is the normal state of a first
  resolution, so it never takes a peer out; but a dead peer's entry cycles FAILED ->
  INCOMPLETE -> FAILED each time anything sends to it (the BGP speaker's retries; with IPv6
  forwarding on, as on Kubernetes nodes, every reply hashed to it, so FAILED lasts only
  microseconds), and keeping it in through INCOMPLETE would hand it flows again (IPv6
  multipath skips at most FAILED nexthops). It comes back once its entry is valid again
  (REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP) or gone. If every on-link peer of a
  family fails, the route is kept as it is.
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
from typing import Mapping, Union

from nra.intent import IPAddress, IPNetwork, Intent, Peer

# Kernel metric our route gets: IPv4 routes default to 0, IPv6 routes to 1024
# (IP6_RT_PRIO_USER). The adapter installs with exactly these.
DEFAULT_METRIC = {4: 0, 6: 1024}
# A rule with `fwmark M` and no mask is stored and listed with mask 0xffffffff.
FULL_MASK = 0xFFFFFFFF
FAMILY_FLAG = {4: "-4", 6: "-6"}


@dataclass(frozen=True)
class RoutingPolicy:
    """How the intent is rendered into the kernel (from the settings)."""

    table: int
    priority: int
    fwmark: int | None = None
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
        if not self.fwmark:
            return None
        return FULL_MASK if self.fwmask is None else self.fwmask


@dataclass(frozen=True, order=True)
class Nexthop:
    gateway: IPAddress | None  # None: a device route without a gateway
    weight: int = 1  # 1..256
    # e.g. "dead", "linkdown", "onlink"; informative, not part of equality
    flags: frozenset[str] = field(default=frozenset(), compare=False)
    oif: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KernelRoute:
    """A route of the managed table as the kernel lists it."""

    family: int  # 4 or 6
    dst: IPNetwork
    table: int
    nexthops: tuple[Nexthop, ...] = ()
    type: str = "unicast"
    metric: int = 0
    tos: int = 0
    proto: int = 0
    oif: int | None = None


_UNSET = object()


@dataclass(frozen=True)
class KernelRule:
    """A rule pointing at the managed table as the kernel lists it."""

    family: int  # 4 or 6
    src: IPNetwork | None  # None: no `from` (from all)
    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None
    # Any other selector or modifier, rendered `ip rule`-like ("iif eth1", "to 10.0.0.0/8",
    # "not", "tos 0x10", "action goto"); a rule with any of these is never ours.
    extra: tuple[str, ...] = ()
    # What deleting exactly this rule needs (the kernel's own attributes); opaque here.
    raw: object = field(default=None, compare=False, hash=False, repr=False)

    def key(self) -> tuple | None:
        """What makes two rules the same rule; None for a rule that can never be ours.
        Computed once per rule (the adapter reuses unchanged rules between reads)."""
        cached = self.__dict__.get("_key", _UNSET)
        if cached is _UNSET:
            cached = None if self.extra else _rule_key(
                self.family, self.src, self.priority, self.table, self.fwmark or None,
                self.fwmask if self.fwmark else None)
            object.__setattr__(self, "_key", cached)
        return cached


@dataclass(frozen=True)
class KernelState:
    routes: tuple[KernelRoute, ...] = ()
    rules: tuple[KernelRule, ...] = ()
    # candidate peers the kernel would refuse as a nexthop (no connected route to them)
    unreachable: frozenset[IPAddress] = frozenset()
    # candidate peers' neighbour entries on the link of their connected route, by NUD state
    # name ("REACHABLE", "FAILED", "INCOMPLETE", ...); a peer without an entry is not listed
    neighbours: Mapping[IPAddress, str] = field(default_factory=dict)
    # candidate peers whose entry the adapter saw FAILED and not valid since (INCOMPLETE now:
    # being retried); a history the listing alone does not show
    failing: frozenset[IPAddress] = frozenset()

    @property
    def failed(self) -> frozenset[IPAddress]:
        """Candidate peers whose ARP/ND got no answer: entry FAILED, or failing since."""
        return self.failing | {a for a, nud in self.neighbours.items() if nud == "FAILED"}


# -- operations ---------------------------------------------------------------------------


def _dst_text(dst: IPNetwork) -> str:
    return "default" if dst.prefixlen == 0 else str(dst)


def _mark_text(fwmark: int | None, fwmask: int | None) -> str:
    if not fwmark:
        return ""
    if fwmask is None or fwmask == FULL_MASK:
        return f" fwmark {fwmark:#x}"
    return f" fwmark {fwmark:#x}/{fwmask:#x}"


@dataclass(frozen=True)
class ReplaceRoute:
    family: int
    dst: IPNetwork
    table: int
    metric: int
    nexthops: tuple[Nexthop, ...]
    reason: str = field(default="", compare=False)
    kind: str = field(default="replace_route", init=False)

    def command(self) -> str:
        text = f"ip {FAMILY_FLAG[self.family]} route replace {_dst_text(self.dst)} table {self.table}"
        if self.metric != DEFAULT_METRIC[self.family]:
            text += f" metric {self.metric}"
        return text + "".join(f" nexthop via {nh.gateway} weight {nh.weight}" for nh in self.nexthops)

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()

    def sort_key(self) -> tuple:
        return (self.family, self.dst, self.metric)


@dataclass(frozen=True)
class DeleteRoute:
    route: KernelRoute
    reason: str = field(default="", compare=False)
    kind: str = field(default="delete_route", init=False)

    def command(self) -> str:
        r = self.route
        text = f"ip {FAMILY_FLAG[r.family]} route del"
        if r.type != "unicast":
            text += f" {r.type}"
        text += f" {_dst_text(r.dst)} table {r.table}"
        if r.tos:
            text += f" tos {r.tos:#x}"
        if r.metric != DEFAULT_METRIC[r.family]:
            text += f" metric {r.metric}"
        return text

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()

    def sort_key(self) -> tuple:
        r = self.route
        return (r.family, r.dst, r.metric, r.tos, r.type)


@dataclass(frozen=True)
class AddRule:
    family: int
    src: IPNetwork | None
    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None  # None: no mask given (the kernel lists 0xffffffff)
    reason: str = field(default="", compare=False)
    kind: str = field(default="add_rule", init=False)

    def command(self) -> str:
        src = str(self.src) if self.src is not None else "all"
        return (f"ip {FAMILY_FLAG[self.family]} rule add from {src}"
                f"{_mark_text(self.fwmark, self.fwmask)} lookup {self.table} priority {self.priority}")

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()

    def sort_key(self) -> tuple:
        return (self.family, self.priority, self.src is not None, self.src)


@dataclass(frozen=True)
class DeleteRule:
    rule: KernelRule
    reason: str = field(default="", compare=False)
    kind: str = field(default="delete_rule", init=False)

    def command(self) -> str:
        r = self.rule
        src = str(r.src) if r.src is not None else "all"
        extra = "".join(f" {e}" for e in r.extra)
        return (f"ip {FAMILY_FLAG[r.family]} rule del priority {r.priority} from {src}"
                f"{_mark_text(r.fwmark, r.fwmask)}{extra} lookup {r.table}")

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()

    def sort_key(self) -> tuple:
        r = self.rule
        return (r.family, r.priority, r.src is not None, r.src, r.fwmark or 0, r.fwmask or 0, r.extra)


Operation = Union[ReplaceRoute, DeleteRoute, AddRule, DeleteRule]


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()
    #: intent peers judged unusable (off-link, or not answering ARP/ND), including any kept
    #: in the route only because every peer of their family is unusable
    unusable_peers: frozenset[IPAddress] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.operations)


# -- planning -----------------------------------------------------------------------------


def _peer_label(peer: Peer) -> str:
    return f"peer {peer.address} ({peer.name})" if peer.name else f"peer {peer.address}"


def neighbour_failed(nud: str | None, failing: bool, in_route: bool, route_exists: bool) -> bool:
    """Whether a peer with this neighbour state is left out for not answering ARP/ND.

    FAILED always. INCOMPLETE when it failed before (`failing`), or when the route exists
    without the peer: then it is a failed peer being retried (or a new one; it joins as
    soon as it resolves), not a live nexthop's first resolution, which must not churn it
    out."""
    if nud == "FAILED":
        return True
    return nud == "INCOMPLETE" and (failing or (route_exists and not in_route))


def _route_is_the_managed_slot(route: KernelRoute, dst: IPNetwork | None) -> bool:
    """The one route we replace in place: our destination, unicast, tos 0, default metric."""
    return (dst is not None and route.dst == dst and route.type == "unicast" and route.tos == 0
            and route.metric == DEFAULT_METRIC[route.family])


def _same_nexthops(have: tuple[Nexthop, ...], want: tuple[Nexthop, ...]) -> bool:
    if len(have) == 1 and len(want) == 1:
        return have[0].gateway == want[0].gateway
    return sorted(have) == sorted(want)


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


def _rule_key(family: int, src: IPNetwork | None, priority: int, table: int,
              fwmark: int | None, fwmask: int | None) -> tuple:
    # Plain ints, not network objects: tuples re-hash their items on every look-up, and
    # ipaddress hashes in Python. `from 0.0.0.0/0` and "no from" are one rule to the kernel.
    if src is None or not src.prefixlen:
        return (family, None, None, priority, table, fwmark, fwmask)
    return (family, int(src.network_address), src.prefixlen, priority, table, fwmark, fwmask)


def _desired_rule_key(version: int, prefix: IPNetwork, policy: RoutingPolicy) -> tuple:
    return _rule_key(version, prefix, policy.priority, policy.table, policy.fwmark or None,
                     policy.effective_fwmask)


# The desired rules of the last intent seen, per family: a steady reconcile (same intent
# object, same policy) does not rebuild 10,000 keys. Intents are immutable, so identity is
# a safe test.
_desired_memo: tuple = (None, None, {})


def _desired_rules_by_family(prefixes: frozenset, policy: RoutingPolicy) -> dict[int, dict[tuple, IPNetwork]]:
    global _desired_memo
    memo_prefixes, memo_policy, memo = _desired_memo
    if memo_prefixes is prefixes and memo_policy == policy:
        return memo
    by_family: dict[int, dict[tuple, IPNetwork]] = {4: {}, 6: {}}
    for prefix in prefixes:
        by_family[prefix.version][_desired_rule_key(prefix.version, prefix, policy)] = prefix
    _desired_memo = (prefixes, policy, by_family)
    return by_family


def _rule_imposter_reason(rule: KernelRule, policy: RoutingPolicy, wanted_families: set[int]) -> str:
    if rule.family not in wanted_families:
        return f"no IPv{rule.family} peers configured"
    if rule.extra:
        return f"imposter: extra selector {' '.join(rule.extra)}"
    if rule.priority != policy.priority:
        return f"imposter: priority {rule.priority} is not {policy.priority}"
    if (rule.fwmark or None) != (policy.fwmark or None) or (
            rule.fwmark and rule.fwmask != policy.effective_fwmask):
        return "imposter: fwmark/mask differ"
    if rule.src is None:
        return "imposter: no from"
    return f"imposter: {rule.src} is not an announced prefix"


def plan(intent: Intent, state: KernelState, policy: RoutingPolicy) -> Plan:
    warnings: list[str] = []
    replaces: list[ReplaceRoute] = []
    route_deletes: list[DeleteRoute] = []
    rule_adds: list[AddRule] = []
    rule_deletes: list[DeleteRule] = []

    unusable: set[IPAddress] = set()
    families_with_peers: set[int] = set()
    desired_rules: dict[tuple, IPNetwork] = {}
    for version in (4, 6):
        peers = intent.peers_of(version)
        desired_here = _desired_rules_by_family(intent.prefixes, policy)[version]
        prefixes = desired_here.values()
        dst = policy.destination_of(version)
        if not peers:
            if prefixes:
                warnings.append(f"no IPv{version} peers: {len(prefixes)} IPv{version} prefix(es) "
                                f"get no rule and no route")
            continue
        if dst is None:
            warnings.append(f"no IPv{version} destination configured: {len(peers)} IPv{version} "
                            f"peer(s) and {len(prefixes)} prefix(es) ignored")
            continue
        families_with_peers.add(version)
        desired_rules.update(desired_here)

        slots = [r for r in state.routes if r.family == version and _route_is_the_managed_slot(r, dst)]
        current = slots[0] if slots else None
        in_route = {nh.gateway for nh in current.nexthops} if current else set()

        # The route: reachable, answering peers as nexthops, replaced in one atomic message.
        on_link: list[Peer] = []
        for peer in peers:
            if peer.address in state.unreachable:
                unusable.add(peer.address)
                warnings.append(f"{_peer_label(peer)} is not on a connected network (or its link is "
                                f"down); left out of the IPv{version} route")
            else:
                on_link.append(peer)
        answering: list[Peer] = []
        silent: list[Peer] = []
        for peer in on_link:
            nud = state.neighbours.get(peer.address)
            if neighbour_failed(nud, peer.address in state.failing, peer.address in in_route, current is not None):
                silent.append(peer)
            else:
                answering.append(peer)
        unusable.update(p.address for p in silent)
        if answering:
            for peer in silent:
                warnings.append(f"{_peer_label(peer)} does not answer ARP/ND (neighbour entry failed); "
                                f"left out of the IPv{version} route until it does")
            chosen = answering
        elif silent:
            # Never remove the last nexthops over neighbour state: keep the route as it is
            # (those of its nexthops still configured), or install them all if there is none.
            kept = [p for p in silent if p.address in in_route]
            chosen = kept or silent
            warnings.append(f"every on-link IPv{version} peer fails to answer ARP/ND: "
                            + ("the route is kept as it is" if kept else "route installed with all of them"))
        else:
            chosen = []
        wanted = tuple(sorted(Nexthop(p.address, p.weight) for p in chosen))
        if not wanted:
            warnings.append(f"every IPv{version} peer is unusable: "
                            + ("the existing route is kept as it is" if current else "no route installed"))
        elif current is None:
            replaces.append(ReplaceRoute(version, dst, policy.table, DEFAULT_METRIC[version], wanted,
                                         reason="route missing"))
        elif not _same_nexthops(current.nexthops, wanted):
            replaces.append(ReplaceRoute(version, dst, policy.table, DEFAULT_METRIC[version], wanted,
                                         reason="nexthops or weights differ"))
        # extra copies of the slot route (cannot normally exist, but be total)
        for extra in slots[1:]:
            route_deletes.append(DeleteRoute(extra, reason="duplicate route"))

    for route in state.routes:
        dst = policy.destination_of(route.family) if route.family in families_with_peers else None
        if not _route_is_the_managed_slot(route, dst):
            route_deletes.append(DeleteRoute(route, reason=_route_imposter_reason(
                route, policy.destination_of(route.family), route.family in families_with_peers)))

    seen: set[tuple] = set()
    for rule in state.rules:
        key = rule.key()
        if key is not None and key in desired_rules:
            if key in seen:
                rule_deletes.append(DeleteRule(rule, reason="duplicate"))
            seen.add(key)
        else:
            rule_deletes.append(DeleteRule(rule, reason=_rule_imposter_reason(rule, policy, families_with_peers)))
    for key, prefix in desired_rules.items():
        if key not in seen:
            rule_adds.append(AddRule(prefix.version, prefix if prefix.prefixlen else None,
                                     policy.priority, policy.table,
                                     policy.fwmark or None, policy.fwmask if policy.fwmark else None,
                                     reason="missing"))

    # Never a gap: new route and rules first, removals after.
    operations: tuple[Operation, ...] = (
        *sorted(replaces, key=ReplaceRoute.sort_key),
        *sorted(rule_adds, key=AddRule.sort_key),
        *sorted(rule_deletes, key=DeleteRule.sort_key),
        *sorted(route_deletes, key=DeleteRoute.sort_key),
    )
    return Plan(operations, tuple(warnings), frozenset(unusable))
