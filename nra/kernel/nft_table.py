"""The nftables table of the `conntrack` return path, as data: what it should hold, what the
kernel lists, and the change that turns the second into the first. Pure, no I/O.

nra owns exactly one table, `inet nra` (both families), and never names another. In it:

- sets `lb4_0`..`lb4_15` / `lb6_0`..`lb6_15` (interval): the LoadBalancer prefixes of no
  uplink group (every one when no pool has a group of its own), by address block (SHARDS),
  and `lb4` / `lb6`: those of SHARDS blocks or more;
- set `links` (interface names): the links the BGP peers are reached through;
- map `link_routers` (ingress interface . link-layer address -> `goto save_<i>`): which router
  a sender is. A router is (link, MAC): the same MAC on two uplinks is two routers; peers
  sharing one MAC on one link (a VRRP-style pair) are one;
- maps `groups4_0`..`groups4_15` / `groups6_0`..`groups6_15` (interval: LB prefix -> `goto
  group_<i>`), by address block as the prefix sets, and `groups4` / `groups6`: those of SHARDS
  blocks or more: the uplink group of a prefix. Chain `group_<i>` gives its router's mark to
  a connection from a known router, else its fallback's (the group's own mark and table, a
  multipath route via the group's peers only). Empty when every pool goes to every peer:
  such connections get the external mark (TABLE_WEIGHT), as before. A prefix is in the
  prefix sets or in a group map, not both (two groups' 100,000 prefixes were 200,000
  elements: UngroupedPrefixes);
- chain `prerouting` (filter, priority mangle): connections already found not to be
  LoadBalancer traffic (the "examined" mark: most forwarded traffic) stop at its first rule,
  a compare; the rest `jump dispatch_in`, whose one rule is a verdict map on nra's bits of
  the connection mark. Unmarked connections go to `classify`; marked ones to `restore_<i>`,
  which copies the mark onto packets of the reply direction before they are routed (the
  map accepts the examined mark too). (The hooked chains end in one jump each, their only
  rule that does anything to a packet (the compare's accept is the chain's policy), so that
  a new table is turned on by one batch once its sets are filled: see nra.kernel.nft.)
- chain `output` (route, priority mangle): `jump dispatch_out`, the same restore for
  replies of local sockets;
- `classify`: an unmarked connection's packet of the original direction (its first, or the
  next one of a connection that started while nra's table was missing or inert: it is not
  left unmarked for good), arriving on a peer's link, goes to its address's block's chain
  `in_lb4_<i>`: an address of an uplink group (the block's group map `groups4_<i>`, else the
  wide `groups4`) goes to its group's chain; an address in neither that block's set nor the
  wide set gets the examined mark; the rest (LB addresses of no group) are marked with their
  router's mark (`link_routers` map), else the external mark. A packet from any other link
  gets the examined mark; replies of unmarked connections are left alone, and so is a
  packet from a peer's link that the look-up of its block missed (it should not, but a
  connection left unmarked is classified by its next packet, one marked examined would
  bypass the return path for good). The rule count is constant: every router and group is
  an element.

So every packet but a connection's first costs one rule: a connection-mark load, an AND and
a compare for the examined connections; a jump and a hash look-up more for LoadBalancer
connections. Only a connection's first packet pays for the interval look-up (and a
connection that never sees a reply, whose packets all count as new, pays it once too).
(Forwarding at 100,000 prefixes: the compare first took nra's share of the forwarding CPU
from 4.2% to 3.0%, an empty hooked chain's being ~2%: benchmarks/fwd_profile.py,
docs/performance.md.)

The chains depend on the settings alone (`save_<i>`, `restore_<i>` and `group_<i>` for every
router the settings can number: the mark field's capacity, bounded by the router tables
configured; routers and groups share the numbers), so a peer or a group that comes, goes or
changes its link-layer address is an element change, never a rebuild; and a wide mask with a
few tables costs chains for those few (a mask of 8 index bits: 768 chains, more than ~30 ms
per rebuild and ~15 ms per full read, for nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import ipaddress
import json
import operator
import weakref
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Set
from dataclasses import dataclass, field
from itertools import islice
from typing import AbstractSet, Collection, Iterable, Iterator, Mapping

from nra.config import prefix_delta
from nra.config.intent import IPNetwork
from nra.kernel.marks import U32, MarkField

TABLE = "nra"
FAMILY = "inet"
#: the prefix sets' wide sets (an interval over SHARDS blocks or more); the rest is sharded
PREFIX_SETS = {4: "lb4", 6: "lb6"}
#: The prefixes are dealt over SHARDS interval sets per family by the address's bits
#: SHARD_SHIFT.. (a block of 256 addresses, a /24 or a /120, and the one after it go to the
#: next set), so that a change's transaction touches one set of ~N/SHARDS intervals: the
#: kernel (6.18) rebuilds an interval set's lookup array on every commit that changed it and
#: walks it for garbage at most once a second, O(N) each: a /30 added to 100,000 intervals
#: took 30-97 ms, to 6,250 ~1 ms (benchmarks/nft_commit_bench.py). An interval is split at
#: its blocks' edges, one piece per set; one of SHARDS blocks or more goes whole to the wide set.
SHARDS = 16
SHARD_SHIFT = 8
SHARD_SETS = {f: tuple(f"{name}_{i}" for i in range(SHARDS)) for f, name in PREFIX_SETS.items()}
#: every prefix set's name -> its family
PREFIX_SET_FAMILY = {name: f for f in PREFIX_SETS for name in (PREFIX_SETS[f], *SHARD_SETS[f])}
LINKS_SET = "links"
ROUTERS_MAP = "link_routers"  # (named `routers` and keyed by MAC alone before: such a map is dropped)
#: the group maps' wide maps (an interval of SHARDS blocks or more); the rest is sharded by
#: block as the prefix sets are (placed_groups: a one-line change commits a map of ~N/SHARDS)
GROUP_MAPS = {4: "groups4", 6: "groups6"}
GROUP_SHARD_MAPS = {f: tuple(f"{name}_{i}" for i in range(SHARDS)) for f, name in GROUP_MAPS.items()}
#: every group map's name -> its family
GROUP_MAP_FAMILY = {name: f for f in GROUP_MAPS for name in (GROUP_MAPS[f], *GROUP_SHARD_MAPS[f])}
NRA_SETS = frozenset({*PREFIX_SET_FAMILY, LINKS_SET, ROUTERS_MAP, *GROUP_MAP_FAMILY})
#: a router as the map knows it: (ingress interface name, link-layer address in lower case)
RouterKey = tuple[str, str]
#: an element of a group map: (first address, last address, index of the group's save chain)
GroupInterval = tuple[int, int, int]
MANGLE = -150  # NF_IP_PRI_MANGLE: after conntrack (-200), before DNAT (-100) and routing
#: NFT_TABLE_F_* (linux/netfilter/nf_tables.h)
TABLE_FLAG_NAMES = {0x1: "dormant", 0x2: "owner", 0x4: "persist"}


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NftTable:
    """The table's content as nra compares it: elements as values, chains as their hook and
    rules (each rule known by its digest: see Rule)."""

    # family -> disjoint, merged address intervals: the prefix sets' (the LB prefixes of no group)
    prefixes: Mapping[int, frozenset[Interval]]
    links: frozenset[str]
    routers: Mapping[RouterKey, int]  # (link, link-layer address) -> router index
    chains: Mapping[str, tuple[tuple | None, tuple[Rule, ...]]]  # name -> (hook, rules)
    # the kernel's elements as listed, by prefix set name, one interval each (for exact
    # deletes); empty in a table nra rendered itself
    raw_prefixes: Mapping[str, tuple[Interval, ...]] = field(default_factory=dict, compare=False)
    # what else a listing held that nra never creates (a set, map or chain of another name)
    foreign: tuple[str, ...] = field(default=(), compare=False)
    # the table's flags (NFT_TABLE_F_*): nra's has none; `dormant` turns every chain off
    flags: int = 0
    # which of nra's sets and maps a listing held (all of them in a table nra rendered)
    sets: frozenset[str] = field(default=frozenset(), compare=False)
    # (the table nra last wrote or read, {family: (its intervals others deleted, intervals
    # others added)}) when this one is that table after others' element changes
    notified: tuple | None = field(default=None, compare=False, repr=False)
    # family -> the uplink groups' intervals (low, high, index): disjoint; empty with one group
    # (a frozenset, or the GroupElements nra keeps: compare and write them through
    # frozen_groups / sorted_groups)
    groups: Mapping[int, AbstractSet[GroupInterval]] = field(default_factory=dict)
    # the kernel's group map elements as listed, by map name (for exact deletes); empty in a
    # table nra rendered itself (its elements are where placed_groups() put them)
    raw_groups: Mapping[str, tuple[GroupInterval, ...]] = field(default_factory=dict, compare=False)
    # (the groups this table's were made from, {family: (elements gone, added)}): diff()
    # against a table holding those compares the changes alone
    groups_delta: tuple | None = field(default=None, compare=False, repr=False)
    # (the merged intervals this table's were updated from, by weak reference, the ones it
    # holds, {family: (intervals gone, added)}): diff() against a table holding the former
    # sends those alone
    prefixes_delta: tuple | None = field(default=None, compare=False, repr=False)
    # rules others added to chains of this table, (chain, handle) each, as notified (a read
    # shows them inside the chains' rules instead)
    foreign_rules: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    # nra's sets whose elements a read found not as nra writes them (starts and interval
    # ends that do not pair up): the table is made anew
    unreadable: tuple[str, ...] = field(default=(), compare=False)
    # a group map's elements go to `save_<i>` (an nra before the group chains wrote them)
    legacy_groups: bool = field(default=False, compare=False)

    def structure(self) -> tuple:
        """What only a rebuild can change: the chains and their rules."""
        return tuple(sorted(self.chains.items()))


#: first and last address of a run of addresses, as ints (what an interval set element is)
Interval = tuple[int, int]
WIDTH = {4: 32, 6: 128}


def merge(intervals: Iterable[Interval]) -> frozenset[Interval]:
    """Overlapping and adjacent intervals as one (as the kernel's interval set must hold
    them). Plain ints: 100,000 prefixes merge in tens of milliseconds, where ipaddress's
    collapse takes a second."""
    return frozenset(merge_sorted(sorted(intervals)))


def merge_sorted(ordered: list[Interval]) -> list[Interval]:
    """merge() of intervals already sorted, as a sorted list. An interval that nothing
    extends is the input's own tuple, not a copy (100,000 distinct intervals: the merged list
    shares them with the sorted one, 6.4 MB fewer)."""
    if not ordered:
        return []
    merged: list[Interval] = []
    current: Interval | None = ordered[0]  # the input's tuple, while nothing extended it
    low, high = ordered[0]
    for item in ordered:
        next_low, next_high = item
        if next_low <= high + 1:
            if next_high > high:
                high, current = next_high, None
        else:
            merged.append(current if current is not None else (low, high))
            current = item
            low, high = item
    merged.append(current if current is not None else (low, high))
    return merged


def prefix_intervals(prefixes: Iterable[IPNetwork],
                     families: Iterable[int] = (4, 6)) -> dict[int, frozenset[Interval]]:
    """The families' prefixes as merged intervals (the other families' are left out)."""
    by_family: dict[int, list[Interval]] = {4: [], 6: []}
    v4, v6 = by_family[4].append, by_family[6].append
    for prefix in prefixes:
        try:  # nra.config.prefixes' networks know theirs
            (v4 if prefix.family == 4 else v6)(prefix.interval)
            continue
        except AttributeError:
            pass
        # (not num_addresses: it builds the broadcast address, 30 µs each)
        low = int(prefix.network_address)
        if prefix.version == 4:
            v4((low, low + (1 << (32 - prefix.prefixlen)) - 1))
        else:
            v6((low, low + (1 << (128 - prefix.prefixlen)) - 1))
    return {f: merge(by_family[f]) if f in families else frozenset() for f in (4, 6)}


def interval_text(family: int, interval: Interval) -> str:
    """`a/len` when the interval is one prefix, else `a-b`."""
    low, high = interval
    size = high - low + 1
    address = ipaddress.ip_address(low) if family == 4 else ipaddress.IPv6Address(low)
    if size & (size - 1) == 0 and low % size == 0:
        return f"{address}/{WIDTH[family] - size.bit_length() + 1}"
    return f"{address}-{ipaddress.ip_address(high) if family == 4 else ipaddress.IPv6Address(high)}"


def placed(family: int, intervals: Iterable[Interval]) -> dict[str, list[Interval]]:
    """Where the prefix sets hold these (disjoint, not adjacent) intervals: set name -> its
    pieces, sorted as given. An interval within one block is its own piece (the same tuple),
    in the block's set; one over fewer than SHARDS blocks is split at the blocks' edges, a
    piece in each block's set (SHARDS blocks in a row are each in a set of its own); a longer
    one goes whole to the wide set."""
    names, wide, mask = SHARD_SETS[family], PREFIX_SETS[family], SHARDS - 1
    out: dict[str, list[Interval]] = {}
    for interval in intervals:
        low, high = interval
        first, last = low >> SHARD_SHIFT, high >> SHARD_SHIFT
        if first == last:
            name = names[first & mask]
            if name in out:
                out[name].append(interval)
            else:
                out[name] = [interval]
        elif last - first >= SHARDS:
            out.setdefault(wide, []).append(interval)
        else:
            for block in range(first, last + 1):
                piece = (max(low, block << SHARD_SHIFT), min(high, ((block + 1) << SHARD_SHIFT) - 1))
                out.setdefault(names[block & mask], []).append(piece)
    return out


def placed_groups(family: int, elements: Iterable[GroupInterval]) -> dict[str, list[GroupInterval]]:
    """Where the group maps hold these elements (disjoint intervals, each with its group's
    index): map name -> its pieces, by placed()'s rule (a piece per block, in the block's map
    groups<f>_<i>; an interval of SHARDS blocks or more whole in the wide map groups<f>).
    A block's chain looks up both its map and the wide one (desired_chains): a group's
    interval may be smaller than the prefix set's interval it lies in (pools of two groups
    side by side merge into one prefix interval), so their places need not agree."""
    names, wide, mask = GROUP_SHARD_MAPS[family], GROUP_MAPS[family], SHARDS - 1
    out: dict[str, list[GroupInterval]] = {}
    for element in elements:
        low, high, index = element
        first, last = low >> SHARD_SHIFT, high >> SHARD_SHIFT
        if first == last:
            out.setdefault(names[first & mask], []).append(element)
        elif last - first >= SHARDS:
            out.setdefault(wide, []).append(element)
        else:
            for block in range(first, last + 1):
                out.setdefault(names[block & mask], []).append(
                    (max(low, block << SHARD_SHIFT), min(high, ((block + 1) << SHARD_SHIFT) - 1), index))
    return out


def whole_in(family: int, name: str, interval: Interval) -> bool:
    """Whether placed() puts this interval whole (one piece) in set `name`."""
    first, last = interval[0] >> SHARD_SHIFT, interval[1] >> SHARD_SHIFT
    if first == last:
        return name == SHARD_SETS[family][first & (SHARDS - 1)]
    return last - first >= SHARDS and name == PREFIX_SETS[family]


def prefix_set(family: int, interval: Interval) -> str:
    """The prefix set holding an interval of one block, or a wide one (the whole of it)."""
    (name,) = placed(family, [interval])
    return name


def shard_chain(family: int, index: int) -> str:
    """The chain looking an address up in shard `index`'s set (classify goes to it by the
    address's block)."""
    return f"in_{SHARD_SETS[family][index]}"


