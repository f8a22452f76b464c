"""MetalLB's configuration turned into an Intent: which peers, which announced prefixes.

Three inputs, one model:
- the legacy ConfigMap `config` document (`peers`, `address-pools`),
- metallb.io objects (BGPPeer v1beta1/v1beta2, IPAddressPool, BGPAdvertisement),
- a static file holding either of them (see parse_static_document).

Pure code: no I/O, no logging. Two kinds of bad input:
- a bad entry (one peer, one pool, one address, one advertisement) becomes a Problem and is
  left out; everything else still applies;
- input that cannot be used as a whole raises ConfigError, so that the caller publishes
  nothing and keeps the last good intent: not YAML, over a bound (size, depth, alias
  expansion: see nra.config.yaml_loader), or a wrong type where the structure itself is expected (the
  document, `peers`, `address-pools`, an object's `metadata` or `spec`). An empty intent
  from such input would wipe the table; a document that genuinely names no peers does not.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Iterable, Mapping

import yaml

from nra.config.intent import (
    MAX_WEIGHT,
    MIN_WEIGHT,
    Intent,
    IPAddress,
    IPNetwork,
    ParseResult,
    Peer,
    PeerSpec,
    PoolBinding,
    Problem,
)
from nra.config import prefix_delta
from nra.config.prefixes import _memo as _entry_memo
from nra.config.prefixes import parse_address_entry, parse_address_entries
from nra.config.selectors import SelectorError, any_selector_matches, selector_matches
from nra.config.yaml_loader import (
    MAX_PROBLEMS,
    InputTooLarge,
    clip,
    load_yaml_documents,
    shown,
)

LABEL_ENABLED = "metallb-nra/enabled"
LABEL_ADDRESS = "metallb-nra/address"
LABEL_WEIGHT = "metallb-nra/weight"
_DISABLED_VALUES = {"false", "0", "no"}

# Top-level keys of the legacy `config` document; one of them (or `{}`) identifies the form.
_LEGACY_KEYS = {"peers", "address-pools", "bgp-communities", "bfd-profiles"}
_METALLB_GROUP = "metallb.io/"

#: text -> its non-empty YAML documents, within nra.config.yaml_loader' bounds
YamlLoad = Callable[[str], list[Any]]


def _without_gc(parse: Callable[..., ParseResult]) -> Callable[..., ParseResult]:
    """Parse with the cyclic garbage collector paused: a first read of 100,000 prefixes
    allocates a million objects, none in a cycle that matters, and the collector's passes
    over them cost ~20% of the parse. Whatever cycle a document holds (a YAML alias may
    make one) is collected when the collector runs again."""

    @functools.wraps(parse)
    def paused(*args: Any, **kwargs: Any) -> ParseResult:
        if not gc.isenabled():
            return parse(*args, **kwargs)
        gc.disable()
        try:
            return parse(*args, **kwargs)
        finally:
            gc.enable()

    return paused


class ConfigError(Exception):
    """The configuration cannot be used at all (empty, not YAML, not MetalLB); one line."""


# -- shared building blocks ---------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    spec: PeerSpec
    where: str
    #: the multipath table's peer, if this one is one (addressed, default VRF)
    peer: Peer | None = None


class PoolEntries:
    """Each pool's address list and prefixes from the last parse of one source's successive
    texts, so that the next parse re-parses only the pools that changed: a pool whose list is
    the very object of the last documents (a YamlReloader shares what an edit left alone)
    keeps its prefixes, and a pool whose list the reloader patched (a few item lines added
    or removed) gets its prefixes by that patch alone, when its entries are one prefix each
    and all different (checked, see _Builder._pool_prefixes). Anything else is parsed whole.
    At 100,000 entries a full pass costs ~30 ms, a patch well under 1 ms."""

    def __init__(self, reloader: Any = None) -> None:
        #: the YamlReloader whose `patch` says which list the last load patched, and how
        self.reloader = reloader
        #: pool name -> (its address list, its prefixes, whether its entries map one to one
        #: to its prefixes); only pools without a bad entry are kept
        self.last: dict[str, tuple[list, frozenset[IPNetwork], bool]] = {}
        #: how the pools of the last parse were had: kept, patched, parsed (for tests, figures)
        self.steps = {"kept": 0, "patched": 0, "parsed": 0}
        #: the last intent's prefixes when the union of several pools' sets, and those sets
        #: ((name, set), ...): the next union follows the pools' recorded patches (_pools_union)
        self.union: tuple[tuple[tuple[str, frozenset[IPNetwork]], ...], frozenset[IPNetwork]] | None = None

    def consumed(self) -> None:
        """The parse is over: the reloader's patch is let go (it holds the list before the
        edit and the region's items: at 100,000 a list of 0.8 MB and up to two more, kept
        until the next edit otherwise)."""
        if self.reloader is not None:
            self.reloader.patch = None


class _Builder:
    """Collects peers, pools and problems; resolves duplicate peers at the end. `entries`:
    the pools of the source's last parse (PoolEntries), updated by result()."""

    def __init__(self, entries: PoolEntries | None = None) -> None:
        self.candidates: list[_Candidate] = []
        self.prefixes: set[IPNetwork] = set()
        self._pool_sets: list[tuple[str, frozenset[IPNetwork]]] = []  # (the pools' prefixes, unioned in result())
        self.entries = entries
        self._next: dict[str, tuple[list, frozenset[IPNetwork], bool]] = {}
        self._steps = {"kept": 0, "patched": 0, "parsed": 0}
        #: pool name -> (its prefixes, the names of the peers announcing it; None: every peer)
        self.pools: dict[str, tuple[set[IPNetwork], set[str] | None]] = {}
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(clip(where), message))

    def add_addresses(self, where: str, addresses: Any) -> set[IPNetwork]:
        """The pool's prefixes, added to the intent's; a bad entry is a problem."""
        parsed: set[IPNetwork] = set()
        if not isinstance(addresses, list) or not addresses:
            self.problem(where, "has no addresses (expected a list of CIDRs or ranges)")
            return parsed
        parsed, errors = parse_address_entries(addresses)
        for exc in errors:
            self.problem(where, f"address {exc}; entry skipped")
        self.prefixes |= parsed
        return parsed

    def add_pool(self, name: str, where: str, addresses: Any, peers: set[str] | None) -> None:
        if self.entries is None or not isinstance(addresses, list) or not addresses:
            self.pools[name] = (self.add_addresses(where, addresses), peers)
            return
        prefixes = self._pool_prefixes(name, where, addresses)
        self._pool_sets.append((name, prefixes))
        self.pools[name] = (prefixes, peers)

    def _pool_prefixes(self, name: str, where: str, addresses: list) -> frozenset[IPNetwork]:
        """A pool's prefixes from the last parse's when its list is the same object or a patch
        of it; else parsed (and remembered when no entry is bad)."""
        assert self.entries is not None
        known = self.entries.last.get(name)
        if known is not None and known[0] is addresses:
            self._steps["kept"] += 1
            self._next[name] = known
            return known[1]
        patch = getattr(self.entries.reloader, "patch", None)
        if known is not None and known[2] and patch is not None and patch[0] is known[0] and patch[1] is addresses:
            prefixes = _patched_prefixes(known[1], patch[2], patch[3], len(addresses))
            if prefixes is not None:
                self._steps["patched"] += 1
                self._next[name] = (addresses, prefixes, True)
                return prefixes
        self._steps["parsed"] += 1
        parsed, errors = parse_address_entries(addresses)
        for exc in errors:
            self.problem(where, f"address {exc}; entry skipped")
        prefixes = frozenset(parsed)
        if not errors:
            # one to one: as many prefixes as entries, each entry one prefix (the memo holds
            # only entries of one prefix)
            single = len(prefixes) == len(addresses) and all(map(_entry_memo.__contains__, addresses))
            self._next[name] = (addresses, prefixes, single)
        return prefixes

    def _unique_candidates(self) -> list[_Candidate]:
        """One candidate per name and per address (or unnumbered link) in a VRF; of two
        with one address the higher weight wins (each loser is a problem)."""
        chosen: dict[str, _Candidate] = {}
        for candidate in self.candidates:
            key = candidate.spec.key
            kept = chosen.get(key)
            if kept is None:
                chosen[key] = candidate
                continue
            winner, loser = (candidate, kept) if candidate.spec.weight > kept.spec.weight else (kept, candidate)
            chosen[key] = winner
            what = f"address {loser.spec.address}" if loser.spec.address is not None else key
            self.problem(loser.where, f"duplicate peer {what} (also {winner.where}); "
                                      f"keeping one with weight {winner.spec.weight}")
        by_name: dict[str, _Candidate] = {}
        for candidate in chosen.values():
            if candidate.spec.name in by_name:  # a static file may repeat a name
                self.problem(candidate.where, "defined twice; the first one is used")
            else:
                by_name[candidate.spec.name] = candidate
        return list(by_name.values())

    def _pools_union(self) -> frozenset[IPNetwork]:
        """The union of several pools' sets: the last one patched by what the pools' patches
        say they changed (prefix_delta) when that is known for each, and recorded so in turn;
        else made whole. The last union is 100,000 prefixes at scale: a new one made whole
        has no recorded difference, so the intent's prefix count and merged intervals would
        pass over all of it again (two set differences, a count: ~10-20 ms in the daemon)."""
        sets = [s for _, s in self._pool_sets]
        last = self.entries.union if self.entries is not None else None
        if last is None or [n for n, _ in last[0]] != [n for n, _ in self._pool_sets]:
            return frozenset().union(*sets)
        added: set[IPNetwork] = set()
        removed: set[IPNetwork] = set()
        for (_, before), now in zip(last[0], sets):
            if now is before:
                continue
            known = prefix_delta.delta(now, before)
            if known is None or len(added) + len(removed) + len(known[0]) + len(known[1]) > PATCH_MAX * len(sets):
                return frozenset().union(*sets)
            added |= known[0]
            removed |= known[1]
        union = last[1]
        # (pools may overlap: a prefix leaves the union when no pool has it any more, and
        # comes in when it was in none)
        gone = {p for p in removed if not any(p in s for s in sets)}
        new = {p for p in added if p not in union}
        return _patched(union, new, gone)

    def result(self) -> ParseResult:
        kept = self._unique_candidates()
        key_of = {c.spec.name: c.spec.key for c in kept}
        every = frozenset(key_of.values())
        pools = frozenset(
            PoolBinding(name, frozenset(prefixes),
                        every if peers is None else frozenset(key_of[n] for n in peers if n in key_of))
            for name, (prefixes, peers) in self.pools.items() if prefixes
        )
        if self._pool_sets and not self.prefixes:  # (one pool's set is the intent's as it is, with no copy)
            every_prefix = (self._pool_sets[0][1] if len(self._pool_sets) == 1
                            else self._pools_union())
        elif self._pool_sets:
            every_prefix = frozenset(self.prefixes).union(*(s for _, s in self._pool_sets))
        else:
            every_prefix = frozenset(self.prefixes)
        if self.entries is not None:
            self.entries.last, self.entries.steps = self._next, self._steps
            self.entries.union = ((tuple(self._pool_sets), every_prefix)
                                  if len(self._pool_sets) > 1 and not self.prefixes else None)
            self.entries.consumed()
        intent = Intent(
            peers=frozenset(c.peer for c in kept if c.peer is not None),
            prefixes=every_prefix,
            specs=frozenset(c.spec for c in kept),
            pools=pools,
        )
        problems = self.problems
        if len(problems) > MAX_PROBLEMS:  # one line each would flood the log
            hidden = len(problems) - MAX_PROBLEMS
            problems = problems[:MAX_PROBLEMS] + [Problem("configuration", f"{hidden} more problem(s) not shown")]
        return ParseResult(intent=intent, problems=tuple(problems))


