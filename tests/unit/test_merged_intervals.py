"""nft.MergedIntervals, updated prefix by prefix between reconciles, always equals merging
the whole set again (nft.prefix_intervals): random sequences of sets of overlapping,
nested and adjacent prefixes, both families, nra's networks and plain ipaddress ones."""

from __future__ import annotations

import ipaddress
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from nra.config.prefixes import parse_address_entry
from nra.kernel import nft_table as nft

# a small space, so prefixes overlap, nest and adjoin often
v4 = st.tuples(st.integers(0, 63), st.integers(26, 32)).map(
    lambda t: ipaddress.ip_network(f"10.0.0.{t[0] * 4 % 256}/{t[1]}", strict=False))
v6 = st.tuples(st.integers(0, 63), st.integers(122, 128)).map(
    lambda t: ipaddress.ip_network(f"fd00::{t[0] * 4:x}/{t[1]}", strict=False))
ours = v4.map(lambda n: parse_address_entry(str(n))[0])  # nra's Prefix4, which carries its interval
prefix_sets = st.frozensets(st.one_of(v4, v6, ours, st.just(ipaddress.ip_network("10.0.0.0/24"))), max_size=40)


@settings(max_examples=int(os.environ.get("NRA_FUZZ_EXAMPLES", "300")), deadline=None, database=None, derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"))
@given(st.lists(prefix_sets, min_size=1, max_size=12))
def test_updates_equal_a_whole_merge(sets):
    merged = nft.MergedIntervals()
    for prefixes in sets:
        before = merged.result
        assert merged.update(prefixes) == nft.prefix_intervals(prefixes)
        check_delta(merged, before)


def check_delta(merged: nft.MergedIntervals, before: dict) -> None:
    """An update's delta, when it has one, is what moved from the last result to this one."""
    if merged.delta is None:
        return
    after = merged.result
    for family in (4, 6):
        if family in merged.delta:
            assert merged.delta[family] == (before[family] - after[family], after[family] - before[family])
        else:
            assert after[family] is before[family]


@settings(max_examples=int(os.environ.get("NRA_FUZZ_EXAMPLES", "100")), deadline=None, database=None, derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"))
@given(prefix_sets, st.lists(st.tuples(st.booleans(), st.one_of(v4, v6)), min_size=1, max_size=30))
def test_one_prefix_at_a_time_equals_a_whole_merge(start, steps):
    """The path a file edit takes: a few prefixes in or out, under the whole-merge threshold."""
    merged = nft.MergedIntervals()
    prefixes = frozenset(start)
    merged.update(prefixes)
    for add, prefix in steps:
        prefixes = prefixes | {prefix} if add else prefixes - {prefix}
        before = merged.result
        assert merged.update(prefixes) == nft.prefix_intervals(prefixes)
        assert merged.delta is not None  # (a few moved: never a whole merge)
        check_delta(merged, before)


def test_the_same_set_is_not_merged_again():
    merged = nft.MergedIntervals()
    prefixes = frozenset(parse_address_entry(f"10.{i}.0.0/16")[0] for i in range(100))
    first = merged.update(prefixes)
    assert merged.update(prefixes) is first


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=60))
def test_merge_sorted_is_the_interval_union_and_reuses_lone_intervals(raw):
    from nra.kernel.nft_table import merge_sorted

    ordered = sorted((low, low + length) for low, length in raw)
    got = merge_sorted(ordered)
    covered = {a for low, high in ordered for a in range(low, high + 1)}
    assert {a for low, high in got for a in range(low, high + 1)} == covered
    assert all(got[i][1] + 1 < got[i + 1][0] for i in range(len(got) - 1))  # disjoint, not adjacent
    # an interval no other touches comes back as the same tuple
    for i, item in enumerate(ordered):
        others = ordered[:i] + ordered[i + 1:]
        if all(o[1] + 1 < item[0] or item[1] + 1 < o[0] for o in others):
            assert any(g is item for g in got)