# -- rendering the chains (canonical JSON, as `nft -j list` gives them back) --------------


def _ct(key: str) -> dict:
    return {"ct": {"key": key}}


def _mark_key(field: MarkField, source: dict) -> dict:
    return {"&": [source, field.mask]}


def _daddr(family: int) -> dict:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": "daddr"}}


def _address(family: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


def _set_mark(target: str, field: MarkField, mark: int) -> dict:
    key = _ct("mark") if target == "ct" else {"meta": {"key": "mark"}}
    keep = field.keep_others(mark)
    # nft drops an AND with all ones (the mark sets every bit of the mask): list it so
    return {"mangle": {"key": key, "value": {"|": [{"&": [key, keep]} if keep != U32 else key, mark]}}}


@dataclass(frozen=True)
class Rule:
    """A rule of nra's, compared by its digest: a hash of its expressions in canonical JSON
    (as libnftables takes them), which nra writes with the rule as its comment (the rule's
    NFTA_RULE_USERDATA) and reads back from there (nra.kernel.nft_read). A rule read back
    without nra's comment is known by a digest no rule of nra's has, so its chain is written
    again. What the digest cannot see: someone else's rule carrying a comment copied from one
    of nra's, in the same place (`nft replace rule ... comment "nra:..."`), reads as nra's
    rule and stays until nra's next rebuild. Comparing the expressions themselves would mean
    encoding every rule to netlink as the kernel dumps it back; a forged comment takes root
    on the node, who can change anything nra does anyway."""

    digest: str
    text: str = field(default="", compare=False)  # the expressions, canonical JSON (nra's own rules)


def rule_digest(text: str) -> str:
    """A rule's comment: `nra:` and 16 hex digits of a hash of its canonical JSON."""
    return "nra:" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _rule(*expr: dict) -> Rule:
    text = json.dumps(list(expr), sort_keys=True, separators=(",", ":"))
    return Rule(rule_digest(text), text)


def save_chain(index: int) -> str:
    return f"save_{index}" if index else "save_external"


def group_chain(index: int) -> str:
    """The chain an uplink group's map elements go to (its routers' marks, else its own)."""
    return f"group_{index}"


def restore_chain(index: int) -> str:
    return f"restore_{index}" if index else "restore_external"


def desired_chains(field: MarkField, capacity: int | None = None) -> dict[str, tuple[tuple | None, tuple[Rule, ...]]]:
    """nra's chains for routers 1..capacity (at most the field's; None: the field's)."""
    capacity = field.capacity if capacity is None else min(capacity, field.capacity)
    indexes = range(capacity + 1)  # 0: the external mark
    marks = {i: field.router(i) if i else field.value for i in indexes}
    restore_map = [[marks[i], {"jump": {"target": restore_chain(i)}}] for i in indexes]
    from_peers = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": f"@{LINKS_SET}"}}
    not_from_peers = {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": f"@{LINKS_SET}"}}
    examined = _set_mark("ct", field, field.examined)
    chains: dict[str, tuple[tuple | None, tuple[Rule, ...]]] = {
        # the hooked chains end in one jump each: made last, after the elements, so the table
        # sees no packet before it holds its prefixes (see NftState.apply_blocking). Before
        # it, prerouting accepts the examined mark by a compare (no jump, no hash look-up for
        # most forwarded packets; alone, it changes no packet's fate: the policy accepts)
        "prerouting": (("filter", "prerouting", MANGLE, "accept"), (
            _rule({"match": {"op": "==", "left": _mark_key(field, _ct("mark")), "right": field.examined}},
                  {"accept": None}),
            _rule({"jump": {"target": "dispatch_in"}}))),
        "output": (("route", "output", MANGLE, "accept"), (_rule({"jump": {"target": "dispatch_out"}}),)),
        "dispatch_in": (None, (
            _rule({"vmap": {"key": _mark_key(field, _ct("mark")),
                            "data": {"set": sorted([[0, {"jump": {"target": "classify"}}],
                                                    [field.examined, {"accept": None}], *restore_map],
                                                   key=lambda e: e[0])}}}),)),
        "dispatch_out": (None, (
            _rule({"vmap": {"key": _mark_key(field, _ct("mark")),
                            "data": {"set": sorted(restore_map, key=lambda e: e[0])}}}),)),
        "classify": (None, (
            # (not `ct state != new`: a connection that met no table, or an inert one, while nra's
            # was made again is classified by its next packet instead of staying unmarked)
            _rule({"match": {"op": "==", "left": _ct("direction"), "right": "reply"}}, {"return": None}),
            # per family: the address's block's chain (see SHARDS), which looks it up
            *(_rule(from_peers, {"vmap": {"key": {"&": [_daddr(family), _address(family, SHARDS - 1 << SHARD_SHIFT)]},
                                          "data": {"set": [[_address(family, i << SHARD_SHIFT),
                                                            {"goto": {"target": shard_chain(family, i)}}]
                                                           for i in range(SHARDS)]}}})
              for family in (4, 6)),
            # not from a peer's link: examined. (A packet from one that the look-up above
            # missed, which it should never do, is left unmarked: its connection's next packet
            # is classified again, instead of keeping the examined mark for good)
            _rule(not_from_peers, examined),
        )),
    }
    routers = _rule({"vmap": {"key": {"concat": [{"meta": {"key": "iifname"}},
                                                 {"payload": {"protocol": "ether", "field": "saddr"}}]},
                              "data": f"@{ROUTERS_MAP}"}})
    external = _rule(_set_mark("ct", field, field.value))
    for family in (4, 6):
        # a block's chain: an address of an uplink group (in the block's group map or the
        # wide one: see placed_groups) goes to its group's chain; one in neither its shard's
        # set nor the wide set is examined; else its router's mark, else the external mark.
        # (The group maps are looked up by their verdict maps alone: the kernel validates the
        # table when a verdict map's element is added, walking every element of each verdict
        # map a rule looks up, and a look-up of membership too walked them twice: ~7 ms more
        # per group change at 100,000)
        for i in range(SHARDS):
            chains[shard_chain(family, i)] = (None, (
                _rule({"vmap": {"key": _daddr(family), "data": f"@{GROUP_SHARD_MAPS[family][i]}"}}),
                _rule({"vmap": {"key": _daddr(family), "data": f"@{GROUP_MAPS[family]}"}}),
                _rule({"match": {"op": "!=", "left": _daddr(family), "right": f"@{SHARD_SETS[family][i]}"}},
                      {"match": {"op": "!=", "left": _daddr(family), "right": f"@{PREFIX_SETS[family]}"}},
                      examined, {"return": None}),
                routers,
                external))
    for i in indexes:
        if i:
            chains[save_chain(i)] = (None, (_rule(_set_mark("ct", field, marks[i])),))
            # an uplink group's address: its router's mark if the sender is a known router,
            # else the group's own
            chains[group_chain(i)] = (None, (routers, _rule({"goto": {"target": save_chain(i)}})))
        chains[restore_chain(i)] = (None, (
            _rule({"match": {"op": "==", "left": _ct("direction"), "right": "reply"}},
                  _set_mark("meta", field, marks[i])),))
    return chains


def _router_keys(routers: Mapping[RouterKey, int]) -> dict[RouterKey, int]:
    return {(link, mac.lower()): i for (link, mac), i in routers.items()}


def group_intervals(groups: Mapping[int, Iterable[IPNetwork]],
                    families: Iterable[int] = (4, 6)) -> tuple[dict[int, frozenset[GroupInterval]], list[str]]:
    """The group maps' elements: each group's (index -> its prefixes) merged intervals, tagged
    with its index; and a line for each interval left out because another group's overlaps
    it (MetalLB refuses overlapping pools; the first group, by index, keeps it)."""
    return tag_groups({index: prefix_intervals(prefixes, families) for index, prefixes in groups.items()})


def tag_groups(merged: Mapping[int, Mapping[int, Iterable[Interval]]]) -> tuple[dict[int, frozenset[GroupInterval]],
                                                                              list[str]]:
    """group_intervals() of each group's merged intervals (index -> family -> intervals)."""
    out: dict[int, list[GroupInterval]] = {4: [], 6: []}
    problems: list[str] = []
    for index, by_family in sorted(merged.items()):
        for family, intervals in by_family.items():
            out[family] += [(low, high, index) for low, high in intervals]
    result: dict[int, frozenset[GroupInterval]] = {}
    for family, elements in out.items():
        elements.sort()
        # (each group's own intervals are disjoint: only another group's can overlap one)
        if all(a[1] < b[0] for a, b in zip(elements, elements[1:])):
            result[family] = frozenset(elements)
            continue
        kept: list[GroupInterval] = []
        for low, high, index in sorted(elements, key=lambda e: (e[2], e[0])):
            at = bisect_right(kept, (high, WIDTH_MAX, 0))
            clash = next((k for k in kept[max(0, at - 1):at + 1] if k[0] <= high and low <= k[1]), None)
            if clash is not None:
                problems.append(f"prefix {interval_text(family, (low, high))}: in two uplink groups' pools "
                                f"(overlaps {interval_text(family, clash[:2])}); left to the first group")
                continue
            insort(kept, (low, high, index))
        result[family] = frozenset(kept)
    return result, problems


def desired_table(prefixes: Iterable[IPNetwork], links: Iterable[str], routers: Mapping[RouterKey, int],
                  field: MarkField, families: Iterable[int] = (4, 6),
                  groups: Mapping[int, Iterable[IPNetwork]] | None = None, capacity: int | None = None) -> NftTable:
    """The table nra wants: these LB prefixes (of these families), peer links, routers
    ((link, link-layer address) -> index) and uplink groups (index -> prefixes), for this mark
    field and router capacity (None: the field's). The prefix sets hold the prefixes of no
    group (all of them when two groups' overlap: see UngroupedPrefixes)."""
    groups = {i: frozenset(p) for i, p in (groups or {}).items()}
    elements, problems = group_intervals(groups, families)
    ungrouped = frozenset(prefixes).difference(*([] if problems else groups.values()))
    return NftTable(prefix_intervals(ungrouped, families), frozenset(links), _router_keys(routers),
                    desired_chains(field, capacity), groups=elements)


class _SortedElements(Set):
    """A set of sorted, disjoint elements kept in a compact form (SortedIntervals,
    GroupElements): iteration yields them in order, `in` is a bisect; an operator with a
    set (-, |, &) gives a plain frozenset made at C speed, and so does == with one (a
    comparison of everything: nothing keeps it). Never changed once made."""

    __slots__ = ()

    @classmethod
    def _from_iterable(cls, it: Iterable) -> frozenset:
        return frozenset(it)

    def _same(self, other: "_SortedElements") -> bool:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return self._same(other)  # type: ignore[arg-type]
        if isinstance(other, (set, frozenset)):
            return len(self) == len(other) and frozenset(self) == other
        if isinstance(other, Set):
            return len(self) == len(other) and all(map(other.__contains__, self))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __sub__(self, other: Iterable) -> frozenset:
        return frozenset(self).difference(other)

    def __rsub__(self, other: Iterable) -> frozenset:
        return frozenset(other).difference(self)

    def __or__(self, other: Iterable) -> frozenset:
        return frozenset(self).union(other)

    __ror__ = __or__

    def __and__(self, other: Iterable) -> frozenset:
        return frozenset(self).intersection(other)

    __rand__ = __and__


class SortedIntervals(_SortedElements):
    """A family's merged intervals as DesiredTables keeps them (NftTable.prefixes): a tuple of
    the intervals, sorted (the intervals themselves are the prefixes' own tuples, shared with
    MergedIntervals' lists). At 100,000 intervals a frozenset of them held 4 MB; the tuple
    0.8 MB, made from MergedIntervals' list on each change that moved an interval (one pass
    over the pointers, as the frozenset's copy was)."""

    __slots__ = ("items", "__weakref__")

    def __init__(self, items: Iterable[Interval] = ()) -> None:
        self.items: tuple[Interval, ...] = tuple(items)

    def _same(self, other: "SortedIntervals") -> bool:
        return self.items == other.items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Interval]:
        return iter(self.items)

    def __contains__(self, element: object) -> bool:
        try:
            at = bisect_left(self.items, element)  # type: ignore[arg-type]
        except TypeError:
            return False
        return at < len(self.items) and self.items[at] == element

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.items[:4]))
        return f"SortedIntervals({len(self)}: {shown}{', ...' if len(self) > 4 else ''})"