#: the most entries a patch of a pool's prefixes takes in or out (past this, and past an eighth
#: of the pool, the pool is parsed whole)
PATCH_MAX = 256


def _patched_prefixes(before: frozenset[IPNetwork], removed: list, added: list,
                      count: int) -> frozenset[IPNetwork] | None:
    """The prefixes of a pool whose entries mapped one to one to `before`, after the entries
    `removed` left and `added` came, the new list holding `count` entries; None when that is
    not one to one any more (an entry of several prefixes, a bad one, two of one prefix):
    the pool is then parsed whole, and its problems said. A large edit (half the lines
    removed, say) is parsed whole too: that runs at C speed, entry by entry does not."""
    if len(removed) + len(added) > max(PATCH_MAX, len(before) // 8):
        return None
    try:
        gone = [parse_address_entry(entry) for entry in removed]
        new = [parse_address_entry(entry) for entry in added]
    except (ValueError, TypeError):
        return None
    if any(len(networks) != 1 for networks in new):
        return None
    removed = set(map(itemgetter(0), gone))
    added = set(map(itemgetter(0), new))
    removed, added = removed - added, added - removed  # (an item moved, or replaced by itself)
    if len(before) - len(removed) + len(added) != count or not added.isdisjoint(before):
        return None  # (two entries of one prefix now)
    return _patched(before, added, removed)


def _patched(before: frozenset, added: set, removed: set) -> frozenset:
    """`before` without `removed` and with `added`, its difference recorded (prefix_delta);
    `before` itself when neither has anything."""
    after = before
    if removed:  # (each of these copies the set: ~3 ms at 100,000)
        after = after.difference(removed)
    if added:
        after = after.union(added)
    if after is not before:
        prefix_delta.remember(after, before, added, removed)
    return after


def _peer_address(value: Any) -> IPAddress | None:
    """An IP address, or None for anything else (an interface name, a CIDR...). An IPv6
    link-local address may name its link as a zone (`fe80::1%eth0`); no other address may."""
    if not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if "%" in value and not address.is_link_local:
        return None
    return address


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# -- legacy ConfigMap -------------------------------------------------------------------


@_without_gc
def parse_legacy_config(
    doc: str | dict | None, node_labels: Mapping[str, str], default_weight: int,
    load: YamlLoad = load_yaml_documents, entries: PoolEntries | None = None,
) -> ParseResult:
    """The `config` key of MetalLB's legacy ConfigMap (text or already-loaded YAML).

    None or an empty document is an empty configuration. Raises ConfigError when the text
    is not YAML or not a mapping: the caller must then keep its last good intent. `load`:
    how text becomes documents (a source re-reading one text passes a YamlReloader's);
    `entries`: that source's PoolEntries, so that only the pools that changed are parsed.
    """
    if isinstance(doc, str):
        doc = _load_single_yaml(doc, load)
    if doc is None:
        return ParseResult(Intent())
    if not isinstance(doc, Mapping):
        raise ConfigError(f"the MetalLB config must be a mapping (peers, address-pools), not {_yaml_kind(doc)}")
    for key in ("peers", "address-pools"):
        if doc.get(key) is not None and not isinstance(doc.get(key), list):
            raise ConfigError(f"type: {key} must be a list, not {_yaml_kind(doc.get(key))}")
    builder = _Builder(entries)
    _legacy_peers(builder, doc.get("peers"), node_labels, default_weight)
    _legacy_pools(builder, doc.get("address-pools"))
    return builder.result()


def _legacy_peers(builder: _Builder, peers: list | None, node_labels: Mapping[str, str], default_weight: int) -> None:
    for index, entry in enumerate(peers or ()):
        entry = entry if isinstance(entry, Mapping) else None
        raw = entry.get("peer-address") if entry is not None else None
        address = _peer_address(raw)
        where = f"peer {address}" if address is not None else f"peers[{index}]"
        if entry is None:
            builder.problem(where, "must be a mapping with a peer-address")
            continue
        if not _peer_selected(builder, where, entry.get("node-selectors"), "node-selectors", node_labels):
            continue
        if address is None:
            what = "missing" if raw is None else f"{shown(raw)} is not an IP address"
            builder.problem(where, f"peer-address {what}; peer skipped")
            continue
        name = str(address)
        vrf = entry.get("vrf")
        spec = PeerSpec(name, address, default_weight, vrf=vrf if isinstance(vrf, str) else "",
                        multihop=entry.get("ebgp-multihop") is True)
        if vrf:
            builder.problem(where, _vrf_message(vrf))
        builder.candidates.append(_Candidate(spec, where, None if vrf else Peer(address, default_weight, name)))


def _peer_selected(builder: _Builder, where: str, selectors: Any, field: str,
                   node_labels: Mapping[str, str]) -> bool:
    """Whether a peer's node selectors pick this node; a broken selector is a problem and
    the peer is skipped (never guessed into the route)."""
    try:
        return any_selector_matches(selectors, node_labels)
    except SelectorError as exc:
        builder.problem(where, f"{field}: {exc}; peer skipped")
        return False


def _legacy_pools(builder: _Builder, pools: list | None) -> None:
    for index, pool in enumerate(pools or ()):
        if not isinstance(pool, Mapping):
            builder.problem(f"address-pools[{index}]", f"must be a mapping, not {_yaml_kind(pool)}; pool skipped")
            continue
        name = pool.get("name")
        where = f"pool {name}" if isinstance(name, str) and name else f"address-pools[{index}]"
        # Every BGP pool counts, with or without `bgp-advertisements`: MetalLB's converter
        # gives a BGP pool that lists none a default advertisement (see the corpus).
        protocol = pool.get("protocol")
        if not isinstance(protocol, str) or protocol.strip().lower() != "bgp":
            continue
        builder.add_pool(name if isinstance(name, str) and name else where, where, pool.get("addresses"), None)


# -- metallb.io objects ---------------------------------------------------------------


@_without_gc
def parse_objects(objects: Iterable[dict], node_labels: Mapping[str, str], default_weight: int,
                  entries: PoolEntries | None = None) -> ParseResult:
    """metallb.io objects as the API returns them; kinds other than BGPPeer, IPAddressPool
    and BGPAdvertisement (BFDProfile, Community, L2Advertisement, Node...) are ignored."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {"BGPPeer": [], "IPAddressPool": [], "BGPAdvertisement": []}
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        api_version = obj.get("apiVersion")
        if isinstance(api_version, str) and not api_version.startswith(_METALLB_GROUP):
            continue
        kind = obj.get("kind")
        if isinstance(kind, str) and kind in by_kind:
            _check_object_shape(obj, kind)
            by_kind[kind].append(obj)
    builder = _Builder(entries)
    for index, peer in enumerate(by_kind["BGPPeer"]):
        _crd_peer(builder, peer, index, node_labels, default_weight)
    pools = _crd_pools(builder, by_kind["IPAddressPool"])
    peer_names = {_name(peer, "BGPPeer", index) for index, peer in enumerate(by_kind["BGPPeer"])}
    announced: dict[str, list[_Announcement]] = {}
    for index, advertisement in enumerate(by_kind["BGPAdvertisement"]):
        where = f"BGPAdvertisement {_name(advertisement, 'BGPAdvertisement', index)}"
        spec = _mapping(advertisement.get("spec"))
        found = _advertised_to(builder, where, spec, peer_names, node_labels)
        if found is None:
            continue
        for name in _advertised_pools(builder, where, spec, pools):
            announced.setdefault(name, []).append(found)
    # Pools in object order, so problems come out in a stable order.
    for name, pool in pools.items():
        if name in announced:
            builder.add_pool(name, f"pool {name}", _mapping(pool.get("spec")).get("addresses"),
                             _announcing_peers(announced[name]))
    return builder.result()


@dataclass(frozen=True)
class _Announcement:
    """To whom one advertisement announces its pools from this node."""
    here: bool  # its nodeSelectors pick this node (or it has none)
    peers: frozenset[str] | None  # its `peers`; None: every peer


def _advertised_to(builder: _Builder, where: str, spec: Mapping[str, Any], peer_names: set[str],
                   node_labels: Mapping[str, str]) -> _Announcement | None:
    """An advertisement's `peers` and `nodeSelectors`; None when either is malformed (the
    advertisement is skipped: a typo must not widen it to every peer or every node)."""
    peers = spec.get("peers") or []
    if not isinstance(peers, list) or not all(isinstance(p, str) and p for p in peers):
        builder.problem(where, f"peers must be a list of BGPPeer names, not {_yaml_kind(peers)}; "
                               "advertisement skipped")
        return None
    for name in peers:
        if name not in peer_names:
            builder.problem(where, f"names peer {shown(name)}, which does not exist")
    try:
        here = any_selector_matches(spec.get("nodeSelectors"), node_labels)
    except SelectorError as exc:
        builder.problem(where, f"nodeSelectors: {exc}; advertisement skipped")
        return None
    return _Announcement(here, frozenset(peers) if peers else None)


def _announcing_peers(announcements: list[_Announcement]) -> set[str] | None:
    """The peers a pool's replies may leave by on this node: those of the advertisements
    whose nodeSelectors pick it. When none does, those of all its advertisements: replies
    still leave through the routers on a node that does not announce (DSR-like set-ups, as
    the original agent did). None: every peer."""
    chosen = [a for a in announcements if a.here] or announcements
    if any(a.peers is None for a in chosen):
        return None
    return set().union(*(a.peers for a in chosen if a.peers is not None))


def _check_object_shape(obj: Mapping[str, Any], kind: str) -> None:
    """An object whose metadata or spec is not a mapping is not a MetalLB object at all:
    refuse the whole configuration rather than read it as "no peers, no pools"."""
    for field in ("metadata", "spec"):
        value = obj.get(field)
        if value is not None and not isinstance(value, Mapping):
            name = _mapping(obj.get("metadata")).get("name")
            which = f"{kind} {clip(name)}" if isinstance(name, str) and name else f"a {kind}"
            raise ConfigError(f"type: {which} has a {field} that is {_yaml_kind(value)}, not a mapping")


def _name(obj: Mapping[str, Any], kind: str, index: int) -> str:
    name = _mapping(obj.get("metadata")).get("name")
    return name if isinstance(name, str) and name else f"{kind}[{index}]"


def _crd_peer(
    builder: _Builder, obj: Mapping[str, Any], index: int, node_labels: Mapping[str, str], default_weight: int
) -> None:
    name = _name(obj, "BGPPeer", index)
    where = f"peer {name}"
    labels = _mapping(_mapping(obj.get("metadata")).get("labels"))
    spec = _mapping(obj.get("spec"))
    enabled = labels.get(LABEL_ENABLED)
    if isinstance(enabled, (str, bool, int)) and str(enabled).strip().lower() in _DISABLED_VALUES:
        return  # switched off for nra on purpose: not a problem
    if not _peer_selected(builder, where, spec.get("nodeSelectors"), "nodeSelectors", node_labels):
        return
    interface = _crd_peer_interface(builder, where, spec)
    if interface is None:
        return
    address = _crd_peer_address(builder, where, labels, spec, interface)
    if address is None and not interface:
        return
    vrf = spec.get("vrf") or ""
    if not isinstance(vrf, str):
        builder.problem(where, f"vrf {shown(vrf)} is not a VRF name; peer skipped")
        return
    weight = _crd_peer_weight(builder, where, labels, default_weight)
    peer_spec = PeerSpec(name, address, weight, interface=interface, vrf=vrf,
                         multihop=spec.get("ebgpMultiHop") is True,
                         graceful_restart=spec.get("enableGracefulRestart") is True,
                         dual_stack=spec.get("dualStackAddressFamily") is True)
    routed = address is not None and not vrf
    if vrf:
        builder.problem(where, _vrf_message(vrf))
    # (an unnumbered peer without the address label is no problem: the router's link-local
    # address is found on its interface, nra.config.uplinks.resolve_intent)
    builder.candidates.append(_Candidate(peer_spec, where, Peer(address, weight, name) if routed else None))


def _crd_peer_interface(builder: _Builder, where: str, spec: Mapping[str, Any]) -> str | None:
    """BGPPeer.spec.interface ("" when not unnumbered), None when the peer is refused:
    MetalLB makes the interface and peerAddress mutually exclusive."""
    interface = spec.get("interface")
    if not interface:
        return ""
    if not isinstance(interface, str) or not _is_link_name(interface):
        builder.problem(where, f"interface {shown(interface)} is not an interface name; peer skipped")
        return None
    if spec.get("peerAddress"):
        builder.problem(where, "peerAddress and interface are mutually exclusive (MetalLB); peer skipped")
        return None
    return interface


def _is_link_name(name: str) -> bool:
    """A Linux interface name: 1..15 bytes, no '/', whitespace or ':' (IFNAMSIZ, dev_valid_name)."""
    return 0 < len(name.encode()) < 16 and name not in (".", "..") and not any(
        c == "/" or c == ":" or c.isspace() for c in name)


def _crd_peer_address(
    builder: _Builder, where: str, labels: Mapping[str, Any], spec: Mapping[str, Any], interface: str
) -> IPAddress | None:
    """The peer's address: the label wins; an unnumbered peer has none (None, no problem)."""
    if LABEL_ADDRESS in labels:
        override = labels[LABEL_ADDRESS]
        address = _peer_address(override)
        if address is None:
            builder.problem(where, f"label {LABEL_ADDRESS}={shown(override)} is not an IP address; "
                                   + ("its address is discovered on the interface" if interface else "peer skipped"))
        return address
    if interface:
        return None
    raw = spec.get("peerAddress")
    address = _peer_address(raw)
    if address is None:
        what = "is missing" if raw is None else f"{shown(raw)} is not an IP address"
        builder.problem(where, f"peerAddress {what}; peer skipped")
    return address


