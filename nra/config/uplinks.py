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
a pool announced to peers of two VRFs, a multihop peer whose gateway is itself a peer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from nra.config.intent import (
    Intent,
    IPAddress,
    IPNetwork,
    PeerSpec,
    PoolBinding,
    Problem,
)

ON_LINK, MULTIHOP, UNNUMBERED = "on-link", "multihop", "unnumbered"


@dataclass(frozen=True)
class RouteLookup:
    """The kernel's answer to `ip route get <peer> [vrf V]`."""

    link: str
    gateways: tuple[IPAddress, ...] = ()  # empty: the peer is on a connected network


@dataclass(frozen=True)
class Neighbour:
    """One valid neighbour entry (REACHABLE, STALE, ...) on a link."""

    address: IPAddress
    link: str
    lladdr: str


@dataclass(frozen=True)
class NodeFacts:
    """What the kernel says, for resolving the peers."""

    lookups: Mapping[str, RouteLookup] = field(default_factory=dict)  # by PeerSpec.key
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

    def uplink(self, key: str) -> Uplink | None:
        return next((u for u in self.uplinks if u.key == key), None)

    def hops(self, group: UplinkGroup, family: int) -> tuple[tuple[IPAddress, str, int], ...]:
        """(next hop, link, weight) of a group's table for one family, sorted, each once."""
        hops = {(h, u.link, u.weight) for key in group.peers if (u := self.uplink(key))
                for h in u.hops_for(family)}
        return tuple(sorted(hops, key=lambda x: (x[0].version, x[0], x[1], x[2])))


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


def resolve_peer(spec: PeerSpec, facts: NodeFacts) -> Uplink | str:
    """The peer as an Uplink, or why it cannot be resolved yet (one line)."""
    if spec.interface and spec.address is None:
        hops = sorted({n.address for n in facts.neighbours
                       if n.link == spec.interface and n.address.version == 6 and n.address.is_link_local}
                      | {h for h in facts.learned_hops.get(spec.interface, ()) if h.version == 6 and h.is_link_local})
        if not hops:
            return f"no router's link-local address seen on {spec.interface} yet"
        return Uplink(spec.key, spec.name, UNNUMBERED, spec.interface, spec.vrf, spec.weight, tuple(hops),
                      _families(spec, 6))
    assert spec.address is not None
    if spec.interface:  # unnumbered with the label's address: the label wins
        return Uplink(spec.key, spec.name, UNNUMBERED, spec.interface, spec.vrf, spec.weight, (spec.address,),
                      _families(spec, spec.address.version))
    lookup = facts.lookups.get(spec.key)
    if lookup is None:
        return f"no route to {spec.address}" + (f" in vrf {spec.vrf}" if spec.vrf else "")
    if lookup.gateways:
        return Uplink(spec.key, spec.name, MULTIHOP, lookup.link, spec.vrf, spec.weight,
                      _sorted_hops(lookup.gateways), _families(spec, spec.address.version))
    hops = (spec.address, *(_same_box(spec.address, lookup.link, facts.neighbours) if spec.dual_stack else ()))
    return Uplink(spec.key, spec.name, ON_LINK, lookup.link, spec.vrf, spec.weight, _sorted_hops(hops),
                  _families(spec, spec.address.version))


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
    # A multihop peer whose gateway is itself a peer would send one uplink's replies by
    # another uplink's router: refused (the gateway peer keeps its own place).
    addresses = {(s.vrf, s.address): s for s in intent.specs if s.address is not None}
    refused: set[str] = set()
    for key, uplink in list(uplinks.items()):
        if uplink.kind != MULTIHOP:
            continue
        through = [addresses[(uplink.vrf, h)] for h in uplink.next_hops if (uplink.vrf, h) in addresses]
        if through:
            problems.append(Problem(f"peer {uplink.name}", f"multihop peer reached through peer "
                                    f"{', '.join(s.name for s in through)} ({', '.join(str(s.address) for s in through)}); "
                                    "its gateway is itself a peer: peer left out"))
            del uplinks[key]
            refused.add(key)
    # A peer waiting to be resolved stays in its groups (their tables do not move); it adds
    # its next hops once resolved.
    vrf_of = {s.key: s.vrf for s in intent.specs if s.key not in refused}
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
                                 frozenset().union(*(p.prefixes for p in pools)), ids[peers]))
    return UplinkModel(tuple(uplinks.values()), tuple(built), tuple(problems), tuple(waiting))


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