class GroupElements(_SortedElements):
    """A family's group map elements as nra keeps them: disjoint intervals, sorted, in two
    parallel columns (the intervals, each the group's own (low, high) tuple, shared with its
    MergedIntervals; and the group indexes) instead of a frozenset of (low, high, index)
    tuples. A set of GroupInterval to its readers (iteration yields the tuples in order, made
    as they are asked for); `len` and `in` (a bisect) build nothing. At 100,000 elements the
    tuples and their frozenset held ~10 MB; the columns hold ~1.2 MB. Never changed once
    made: GroupMaps makes a new one from a copy of the columns when a change moves elements."""

    __slots__ = ("spans", "indexes")

    def __init__(self, spans: list[Interval] | None = None, indexes: array | None = None) -> None:
        self.spans: list[Interval] = spans if spans is not None else []
        self.indexes: array = indexes if indexes is not None else array("I")

    @classmethod
    def of(cls, elements: Iterable[GroupInterval]) -> "GroupElements":
        """The elements given (disjoint), sorted into columns."""
        ordered = sorted(elements)
        return cls([(e[0], e[1]) for e in ordered], array("I", [e[2] for e in ordered]))

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[GroupInterval]:
        return map(_tagged, self.spans, self.indexes)

    def __contains__(self, element: object) -> bool:
        try:
            low, high, index = element  # type: ignore[misc]
            at = bisect_left(self.spans, (low,))
        except (TypeError, ValueError):
            return False
        return at < len(self.spans) and self.spans[at] == (low, high) and self.indexes[at] == index

    def _same(self, other: "GroupElements") -> bool:
        return self.spans == other.spans and self.indexes == other.indexes

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, islice(self, 4)))
        return f"GroupElements({len(self)}: {shown}{', ...' if len(self) > 4 else ''})"


def _tagged(span: Interval, index: int) -> GroupInterval:
    return span[0], span[1], index


def frozen_groups(elements: Iterable[GroupInterval]) -> frozenset[GroupInterval]:
    """A family's group elements as a frozenset (made from a GroupElements: set operations at
    C speed, for a comparison of everything; nothing keeps it)."""
    return elements if isinstance(elements, frozenset) else frozenset(elements)


