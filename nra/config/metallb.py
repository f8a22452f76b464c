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
    Problem,
)
from nra.config.prefixes import AddressEntryError, parse_address_entry
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
    peer: Peer
    where: str


class _Builder:
    """Collects peers, prefixes and problems; resolves duplicate peers at the end."""

    def __init__(self) -> None:
        self.candidates: list[_Candidate] = []
        self.prefixes: set[IPNetwork] = set()
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(clip(where), message))

    def add_addresses(self, where: str, addresses: Any) -> None:
        if not isinstance(addresses, list) or not addresses:
            self.problem(where, "has no addresses (expected a list of CIDRs or ranges)")
            return
        for entry in addresses:
            try:
                self.prefixes.update(parse_address_entry(entry))
            except AddressEntryError as exc:
                self.problem(where, f"address {exc}; entry skipped")

    def result(self) -> ParseResult:
        chosen: dict[IPAddress, _Candidate] = {}
        for candidate in self.candidates:
            kept = chosen.get(candidate.peer.address)
            if kept is None:
                chosen[candidate.peer.address] = candidate
                continue
            winner, loser = (candidate, kept) if candidate.peer.weight > kept.peer.weight else (kept, candidate)
            chosen[candidate.peer.address] = winner
            self.problem(
                loser.where,
                f"duplicate peer address {loser.peer.address} (also {winner.where}); "
                f"keeping one with weight {winner.peer.weight}",
            )
        intent = Intent(
            peers=frozenset(c.peer for c in chosen.values()),
            prefixes=frozenset(self.prefixes),
        )
        problems = self.problems
        if len(problems) > MAX_PROBLEMS:  # one line each would flood the log
            hidden = len(problems) - MAX_PROBLEMS
            problems = problems[:MAX_PROBLEMS] + [Problem("configuration", f"{hidden} more problem(s) not shown")]
        return ParseResult(intent=intent, problems=tuple(problems))


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
    load: YamlLoad = load_yaml_documents,
) -> ParseResult:
    """The `config` key of MetalLB's legacy ConfigMap (text or already-loaded YAML).

    None or an empty document is an empty configuration. Raises ConfigError when the text
    is not YAML or not a mapping: the caller must then keep its last good intent. `load`:
    how text becomes documents (a source re-reading one text passes a YamlReloader's).
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
    builder = _Builder()
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
        if entry.get("vrf"):
            builder.problem(where, _vrf_message(entry.get("vrf")))
            continue
        builder.candidates.append(_Candidate(Peer(address, default_weight, str(address)), where))


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
        builder.add_addresses(where, pool.get("addresses"))


# -- metallb.io objects ---------------------------------------------------------------


@_without_gc
def parse_objects(objects: Iterable[dict], node_labels: Mapping[str, str], default_weight: int) -> ParseResult:
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
    builder = _Builder()
    for index, peer in enumerate(by_kind["BGPPeer"]):
        _crd_peer(builder, peer, index, node_labels, default_weight)
    pools = _crd_pools(builder, by_kind["IPAddressPool"])
    announced: set[str] = set()
    for index, advertisement in enumerate(by_kind["BGPAdvertisement"]):
        announced |= _advertised_pools(builder, advertisement, index, pools)
    # Pools in object order, so problems come out in a stable order.
    for name, pool in pools.items():
        if name in announced:
            builder.add_addresses(f"pool {name}", _mapping(pool.get("spec")).get("addresses"))
    return builder.result()


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
    address = _crd_peer_address(builder, where, labels, spec)
    if address is None:
        return
    if spec.get("vrf"):
        builder.problem(where, _vrf_message(spec.get("vrf")))
        return
    weight = _crd_peer_weight(builder, where, labels, default_weight)
    builder.candidates.append(_Candidate(Peer(address, weight, name), where))


def _crd_peer_address(
    builder: _Builder, where: str, labels: Mapping[str, Any], spec: Mapping[str, Any]
) -> IPAddress | None:
    if LABEL_ADDRESS in labels:
        override = labels[LABEL_ADDRESS]
        address = _peer_address(override)
        if address is None:
            builder.problem(where, f"label {LABEL_ADDRESS}={shown(override)} is not an IP address; peer skipped")
        return address
    raw = spec.get("peerAddress")
    if not raw and spec.get("interface"):
        builder.problem(
            where,
            f"peers over interface {shown(spec.get('interface'))} (unnumbered BGP) with no usable address; "
            f"set the {LABEL_ADDRESS} label to the router's address; peer skipped",
        )
        return None
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
    builder: _Builder, obj: Mapping[str, Any], index: int, pools: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """The pool names an advertisement announces. Its nodeSelectors are ignored on purpose:
    replies must leave through the routers even on nodes that do not announce (DSR-like
    setups), as the original agent did."""
    where = f"BGPAdvertisement {_name(obj, 'BGPAdvertisement', index)}"
    spec = _mapping(obj.get("spec"))
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
    return f"vrf {shown(vrf)} is not supported (the managed table is in the default VRF); peer skipped"


# -- static file ----------------------------------------------------------------------


@_without_gc
def parse_static_document(text: str, node_name: str | None, default_weight: int,
                          load: YamlLoad = load_yaml_documents) -> ParseResult:
    """A static file in any of the forms a user would write:

    1. a legacy `config` document (top-level `peers` / `address-pools`; `{}` is empty),
    2. a whole ConfigMap object (`kind: ConfigMap`, `data.config`),
    3. metallb.io objects, one per YAML document or in a `kind: List`, optionally with a
       `v1` Node whose labels are this node's.

    Without a Node the node's labels are `kubernetes.io/hostname: <node_name>` (or none).
    Raises ConfigError for empty text (a truncated file), invalid YAML, or anything else.
    `load`: as for parse_legacy_config.
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
        return parse_legacy_config(dict(legacy), _default_labels(node_name), default_weight)
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
    return parse_objects(metallb_objects, labels, default_weight)


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