def _crd_peer_weight(builder: _Builder, where: str, labels: Mapping[str, Any], default_weight: int) -> int:
    if LABEL_WEIGHT not in labels:
        return default_weight
    raw = labels[LABEL_WEIGHT]
    text = str(raw).strip() if isinstance(raw, (str, int)) else ""
    if text.isascii() and text.isdigit() and MIN_WEIGHT <= int(text) <= MAX_WEIGHT:
        return int(text)
    builder.problem(
        where,
        f"label {LABEL_WEIGHT}={shown(raw)} is not an integer {MIN_WEIGHT}..{MAX_WEIGHT}; "
        f"using the default weight {default_weight}",
    )
    return default_weight


def _crd_pools(builder: _Builder, objects: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    pools: dict[str, Mapping[str, Any]] = {}
    for index, obj in enumerate(objects):
        name = _name(obj, "IPAddressPool", index)
        if name in pools:
            builder.problem(f"pool {name}", "defined twice; the first one is used")
            continue
        pools[name] = obj
    return pools


def _advertised_pools(
    builder: _Builder, where: str, spec: Mapping[str, Any], pools: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """The pool names an advertisement announces."""
    # absent or null is none given; "", {}, false, 0 are malformed, not "every pool"
    names = _none_is_empty(spec.get("ipAddressPools"))
    selectors = _none_is_empty(spec.get("ipAddressPoolSelectors"))
    malformed = False
    if not isinstance(names, list):
        builder.problem(where, f"ipAddressPools must be a list, not {_yaml_kind(names)}")
        names, malformed = [], True
    if not isinstance(selectors, list):
        builder.problem(where, f"ipAddressPoolSelectors must be a list, not {_yaml_kind(selectors)}")
        selectors, malformed = [], True
    if not names and not selectors:
        # Neither given means every pool (MetalLB); a malformed field must not widen that.
        return set() if malformed else set(pools)
    chosen: set[str] = set()
    for name in names:
        if isinstance(name, str) and name in pools:
            chosen.add(name)
        else:
            builder.problem(where, f"names pool {shown(name)}, which does not exist")
    for i, selector in enumerate(selectors):
        try:
            chosen |= {
                pool_name
                for pool_name, pool in pools.items()
                if selector_matches(selector, _label_map(_mapping(pool.get("metadata")).get("labels")))
            }
        except SelectorError as exc:
            builder.problem(where, f"ipAddressPoolSelectors[{i}]: {exc}; selector skipped")
    return chosen


def _none_is_empty(value: Any) -> Any:
    return [] if value is None else value


def _label_map(labels: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(labels).items()}


def _vrf_message(vrf: Any) -> str:
    return (f"vrf {shown(vrf)}: its uplink is modelled but not routed yet (the managed table is in the "
            "default VRF); peer left out of the return path")


# -- static file ----------------------------------------------------------------------


@_without_gc
def parse_static_document(text: str, node_name: str | None, default_weight: int,
                          load: YamlLoad = load_yaml_documents, entries: PoolEntries | None = None) -> ParseResult:
    """A static file in any of the forms a user would write:

    1. a legacy `config` document (top-level `peers` / `address-pools`; `{}` is empty),
    2. a whole ConfigMap object (`kind: ConfigMap`, `data.config`),
    3. metallb.io objects, one per YAML document or in a `kind: List`, optionally with a
       `v1` Node whose labels are this node's.

    Without a Node the node's labels are `kubernetes.io/hostname: <node_name>` (or none).
    Raises ConfigError for empty text (a truncated file), invalid YAML, or anything else.
    `load`, `entries`: as for parse_legacy_config.
    """
    docs = _load_all_yaml(text, load)
    if not docs:
        raise ConfigError("the file is empty (no YAML document); a truncated write?")
    if len(docs) == 1 and isinstance(docs[0], Mapping) and "kind" not in docs[0]:
        legacy = docs[0]
        if legacy and not (_LEGACY_KEYS & set(legacy)):
            raise ConfigError(
                "neither a MetalLB config (peers, address-pools), a ConfigMap nor metallb.io objects: "
                f"unexpected keys {clip(', '.join(sorted(map(str, legacy))))}"
            )
        return parse_legacy_config(dict(legacy), _default_labels(node_name), default_weight, entries=entries)
    objects = _flatten_objects(docs)
    labels = _node_labels(objects, node_name)
    configmaps = [o for o in objects if o.get("kind") == "ConfigMap"]
    metallb_objects = [o for o in objects if str(o.get("apiVersion", "")).startswith(_METALLB_GROUP)]
    if configmaps:
        if len(configmaps) > 1 or metallb_objects:
            raise ConfigError("expected one MetalLB ConfigMap or metallb.io objects, not both or several")
        config = _mapping(configmaps[0].get("data")).get("config")
        if not isinstance(config, str):
            raise ConfigError("the ConfigMap has no data.config text")
        return parse_legacy_config(config, labels, default_weight)
    is_list = any(isinstance(d, Mapping) and d.get("kind") == "List" for d in docs)
    if not metallb_objects and not (is_list and not objects):
        kinds = clip(", ".join(sorted({clip(str(o.get("kind")), 40) for o in objects}))) or "nothing"
        raise ConfigError(f"no metallb.io objects found (found {kinds})")
    return parse_objects(metallb_objects, labels, default_weight, entries)


def _flatten_objects(docs: list[Any]) -> list[Mapping[str, Any]]:
    objects: list[Mapping[str, Any]] = []
    pending = list(docs)
    position = 0
    while pending:
        doc = pending.pop(0)
        position += 1
        if isinstance(doc, list):
            pending[:0] = doc
            continue
        if not isinstance(doc, Mapping) or "kind" not in doc:
            raise ConfigError(
                f"item {position} is {_yaml_kind(doc)}, not a Kubernetes object; "
                "a legacy MetalLB config must be the only document in the file"
            )
        if doc.get("kind") == "List":
            # a List of nothing is `items: []` (or null); {}, "", 0, false are malformed, not empty
            items = _none_is_empty(doc.get("items"))
            if not isinstance(items, list):
                raise ConfigError(f"a List's items must be a list, not {_yaml_kind(items)}")
            pending[:0] = items
            continue
        objects.append(doc)
    return objects


def _node_labels(objects: list[Mapping[str, Any]], node_name: str | None) -> dict[str, str]:
    nodes = [o for o in objects if o.get("kind") == "Node" and o.get("apiVersion") == "v1"]
    if not nodes:
        return _default_labels(node_name)
    if len(nodes) > 1:
        named = [n for n in nodes if _mapping(n.get("metadata")).get("name") == node_name]
        if len(named) != 1:
            raise ConfigError(f"{len(nodes)} Nodes in the file and none is uniquely this node ({node_name or 'NODE_NAME unset'})")
        nodes = named
    return _label_map(_mapping(nodes[0].get("metadata")).get("labels"))


def _default_labels(node_name: str | None) -> dict[str, str]:
    return {"kubernetes.io/hostname": node_name} if node_name else {}


def _load_single_yaml(text: str, load: YamlLoad = load_yaml_documents) -> Any:
    docs = _load_all_yaml(text, load)
    if len(docs) > 1:
        raise ConfigError(f"the MetalLB config holds {len(docs)} YAML documents, expected one")
    return docs[0] if docs else None


def _load_all_yaml(text: str, load: YamlLoad = load_yaml_documents) -> list[Any]:
    try:
        return load(text)
    except InputTooLarge as exc:
        raise ConfigError(f"refused, {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(exc)) from None


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{context}, {problem}" if context else problem
    return " ".join(f"invalid YAML{where}: {detail}".split())


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({shown(value)})"