def sorted_groups(elements: Iterable[GroupInterval]) -> tuple[GroupInterval, ...]:
    """A family's group elements sorted (a GroupElements is already)."""
    return tuple(elements) if isinstance(elements, GroupElements) else tuple(sorted(elements))


def group_elements(merged: Mapping[int, Mapping[int, Iterable[Interval]]]) -> tuple[dict[int, GroupElements], list[str]]:
    """tag_groups() as GroupElements: each group's (index -> family -> merged intervals)
    tagged with its index; an overlap between groups is left to tag_groups (it says which
    interval is left out)."""
    result: dict[int, GroupElements] = {}
    for family in (4, 6):
        # (the pairs live while this sorts them: only the columns stay, the intervals the
        # groups' own)
        tagged = sorted((interval, index) for index, by_family in merged.items()
                        for interval in by_family.get(family, ()))
        spans = [t[0] for t in tagged]
        if not all(map(operator.lt, map(_HIGH, spans), map(_LOW, islice(spans, 1, None)))):
            elements, problems = tag_groups(merged)
            return {f: GroupElements.of(e) for f, e in elements.items()}, problems
        result[family] = GroupElements(spans, array("I", [t[1] for t in tagged]))
    return result, []


_LOW, _HIGH = operator.itemgetter(0), operator.itemgetter(1)


