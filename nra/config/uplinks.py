"""The node's uplinks, modelled: each configured peer resolved to a link, next hops and a VRF,
and the announced pools grouped by the set of peers that announce them. Pure: what the kernel
knows (its route lookup for a peer, its neighbour entries, the BGP daemon's learned next hops)
comes in as data, so every shape is unit-tested without a kernel.

A peer is one of three kinds:
- on-link: its address is on a connected network; the next hop is the peer itself;
- multihop (`ebgpMultiHop`, or any peer the node reaches through a gateway, as FRR resolves an
  iBGP peer): the next hops are the gateways the node's routing table uses to reach it, so a
  change of that route changes them (the caller looks the peer up again on a route event);
- unnumbered (`interface`): the router's IPv6 link-local address on that interface, from the
  neighbour table or the BGP daemon's learned routes; the `metallb-nra/address` label wins.

Pools with the same peer set share a return path: one uplink group, one table. The group of
every peer keeps the one managed table (TABLE_WEIGHT), so a node where every pool goes to every
peer is served exactly as before; each other group takes a table of UPLINK_TABLES, chosen by a
hash of its sorted peer keys (blake2b, so the same on every start and every node) with linear
probing, groups already holding a table keeping it. Conflicts are refused by name, the rest kept:
a pool announced to peers of two VRFs. A multihop peer whose gateway is itself a peer is merged
(that router is its next hop: one next hop, said once).

`resolve_intent` turns the peers that need the node's tables (multihop, unnumbered without the
address label) into the return path's nexthops: the Intent's `peers` then hold the gateways and
link-local addresses, and `resolved` says how each peer was resolved.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from nra.config.intent import (
    Intent,
    IPAddress,
    IPNetwork,
    Peer,
    PeerSpec,
    PoolBinding,
    Problem,
    Resolution,
)

ON_LINK, MULTIHOP, UNNUMBERED = "on-link", "multihop", "unnumbered"


@dataclass(frozen=True)
class RouteLookup:
    """The kernel's answer to `ip route get fibmatch <peer> [vrf V]`: the route the node
    uses to reach the peer, every hop of it when it is a multipath."""

    link: str
    gateways: tuple[IPAddress, ...] = ()  # empty: the peer is on a connected network
    #: the link of each gateway, in the same order, when not all on `link`
    gateway_links: tuple[str, ...] = ()

    def hops(self) -> tuple[tuple[IPAddress, str], ...]:
        links = self.gateway_links or (self.link,) * len(self.gateways)
        return tuple(zip(self.gateways, links))


@dataclass(frozen=True)
class Neighbour:
    """One valid neighbour entry (REACHABLE, STALE, ...) on a link."""

    address: IPAddress
    link: str
    lladdr: str
    router: bool = False  # NTF_ROUTER: the neighbour said it is a router (RA, or NA with R)


@dataclass(frozen=True)
class NodeFacts:
    """What the kernel says, for resolving the peers."""

    lookups: Mapping[str, RouteLookup] = field(default_factory=dict)  # by PeerSpec.key
    #: why a peer's lookup gave nothing usable (by PeerSpec.key): "no route to ...", "lands in
    #: nra's own table ..."; absent from both: not looked up
    unresolved: Mapping[str, str] = field(default_factory=dict)
    neighbours: tuple[Neighbour, ...] = ()
    #: link -> next hops of the routes the BGP daemon learned over it (unnumbered sessions)
    learned_hops: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Uplink:
    """One peer, resolved."""

    key: str
    name: str
    kind: str  # ON_LINK, MULTIHOP, UNNUMBERED
    link: str
    vrf: str
    weight: int
    next_hops: tuple[IPAddress, ...]  # both families, sorted
    families: frozenset[int]  # the prefix families its session carries
    #: (next hop, link) for each next hop not on `link` (a multipath over two links)
    hop_links: tuple[tuple[IPAddress, str], ...] = ()

    def link_of(self, hop: IPAddress) -> str:
        return next((link for h, link in self.hop_links if h == hop), self.link)

    def hops_for(self, family: int) -> tuple[IPAddress, ...]:
        """The next hops for prefixes of `family`: the same family's; for IPv4 prefixes over an
        IPv6-only uplink, its IPv6 next hops (RFC 8950: `via inet6 fe80::.. dev X`)."""
        if family not in self.families:
            return ()
        same = tuple(h for h in self.next_hops if h.version == family)
        if same or family == 6:
            return same
        return tuple(h for h in self.next_hops if h.version == 6)


@dataclass(frozen=True)
class UplinkGroup:
    """The pools announced to one set of peers, and the table their replies use."""

    peers: frozenset[str]  # PeerSpec keys
    vrf: str
    pools: tuple[str, ...]
    prefixes: frozenset[IPNetwork]
    table: int | None  # None: no table left in UPLINK_TABLES


@dataclass(frozen=True)
class UplinkModel:
    uplinks: tuple[Uplink, ...]
    groups: tuple[UplinkGroup, ...]
    problems: tuple[Problem, ...] = ()  # configuration refused by name
    waiting: tuple[str, ...] = ()  # peers not resolved yet (no route, no neighbour seen)
    notes: tuple[str, ...] = ()  # merges said once (a multihop peer reached through a peer)

    def uplink(self, key: str) -> Uplink | None:
        return next((u for u in self.uplinks if u.key == key), None)

    def hops(self, group: UplinkGroup, family: int) -> tuple[tuple[IPAddress, str, int], ...]:
        """(next hop, link, weight) of a group's table for one family, sorted, each once."""
        weights: dict[tuple[IPAddress, str], int] = {}
        for key in sorted(group.peers):
            if (u := self.uplink(key)) is not None:
                for h in u.hops_for(family):  # one hop once: a gateway shared by peers, the highest weight
                    weights[(h, u.link_of(h))] = max(weights.get((h, u.link_of(h)), 0), u.weight)
        return tuple(sorted(((h, link, w) for (h, link), w in weights.items()),
                            key=lambda x: (x[0].version, x[0], x[1], x[2])))


