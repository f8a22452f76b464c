"""The YAML reloader (nra.config.yaml_reload): whatever the edits between two texts, it gives what
a full parse of the new text gives (or refuses it, as a full parse does), and it patches
instead of parsing when only item lines of one list changed."""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nra.config import yaml_loader
from nra.config.yaml_loader import MAX_NODES, InputTooLarge, load_yaml_documents, scan_yaml
from nra.config.yaml_reload import YamlReloader
from tests.unit.yaml_values import canonical

EXAMPLES = int(os.environ.get("NRA_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=not os.environ.get("NRA_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)


def outcome(load, text):
    try:
        return canonical(load(text))
    except (yaml.YAMLError, InputTooLarge):
        return "refused"


BASE = """\
peers:
- peer-address: 10.0.0.1
address-pools:
- name: one
  protocol: bgp
  addresses:
  - 10.1.0.0/24
  - 10.1.1.0/24
  - 10.1.2.0/24
- name: two
  protocol: bgp
  addresses:
    - 2001:db8::/64
    - 10.2.0.1-10.2.0.9
"""


def primed(text: str) -> YamlReloader:
    """A reloader that has read `text` twice: lists are recorded from the second read on."""
    reloader = YamlReloader()
    reloader.load(text)
    reloader.load(text)
    return reloader


def test_a_text_read_once_records_nothing():
    reloader = YamlReloader()
    reloader.load(BASE)
    reloader.load(edit(BASE, 9, 0, ["  - 10.1.3.0/24"]))
    assert reloader.patched == 0  # (the second read records)
    reloader.load(edit(BASE, 9, 0, ["  - 10.1.4.0/24"]))
    assert reloader.patched == 1


def test_a_daemons_reloader_records_the_first_text_and_patches_its_first_edit():
    reloader = YamlReloader()
    reloader.record_first = True  # (what a daemon's source sets: expect_edits)
    reloader.load(BASE)
    text = edit(BASE, 9, 0, ["  - 10.1.3.0/24"])
    assert outcome(reloader.load, text) == outcome(full_scan, text)
    assert reloader.patched == 1


def edit(text: str, at: int, remove: int, insert: list[str]) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:at] + insert + lines[at + remove:])


@pytest.mark.parametrize("at,remove,insert", [
    (9, 0, ["  - 10.1.3.0/24"]),  # after the last item of pool one
    (6, 0, ["  - 10.1.9.0/24"]),  # before its first item
    (7, 1, []),  # one item removed
    (6, 2, ["  - 10.9.0.0/16", "  - 10.8.0.0/16", "  - 10.7.0.0/16"]),  # two replaced by three
    (14, 0, ["    - 2001:db8:1::/64"]),  # pool two, at the end of the text
    (7, 1, ["  - yes"]),  # a scalar that is not a string: True, as PyYAML reads it
])
def test_item_line_edits_are_patched_and_equal_a_full_parse(at, remove, insert):
    reloader = primed(BASE)
    new = edit(BASE, at, remove, insert)
    assert outcome(reloader.load, new) == outcome(load_yaml_documents, new)
    assert reloader.patched == 1


@pytest.mark.parametrize("at,remove,insert", [
    (6, 3, []),  # every item removed: `addresses:` becomes null
    (7, 0, ["  - 10.1.3.0/24 # a comment"]),
    (7, 0, ["  - '10.1.3.0/24'"]),
    (7, 0, ["    - 10.1.3.0/24"]),  # another indentation: a new structure
    (7, 0, ["  - 10.1.3.0:"]),  # a mapping
    (7, 0, ["  - 2001-01-01"]),  # a timestamp
    (7, 0, ["  - &a 10.1.3.0/24"]),
    (4, 1, ["  protocol: layer2"]),  # not an item line
    (5, 0, ["  - 10.1.3.0/24"]),  # before the list: under `protocol: bgp`, an error
])
def test_other_edits_are_parsed_whole(at, remove, insert):
    reloader = primed(BASE)
    new = edit(BASE, at, remove, insert)
    assert outcome(reloader.load, new) == outcome(load_yaml_documents, new)
    assert reloader.patched == 0


def test_patches_follow_each_other_and_shift_the_lists_below():
    reloader = primed(BASE)
    text = BASE
    for step in range(20):
        text = edit(text, 9, 0, [f"  - 10.3.{step}.0/24"])
        assert outcome(reloader.load, text) == outcome(load_yaml_documents, text)
    text = edit(text, 12 + 20, 0, ["    - 10.4.0.0/24"])  # pool two's list, below: moved down 20 lines
    assert outcome(reloader.load, text) == outcome(load_yaml_documents, text)
    assert reloader.patched == 21