class MergedIntervals:
    """The merged intervals of a set of prefixes, kept between reconciles and updated by the
    prefixes added and removed since (a file change adds or removes a few): a bisect and a
    local re-merge each, where merging 10,000 prefixes again costs ~10 ms. A large change is
    merged whole. The result always equals prefix_intervals(prefixes): a SortedIntervals per
    family (a tuple of the merged list's intervals: a changed family's is a new copy of the
    list, an unchanged one's the same object). Without `keep_result`
    (GroupMaps) the result is not made: `merged()` and `delta` say what it is and how it moved,
    where a copy of the frozen result each change costs a pass over every interval (and another
    to free the last one), ~5 ms at 50,000 in a daemon's large heap."""

    def __init__(self, keep_result: bool = True) -> None:
        self._keep = keep_result
        self._prefixes: frozenset[IPNetwork] = frozenset()
        # sorted, one per prefix; edited in place (a copy's increfs and the old one's
        # decrefs cost several ms each in the daemon's heap)
        self._raw: dict[int, list[Interval]] = {4: [], 6: []}
        # sorted, disjoint, edited in place: the raw list itself while no two raw intervals
        # touch (100,000 distinct prefixes: one list, not two), a list of its own once one
        # update makes two touch (and until a whole merge)
        self._merged: dict[int, list[Interval]] = dict(self._raw)  # (none yet: one list)
        self._frozen: dict[int, SortedIntervals] = {4: SortedIntervals(), 6: SortedIntervals()}
        #: after an update that moved a few intervals: {family: (its intervals gone, added)}
        #: from the result before it to the result now (None after a whole merge)
        self.delta: dict[int, tuple[frozenset[Interval], frozenset[Interval]]] | None = None
        self._moved: dict[int, tuple[list[Interval], list[Interval]]] = {}

    @property
    def result(self) -> Mapping[int, AbstractSet[Interval]]:
        """The merged intervals of the last update."""
        return self._frozen if self._keep else {f: frozenset(self._merged[f]) for f in (4, 6)}

    def merged(self, family: int) -> list[Interval]:
        """The merged intervals of the last update, sorted (the list itself: not to be changed;
        an update changes it in place or replaces it)."""
        return self._merged[family]

    def update(self, prefixes: frozenset[IPNetwork]) -> dict[int, SortedIntervals]:
        if prefixes is self._prefixes:
            self.delta = {}
            return self._frozen
        # made from the last set by a patch: its difference is known (no pass over 100,000)
        known = prefix_delta.delta(prefixes, self._prefixes)
        added, removed = known if known is not None else (prefixes - self._prefixes, self._prefixes - prefixes)
        if len(added) + len(removed) > max(64, len(prefixes) // 8):
            raw: dict[int, list[Interval]] = {4: [], 6: []}
            for prefix in prefixes:
                family, interval = _interval_of(prefix)
                raw[family].append(interval)
            for family, intervals in raw.items():
                intervals.sort()
                merged = merge_sorted(intervals)
                # (as many merged as raw: the same intervals, one list)
                self._raw[family], self._merged[family] = intervals, intervals if len(merged) == len(intervals) else merged
            self._prefixes = prefixes
            if self._keep:
                self._frozen = {f: SortedIntervals(self._merged[f]) for f in (4, 6)}
            self.delta = None
            return self._frozen
        else:
            changed = set()
            self._moved = {4: ([], []), 6: ([], [])}
            for prefix in removed:
                family, interval = _interval_of(prefix)
                self._remove(family, interval)
                changed.add(family)
            for prefix in added:
                family, interval = _interval_of(prefix)
                self._add(family, interval)
                changed.add(family)
        self._prefixes = prefixes
        # the few pieces that moved (what diff() sends), and a changed family's result copied
        # from its merged list (a frozenset of all the merged pieces again costs ~25 ms at 100,000)
        frozen, delta = dict(self._frozen), {}
        for family in changed:
            # a piece is put in only when out and taken out only when in: what it ends as is
            # the sum of its moves (+1 added, -1 gone, 0 back as it was)
            net: dict[Interval, int] = {}
            for sign, pieces in ((-1, self._moved[family][0]), (1, self._moved[family][1])):
                for piece in pieces:
                    net[piece] = net.get(piece, 0) + sign
            gone = frozenset(p for p, n in net.items() if n < 0)
            added = frozenset(p for p, n in net.items() if n > 0)
            delta[family] = (gone, added)
            if self._keep and (gone or added):
                # (a copy of the list's pointers: one pass, as the frozenset's copy was)
                frozen[family] = SortedIntervals(self._merged[family])
        self._frozen, self.delta = frozen, delta
        return frozen

    def _add(self, family: int, interval: Interval) -> None:
        raw = self._raw[family]
        if self._merged[family] is raw:  # (no two raw intervals touch: each is merged alone)
            at = bisect_left(raw, interval)
            if not ((at and raw[at - 1][1] >= interval[0] - 1) or (at < len(raw) and raw[at][0] <= interval[1] + 1)):
                raw.insert(at, interval)  # (touching none, it is a merged piece of its own)
                self._moved[family][1].append(interval)
                return
            self._merged[family] = list(raw)  # (it touches one: the lists part, before it goes in)
        insort(raw, interval)
        self._remerge(family, interval[0], interval[1])

    def _remove(self, family: int, interval: Interval) -> None:
        raw = self._raw[family]
        del raw[bisect_left(raw, interval)]  # (it is there: added when its prefix was)
        if self._merged[family] is raw:  # (it was a merged piece of its own: gone from both)
            self._moved[family][0].append(interval)
            return
        self._remerge(family, interval[0], interval[1])

    def _remerge(self, family: int, low: int, high: int) -> None:
        """Merge again the raw intervals of the merged pieces that touch [low, high] (the
        pieces an interval added there joins, or the one an interval removed from it leaves)."""
        merged, raw = self._merged[family], self._raw[family]
        # pieces that overlap or adjoin [low, high]: from the last one starting at or before
        # high + 1, down while they reach low - 1
        last = bisect_right(merged, (high + 1, WIDTH_MAX)) - 1
        first = last + 1
        while first - 1 >= 0 and merged[first - 1][1] >= low - 1:
            first -= 1
        start = min(low, merged[first][0]) if first <= last else low
        end = max(high, merged[last][1]) if first <= last else high
        # every raw interval of those pieces starts inside [start, end], and no other does
        pieces = merge_sorted(raw[bisect_left(raw, (start, -1)):bisect_right(raw, (end, WIDTH_MAX))])
        gone, added = self._moved[family]
        gone += merged[first:last + 1]
        added += pieces
        merged[first:last + 1] = pieces


WIDTH_MAX = 1 << 128  # above any address: a bisect key after every interval starting at `low`


def _interval_of(prefix: IPNetwork) -> tuple[int, Interval]:
    try:  # nra.config.prefixes' networks know theirs
        return prefix.family, prefix.interval
    except AttributeError:
        low = int(prefix.network_address)
        return prefix.version, (low, low + (1 << (WIDTH[prefix.version] - prefix.prefixlen)) - 1)


class UngroupedPrefixes:
    """The LB prefixes the prefix sets hold: those of no uplink group (a group's are its group
    map's elements, and classify looks an address up in both: see desired_chains). Two
    groups of 50,000 prefixes each held 100,000 elements twice over, in the prefix sets and
    in the group maps: twice the kernel's batch and encoding at start, two sets in each
    change's transaction. With no groups, the intent's own set (the same object: nothing is
    copied). Kept between reconciles: the same sets give the same object back, and sets
    patched from the last ones (nra.config.prefix_delta) move the result by their few
    prefixes, the difference recorded in turn for MergedIntervals; anything else is a set
    difference at C speed (1.3-1.9 ms at 100,000 in two groups, measured in a small heap)."""

    #: above this many changed prefixes, the difference is taken whole
    INCREMENTAL_MAX = 256

    def __init__(self) -> None:
        self._prefixes: frozenset[IPNetwork] | None = None
        self._groups: tuple[frozenset[IPNetwork], ...] = ()
        self._result: frozenset[IPNetwork] = frozenset()

    def get(self, prefixes: frozenset[IPNetwork], groups: Collection[frozenset[IPNetwork]]) -> frozenset[IPNetwork]:
        """`prefixes` without those of `groups` (each group's prefixes, in a stable order)."""
        groups = tuple(groups)
        if not groups:
            result = prefixes
        elif prefixes is self._prefixes and len(groups) == len(self._groups) and all(
                map(operator.is_, groups, self._groups)):
            return self._result
        else:
            result = self._follow(prefixes, groups)
            if result is None:
                result = prefixes.difference(*groups)
                if not result and not self._result:
                    result = self._result  # (still none: the same object, nothing to compare)
        self._prefixes, self._groups, self._result = prefixes, groups, result
        return result

    def _follow(self, prefixes: frozenset[IPNetwork], groups: tuple[frozenset[IPNetwork], ...]
                ) -> frozenset[IPNetwork] | None:
        """The last result moved by the prefixes that changed since (None: not known, or too
        many)."""
        if self._prefixes is None or len(groups) != len(self._groups):
            return None
        changed: set[IPNetwork] = set()
        for now, before in ((prefixes, self._prefixes), *zip(groups, self._groups)):
            if now is before:
                continue
            known = prefix_delta.delta(now, before)
            if known is None:
                return None
            changed.update(*known)
            if len(changed) > self.INCREMENTAL_MAX:
                return None
        last = self._result
        added = {p for p in changed if p not in last and p in prefixes and not any(p in g for g in groups)}
        removed = {p for p in changed if p in last and (p not in prefixes or any(p in g for g in groups))}
        if not added and not removed:
            return last
        result = last.difference(removed).union(added)
        prefix_delta.remember(result, last, added, removed)
        return result


class DesiredTables:
    """The last desired table, kept by its caller (the reconciler) between reconciles: a
    steady reconcile (the same intent's prefixes, links, routers and mark) gets the very same
    object back, so nothing is merged again and diff() compares nothing; a changed intent's
    prefixes are merged from the last ones (MergedIntervals)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._table: NftTable | None = None
        self._intervals = MergedIntervals()
        self._chains: tuple[tuple[MarkField, int | None] | None, dict] = (None, {})
        self._group_key: tuple | None = None
        self._group_maps = GroupMaps()
        self._ungrouped = UngroupedPrefixes()
        self._group_delta: tuple | None = None
        self._groups: dict[int, GroupElements] = {}
        #: the group intervals left out (overlapping another group's), one line each
        self.group_problems: list[str] = []
        #: uplink group key -> its number, as the caller last numbered the groups of the
        #: table it got (so a plan against nra's own last write need not read them back)
        self.group_numbers: dict = {}

    def last_groups(self) -> Mapping[int, GroupElements] | None:
        """The group maps' elements of the table last given (None before the first)."""
        return self._groups if self._table is not None else None

    def get(self, prefixes: frozenset[IPNetwork], families: frozenset[int], links: Iterable[str],
            routers: Mapping[RouterKey, int], field: MarkField,
            groups: Mapping[int, frozenset[IPNetwork]] | None = None, capacity: int | None = None) -> NftTable:
        """`groups`: uplink group index -> its prefixes (each a frozenset kept by the caller
        while it does not change: compared by identity). `capacity`: how many routers the
        settings number (None: the field's)."""
        groups = groups or {}
        group_key = (families, tuple(sorted((i, id(p)) for i, p in groups.items())))
        key = (id(prefixes), families, frozenset(links), tuple(sorted(routers.items())), field, capacity)
        if key != self._key or self._table is None or group_key != self._group_key:
            if group_key != self._group_key or self._table is None:
                self._groups = self._group_maps.update(groups, families)
                self.group_problems = self._group_maps.problems
                self._group_delta = self._group_maps.delta
                self._group_key, self._group_prefixes = group_key, groups  # (keeps the ids valid)
            # the prefix sets hold what no group map does (an interval left out of one, as
            # overlapping another group's: everything, as with no groups)
            ungrouped = self._ungrouped.get(prefixes, () if self.group_problems else
                                            [groups[i] for i in sorted(groups)])
            before = self._intervals.result
            intervals = self._intervals.update(ungrouped)
            moved = self._intervals.delta
            if self._chains[0] != (field, capacity):
                self._chains = ((field, capacity), desired_chains(field, capacity))
            self._table = NftTable({f: intervals[f] if f in families else frozenset() for f in (4, 6)},
                                   frozenset(links), _router_keys(routers), self._chains[1],
                                   groups=self._groups, groups_delta=self._group_delta,
                                   prefixes_delta=None if moved is None else (_weak(before), intervals, moved))
            self._key, self._prefixes = key, prefixes  # the reference keeps the id valid
        return self._table


def _weak(intervals: Mapping[int, frozenset[Interval]]) -> dict[int, weakref.ref]:
    """The merged intervals a table was updated from, by weak reference: diff() only asks
    whether the table it compares with holds them, which it cannot once they are gone (a
    table kept as the last one written kept its predecessor's 100,000 intervals alive)."""
    return {family: weakref.ref(merged) for family, merged in intervals.items()}


def _strong(ref: weakref.ref | None) -> frozenset[Interval] | None:
    return None if ref is None else ref()


class GroupMaps:
    """The group maps' elements kept between reconciles: each group's intervals merged from its
    last ones (MergedIntervals, without a frozen result of its own), the elements that moved
    (its intervals gone and added, tagged with its index) applied to the last result; a change
    that moves a few intervals is checked for overlaps against its neighbours only (a bisect
    each), where tagging and sorting 10,000 intervals again costs ~25 ms. Nothing per group is
    copied whole on a change (a copy of 50,000 and the freeing of the last one pass over every
    element: in the daemon's heap of a million objects, several ms each): the result alone
    is, as GroupElements (three columns: a copy of each list is a memory copy). No tagged
    tuple is kept: the result's columns are the sorted elements the bisects look in.
    The result always equals group_intervals(groups)."""

    #: above this many changed intervals, everything is tagged and checked again
    INCREMENTAL_MAX = 256

    def __init__(self) -> None:
        self._merged: dict[int, MergedIntervals] = {}
        self._families: frozenset[int] | None = None
        self.problems: list[str] = []
        self.result: dict[int, GroupElements] = {4: GroupElements(), 6: GroupElements()}
        #: (the result before the last update, {family: (its elements gone, added)}) when the
        #: last update followed a few changes (diff() then compares those alone)
        self.delta: tuple | None = None

    def update(self, groups: Mapping[int, frozenset[IPNetwork]],
               families: Iterable[int]) -> dict[int, GroupElements]:
        families = frozenset(families) & {4, 6}
        again = families != self._families  # (the first, or a family turned on or off)
        merged: dict[int, MergedIntervals] = {}
        # family -> (elements gone, added) since the last result, from the groups' own few
        # moves (MergedIntervals.delta): no pass over a group's 50,000 intervals
        moves: dict[int, tuple[list[GroupInterval], list[GroupInterval]]] = {4: ([], []), 6: ([], [])}
        for index, prefixes in groups.items():
            kept = self._merged.get(index)
            merged[index] = kept or MergedIntervals(keep_result=False)
            prior = {f: merged[index].merged(f) for f in (4, 6)}  # (a whole merge replaces the lists)
            merged[index].update(prefixes)
            moved = merged[index].delta
            if again:
                continue
            for family in families:
                if kept is None:
                    gone_i, added_i = (), merged[index].merged(family)
                elif moved is None:  # (merged whole: compared whole)
                    before, now = set(prior[family]), set(merged[index].merged(family))
                    gone_i, added_i = before - now, now - before
                elif family in moved:
                    gone_i, added_i = moved[family]
                else:
                    continue
                moves[family][0].extend((low, high, index) for low, high in gone_i)
                moves[family][1].extend((low, high, index) for low, high in added_i)
        for index in self._merged.keys() - merged.keys():  # a group gone: all its elements
            for family in families:
                moves[family][0].extend((low, high, index) for low, high in self._merged[index].merged(family))
        previous = self.result
        result = None if again else self._follow(moves)
        if result is None:  # (many changes, or an overlap, or other families: everything again)
            result, self.problems = group_elements({i: {f: m.merged(f) for f in families} for i, m in merged.items()})
            self.delta = None
        else:
            self.delta = (previous, moves)
        self._merged, self._families, self.result = merged, families, result
        return result

    def _follow(self, moves: Mapping[int, tuple[list[GroupInterval], list[GroupInterval]]]
                ) -> dict[int, GroupElements] | None:
        """The last result after these moves (each group's elements gone and added), when
        they are few and overlap nothing (None: everything again). A family that moved gets
        new columns (copies of the last, changed); the last result stays as it was."""
        if self.problems:
            return None
        if any(len(gone) + len(added) > self.INCREMENTAL_MAX for gone, added in moves.values()):
            return None
        result = dict(self.result)
        for family, (gone, added) in moves.items():
            if not gone and not added:
                continue
            last = self.result[family]
            spans, indexes = list(last.spans), array("I", last.indexes)
            for low, _, _ in gone:  # (each is there: the group's interval was)
                at = bisect_left(spans, (low,))
                del spans[at], indexes[at]
            for low, high, index in sorted(added):
                at = bisect_left(spans, (low,))
                if (at and spans[at - 1][1] >= low) or (at < len(spans) and spans[at][0] <= high):
                    return None  # (another group's interval: tag_groups says which is left out)
                spans.insert(at, (low, high))
                indexes.insert(at, index)
            result[family] = GroupElements(spans, indexes)
        return result


# -- reading (nra.kernel.nft_read) ------------------------------------------------------


def save_index(target: str | None) -> int:
    """The index of a `save_<i>` chain; -1 for any other target (not one nra writes)."""
    suffix = (target or "").rpartition("_")[2]
    return int(suffix) if (target or "").startswith("save_") and suffix.isdigit() else -1


def group_index(target: str | None) -> int:
    """The index of a group map element's chain: `group_<i>`, or `save_<i>` as an nra before
    the group chains wrote it (the table is then made anew: NftTable.legacy_groups); -1 for
    any other target."""
    suffix = (target or "").rpartition("_")[2]
    return int(suffix) if (target or "").startswith(("group_", "save_")) and suffix.isdigit() else -1


# -- someone else's element changes, from netfilter's notifications ------------------------


def notified_intervals(elements: Iterable[tuple[bytes, int]], width: int) -> list[Interval] | None:
    """The intervals of a notification's elements of an interval set ((key, flags) each: a
    start, and the address after its end flagged INTERVAL_END; the last start may run to the
    top of the space); None when they do not pair up (the table is then read in full)."""
    points = sorted((int.from_bytes(key, "big"), bool(flags & INTERVAL_END)) for key, flags in elements)
    intervals: list[Interval] = []
    start: int | None = None
    for value, end in points:
        if end:
            if start is None:
                if value == 0:
                    continue  # the interval floor
                return None
            intervals.append((start, value - 1))
            start = None
        elif start is None:
            start = value
        else:
            return None
    if start is not None:
        intervals.append((start, (1 << width) - 1))
    return intervals


INTERVAL_END = 1  # NFT_SET_ELEM_INTERVAL_END
IFNAMSIZ = 16


def router_key_bytes(key: RouterKey) -> bytes:
    """A `link_routers` key as the kernel holds it: the interface name NUL-padded to IFNAMSIZ,
    then the link-layer address padded to a 32-bit register (24 bytes)."""
    link, mac = key
    return link.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0") + bytes.fromhex(mac.replace(":", "")).ljust(8, b"\0")


def router_key_of(data: bytes) -> RouterKey:
    """The inverse of router_key_bytes (a notification's key)."""
    link = data[:IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")
    return link, ":".join(f"{b:02x}" for b in data[IFNAMSIZ:IFNAMSIZ + 6])




def with_notified(known: NftTable, changes: Iterable) -> NftTable | None:
    """`known` after someone else's element changes (nft_netlink.ElementChange, in order);
    None when one of them cannot be followed exactly (an interval nra does not know deleted,
    a set nra does not own, intervals that do not pair up): the table is then read in full.
    The prefix changes are kept as a delta from the table nra last wrote or read (`notified`),
    so diff() against that table costs the changed elements, not all of them."""
    base, delta = known.notified if known.notified is not None else (known, {})
    delta = {f: (set(gone), set(added)) for f, (gone, added) in delta.items()}
    prefixes = dict(known.prefixes)
    links, routers = set(known.links), dict(known.routers)
    # the kernel notifies an interval's start and end in messages of their own: gather each
    # set's deletes and adds of the transaction (deletes first, as nra orders its own)
    grouped: dict[tuple[bool, str], list] = {}
    for change in changes:
        if change.table == TABLE:
            grouped.setdefault((not change.delete, change.set_name), []).extend(change.elements)
    for (adds, set_name), elements in sorted(grouped.items()):
        if set_name in PREFIX_SET_FAMILY:
            family = PREFIX_SET_FAMILY[set_name]
            found = notified_intervals(((e.key, e.flags) for e in elements), WIDTH[family])
            # followed when each is a merged interval's one piece, in its place (another set's
            # element, or a piece of a split interval, is read back instead)
            if found is None or not all(whole_in(family, set_name, i) for i in found):
                return None
            gone, added = delta.setdefault(family, (set(), set()))
            changed = set(found)
            if not adds:
                if not changed <= prefixes[family]:
                    return None
                prefixes[family] = prefixes[family] - changed
                gone |= changed - added
                added -= changed
            else:
                prefixes[family] = prefixes[family] | changed
                added |= changed - gone
                gone -= changed
        elif set_name == LINKS_SET:
            names = {e.key.split(b"\0", 1)[0].decode(errors="replace") for e in elements}
            links = links | names if adds else links - names
        elif set_name == ROUTERS_MAP:
            for e in elements:
                key = router_key_of(e.key)
                if not adds:
                    routers.pop(key, None)
                else:
                    routers[key] = save_index(e.chain)
        else:  # (the group maps too: read in full)
            return None
    return dataclasses.replace(known, prefixes=prefixes, links=frozenset(links), routers=routers, raw_prefixes={},
                               notified=(base, {f: (frozenset(g), frozenset(a)) for f, (g, a) in delta.items()}))


#: a chain whose rules someone else deleted or replaced: never equal to nra's (a rewrite)
DAMAGED = (Rule("(rules deleted by someone else)"),)
#: a chain someone else made under one of nra's names: its hook unknown (made again)
UNKNOWN_HOOK = ("(made by someone else)",)


def with_objects(known: NftTable, objects: Iterable) -> tuple[NftTable, frozenset[str]] | None:
    """`known` after someone else's chain, rule and set changes (nft_netlink.ObjectChange, in
    order), and the names of sets whose element changes no longer matter (anonymous sets, and
    sets not nra's, which go with their rule or are dropped); None when one of them cannot be
    attributed (a change to one of nra's sets, or an object of another kind): the table is
    then read in full. Each change becomes the repair of that object alone: a rule added is
    deleted by its handle, a chain that lost rules is written again, a chain made is dropped
    (or, under one of nra's names, made again), a set not nra's is dropped."""
    chains = dict(known.chains)
    foreign_rules = list(known.foreign_rules)
    foreign = list(known.foreign)
    ignored: set[str] = set()
    for obj in objects:
        if obj is None:
            return None
        if obj.table != TABLE:
            continue
        if obj.kind == "rule":
            if obj.chain not in chains:
                return None
            if not obj.delete:
                foreign_rules.append((obj.chain, obj.handle))
            elif (obj.chain, obj.handle) in foreign_rules:
                foreign_rules.remove((obj.chain, obj.handle))
            else:  # one of nra's rules
                chains[obj.chain] = (chains[obj.chain][0], DAMAGED)
        elif obj.kind == "chain":
            if obj.delete:
                chains.pop(obj.name, None)
                foreign_rules = [r for r in foreign_rules if r[0] != obj.name]
            elif obj.name in chains:  # a chain of that name changed (a base chain's policy or hook)
                chains[obj.name] = (UNKNOWN_HOOK if chains[obj.name][0] else None, DAMAGED)
            else:
                chains[obj.name] = (UNKNOWN_HOOK, ())
        else:
            if obj.name in NRA_SETS:
                return None
            kind = "map" if obj.flags & SET_FLAG_MAP else "set"
            if obj.flags & SET_FLAG_ANONYMOUS:
                ignored.add(obj.name)
            elif obj.delete:
                foreign = [f for f in foreign if f != f"{kind} {obj.name}"]
            else:
                foreign.append(f"{kind} {obj.name}")
                ignored.add(obj.name)
    ignored |= {f.split(" ", 1)[1] for f in foreign if f.startswith(("set ", "map "))}
    return dataclasses.replace(known, chains=chains, foreign_rules=tuple(foreign_rules),
                               foreign=tuple(foreign)), frozenset(ignored)


SET_FLAG_ANONYMOUS, SET_FLAG_MAP = 0x1, 0x4  # NFT_SET_*


# -- the change ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NftChange:
    """One transaction: a rebuild of the whole table, or element adds and deletes."""

    rebuild: bool = False
    reason: str = ""
    # the prefixes' merged intervals, by family, each written where placed() puts it
    add_prefixes: Mapping[int, tuple[Interval, ...]] = field(default_factory=dict)
    delete_prefixes: Mapping[int, tuple[Interval, ...]] = field(default_factory=dict)
    # when not None: the prefix sets' elements exactly, set name -> intervals (a table read
    # back: its elements as listed, wherever they are); the prefixes above then only describe
    # the change (what the prefixes gain and lose)
    add_pieces: Mapping[str, tuple[Interval, ...]] | None = None
    delete_pieces: Mapping[str, tuple[Interval, ...]] | None = None
    add_links: tuple[str, ...] = ()
    delete_links: tuple[str, ...] = ()
    set_routers: Mapping[RouterKey, int] = field(default_factory=dict)
    delete_routers: tuple[RouterKey, ...] = ()
    # the uplink groups' intervals, by family, each written where placed_groups() puts it
    add_groups: Mapping[int, tuple[GroupInterval, ...]] = field(default_factory=dict)
    delete_groups: Mapping[int, tuple[GroupInterval, ...]] = field(default_factory=dict)
    # when not None: the group maps' elements exactly, map name -> elements (a table read
    # back, as add_pieces); the groups above then only describe the change
    add_group_pieces: Mapping[str, tuple[GroupInterval, ...]] | None = None
    delete_group_pieces: Mapping[str, tuple[GroupInterval, ...]] | None = None
    remove: bool = False  # delete the table (CLEANANDEXIT)
    # a repair in place (the sets are nra's): chains to write again, objects not nra's to drop
    rewrite: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()  # "chain x", "set y", "map z"
    drop_rules: tuple[tuple[str, int], ...] = ()  # others' rules in nra's chains: (chain, handle)
    remake_sets: tuple[str, ...] = ()  # nra's sets missing: made again, with all their elements
    table_flags: int | None = None  # set the table's flags to this (None: leave them)
    current_flags: int = 0  # (what they are, for the description)

    def __bool__(self) -> bool:
        return bool(self.rebuild or self.remove or self.rewrite or self.drop or self.remake_sets or self.drop_rules
                    or self.table_flags is not None
                    or any(self.add_prefixes.values()) or any(self.delete_prefixes.values())
                    or any((self.add_pieces or {}).values()) or any((self.delete_pieces or {}).values())
                    or self.add_links or self.delete_links
                    or self.set_routers or self.delete_routers
                    or any(self.add_groups.values()) or any(self.delete_groups.values())
                    or any((self.add_group_pieces or {}).values()) or any((self.delete_group_pieces or {}).values()))

    def describe(self) -> list[str]:
        """`nft`-like lines for `nra plan` and the log."""
        t = f"{FAMILY} {TABLE}"
        if self.remove:
            return [f"nft delete table {t}  # {self.reason}"]
        if self.rebuild:
            return [f"nft -f <table {t}: {sum(len(v) for v in self.add_prefixes.values())} prefix(es), "
                    f"{len(self.add_links)} link(s), {len(self.set_routers)} router(s)"
                    + (f", {sum(len(v) for v in self.add_groups.values())} uplink group interval(s)"
                       if any(self.add_groups.values()) else "") + f">  # {self.reason}"]
        lines = [f"nft delete {what.split()[0]} {t} {what.split()[1]}  # not nra's" for what in self.drop]
        lines += [f"nft delete rule {t} {chain} handle {handle}  # not nra's" for chain, handle in self.drop_rules]
        lines += [f"nft add set {t} {name}  # missing" for name in self.remake_sets]
        lines += [f"nft flush chain {t} {name}; <its rules again>  # {self.reason}" for name in self.rewrite]
        if self.table_flags is not None:
            lines.append(f"nft add table {t}  # table flags: {table_flags_text(self.current_flags)} -> "
                         f"{table_flags_text(self.table_flags)}")
        gone, new = prefix_pieces(self, DESCRIBED_MAX)
        for verb, by_set in (("delete", gone), ("add", new)):
            for name, elements in sorted(by_set.items(), key=lambda item: _set_order(item[0])):
                lines.append(f"nft {verb} element {t} {name} {{ {_elements_text(PREFIX_SET_FAMILY[name.rstrip('*')], elements)} }}")
        if self.delete_links:
            lines.append(f"nft delete element {t} {LINKS_SET} {{ {', '.join(self.delete_links)} }}")
        if self.add_links:
            lines.append(f"nft add element {t} {LINKS_SET} {{ {', '.join(self.add_links)} }}")
        if self.delete_routers:
            lines.append(f"nft delete element {t} {ROUTERS_MAP} {{ "
                         f"{', '.join(f'{link} . {mac}' for link, mac in self.delete_routers)} }}")
        if self.set_routers:
            lines.append(f"nft add element {t} {ROUTERS_MAP} {{ "
                         + ", ".join(f"{link} . {mac} : goto {save_chain(i)}"
                                     for (link, mac), i in sorted(self.set_routers.items()))
                         + " }")
        gone, new = group_pieces(self, DESCRIBED_MAX)
        for verb, by_map in (("delete", gone), ("add", new)):
            for name, elements in sorted(by_map.items(), key=lambda item: _set_order(item[0])):
                lines.append(f"nft {verb} element {t} {name} "
                             f"{{ {_group_elements_text(GROUP_MAP_FAMILY[name.rstrip('*')], elements)} }}")
        return lines


#: a change of more merged intervals than this is described by family (`lb4*`), not by set
DESCRIBED_MAX = 64


def _set_order(name: str) -> tuple:
    """lb4, lb4_0, lb4_1, ..., lb4_15, lb4*, then lb6's."""
    base, _, index = name.rstrip("*").partition("_")
    return (base, name.endswith("*"), int(index) if index else -1)


def prefix_pieces(change: NftChange, place_max: int | None = None) -> tuple[dict[str, tuple[Interval, ...]],
                                                                           dict[str, tuple[Interval, ...]]]:
    """The prefix sets' elements a change deletes and adds, set name -> intervals (empty
    ones left out). `place_max`: a family's change of more intervals than this is not placed
    but named by family (`lb4*`: what describe() shows)."""
    gone: dict[str, tuple[Interval, ...]] = {}
    new: dict[str, tuple[Interval, ...]] = {}
    for out, pieces, prefixes in ((gone, change.delete_pieces, change.delete_prefixes),
                                  (new, change.add_pieces, change.add_prefixes)):
        if pieces is not None:
            out.update((name, elements) for name, elements in pieces.items() if elements)
            continue
        for family, intervals in prefixes.items():
            if not intervals:
                continue
            if place_max is not None and len(intervals) > place_max:
                out[PREFIX_SETS[family] + "*"] = tuple(intervals)
            else:
                out.update((name, tuple(elements)) for name, elements in placed(family, intervals).items())
    return gone, new


def group_pieces(change: NftChange, place_max: int | None = None) -> tuple[dict[str, tuple[GroupInterval, ...]],
                                                                          dict[str, tuple[GroupInterval, ...]]]:
    """The group maps' elements a change deletes and adds, map name -> elements (as
    prefix_pieces: `groups4*` names a family's change of more than place_max)."""
    gone: dict[str, tuple[GroupInterval, ...]] = {}
    new: dict[str, tuple[GroupInterval, ...]] = {}
    for out, pieces, groups in ((gone, change.delete_group_pieces, change.delete_groups),
                                (new, change.add_group_pieces, change.add_groups)):
        if pieces is not None:
            out.update((name, elements) for name, elements in pieces.items() if elements)
            continue
        for family, elements in groups.items():
            if not elements:
                continue
            if place_max is not None and len(elements) > place_max:
                out[GROUP_MAPS[family] + "*"] = tuple(elements)
            else:
                out.update((name, tuple(e)) for name, e in placed_groups(family, elements).items())
    return gone, new


def table_flags_text(flags: int) -> str:
    names = [TABLE_FLAG_NAMES.get(1 << bit, hex(1 << bit)) for bit in range(32) if flags >> bit & 1]
    return ", ".join(names) or "none"


def _elements_text(family: int, elements: Collection[Interval], limit: int = 4) -> str:
    """The first `limit` elements and how many more: only those are sorted out and formatted
    (formatting 50,000 intervals to show 4 cost ~100 ms)."""
    items = [interval_text(family, e) for e in heapq.nsmallest(limit, elements)]
    more = len(elements) - len(items)
    return ", ".join(items) + (f", ... ({more} more)" if more > 0 else "")


def _group_elements_text(family: int, elements: Collection[GroupInterval], limit: int = 4) -> str:
    items = [f"{interval_text(family, (low, high))} : goto {group_chain(i)}"
             for low, high, i in heapq.nsmallest(limit, elements)]
    more = len(elements) - len(items)
    return ", ".join(items) + (f", ... ({more} more)" if more > 0 else "")


def diff(desired: NftTable, current: NftTable | None) -> NftChange:
    """The change that makes `current` (None: no table) into `desired`: the table made anew
    when it is missing or lacks one of nra's sets; else a repair in place (chains written
    again, others' objects dropped) and element changes."""
    if current is None:
        return _rebuild(desired, "table missing")
    if current.unreadable:
        return _rebuild(desired, f"elements not as nra writes them in {', '.join(current.unreadable)}")
    if current.sets and not current.sets & PREFIX_SET_FAMILY.keys() - set(PREFIX_SETS.values()):
        # (written by an nra before the shards: its rules would meet the sets emptied by the
        # element batch before they are written again; a rebuild turns the table on once filled)
        return _rebuild(desired, "prefix sets not sharded")
    if current.sets and not current.sets & GROUP_MAP_FAMILY.keys() - set(GROUP_MAPS.values()):
        # (the same for the group maps: its rules would look up groups4/6 emptied of their
        # intervals of one block, and give those connections the external mark meanwhile)
        return _rebuild(desired, "group maps not sharded")
    if current.legacy_groups:
        # (an nra before the group chains: its group elements go to save_<i>, and its
        # prefix sets hold the groups' prefixes too, its blocks' chains looking in those
        # alone; made anew, the inert table filled and turned on by one batch, the groups'
        # numbers read back as they were)
        return _rebuild(desired, "group maps' elements go to save chains")
    remake = tuple(sorted(NRA_SETS - current.sets)) if current.sets else ()
    rewrite = tuple(name for name in desired.chains if current.chains.get(name) != desired.chains[name])
    drop = tuple([f"chain {name}" for name in current.chains if name not in desired.chains] + list(current.foreign))
    # others' rules in chains neither written again nor dropped (those go with their chain)
    drop_rules = tuple((chain, handle) for chain, handle in current.foreign_rules
                       if chain in desired.chains and chain not in rewrite)
    elements = _element_diff(desired, current)
    if not rewrite and not drop and not remake and not drop_rules:
        return elements
    what = (*remake, *rewrite, *drop, *(f"rule {c} handle {h}" for c, h in drop_rules))
    return dataclasses.replace(elements, reason=f"not as nra wrote it: {', '.join(what[:3])}",
                               rewrite=rewrite, drop=drop, remake_sets=remake, drop_rules=drop_rules)


def _element_diff(desired: NftTable, current: NftTable) -> NftChange:
    add: dict[int, tuple[Interval, ...]] = {}
    delete: dict[int, tuple[Interval, ...]] = {}
    add_pieces: dict[str, tuple[Interval, ...]] = {}
    delete_pieces: dict[str, tuple[Interval, ...]] = {}
    compared = False  # (a family's sets compared element by element: the change is in pieces)
    delta = current.notified[1] if current.notified is not None and current.notified[0] is desired else None
    for family in PREFIX_SETS:
        want = desired.prefixes.get(family, frozenset())
        if delta is not None:  # nra's own last write, and others' element changes since
            gone, added = delta.get(family, ((), ()))
            add[family], delete[family] = tuple(sorted(gone)), tuple(sorted(added))
            continue
        known = current.prefixes.get(family, frozenset())
        if not current.raw_prefixes:  # a table nra wrote itself: its elements are where placed() put them
            if known is want:  # nra's own last write, unchanged: nothing to compare
                add[family], delete[family] = (), ()
                continue
            moved = desired.prefixes_delta
            if (moved is not None and family in moved[2] and known is _strong(moved[0].get(family))
                    and want is moved[1].get(family)):  # nra's own last write, and the few moved since
                gone, added = moved[2][family]
                add[family], delete[family] = tuple(sorted(added)), tuple(sorted(gone))
                continue
            add[family], delete[family] = tuple(sorted(want - known)), tuple(known - want)
            continue
        # a listed table: each set's elements as listed against those placed() wants there
        # (set operations at C speed; a loop over 100,000 intervals in Python costs ~30 ms)
        compared = True
        add[family], delete[family] = tuple(sorted(want - known)), tuple(known - want)
        wanted = placed(family, want)
        for name in (PREFIX_SETS[family], *SHARD_SETS[family]):
            listed = current.raw_prefixes.get(name, ())
            listed_set = frozenset(listed)
            there = wanted.get(name, ())
            add_pieces[name] = tuple(sorted(frozenset(there).difference(listed_set)))
            if len(listed_set) == len(listed):
                delete_pieces[name] = tuple(listed_set.difference(there))  # not ours, or not there
            else:  # not ours, or a duplicate listing of one of ours
                seen: set[Interval] = set()
                keep = frozenset(there)
                delete_pieces[name] = tuple(e for e in listed if e not in keep or e in seen or seen.add(e))
    add_groups: dict[int, tuple[GroupInterval, ...]] = {}
    delete_groups: dict[int, tuple[GroupInterval, ...]] = {}
    # a listed table's group maps, map by map (its elements as listed, wherever they are)
    add_group_pieces: dict[str, tuple[GroupInterval, ...]] | None = {} if current.raw_groups else None
    delete_group_pieces: dict[str, tuple[GroupInterval, ...]] | None = {} if current.raw_groups else None
    group_delta = desired.groups_delta[1] if desired.groups_delta and desired.groups_delta[0] is current.groups else None
    for family in GROUP_MAPS:
        want_groups, listed_groups = desired.groups.get(family, frozenset()), current.groups.get(family, frozenset())
        if group_delta is not None:  # nra's own last write, and the few changes since
            gone, added = group_delta[family]
            add_groups[family], delete_groups[family] = tuple(sorted(added)), tuple(sorted(gone))
        elif want_groups is not listed_groups:  # (nra's own last write: the same object)
            # (as frozensets: set differences at C speed; nothing keeps them)
            want_set, listed_set = frozen_groups(want_groups), frozen_groups(listed_groups)
            add_groups[family] = tuple(sorted(want_set - listed_set))
            delete_groups[family] = tuple(sorted(listed_set - want_set))
        if add_group_pieces is not None and delete_group_pieces is not None:
            wanted = placed_groups(family, want_groups)
            for name in (GROUP_MAPS[family], *GROUP_SHARD_MAPS[family]):
                listed, there = frozenset(current.raw_groups.get(name, ())), frozenset(wanted.get(name, ()))
                add_group_pieces[name] = tuple(sorted(there - listed))
                delete_group_pieces[name] = tuple(sorted(listed - there))  # not ours, or not there
    routers_changed = {m: i for m, i in desired.routers.items() if current.routers.get(m) != i}
    return NftChange(
        reason="elements differ", add_prefixes=add, delete_prefixes=delete,
        add_pieces=add_pieces if compared else None, delete_pieces=delete_pieces if compared else None,
        add_links=tuple(sorted(desired.links - current.links)),
        delete_links=tuple(sorted(current.links - desired.links)),
        set_routers=routers_changed,
        # a changed router is deleted first: map elements are not replaced by an add
        delete_routers=tuple(sorted((set(current.routers) - set(desired.routers)) | set(
            m for m in routers_changed if m in current.routers))),
        table_flags=desired.flags if current.flags != desired.flags else None, current_flags=current.flags,
        add_groups=add_groups, delete_groups=delete_groups,
        add_group_pieces=add_group_pieces, delete_group_pieces=delete_group_pieces,
    )


def _rebuild(desired: NftTable, reason: str) -> NftChange:
    return NftChange(rebuild=True, reason=reason,
                     add_prefixes={f: tuple(sorted(p)) for f, p in desired.prefixes.items()},
                     add_links=tuple(sorted(desired.links)), set_routers=dict(desired.routers),
                     add_groups={f: sorted_groups(g) for f, g in desired.groups.items()})


def removal(current: NftTable | None) -> NftChange:
    """CLEANANDEXIT: the table goes, if there is one."""
    return NftChange(remove=True, reason="clean") if current is not None else NftChange()


# -- the transaction as JSON commands (one libnftables call, one netlink batch) ------------


def _interval_elem(family: int, interval: Interval):
    low, high = (str(ipaddress.ip_address(a) if family == 4 else ipaddress.IPv6Address(a)) for a in interval)
    return low if interval[0] == interval[1] else {"range": [low, high]}


def _object(kind: str, name: str, **extra) -> dict:
    return {kind: {"family": FAMILY, "table": TABLE, "name": name, **extra}}


def _elements(name: str, elems: list) -> dict:
    return {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}


def _chain_command(name: str, hook: tuple | None) -> dict:
    spec = {}
    if hook:
        kind, where, prio, policy = hook
        spec = {"type": kind, "hook": where, "prio": prio, "policy": policy}
    return {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, **spec}}}