# -- one peer ------------------------------------------------------------------------------


def _sorted_hops(hops: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    """Each once, IPv4 first (addresses of two families do not compare)."""
    return tuple(sorted(set(hops), key=lambda h: (h.version, h)))


def _families(spec: PeerSpec, session: int) -> frozenset[int]:
    return frozenset({4, 6}) if spec.dual_stack else frozenset({session})


def _same_box(peer: IPAddress, link: str, neighbours: Iterable[Neighbour]) -> tuple[IPAddress, ...]:
    """The other family's addresses of the router answering for `peer` on `link`: entries of
    the same link-layer address there (a dual-stack session's other next hop)."""
    entries = [n for n in neighbours if n.link == link]
    mac = next((n.lladdr.lower() for n in entries if n.address == peer), None)
    if mac is None:
        return ()
    return tuple(sorted(n.address for n in entries if n.lladdr.lower() == mac and n.address.version != peer.version))


def link_local_router(link: str, facts: NodeFacts) -> tuple[IPAddress, ...] | str:
    """The router's IPv6 link-local address(es) on an unnumbered peer's link, or why none is
    known: the next hops of the routes the BGP daemon learned over the link, and the link-local
    neighbours that said they are routers (NTF_ROUTER: a router advertisement, or a neighbour
    advertisement with the R flag); without either, the one link-local neighbour of the link
    (a point-to-point link has one). Several neighbours, none a router: ambiguous, waits."""
    learned = {h for h in facts.learned_hops.get(link, ()) if h.version == 6 and h.is_link_local}
    local = [n for n in facts.neighbours if n.link == link and n.address.version == 6 and n.address.is_link_local]
    routers_seen = {n.address for n in local if n.router}
    if learned or routers_seen:
        return tuple(sorted(learned | routers_seen))
    found = sorted({n.address for n in local})
    if len(found) == 1:
        return (found[0],)
    if not found:
        return f"no router's link-local address seen on {link} yet"
    return (f"{len(found)} link-local neighbours on {link} ({', '.join(map(str, found))}) and none said it is a "
            f"router: set the metallb-nra/address label to the router's address")


def resolve_peer(spec: PeerSpec, facts: NodeFacts) -> Uplink | str:
    """The peer as an Uplink, or why it cannot be resolved yet (one line)."""
    if spec.interface and spec.address is None:
        hops = link_local_router(spec.interface, facts)
        if isinstance(hops, str):
            return hops
        return Uplink(spec.key, spec.name, UNNUMBERED, spec.interface, spec.vrf, spec.weight, hops,
                      _families(spec, 6))
    assert spec.address is not None
    if spec.interface:  # unnumbered with the label's address: the label wins
        return Uplink(spec.key, spec.name, UNNUMBERED, spec.interface, spec.vrf, spec.weight, (spec.address,),
                      _families(spec, spec.address.version))
    lookup = facts.lookups.get(spec.key)
    if lookup is None:
        return facts.unresolved.get(spec.key) or (f"no route to {spec.address}"
                                                  + (f" in vrf {spec.vrf}" if spec.vrf else ""))
    if lookup.gateways:
        hop_links = tuple(sorted((h, link) for h, link in lookup.hops() if link != lookup.link))
        return Uplink(spec.key, spec.name, MULTIHOP, lookup.link, spec.vrf, spec.weight,
                      _sorted_hops(lookup.gateways), _families(spec, spec.address.version), hop_links)
    hops = (spec.address, *(_same_box(spec.address, lookup.link, facts.neighbours) if spec.dual_stack else ()))
    return Uplink(spec.key, spec.name, ON_LINK, lookup.link, spec.vrf, spec.weight, _sorted_hops(hops),
                  _families(spec, spec.address.version))


def gateway_peer_notes(specs: Iterable[PeerSpec], uplinks: Iterable[Uplink]) -> tuple[str, ...]:
    """A multihop peer whose gateway is itself a configured peer (a router's loopback behind
    that router, a route reflector behind a leaf): merged, not refused. The gateway is where
    the node's packets to the multihop peer go, so it is that peer's next hop whatever else it
    is; it is one next hop of the groups of both (at the higher weight). Said once."""
    addresses = {(s.vrf, s.address): s for s in specs if s.address is not None}
    notes = []
    for uplink in uplinks:
        if uplink.kind != MULTIHOP:
            continue
        through = [addresses[(uplink.vrf, h)] for h in uplink.next_hops if (uplink.vrf, h) in addresses]
        if through:
            notes.append(f"peer {uplink.name}: multihop peer reached through peer "
                         f"{', '.join(s.name for s in through)} ({', '.join(str(s.address) for s in through)}): "
                         "that router is its next hop too (one next hop, the higher weight)")
    return tuple(notes)


# -- the pools' groups and their tables ----------------------------------------------------


def _table_home(peers: frozenset[str], tables: range) -> int:
    digest = hashlib.blake2b("\n".join(sorted(peers)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(tables)


def assign_tables(peer_sets: Iterable[frozenset[str]], every: frozenset[str], table: int, tables: range,
                  keep: Mapping[frozenset[str], int] | None = None) -> dict[frozenset[str], int | None]:
    """A table per peer set: `table` for the set of every peer, else one of `tables` by hash
    and linear probing. A set in `keep` (what the kernel holds now) keeps its table when it is
    still in the range and free; the others are placed in a fixed order, so the same sets get
    the same tables on every start. None: the range is full."""
    wanted = sorted(set(peer_sets), key=lambda s: (_table_home(s, tables) if tables else 0, sorted(s)))
    chosen: dict[frozenset[str], int | None] = {}
    used: set[int] = set()
    for peers in wanted:
        if peers == every:
            chosen[peers] = table
    for peers, kept in sorted((keep or {}).items(), key=lambda x: x[1]):
        if peers in chosen or peers not in wanted or kept not in tables or kept in used:
            continue
        chosen[peers], _ = kept, used.add(kept)
    for peers in wanted:
        if peers in chosen:
            continue
        home = _table_home(peers, tables) if tables else 0
        slot = next((tables[(home + i) % len(tables)] for i in range(len(tables))
                     if tables[(home + i) % len(tables)] not in used), None)
        chosen[peers] = slot
        if slot is not None:
            used.add(slot)
    return chosen


def _group_pools(intent: Intent, vrf_of: Mapping[str, str],
                 problems: list[Problem]) -> dict[frozenset[str], list[PoolBinding]]:
    """Pools by the set of peers announcing them; a pool whose peers are in two VRFs is
    refused by name. Peers refused by the model (not in `vrf_of`) drop out."""
    groups: dict[frozenset[str], list[PoolBinding]] = {}
    for pool in sorted(intent.pools, key=lambda p: p.name):
        peers = frozenset(k for k in pool.peers if k in vrf_of)
        vrfs = sorted({vrf_of[k] for k in peers})
        if len(vrfs) > 1:
            names = ", ".join(f"{k} ({vrf_of[k] or 'default'})" for k in sorted(peers))
            problems.append(Problem(f"pool {pool.name}", f"announced to peers of VRFs {', '.join(v or 'default' for v in vrfs)} "
                                                         f"({names}); its replies cannot leave by both: pool left out"))
            continue
        if peers:
            groups.setdefault(peers, []).append(pool)
    return groups


def pool_groups(intent: Intent) -> tuple[dict[frozenset[str], tuple[PoolBinding, ...]], tuple[Problem, ...]]:
    """The pools by the set of peers announcing them, without tables (conntrack mode numbers
    its groups' fallbacks itself), and the pools refused (peers of two VRFs)."""
    problems: list[Problem] = []
    groups = _group_pools(intent, {s.key: s.vrf for s in intent.specs}, problems)
    return {peers: tuple(pools) for peers, pools in groups.items()}, tuple(problems)


def prefixes_union(sets: Iterable[frozenset]) -> frozenset:
    """The union of a group's pools' prefixes: one pool's set itself (not a copy of 100,000,
    and the same object while the pool does not change)."""
    sets = list(sets)
    return sets[0] if len(sets) == 1 else frozenset().union(*sets)


def build_model(intent: Intent, facts: NodeFacts, table: int, tables: range,
                keep: Mapping[frozenset[str], int] | None = None) -> UplinkModel:
    """The uplinks and groups of this intent on this node (see the module doc)."""
    problems: list[Problem] = []
    waiting: list[str] = []
    uplinks: dict[str, Uplink] = {}
    for spec in sorted(intent.specs, key=lambda s: s.key):
        resolved = resolve_peer(spec, facts)
        if isinstance(resolved, str):
            waiting.append(f"peer {spec.name}: {resolved}")
        else:
            uplinks[spec.key] = resolved
    notes = gateway_peer_notes(intent.specs, uplinks.values())
    # A peer waiting to be resolved stays in its groups (their tables do not move); it adds
    # its next hops once resolved.
    vrf_of = {s.key: s.vrf for s in intent.specs}
    groups = _group_pools(intent, vrf_of, problems)
    every = frozenset(k for k, vrf in vrf_of.items() if not vrf)
    ids = assign_tables(groups, every, table, tables, keep)
    built = []
    for peers, pools in sorted(groups.items(), key=lambda g: (ids[g[0]] is None, ids[g[0]] or 0, sorted(g[0]))):
        if ids[peers] is None:
            problems.append(Problem(f"pools {', '.join(p.name for p in pools)}",
                                    f"no table left in UPLINK_TABLES ({tables.start}-{tables.stop - 1}) for their "
                                    "uplink group: widen the range; pools left out"))
            continue
        built.append(UplinkGroup(peers, vrf_of[next(iter(peers))], tuple(p.name for p in pools),
                                 prefixes_union(p.prefixes for p in pools), ids[peers]))
    return UplinkModel(tuple(uplinks.values()), tuple(built), tuple(problems), tuple(waiting), notes)


# -- the return path's nexthops ------------------------------------------------------------


def needs_lookup(spec: PeerSpec) -> bool:
    """Whether the peer's next hops come from the node's tables (kernel facts): a multihop
    peer (the gateways of the route to it), an unnumbered one without the address label (the
    router's link-local address on its interface), a VRF peer (its link and next hops in the
    VRF: resolved and shown, not routed yet)."""
    return spec.multihop or bool(spec.vrf) or (bool(spec.interface) and spec.address is None)


def zoned(hop: IPAddress, link: str) -> IPAddress:
    """A link-local next hop with its link as the zone (fe80::1%eth1): where it is valid."""
    if hop.version == 6 and hop.is_link_local and link and not getattr(hop, "scope_id", None):
        return ipaddress.IPv6Address(f"{hop}%{link}")
    return hop


def _how(uplink: Uplink) -> str:
    hops = ", ".join(f"{h} ({uplink.link_of(h)})" for h in uplink.next_hops)
    if uplink.kind == MULTIHOP:
        return f"via {hops}"
    if uplink.kind == UNNUMBERED:
        return f"{hops}: the router's link-local address" + (
            "; IPv4 via inet6" if 4 in uplink.families and not any(h.version == 4 for h in uplink.next_hops) else "")
    return hops


def resolve_intent(intent: Intent, facts: NodeFacts) -> Intent:
    """The intent with the peers that need the node's tables (needs_lookup) replaced by their
    next hops: a multihop peer by the gateway(s) of the node's route to it (a zoned address for
    a link-local gateway), an unnumbered one by its router's link-local address (also serving
    IPv4 prefixes when the session carries them: RFC 8950). A next hop that is already a peer's
    (a multihop peer behind a peer) is one nexthop, at the higher weight. A peer not resolved
    yet is no nexthop until it is. VRF peers are resolved (for `resolved`) but stay out of
    `peers`, the default VRF's. `resolved` says how each was resolved. The same intent object
    when no peer needs a lookup."""
    specs = sorted((s for s in intent.specs if needs_lookup(s)), key=lambda s: s.key)
    if not specs:
        return intent
    replaced = {s.address for s in specs if s.address is not None and not s.vrf}
    peers: dict[tuple[IPAddress, int], Peer] = {(p.address, p.serves): p for p in intent.peers
                                                if p.address not in replaced}
    resolutions = []
    for spec in specs:
        uplink = resolve_peer(spec, facts)
        if isinstance(uplink, str):
            resolutions.append(Resolution(spec.key, spec.name, "waiting", uplink, spec.vrf))
            continue
        hops = tuple(Peer(zoned(h, uplink.link_of(h)), spec.weight,
                          f"{spec.name} via {h}" if uplink.kind == MULTIHOP else spec.name,
                          serves=family if family != h.version else 0)
                     for family in sorted(uplink.families) for h in uplink.hops_for(family))
        resolutions.append(Resolution(spec.key, spec.name, uplink.kind, _how(uplink), spec.vrf, hops))
        if not spec.vrf:
            peers = {(p.address, p.serves): p for p in merge_peers([*peers.values(), *hops])}
    return replace(intent, peers=frozenset(peers.values()), resolved=tuple(resolutions))


def uplink_report(intent: Intent, table: int, tables: range) -> list[dict]:
    """Each uplink group as `nra status` and `nra plan` show it: its pools, VRF, table (None:
    not programmed: a VRF group, or no table left) and each peer with how it was resolved."""
    model = build_model(intent, NodeFacts(), table, tables)
    how = {r.key: r for r in intent.resolved}
    specs = {s.key: s for s in intent.specs}
    report = []
    for group in model.groups:
        peers = []
        for key in sorted(group.peers):
            spec, found = specs.get(key), how.get(key)
            if found is not None:
                peers.append({"name": found.name, "key": key, "kind": found.kind, "how": found.how,
                              "next_hops": [str(p.address) for p in found.peers]})
            elif spec is not None:
                peers.append({"name": spec.name, "key": key, "kind": ON_LINK, "how": str(spec.address),
                              "next_hops": [str(spec.address)] if spec.address is not None else []})
        report.append({"pools": list(group.pools), "vrf": group.vrf or None,
                       "table": group.table if not group.vrf else None, "peers": peers})
    return report


def merge_peers(peers: Iterable[Peer]) -> frozenset[Peer]:
    """One nexthop per (address, family served), at the highest weight, under the first name."""
    merged: dict[tuple[IPAddress, int], Peer] = {}
    for peer in peers:
        have = merged.get((peer.address, peer.serves))
        if have is None:
            merged[(peer.address, peer.serves)] = peer
        elif have.weight < peer.weight:
            merged[(peer.address, peer.serves)] = replace(peer, name=have.name)
    return frozenset(merged.values())


# -- routers: what conntrack mode tells apart -------------------------------------------------


@dataclass(frozen=True)
class Router:
    """One router as conntrack mode sees it: the link its packets come in by and their source
    link-layer address. Two peers behind one virtual MAC on one link (VRRP, HSRP, MLAG) are one
    router whose table holds a multipath route via both; one MAC on two links is two routers."""

    link: str
    lladdr: str
    peers: tuple[str, ...]  # Uplink keys
    next_hops: tuple[IPAddress, ...]


def routers(uplinks: Iterable[Uplink], lladdrs: Mapping[IPAddress, str]) -> tuple[tuple[Router, ...], tuple[str, ...]]:
    """The routers of the on-link and unnumbered uplinks (multihop ones come in by their
    gateways' routers), and one note per router shared by peers of one family."""
    boxes: dict[tuple[str, str], list[tuple[Uplink, IPAddress]]] = {}
    for uplink in uplinks:
        if uplink.kind == MULTIHOP:
            continue
        for hop in uplink.next_hops:
            mac = lladdrs.get(hop)
            if mac:
                boxes.setdefault((uplink.link, mac.lower()), []).append((uplink, hop))
    found, notes = [], []
    for (link, mac), members in sorted(boxes.items()):
        keys = tuple(sorted({u.key for u, _ in members}))
        found.append(Router(link, mac, keys, _sorted_hops(h for _, h in members)))
        for family in (4, 6):
            names = sorted({u.name for u, h in members if h.version == family})
            if len(names) > 1:
                notes.append(f"peers {', '.join(names)} share link-layer address {mac} on {link}: one router "
                             f"(a VRRP-style pair); its table holds a multipath route via all of them")
    return tuple(found), tuple(notes)

