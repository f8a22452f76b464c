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

from nra.config.yaml_loader import (
    FAST_RUN_MIN,
    MAX_DEPTH,
    InputTooLarge,
    _fast_runs,
    _scan,
    load_yaml_documents,
    scan_yaml,
)
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


# The fast path for long runs of item lines (yaml_loader._fast_runs): whatever the text, the
# documents, the node count, the recorded lists and any refusal's message are the full
# scan's. `fast_run_min` 1-3 puts short runs on the fast path so that random texts reach it.

def scanned(text: str, fast_run_min: int):
    lines = text.split("\n")
    try:
        result = scan_yaml(text, lines, fast_run_min)
    except (yaml.YAMLError, InputTooLarge) as exc:
        return "refused", type(exc).__name__, str(exc)
    return (canonical(result.docs), result.nodes,
            [(s.path, s.indent, s.first_line, s.count, canonical(s.items)) for s in result.sequences])


def assert_fast_is_full(text: str, fast_run_min: int) -> None:
    full = scanned(text, 0)  # 0: no fast path
    assert scanned(text, fast_run_min) == full, text
    if full[0] != "refused":  # and the full scan is PyYAML's
        assert canonical([d for d in scan_yaml(text, None, fast_run_min).docs if d is not None]) == pyyaml(text)


RUN = "".join(f"  - 10.{i // 256}.{i % 256}.0/24\n" for i in range(300))


def test_a_long_run_takes_the_fast_path_and_loads_as_the_full_scan():
    text = f"a: 1\naddresses:\n{RUN}b: [x]\nc:\n- 1\n"
    short, runs = _fast_runs(text, FAST_RUN_MIN)
    assert len(runs) == 1 and len(short) < len(text) / 5 and short.count("\n") == text.count("\n")
    assert scanned(text, None) == scanned(text, 0)
    assert load_yaml_documents(text)[0]["addresses"] == [f"10.{i // 256}.{i % 256}.0/24" for i in range(300)]
    assert _fast_runs(RUN[: RUN.index("- 10.0.255")], FAST_RUN_MIN) is None  # 255 lines: too few


@pytest.mark.parametrize("text", [
    f"addresses:\n{RUN}",
    f"addresses:\n{RUN}  - 10.9.9.0/24 # the last one\n  - '10.9.9.1'\n",  # the list goes on after the run
    f"addresses:\n  - &a 1\n{RUN}b: *a\n",  # an anchor: PyYAML's constructor, on the original text
    f"a: |\n{RUN}",  # a block scalar, not a list
    f"a: >\n{RUN}b: 1\n",
    f"a: 'x\n{RUN}'\n",  # a quoted scalar over many lines
    f"a: x\n{RUN}",  # the run continues the plain scalar `x`? (an error)
    f"- x\n{RUN}",  # another indentation: an error
    f"addresses:\n{RUN}    more\n",  # the last item continued on the next line
    f"addresses:\n{RUN}  : x\n",
    f"a: [\n{RUN}]\n",  # a flow sequence
    f"addresses:\n{RUN.replace('10.1.43.0/24', '2001-01-01')}",  # a timestamp: PyYAML's constructor
    f"addresses:\n{RUN.replace('10.1.43.0/24', 'yes').replace('10.1.44.0/24', '1:20')}",  # True, 80
    f"addresses:\n{RUN.replace('10.1.43.0/24', '10/1/43')}",  # two "/"
    f"addresses:\n{RUN.replace('10.1.43.0/24', '10.1.43.0')}",  # no "/"
    f"nrarun0: 1\naddresses:\n{RUN}",  # the token's text is in the text: another token
    f"addresses:\n{RUN}- nrarun0\n",
    f"addresses:\n{RUN}".replace("\n", "\r\n"),
    f"addresses:\n{RUN}b: [\n",  # an error after the run: its line as the full scan says it
    f"addresses:\n{RUN}{RUN}",
    f"a:\n{RUN}b:\n{RUN.replace('  -', '-')}c:\n  x:\n{RUN.replace('  -', '    -')}",
    f"---\n{RUN.replace('  -', '-')}---\n{RUN.replace('  -', '-')}",
    f"- - 1\n{RUN}",  # the inner list of a list
])
def test_the_fast_path_gives_what_the_full_scan_gives(text):
    for fast_run_min in (1, 2, FAST_RUN_MIN):
        assert_fast_is_full(text, fast_run_min)


def test_the_node_bound_is_named_as_the_full_scan_names_it(monkeypatch):
    import nra.config.yaml_loader as loader

    monkeypatch.setattr(loader, "MAX_NODES", 250)
    text = f"addresses:\n{RUN}"
    assert scanned(text, None) == scanned(text, 0) == ("refused", "InputTooLarge", str(_full_error(text)))
    assert "line 249" in scanned(text, None)[2]  # its 251st node: the item of line 249


def _full_error(text: str) -> Exception:
    with pytest.raises(InputTooLarge) as info:
        scan_yaml(text, None, 0)
    return info.value


run_items = st.sampled_from(["10.0.0.0/24", "2001:db8::/64", "10.0.0.1-10.0.0.9", "10.0.0.1", "yes", "1", "1:20",
                             "0x1f", "null", "x", "a:b", "2001-01-01", "1.5", "a/b/c", "nrarun0", "nrarun1x"])
run_lines = st.one_of(
    st.tuples(st.integers(0, 4), st.lists(run_items, min_size=1, max_size=5)).map(
        lambda t: "\n".join(" " * t[0] + "- " + item for item in t[1])),
    st.tuples(st.integers(0, 4), st.sampled_from(["addresses:", "name: p", "- name: q", "a: [1, 2]", "# comment", "",
                                                  "---", "- - 1", "-", "more", "- 'q'", "- &x 1", "- *x", "key: |",
                                                  "key: >-", "k: 'x", "y'", "[", "]", ": x", "- 10.0.0.0/24 # c",
                                                  "\t- 1", "- 1\r"])).map(lambda t: " " * t[0] + t[1]),
)


@FUZZ
@given(st.lists(run_lines, max_size=20), st.booleans(), st.integers(1, 3))
def test_random_texts_load_the_same_on_the_fast_path(lines, trailing_newline, fast_run_min):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    assert_fast_is_full(text, fast_run_min)


# config-like texts (lists under keys, one level down or not), now and then another line
keyed_runs = st.tuples(st.sampled_from(["addresses", "a", "b"]), st.sampled_from([0, 2]),
                       st.lists(run_items, min_size=1, max_size=5)).map(
    lambda t: t[0] + ":\n" + "\n".join(" " * t[1] + "- " + item for item in t[2]))
config_lines = st.one_of(*[keyed_runs] * 30, run_lines)


@FUZZ
@given(st.lists(config_lines, max_size=8), st.booleans(), st.integers(1, 3))
def test_random_config_texts_load_the_same_on_the_fast_path(lines, trailing_newline, fast_run_min):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    assert_fast_is_full(text, fast_run_min)