def _rule_commands(name: str, rules: Iterable[Rule]) -> list[dict]:
    return [{"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": name, "expr": json.loads(rule.text),
                              "comment": rule.digest}}} for rule in rules]


def _set_command(name: str) -> dict:
    if name == ROUTERS_MAP:
        return {"add": _object("map", ROUTERS_MAP, type=["ifname", "ether_addr"], map="verdict")}
    if name in GROUP_MAP_FAMILY:
        return {"add": _object("map", name, type="ipv4_addr" if GROUP_MAP_FAMILY[name] == 4 else "ipv6_addr",
                               map="verdict", flags=["interval"])}
    if name == LINKS_SET:
        return {"add": _object("set", LINKS_SET, type="ifname")}
    return {"add": _object("set", name, type="ipv4_addr" if PREFIX_SET_FAMILY[name] == 4 else "ipv6_addr",
                           flags=["interval"])}


def hooked_jumps(desired: NftTable) -> list[tuple[str, str, str]]:
    """(hooked chain, the chain its last rule jumps to, the rule's comment): the rules that
    turn the table on (the rules before them, written with the skeleton, touch no packet)."""
    jumps = []
    for name, (hook, rules) in desired.chains.items():
        if hook:
            rule = rules[-1]
            jumps.append((name, json.loads(rule.text)[0]["jump"]["target"], rule.digest))
    return jumps