def test_a_duplicate_key_is_never_patched_into_the_list_it_lost_to():
    text = "addresses:\n- 10.0.0.0/24\naddresses:\n- 10.1.0.0/24\n"
    reloader = primed(text)
    new = edit(text, 2, 0, ["- 10.9.0.0/24"])
    assert outcome(reloader.load, new) == outcome(load_yaml_documents, new) == \
        canonical([{"addresses": ["10.1.0.0/24"]}])


def test_the_node_bound_holds_for_patches(monkeypatch):
    import nra.config.yaml_reload as reload_module

    reloader = primed(BASE)
    monkeypatch.setattr(reload_module, "MAX_NODES", 20)  # BASE has 19 nodes
    with pytest.raises(InputTooLarge, match="nodes"):
        reloader.load(edit(BASE, 9, 0, ["  - 10.1.3.0/24", "  - 10.1.4.0/24"]))
    assert MAX_NODES > 20


def test_crlf_and_other_line_breaks_are_parsed_whole():
    reloader = primed(BASE.replace("\n", "\r\n"))
    new = edit(BASE, 9, 0, ["  - 10.1.3.0/24"]).replace("\n", "\r\n")
    assert outcome(reloader.load, new) == outcome(load_yaml_documents, new)
    assert reloader.patched == 0


# random edits of random texts: what the reloader gives is always what a full parse gives
item_values = st.sampled_from(["10.0.0.0/24", "2001:db8::/64", "10.0.0.1-10.0.0.9", "yes", "1", "1:20", "0x1f",
                               "null", "x", "a:b", "10.0.0.0:", "2001-01-01", "1.5", "~"])
line_kinds = st.one_of(
    st.tuples(st.integers(0, 6), item_values).map(lambda t: " " * t[0] + "- " + t[1]),
    st.tuples(st.integers(0, 4), st.sampled_from(["addresses:", "name: p", "- name: q", "peers:", "a: [1, 2]",
                                                  "# comment", "", "---", "- - 1", "-", "  more", "- 'q'",
                                                  "- &x 1", "- *x", "key: |"])).map(lambda t: " " * t[0] + t[1]),
)
edits = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3), st.lists(line_kinds, max_size=3)), min_size=1,
                 max_size=6)


@FUZZ
@given(st.lists(line_kinds, max_size=25), edits, st.booleans())
def test_random_edits_load_as_a_full_parse(lines, changes, trailing_newline):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    reloader = YamlReloader()
    outcome(reloader.load, text)
    outcome(reloader.load, text)
    for at, remove, insert in changes:
        text = edit(text, at, remove, insert)
        assert outcome(reloader.load, text) == outcome(load_yaml_documents, text), text


# random edits of item lines: (line, lines removed, item lines inserted at two indents)
item_edits = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2), st.lists(
    st.tuples(st.sampled_from([2, 4]), item_values).map(lambda t: " " * t[0] + "- " + t[1]), max_size=3)),
    min_size=1, max_size=8)


@FUZZ
@given(item_edits)
def test_random_item_edits_of_a_config_load_as_a_full_parse(changes):
    text = BASE
    reloader = primed(text)
    for at, remove, insert in changes:
        text = edit(text, at, remove, insert)
        assert outcome(reloader.load, text) == outcome(load_yaml_documents, text), text


def _holds(node, target) -> bool:
    """Whether `target` (by identity) is somewhere in `node`."""
    if node is target:
        return True
    if isinstance(node, dict):
        return any(_holds(v, target) for v in node.values())
    if isinstance(node, list):
        return any(_holds(v, target) for v in node)
    return False


def check_items_patch(reloader: YamlReloader, before_docs, after_docs) -> None:
    """The reloader's `patch` after a load: None when the load was not a patch; else the
    list of the last documents, the list of the new ones that replaced it, the items removed
    and the items added, such that the old list with those items replaced is the new one."""
    if reloader.patch is None:
        return
    old, new, removed, added = reloader.patch
    assert _holds(before_docs, old) and _holds(after_docs, new) and not _holds(after_docs, old)
    assert any(old[:at] + added + old[at + len(removed):] == new and old[at:at + len(removed)] == removed
               for at in range(len(old) + 1))


