"""Property-based fuzzing of the configuration path (issue 11, "what must be true").

Arbitrary YAML-shaped documents, legacy and metallb.io objects, with wrong types at every
level and huge or deep values, go through the parser as Python values and as YAML text.
Whatever the input:
- nothing but ConfigError comes out of the parser, and never a message of many lines or
  thousands of characters;
- each example stays within a deadline (the parse is bounded);
- valid peers and prefixes that sit among the garbage are all in the intent, or the whole
  configuration is refused (ConfigError): garbage never silently drops a valid entry.

CI runs a small campaign (a few seconds). A longer one:
    NRA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_fuzz_config.py
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nra.config.metallb import (
    ConfigError,
    parse_legacy_config,
    parse_objects,
    parse_static_document,
)

W = 100
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
EXAMPLES = int(os.environ.get("NRA_FUZZ_EXAMPLES", "15"))
# Per example, wall clock: generous, as the test machine's 2 cores are shared.
DEADLINE_S = float(os.environ.get("NRA_FUZZ_DEADLINE_S", "5"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=DEADLINE_S), derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)

# Field names that change what a valid entry means: garbage keys must not use them.
MEANINGFUL = {"peer-address", "peerAddress", "node-selectors", "nodeSelectors", "vrf", "interface", "protocol",
              "addresses", "name", "labels", "metadata", "spec", "kind", "apiVersion", "ipAddressPools",
              "ipAddressPoolSelectors", "items", "data"}

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
keys = text.filter(lambda k: k not in MEANINGFUL)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text,
                    st.sampled_from(["10.0.0.1", "10.0.0.0/33", "fe80::1%eth0", "1.2.3.4-1.2.3.1", "bgp", "BGP", "::/0"]))
huge = st.one_of(
    st.integers(1, 50).map(lambda n: "x" * (n * 1000)),  # up to 50 kB of text
    st.integers(1, 100).map(lambda depth: _nest(depth)),  # deep lists (beyond the 64-level bound)
    st.integers(1, 10).map(lambda n: ["10.0.0.1"] * (n * 500)),  # long lists
)
values = st.recursive(st.one_of(scalars, huge), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
garbage_mappings = st.dictionaries(keys, values, max_size=3)


def _nest(depth: int) -> list:
    value: list = ["x"]
    for _ in range(depth):
        value = [value]
    return value


def _v4(i: int) -> str:
    return str(ipaddress.IPv4Address("10.1.0.0") + i)


valid_peers = st.lists(st.integers(0, 200), min_size=1, max_size=4, unique=True).map(lambda ns: [_v4(n) for n in ns])
valid_prefixes = st.lists(st.integers(0, 255), min_size=1, max_size=4, unique=True).map(
    lambda ns: [f"192.0.{n}.0/24" for n in ns])


def _interleave(data, valid: list, garbage_strategy) -> list:
    """Valid entries in order with garbage entries drawn and inserted between them."""
    out: list = []
    for entry in valid:
        out += data.draw(st.lists(garbage_strategy, max_size=2))
        out.append(entry)
    return out + data.draw(st.lists(garbage_strategy, max_size=2))


def _check(parse, expected_peers: list[str], expected_prefixes: list[str]) -> None:
    try:
        result = parse()
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 400, message[:500]
        return
    peers = {str(p.address) for p in result.intent.peers}
    prefixes = {str(p) for p in result.intent.prefixes}
    assert set(expected_peers) <= peers, (expected_peers, peers)
    assert set(expected_prefixes) <= prefixes, (expected_prefixes, prefixes)
    longest = max((str(p) for p in result.problems), key=len, default="")
    assert len(longest) < 400, longest[:1000]


def _through_yaml(docs: list) -> str | None:
    try:
        return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None  # not representable as YAML (e.g. too deep for the dumper): skip the text path


@FUZZ
@given(st.data())
def test_legacy_documents_never_raise_or_drop_valid_entries(data):
    peers, prefixes = data.draw(valid_peers), data.draw(valid_prefixes)
    peer_garbage = st.one_of(values, garbage_mappings, garbage_mappings.map(lambda g: {**g, "peer-address": "junk"}))
    pool_garbage = st.one_of(values, garbage_mappings.map(lambda g: {**g, "protocol": "bgp"}),
                             st.builds(lambda a, g: {**g, "name": "g", "protocol": "bgp", "addresses": a}, values, garbage_mappings))
    doc = {
        "peers": _interleave(data, [{"peer-address": p, **data.draw(garbage_mappings)} for p in peers], peer_garbage),
        "address-pools": _interleave(data, [{"name": "valid", "protocol": "bgp",
                                             "addresses": _interleave(data, prefixes, values)}], pool_garbage),
        **data.draw(garbage_mappings),
    }
    # Sometimes a section or the whole document gets a wrong type: then refusal is allowed.
    broken = data.draw(st.sampled_from([None, "peers", "address-pools", "document"]))
    if broken == "document":
        doc = data.draw(values)
    elif broken:
        doc[broken] = data.draw(values.filter(lambda v: not isinstance(v, list)))
    expected = ([], []) if broken else (peers, prefixes)
    _check(lambda: parse_legacy_config(doc, {}, W), *expected)
    dumped = _through_yaml([doc])
    if dumped is not None:
        _check(lambda: parse_static_document(dumped, None, W), *expected)


def _peer(name: str, address: str, extra: dict) -> dict:
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name, "namespace": "m"},
            "spec": {"peerAddress": address, "myASN": 1, "peerASN": 2, **extra}}


@FUZZ
@given(st.data())
def test_metallb_objects_never_raise_or_drop_valid_entries(data):
    peers, prefixes = data.draw(valid_peers), data.draw(valid_prefixes)
    valid = [_peer(f"peer-{i}", p, data.draw(garbage_mappings)) for i, p in enumerate(peers)]
    valid.append({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "valid"},
                  "spec": {"addresses": _interleave(data, prefixes, values), **data.draw(garbage_mappings)}})
    valid.append({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "adv"},
                  "spec": {"ipAddressPools": _interleave(data, ["valid"], values)}})
    kinds = st.sampled_from(["BGPPeer", "IPAddressPool", "BGPAdvertisement", "Node", "ConfigMap"])
    garbage_object = st.one_of(
        values,
        st.builds(lambda kind, name, spec, meta: {"apiVersion": "metallb.io/v1beta1", "kind": kind,
                                                  "metadata": {"name": name, **meta}, "spec": spec},
                  kinds, text.filter(lambda n: n != "valid" and n != "adv" and not n.startswith("peer-")),
                  st.one_of(values, garbage_mappings), garbage_mappings),
    )
    objects = _interleave(data, valid, garbage_object)
    _check(lambda: parse_objects(objects, {}, W), peers, prefixes)
    dumped = _through_yaml(objects)
    if dumped is not None:
        # As a static file: garbage documents that are not objects refuse the file (allowed).
        _check(lambda: parse_static_document(dumped, "node-a", W), peers, prefixes)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.lists(st.sampled_from(["[", "]", "{", "}", "- ", ": ", "&a ", "*a ", "\n", "  ", "x", ",",
                                           "peers", "address-pools", "!!binary ", "? ", "|\n", "'", '"']),
                          max_size=400).map("".join)))
def test_arbitrary_text_never_raises_anything_but_config_error(text_input):
    _check(lambda: parse_static_document(text_input, "node-a", W), [], [])
    _check(lambda: parse_legacy_config(text_input, {}, W), [], [])