def skeleton_commands(desired: NftTable, table_exists: bool) -> list[dict]:
    """The first step of a rebuild, one transaction: the table made anew (the old one deleted
    first) with its sets empty and its hooked chains without their jumps: it sees packets
    but does nothing to them until the elements are in (one batch) and a last batch adds the
    hooked chains' jumps (nra.kernel.nft)."""
    cmds: list[dict] = [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}] if table_exists else []
    cmds.append({"add": {"table": {"family": FAMILY, "name": TABLE}}})
    cmds += [_set_command(name) for name in sorted(NRA_SETS)]
    # chains first (a rule or element may name any of them), then the rules
    cmds += [_chain_command(name, hook) for name, (hook, _) in desired.chains.items()]
    for name, (hook, rules) in desired.chains.items():
        cmds += _rule_commands(name, rules[:-1] if hook else rules)  # (not the jumps: hooked_jumps)
    return cmds


def remake_commands(change: NftChange, desired: NftTable, current: NftTable) -> list[dict]:
    """What a repair makes first, empty, in a transaction of its own: nra's missing sets and
    chains (which the elements' verdicts may name). Then the elements (nra's batch), then the
    rules (repair_commands), so no rule meets a set before its elements: in one transaction,
    the kernel would make those rules live before an interval set's new elements (see
    nra.kernel.nft). Empty chains touch no packet."""
    return ([_set_command(name) for name in change.remake_sets]
            + [_chain_command(name, desired.chains[name][0]) for name in change.rewrite if name not in current.chains])