def test_a_patch_says_which_items_it_replaced():
    reloader = primed(BASE)
    before = reloader.load(BASE)
    assert reloader.patch is None or reloader.patch[2:] == ([], [])  # the same text: nothing replaced
    new = edit(BASE, 6, 2, ["  - 10.9.0.0/16", "  - 10.8.0.0/16", "  - 10.7.0.0/16"])
    after = reloader.load(new)
    old_list = before[0]["address-pools"][0]["addresses"]
    assert reloader.patch == (old_list, ["10.9.0.0/16", "10.8.0.0/16", "10.7.0.0/16", "10.1.2.0/24"],
                              ["10.1.0.0/24", "10.1.1.0/24"], ["10.9.0.0/16", "10.8.0.0/16", "10.7.0.0/16"])
    assert reloader.patch[0] is old_list and reloader.patch[1] is after[0]["address-pools"][0]["addresses"]
    assert after[0]["address-pools"][1] is before[0]["address-pools"][1]  # pool two: the very same
    reloader.load(edit(new, 4, 1, ["  protocol: layer2"]))
    assert reloader.patch is None



def test_a_patch_keeps_the_items_of_the_lines_that_stay_and_of_those_put_back():
    """Items are the very objects of the last documents for the lines a patch leaves, and
    for the lines the patch before removed (an edit undone): a re-read holds no second copy
    of them (metallb's entry memo keeps the first read's strings as its keys)."""
    reloader = YamlReloader()
    reloader.record_first = True
    first = reloader.load(LONG)[0]["address-pools"][0]["addresses"]
    lines = LONG.split("\n")
    at = lines.index("  - 10.1.0.0/24")
    half = "\n".join(lines[:at] + lines[at:at + len(first)][::2] + lines[at + len(first):])
    halved = reloader.load(half)[0]["address-pools"][0]["addresses"]
    again = reloader.load(LONG)[0]["address-pools"][0]["addresses"]
    assert reloader.patched == 2
    assert halved == first[::2] and all(map(operator.is_, halved, first[::2]))
    assert again == first and all(map(operator.is_, again, first))
    added = reloader.load(edit(LONG, at + 5, 0, ["  - 10.9.0.0/24"]))[0]["address-pools"][0]["addresses"]
    assert added == first[:5] + ["10.9.0.0/24"] + first[5:] and all(map(operator.is_, added[6:], first[5:]))

@FUZZ
@given(item_edits)
def test_random_item_edits_describe_their_patch(changes):
    text = BASE
    reloader = primed(text)
    docs = reloader.load(text)
    for at, remove, insert in changes:
        text = edit(text, at, remove, insert)
        try:
            new_docs = reloader.load(text)
        except (yaml.YAMLError, InputTooLarge):
            continue
        check_items_patch(reloader, docs, new_docs)
        docs = new_docs


# The loader's fast path for long runs of item lines (yaml_loader.FAST_RUN_MIN) under the
# reloader: the lists it records from a fast-path load are patched as those of a full scan.

def full_scan(text):
    return [d for d in scan_yaml(text, None, 0).docs if d is not None]  # 0: no fast path


@contextmanager
def fast_runs_from(minimum: int):
    kept = yaml_loader.FAST_RUN_MIN
    yaml_loader.FAST_RUN_MIN = minimum
    try:
        yield
    finally:
        yaml_loader.FAST_RUN_MIN = kept


LONG = BASE.replace("  - 10.1.2.0/24\n", "".join(f"  - 10.1.{i // 256}.{i % 256}/32\n" for i in range(2, 402)))


def test_a_long_list_read_by_the_fast_path_is_recorded_and_patched():
    reloader = primed(LONG)
    assert reloader._scanned.sequences[0].count == 402
    for at, remove, insert in [(300, 0, ["  - 10.9.0.0/24"]), (7, 3, []), (200, 1, ["  - yes", "  - 10.8.0.0/24"])]:
        text = edit(LONG, at, remove, insert)
        assert outcome(reloader.load, text) == outcome(full_scan, text)
    assert reloader.patched == 3


long_edits = st.lists(st.tuples(st.integers(0, 420), st.integers(0, 3), st.lists(line_kinds, max_size=3)),
                      min_size=1, max_size=6)


@FUZZ
@given(long_edits)
def test_random_edits_of_a_long_list_load_as_a_full_parse(changes):
    text = LONG
    reloader = primed(text)
    for at, remove, insert in changes:
        text = edit(text, at, remove, insert)
        assert outcome(reloader.load, text) == outcome(full_scan, text), text


@FUZZ
@given(st.lists(line_kinds, max_size=25), edits, st.booleans(), st.integers(1, 3))
def test_random_edits_load_as_a_full_parse_with_short_runs_on_the_fast_path(lines, changes, trailing_newline,
                                                                           minimum):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    with fast_runs_from(minimum):
        reloader = YamlReloader()
        outcome(reloader.load, text)
        outcome(reloader.load, text)
        for at, remove, insert in changes:
            text = edit(text, at, remove, insert)
            assert outcome(reloader.load, text) == outcome(full_scan, text), text
