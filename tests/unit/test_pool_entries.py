"""Pools parsed again only where they changed (nra.config.metallb.PoolEntries): over any
sequence of edits, a source's parse with its PoolEntries gives what a parse from scratch
gives, intent and problems, and a one-line edit of one pool patches that pool alone."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nra.config import prefix_delta
from nra.config.metallb import ConfigError, PoolEntries, parse_static_document
from nra.config.yaml_reload import YamlReloader

EXAMPLES = int(os.environ.get("NRA_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)


def config(one: list[str], two: list[str]) -> str:
    lines = ["peers:", "- peer-address: 10.0.0.1", "address-pools:", "- name: one", "  protocol: bgp", "  addresses:"]
    lines += [f"  - {e}" for e in one]
    lines += ["- name: two", "  protocol: bgp", "  addresses:"] + [f"  - {e}" for e in two]
    return "\n".join(lines) + "\n"


class Source:
    """A source's parse: one reloader and its PoolEntries over successive texts."""

    def __init__(self) -> None:
        self.reloader = YamlReloader()
        self.entries = PoolEntries(self.reloader)

    def parse(self, text: str):
        return parse_static_document(text, None, 100, self.reloader.load, self.entries)


def fresh(text: str):
    return parse_static_document(text, None, 100)


def outcome(parse, text):
    try:
        result = parse(text)
    except ConfigError as exc:
        return str(exc)
    return result.intent, result.problems


def test_a_one_line_edit_patches_its_pool_and_keeps_the_other():
    one = [f"10.1.{i}.0/24" for i in range(50)]
    two = [f"10.2.{i}.0/24" for i in range(50)]
    source = Source()
    for text in (config(one, two), config(one, two)):  # (the reloader records lists from its second read)
        assert outcome(source.parse, text) == outcome(fresh, text)
    assert source.entries.steps == {"kept": 0, "patched": 0, "parsed": 2}
    text = config(one + ["198.18.0.0/30"], two)
    result = source.parse(text)
    assert source.entries.steps == {"kept": 1, "patched": 1, "parsed": 0}
    assert (result.intent, result.problems) == outcome(fresh, text)
    text = config(one[::2], two)  # half the pool removed: a patch of 75 lines, under PATCH_MAX
    assert outcome(source.parse, text) == outcome(fresh, text)
    assert source.entries.steps == {"kept": 1, "patched": 1, "parsed": 0}


def test_a_one_line_edit_of_one_of_two_pools_records_what_the_union_differs_by():
    """The intent's prefixes (the two pools' union) are the last ones patched, and say so:
    the count and the merged intervals then follow the change, where a union made whole had
    no record (at 100,000 prefixes, passes of ~10-20 ms over it in the daemon)."""
    one = [f"10.1.{i}.0/24" for i in range(50)]
    two = [f"10.2.{i}.0/24" for i in range(50)]
    source = Source()
    for text in (config(one, two), config(one, two)):
        last = source.parse(text).intent
    last.prefix_counts  # (counted: the next set's are derived)
    # (a line added, taken out, another pool's line removed, a line of the other pool's added)
    for edited in (config(one + ["198.18.0.0/30"], two), config(one, two), config(one, two[1:]),
                   config(one, two[1:] + ["10.1.3.0/24"]), config(one[1:], two[1:] + ["10.1.3.0/24"])):
        intent = source.parse(edited).intent
        assert intent == fresh(edited).intent
        assert prefix_delta.delta(intent.prefixes, last.prefixes) == (intent.prefixes - last.prefixes,
                                                                        last.prefixes - intent.prefixes)
        assert prefix_delta.family_counts(intent.prefixes) == {4: len(intent.prefixes), 6: 0}
        prefix_delta.settled(intent.prefixes)
        last = intent


def test_the_list_before_an_edit_is_let_go_once_parsed():
    """The reloader's patch (the list before the edit, the region's items) is dropped once
    the parse has used it: at 100,000 entries it held a list of 0.8 MB until the next edit."""
    one = [f"10.1.{i}.0/24" for i in range(200)]
    source = Source()
    for text in (config(one, ["10.2.0.0/24"]),) * 2:
        source.parse(text)
    before = source.entries.last["one"][0]
    source.parse(config(one + ["198.18.0.0/30"], ["10.2.0.0/24"]))
    assert source.entries.steps["patched"] == 1
    assert source.reloader.patch is None
    assert sys.getrefcount(before) == 2  # (this name and getrefcount's argument: nothing else)

def test_a_large_edit_of_a_pool_is_parsed_whole():
    one = [f"10.{i // 256}.{i % 256}.0/24" for i in range(1200)]
    source = Source()
    for text in (config(one, ["10.200.0.0/24"]),) * 2:
        source.parse(text)
    text = config(one[::2], ["10.200.0.0/24"])  # 1,800 item lines in and out: past PATCH_MAX
    assert outcome(source.parse, text) == outcome(fresh, text)
    assert source.entries.steps == {"kept": 1, "patched": 0, "parsed": 1}
    text = config(one, ["10.200.0.0/24"])
    assert outcome(source.parse, text) == outcome(fresh, text)
    assert source.entries.steps == {"kept": 1, "patched": 0, "parsed": 1}


def test_a_pool_whose_entries_share_a_prefix_is_parsed_whole():
    one = ["10.1.0.0/24", "10.1.0.1/24", "10.1.1.0/24"]  # two entries, one prefix
    source = Source()
    for text in (config(one, ["10.2.0.0/24"]),) * 2:
        source.parse(text)
    text = config(one[1:], ["10.2.0.0/24"])  # one of the two removed: the prefix stays
    assert outcome(source.parse, text) == outcome(fresh, text)
    assert source.entries.steps == {"kept": 1, "patched": 0, "parsed": 1}


entry_values = st.sampled_from([
    "10.0.0.0/24", "10.0.0.1/24", "10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "10.0.0.5", "10.0.0.5/32",
    "10.0.0.4-10.0.0.7", "10.0.0.4-10.0.0.4", "2001:db8::/64", "2001:db8::1/64", "10.0.0.300/24", "x",
    "10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24", "yes", "1",
])
pool_lists = st.lists(entry_values, min_size=1, max_size=8)
# an edit: which pool, where, how many lines removed, which lines inserted
edits = st.lists(st.tuples(st.booleans(), st.integers(0, 8), st.integers(0, 2), st.lists(entry_values, max_size=3)),
                 min_size=1, max_size=10)


@FUZZ
@given(pool_lists, pool_lists, edits)
def test_random_pool_edits_parse_as_from_scratch(one, two, changes):
    source = Source()
    pools = [list(one), list(two)]
    text = config(*pools)
    for _ in range(2):
        assert outcome(source.parse, text) == outcome(fresh, text)
    last = None
    for first, at, remove, insert in changes:
        pool = pools[0 if first else 1]
        pool[at:at + remove] = insert
        text = config(*pools)
        now = outcome(source.parse, text)
        assert now == outcome(fresh, text), text
        # what the intent's prefixes are recorded to differ by from the last (the pools'
        # union patched, pools overlapping or not) is the true difference
        if last is not None and not isinstance(now, str) and not isinstance(last, str):
            found = prefix_delta.delta(now[0].prefixes, last[0].prefixes)
            assert found is None or found == (now[0].prefixes - last[0].prefixes, last[0].prefixes - now[0].prefixes)
        last = now