def repair_commands(change: NftChange, desired: NftTable, current: NftTable) -> list[dict]:
    """A repair in place as one transaction, after the element changes (nra's batch) and the
    missing sets (remake_commands): others' rules deleted by handle, others' chains and nra's
    changed ones emptied, others' objects deleted, nra's chains made (again, when their hook
    changed) and their rules written; then the table's flags (the table turned on last). The
    sets hold their elements before, so no packet meets an empty set."""
    def chain(name: str) -> dict:
        return {"chain": {"family": FAMILY, "table": TABLE, "name": name}}

    dropped = [what.split(" ", 1) for what in change.drop]
    emptied = [name for kind, name in dropped if kind == "chain"] + [n for n in change.rewrite if n in current.chains]
    remade = [n for n in change.rewrite if n not in current.chains or current.chains[n][0] != desired.chains[n][0]]
    cmds: list[dict] = [{"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": name, "handle": handle}}}
                        for name, handle in change.drop_rules]
    cmds += [{"flush": chain(name)} for name in emptied]
    cmds += [{"delete": chain(name)} for name in remade if name in current.chains]
    cmds += [{"delete": _object(kind, name)} for kind, name in dropped]
    # (a missing chain is made before: remake_commands)
    cmds += [_chain_command(name, desired.chains[name][0]) for name in remade if name in current.chains]
    for name in change.rewrite:
        cmds += _rule_commands(name, desired.chains[name][1])
    if change.table_flags is not None:  # (libnftables sends an added table's flags: none)
        cmds.append({"add": {"table": {"family": FAMILY, "name": TABLE}}})
    return cmds


def element_commands(change: NftChange) -> list[dict]:
    """The element changes as JSON commands: deletes, then adds."""
    routers = [[{"concat": list(key)}, {"goto": {"target": save_chain(i)}}]
               for key, i in sorted(change.set_routers.items())]
    cmds: list[dict] = []
    gone, new = prefix_pieces(change)
    groups_gone, groups_new = group_pieces(change)
    for verb, prefixes, links, router_elements, groups in (
            ("delete", gone, change.delete_links,
             [{"concat": list(key)} for key in change.delete_routers], groups_gone),
            ("add", new, change.add_links, routers, groups_new)):
        for name, pieces in sorted(prefixes.items(), key=lambda item: _set_order(item[0])):
            cmds.append({verb: _elements(name, [_interval_elem(PREFIX_SET_FAMILY[name], i) for i in pieces])})
        if links:
            cmds.append({verb: _elements(LINKS_SET, list(links))})
        if router_elements:
            cmds.append({verb: _elements(ROUTERS_MAP, router_elements)})
        for name, elements in sorted(groups.items(), key=lambda item: _set_order(item[0])):
            family = GROUP_MAP_FAMILY[name]
            cmds.append({verb: _elements(name, [
                _interval_elem(family, (low, high)) if verb == "delete" else
                [_interval_elem(family, (low, high)), {"goto": {"target": group_chain(i)}}]
                for low, high, i in elements])})
    return cmds


def commands(change: NftChange, desired: NftTable | None, table_exists: bool) -> list[dict]:
    """The whole change as one JSON transaction (what `nft -j -f` would take): the table
    deleted, or made anew with everything in it. (nra itself splits a rebuild, see
    skeleton_commands; the benchmarks compare.)"""
    if change.remove:
        return [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}] if table_exists else []
    assert desired is not None and change.rebuild
    cmds = skeleton_commands(desired, table_exists)
    for name, (hook, rules) in desired.chains.items():
        if hook:
            cmds += _rule_commands(name, rules[-1:])
    return cmds + element_commands(change)
