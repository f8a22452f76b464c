"""Hostile and careless configurations (issue 11, items 1-3): refused with one line naming
where (size, depth, alias expansion, type), in bounded time, never crashing the process
and never read as an empty configuration that would wipe the table."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import pytest

from nra.config.metallb import (
    ConfigError,
    parse_legacy_config,
    parse_objects,
    parse_static_document,
)
from nra.config.yaml_loader import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_PROBLEMS, shown

W = 100
GOOD = """\
peers:
- peer-address: 10.0.0.1
address-pools:
- name: a
  protocol: bgp
  addresses: [192.0.2.0/24]
"""


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The 433-byte document of the issue: each level an alias list of the previous one,
    and a pool's addresses the last level (9**9 = 387 million addresses once expanded)."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
    for previous, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * width)}]")
    lines.append(f"address-pools: [{{name: p, protocol: bgp, addresses: *{names[-1]}}}]")
    return "\n".join(lines) + "\n"


def refused(text: str, trace_memory: bool = False) -> tuple[str, float, int]:
    """(message, seconds, peak bytes allocated or 0) of a refused document.

    The time and memory checks below are loose guards against the old behaviour (68 s and
    4 GB for the alias bomb), not speed targets: benchmarks/bad_input_bench.py measures."""
    if trace_memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            parse_static_document(text, "node-a", W)
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
    finally:
        if trace_memory:
            tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    return message, took, peak


def test_alias_bomb_is_refused_fast_naming_alias_expansion():
    text = alias_bomb()
    assert len(text) < 500
    message, took, peak = refused(text, trace_memory=True)
    assert "alias expansion" in message
    assert took < 2 and peak < 20_000_000, (took, peak)


def test_alias_bomb_in_a_configmap_text_is_refused_too():
    with pytest.raises(ConfigError, match="alias expansion"):
        parse_legacy_config(alias_bomb(), {}, W)


def test_modest_aliases_are_still_allowed():
    text = "peers: &p [{peer-address: 10.0.0.1}]\naddress-pools:\n- &pool {name: a, protocol: bgp, addresses: [192.0.2.0/24]}\n"
    assert {str(p.address) for p in parse_static_document(text, None, W).intent.peers} == {"10.0.0.1"}


@pytest.mark.parametrize("text", [
    "peers: " + "[" * 5_000 + "]" * 5_000,  # 100,000 levels: see the subprocess test below
    "".join("  " * i + "- \n" for i in range(MAX_DEPTH + 1)),  # block style
    "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n",  # deep through an alias
])
def test_deep_nesting_is_refused_naming_depth(text):
    message, took, _ = refused(text)
    assert "depth" in message or "nests deeper" in message
    assert took < 5


def test_deep_nesting_does_not_crash_the_process():
    # On the old code libyaml's C composer overflowed its stack: exit 139, in a subprocess
    # so that the test run itself survives the old behaviour.
    code = ("from nra.config.metallb import ConfigError, parse_static_document\n"
            "try:\n    parse_static_document('peers: ' + '[' * 100000 + ']' * 100000, None, 1)\n"
            "except ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert "depth" in done.stdout


def test_oversized_text_is_refused_unread():
    text = GOOD + "# " + "x" * MAX_CONFIG_BYTES + "\n"
    message, took, _ = refused(text)
    assert message.startswith("refused, size:") and took < 5


def test_many_nodes_without_aliases_are_refused():
    text = "address-pools: [{name: a, protocol: bgp, addresses: [" + ",".join(["1"] * 600_000) + "]}]\n"
    message, took, _ = refused(text)
    assert "nodes: more than" in message and took < 20


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("peers:\n- peer-address: 10.0.0.1", "peers: 10.0.0.1"), "type: peers must be a list, not a str"),
    (GOOD.replace("address-pools:\n", "address-pools:\n  a:\n").replace("- name: a", "    name: a")
     .replace("  protocol", "    protocol").replace("  addresses", "    addresses"),
     "type: address-pools must be a list, not a mapping"),
    ("peers: {peer-address: 10.0.0.1}\n", "type: peers must be a list, not a mapping"),
    ("address-pools: 42\n", "type: address-pools must be a list, not a int"),
])
def test_wrong_top_level_type_refuses_instead_of_emptying(text, needle):
    message, _, _ = refused(text)
    assert needle in message


@pytest.mark.parametrize("field,value", [("spec", ["peerAddress", "10.0.0.1"]), ("spec", "10.0.0.1"),
                                         ("metadata", "peer-a"), ("metadata", [1, 2])])
def test_metallb_object_with_spec_or_metadata_of_the_wrong_type_refuses(field, value):
    peer = {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "p"},
            "spec": {"peerAddress": "10.0.0.1"}}
    peer[field] = value
    with pytest.raises(ConfigError, match=f"type: .*BGPPeer.* has a {field} that is a (list|str)"):
        parse_objects([peer], {}, W)


def test_empty_sections_still_clean_up():
    # A document that exists and genuinely names nothing is not refused.
    for text in ("peers: []\naddress-pools: []\n", "{}\n", "peers:\naddress-pools:\n"):
        result = parse_static_document(text, None, W)
        assert not result.intent.peers and not result.intent.prefixes


@pytest.mark.parametrize("entry", ["x" * 2_000_000, ["10.0.0.1"] * 100_000, {"deep": [[[["x" * 10_000]]]]}])
def test_problem_messages_never_format_a_whole_value(entry):
    doc = {"peers": [{"peer-address": entry}],
           "address-pools": [{"name": "a", "protocol": "bgp", "addresses": [entry]}]}
    result = parse_legacy_config(doc, {}, W)
    assert len(result.problems) == 2
    assert all(len(str(p)) < 300 for p in result.problems), [len(str(p)) for p in result.problems]


def test_crd_values_are_shown_short_too():
    big = "y" * 1_000_000
    objects = [
        {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": big, "labels": {
            "metallb-nra/weight": big}}, "spec": {"peerAddress": "10.0.0.1", "vrf": big}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "adv"},
         "spec": {"ipAddressPools": [big, ["unhashable"]], "ipAddressPoolSelectors": [
             {"matchExpressions": [{"key": big, "operator": big}]}]}},
    ]
    result = parse_objects(objects, {}, W)
    assert result.problems and all(len(str(p)) < 400 for p in result.problems)


def test_a_flood_of_bad_entries_is_summarised():
    doc = {"address-pools": [{"name": "a", "protocol": "bgp", "addresses": ["bad"] * 10_000 + ["192.0.2.0/24"]}]}
    result = parse_legacy_config(doc, {}, W)
    assert len(result.problems) == MAX_PROBLEMS + 1
    assert "9950 more problem(s) not shown" in str(result.problems[-1])
    assert len(result.intent.prefixes) == 1


def test_pool_entry_that_is_not_a_mapping_is_named():
    result = parse_legacy_config({"address-pools": ["192.0.2.0/24", {"name": "b", "protocol": "bgp",
                                                                      "addresses": ["198.51.100.0/24"]}]}, {}, W)
    assert [p.where for p in result.problems] == ["address-pools[0]"]
    assert len(result.intent.prefixes) == 1


def test_unhashable_kind_is_not_a_crash():
    result = parse_objects([{"apiVersion": "metallb.io/v1beta1", "kind": ["BGPPeer"]}], {}, W)
    assert not result.intent.peers


def test_shown_is_bounded():
    assert len(shown("x" * 10**7)) < 80 and len(shown(list(range(10**6)))) < 80
