"""nra's one-pass YAML loader (nra.config.yaml_loader.load_yaml_documents) against PyYAML's own: the same
values, or both refusing, for whatever text; and the bounds still hold on both paths.

A longer campaign: NRA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_yaml_loader.py
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nra.config.yaml_loader import MAX_DEPTH, InputTooLarge, _scan, load_yaml_documents
from tests.unit.yaml_values import canonical

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
EXAMPLES = int(os.environ.get("NRA_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)


def pyyaml(text: str):
    try:
        return canonical([d for d in yaml.load_all(text, Loader=_LOADER) if d is not None])
    except yaml.YAMLError:
        return "refused"  # which error comes first may differ: both walk all events first


def ours(text: str):
    try:
        return canonical(load_yaml_documents(text))
    except yaml.YAMLError:
        return "refused"  # which error comes first may differ: both walk all events first


def assert_same(text: str) -> None:
    assert ours(text) == pyyaml(text), text


@pytest.mark.parametrize("text", [
    "a: 1\nb: [1, 2.5, yes, no, On, off, ~, null, '1', \"x\", 0x1f, 0o17, 1:20, .inf, -.inf, .nan, 1_000]\n",
    "---\n---\na\n---\n- 1\n...\n",
    "",
    "# only a comment\n",
    "a: |\n  hi\n  there\nb: >-\n  x\n  y\n",
    "a: 1\na: 2\n",  # the last duplicate wins, as in PyYAML
    "1.0: a\n1: b\ntrue: c\n",  # equal keys of other types: the first key, the last value
    "- - - []\n",
    "{a: {b: {c: [x, {d: e}]}}}\n",
    "! x\n",
    "- !!str 1\n",
    "a: &x [1]\nb: *x\n",
    "<<: {a: 1}\nb: 2\n",
    "= : 1\n",
    "a: 2001-01-01\n",
    "? [a]\n: b\n",
    "? {a: 1}\n: 2\n",
    "!foo x\n",
    "a: [\n",
    "- 2001:db8::/64\n- 10.0.0.1-10.0.0.5\n- fe80::1%eth0\n- 190:20:30\n",
    "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64500\naddress-pools:\n- name: p\n  protocol: bgp\n  addresses: [10.1.0.0/24]\n",
])
def test_the_same_values_as_pyyaml(text):
    assert_same(text)


def test_the_common_text_is_built_in_one_pass_and_the_rest_handed_to_pyyaml():
    assert _scan("a: [1, x, '2']\n") == ([{"a": [1, "x", "2"]}], 6)
    for text in ("a: &x 1\nb: *x\n", "a: !!str 1\n", "<<: {a: 1}\n", "a: 2001-01-01\n", "? [a]\n: b\n"):
        assert _scan(text)[0] is None, text


def test_bounds_hold_on_both_paths():
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    for text in (deep, "a: &x 1\nb: " + deep):
        with pytest.raises(InputTooLarge, match="depth"):
            load_yaml_documents(text)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    with pytest.raises(InputTooLarge, match="alias expansion"):
        load_yaml_documents(laughs)


def test_long_plain_scalars_are_not_remembered():
    from nra.config.yaml_loader import _plain_memo

    _plain_memo.clear()
    load_yaml_documents(f"- {'x' * 10_000}\n- short\n")
    assert list(_plain_memo) == ["short"]


plain = st.sampled_from(["1", "-2", "0x1f", "1.5", ".inf", ".NaN", "yes", "No", "on", "~", "null", "", "1:20",
                         "2001-01-01", "10.0.0.1/24", "fe80::1", "a b", "<<", "=", "'q'", '"d"', "x: y"])
text_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), plain),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), plain), inner, max_size=4)),
    max_leaves=15)


@FUZZ
@given(text_values, st.sampled_from([None, True, False]), st.booleans())
def test_dumped_documents_load_the_same(value, flow, explicit_start):
    text = yaml.safe_dump(value, default_flow_style=flow, explicit_start=explicit_start, allow_unicode=True)
    assert_same(text)


yaml_alphabet = st.sampled_from(list("ab01:-[]{},&*!|>'\"#?.~ \n<=%@") + ["\n- ", ": ", "\n  ", "---\n", "!!str "])


@FUZZ
@given(st.lists(yaml_alphabet, max_size=40).map("".join))
def test_arbitrary_text_loads_or_fails_the_same(text):
    assert_same(text)


def test_no_implicit_yaml_type_has_a_slash():
    """bounds._plain_scalar takes a plain scalar with a "/" (a CIDR) for a string without
    the resolver: true while no implicit resolver's expression can match a "/"."""
    resolver = yaml.resolver.Resolver()
    patterns = {regexp.pattern for resolvers in resolver.yaml_implicit_resolvers.values()
                for _, regexp in resolvers}
    assert patterns and not any("/" in pattern for pattern in patterns)
    for value in ("1/2", "10.0.0.0/24", "2001:db8::/64", "yes/no", "~/", "0x1f/8", "1:20/3", "2001-01-01/1"):
        assert resolver.resolve(yaml.ScalarNode, value, (True, False)) == "tag:yaml.org,2002:str"
