"""The prefix sets sharded by address block (nft_table.SHARDS): where each merged interval is
written (placed), and the diff of a table read back set by set (its elements as listed)
against the diff of nra's own last write, fuzzed."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field

FIELD = parse_mark_field("0x2/0x3e")
BLOCK = 1 << nft.SHARD_SHIFT


def _merged(family: int, raw: list[tuple[int, int]]) -> frozenset[tuple[int, int]]:
    top = (1 << nft.WIDTH[family]) - 1
    return nft.merge((min(low, top), min(top, low + size)) for low, size in raw)


def intervals(family: int):
    """Merged intervals near each other (a few blocks apart, some over many blocks), and some
    at the top of the space."""
    top = (1 << nft.WIDTH[family]) - 1
    low = st.one_of(st.integers(0, 64 * BLOCK), st.integers(top - 4 * BLOCK, top))
    size = st.one_of(st.integers(0, 8), st.integers(0, 3 * BLOCK), st.integers(0, 40 * BLOCK))
    return st.lists(st.tuples(low, size), max_size=40).map(lambda raw: _merged(family, raw))


def _covered(pieces) -> list[tuple[int, int]]:
    return nft.merge_sorted(sorted(pieces))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda f: st.tuples(st.just(f), intervals(f))))
def test_placed_pieces_cover_each_interval_once_in_its_blocks_sets(case):
    family, merged = case
    out = nft.placed(family, sorted(merged))
    pieces = [p for got in out.values() for p in got]
    # together the pieces are the intervals, no address twice
    assert _covered(pieces) == sorted(merged)
    assert sum(high - low + 1 for low, high in pieces) == sum(high - low + 1 for low, high in merged)
    for name, got in out.items():
        assert nft.PREFIX_SET_FAMILY[name] == family and got
        ordered = sorted(got)
        # a set's elements are disjoint and never adjacent (the kernel's set holds them apart)
        assert all(a[1] + 1 < b[0] for a, b in zip(ordered, ordered[1:])), name
        for low, high in got:
            if name == nft.PREFIX_SETS[family]:  # the wide set: whole intervals of SHARDS blocks or more
                assert (low, high) in merged and (high >> nft.SHARD_SHIFT) - (low >> nft.SHARD_SHIFT) >= nft.SHARDS
            else:  # a shard: a piece within one block, of that block's set
                assert low >> nft.SHARD_SHIFT == high >> nft.SHARD_SHIFT
                assert name == nft.SHARD_SETS[family][(low >> nft.SHARD_SHIFT) % nft.SHARDS]
            assert nft.whole_in(family, name, (low, high))  # (a piece alone is placed as it is)
    for interval in merged:  # each interval alone goes where it goes among the others
        alone = nft.placed(family, [interval])
        assert all(set(p) <= set(out[name]) for name, p in alone.items())


@settings(max_examples=80, deadline=None)
@given(intervals(4), intervals(4), intervals(6), st.randoms(use_true_random=False))
def test_the_diff_of_a_read_table_equals_the_diff_of_nras_own_write(before4, after4, before6, rnd):
    """A table read back as placed() wrote it gives the prefixes' change nra's own last write
    gives, and both changes leave each set as placed() wants it (the read's compares set by
    set: an interval that grew keeps its unchanged piece); an element listed in the wrong set
    is deleted from where it is and added where it belongs."""
    def table(v4, v6, raw=None):
        return nft.NftTable({4: v4, 6: v6}, frozenset({"eth0"}), {}, nft.desired_chains(FIELD),
                            raw or {}, sets=nft.NRA_SETS if raw is not None else frozenset())

    def listed(v4, v6):
        return {name: tuple(pieces) for family, merged in ((4, v4), (6, v6))
                for name, pieces in nft.placed(family, sorted(merged)).items()}

    want, own = table(after4, before6), table(before4, before6)
    read = table(before4, before6, listed(before4, before6))
    mine, theirs = nft.diff(want, own), nft.diff(want, read)
    assert {f: sorted(v) for f, v in mine.add_prefixes.items()} == {f: sorted(v) for f, v in theirs.add_prefixes.items()}
    assert {f: sorted(v) for f, v in mine.delete_prefixes.items()} == \
        {f: sorted(v) for f, v in theirs.delete_prefixes.items()}
    wanted = listed(after4, before6)
    for change in (mine, theirs):
        gone, new = nft.prefix_pieces(change)
        for name in nft.PREFIX_SET_FAMILY:
            held = set(read.raw_prefixes.get(name, ()))
            assert set(gone.get(name, ())) <= held, name
            kept = held - set(gone.get(name, ()))
            assert not kept & set(new.get(name, ())), name
            assert kept | set(new.get(name, ())) == set(wanted.get(name, ())), name

    # someone moved one listed element to another set: it is deleted there and added back
    raw = listed(after4, before6)
    full = [name for name, pieces in raw.items() if pieces and nft.PREFIX_SET_FAMILY[name] == 4]
    if full:
        source = rnd.choice(sorted(full))
        element = raw[source][0]
        target = rnd.choice([n for n in nft.SHARD_SETS[4] if n != source])
        moved = {**raw, source: raw[source][1:], target: (*raw.get(target, ()), element)}
        change = nft.diff(want, dataclasses.replace(read, prefixes={4: after4, 6: before6}, raw_prefixes=moved))
        assert not change.add_prefixes[4] and not change.delete_prefixes[4]
        assert change.delete_pieces == {**{n: () for n in nft.PREFIX_SET_FAMILY}, target: (element,)}
        assert change.add_pieces == {**{n: () for n in nft.PREFIX_SET_FAMILY}, source: (element,)}


def test_a_change_is_described_set_by_set_and_a_large_one_by_family():
    v4 = frozenset({(0x0A000000, 0x0A000003), (0x0A000105, 0x0A000105)})  # 10.0.0.0/30 (lb4_0), 10.0.1.5 (lb4_1)
    change = nft.NftChange(add_prefixes={4: tuple(sorted(v4))})
    assert change.describe() == ["nft add element inet nra lb4_0 { 10.0.0.0/30 }",
                                 "nft add element inet nra lb4_1 { 10.0.1.5/32 }"]
    many = tuple((0x0A000000 + 8 * i, 0x0A000000 + 8 * i + 3) for i in range(nft.DESCRIBED_MAX + 1))
    assert nft.NftChange(delete_prefixes={4: many}).describe() == [
        f"nft delete element inet nra lb4* {{ 10.0.0.0/30, 10.0.0.8/30, 10.0.0.16/30, 10.0.0.24/30, ... "
        f"({nft.DESCRIBED_MAX - 3} more) }}"]


def test_a_table_of_an_nra_before_the_shards_is_made_anew():
    want = nft.desired_table([], ["eth0"], {}, FIELD)
    old = dataclasses.replace(want, sets=frozenset({"lb4", "lb6", "links", "link_routers", "groups4", "groups6"}))
    change = nft.diff(want, old)
    assert change.rebuild and change.reason == "prefix sets not sharded"
    assert not nft.diff(want, dataclasses.replace(want, sets=nft.NRA_SETS))


# -- the group maps, sharded the same way (placed_groups) ------------------------------------


def group_elements(family: int):
    """Two groups' merged intervals (indexes 3 and 4), disjoint from each other (an overlap
    is left to the first group, as tag_groups does): side by side often."""
    return st.tuples(intervals(family), intervals(family)).map(
        lambda pair: nft.tag_groups({3: {family: pair[0]}, 4: {family: pair[1]}})[0][family])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda f: st.tuples(st.just(f), group_elements(f))))
def test_group_pieces_are_placed_by_the_prefix_sets_rule_and_read_back_whole(case):
    """Each group interval's pieces are where placed() puts the interval's (a block's map for
    a block's set, the wide map for the wide set), with its index; the pieces read back
    (joined by nft_read) are the elements again."""
    from nra.kernel import nft_read

    family, elements = case
    out = nft.placed_groups(family, sorted(elements))
    to_set = {m: s for m, s in zip((nft.GROUP_MAPS[family], *nft.GROUP_SHARD_MAPS[family]),
                                   (nft.PREFIX_SETS[family], *nft.SHARD_SETS[family]))}
    for low, high, index in elements:
        alone = nft.placed_groups(family, [(low, high, index)])
        assert {to_set[m]: [p[:2] for p in pieces] for m, pieces in alone.items()} == nft.placed(family, [(low, high)])
        assert all(p[2] == index for pieces in alone.values() for p in pieces)
        assert all(set(pieces) <= set(out[m]) for m, pieces in alone.items())
    for name, pieces in out.items():
        assert nft.GROUP_MAP_FAMILY[name] == family and pieces
        ordered = sorted(pieces)
        assert all(a[1] < b[0] for a, b in zip(ordered, ordered[1:])), name  # disjoint in each map
    every = sorted(p for pieces in out.values() for p in pieces)
    assert nft_read._merged_groups(every) == elements


@settings(max_examples=80, deadline=None)
@given(group_elements(4), group_elements(4), group_elements(6), st.randoms(use_true_random=False))
def test_the_group_diff_of_a_read_table_leaves_each_map_as_placed_groups_wants_it(before4, after4, before6, rnd):
    """A table read back map by map gives the groups' change nra's own last write gives, and
    both leave each map as placed_groups() wants it; an element listed in another map than
    its own is deleted there and added where it belongs."""
    def table(g4, g6, raw=None):
        return nft.NftTable({4: frozenset(), 6: frozenset()}, frozenset({"eth0"}), {}, nft.desired_chains(FIELD),
                            sets=nft.NRA_SETS if raw is not None else frozenset(), groups={4: g4, 6: g6},
                            raw_groups=raw or {})

    def listed(g4, g6):
        return {name: tuple(pieces) for family, elements in ((4, g4), (6, g6))
                for name, pieces in nft.placed_groups(family, sorted(elements)).items()}

    want, own = table(after4, before6), table(before4, before6)
    read = table(before4, before6, listed(before4, before6))
    mine, theirs = nft.diff(want, own), nft.diff(want, read)
    assert {f: sorted(v) for f, v in mine.add_groups.items() if v} == \
        {f: sorted(v) for f, v in theirs.add_groups.items() if v}
    assert {f: sorted(v) for f, v in mine.delete_groups.items() if v} == \
        {f: sorted(v) for f, v in theirs.delete_groups.items() if v}
    wanted = listed(after4, before6)
    for change, held_by in ((mine, listed(before4, before6)), (theirs, read.raw_groups)):
        gone, new = nft.group_pieces(change)
        for name in nft.GROUP_MAP_FAMILY:
            held = set(held_by.get(name, ()))
            assert set(gone.get(name, ())) <= held, name
            kept = held - set(gone.get(name, ()))
            assert not kept & set(new.get(name, ())), name
            assert kept | set(new.get(name, ())) == set(wanted.get(name, ())), name
    # someone moved one listed element to another map: it is deleted there and added back
    raw = listed(after4, before6)
    full = [name for name, pieces in raw.items() if pieces and nft.GROUP_MAP_FAMILY[name] == 4]
    if full:
        source = rnd.choice(sorted(full))
        element = raw[source][0]
        target = rnd.choice([n for n in nft.GROUP_SHARD_MAPS[4] if n != source])
        moved = {**raw, source: raw[source][1:], target: (*raw.get(target, ()), element)}
        change = nft.diff(want, dataclasses.replace(read, groups={4: after4, 6: before6}, raw_groups=moved))
        assert nft.group_pieces(change) == ({target: (element,)}, {source: (element,)})


def test_a_group_change_is_described_map_by_map_and_a_large_one_by_family():
    one, two = (0x0A000000, 0x0A000003, 3), (0x0A000105, 0x0A000105, 4)  # 10.0.0.0/30, 10.0.1.5
    change = nft.NftChange(add_groups={4: (one, two)})
    assert change.describe() == ["nft add element inet nra groups4_0 { 10.0.0.0/30 : goto group_3 }",
                                 "nft add element inet nra groups4_1 { 10.0.1.5/32 : goto group_4 }"]
    many = tuple((0x0A000000 + 8 * i, 0x0A000000 + 8 * i + 3, 3) for i in range(nft.DESCRIBED_MAX + 1))
    assert nft.NftChange(delete_groups={4: many}).describe() == [
        f"nft delete element inet nra groups4* {{ 10.0.0.0/30 : goto group_3, 10.0.0.8/30 : goto group_3, "
        f"10.0.0.16/30 : goto group_3, 10.0.0.24/30 : goto group_3, ... ({nft.DESCRIBED_MAX - 3} more) }}"]
    # the batch and the JSON commands write each piece in its map
    from nra.kernel.nft import element_ops
    assert [(op.set_name, op.delete) for op in element_ops(change)] == [("groups4_0", False), ("groups4_1", False)]
    assert [c["add"]["element"]["name"] for c in nft.element_commands(change)] == ["groups4_0", "groups4_1"]


def test_a_batch_touches_the_sets_that_gain_elements_before_those_that_only_lose_some():
    """The kernel makes an interval set's changes visible set by set, in the order the batch
    first touched them: a prefix moving from a group map to the prefix sets (its pool now
    announced to every peer) is added before it is deleted, never in neither; within a set,
    its deletes still come first (an interval's old piece before its new one)."""
    from nra.kernel.nft import element_ops
    lo = 0x0A000000  # 10.0.0.0
    moved = nft.NftChange(add_prefixes={4: ((lo, lo + 3),)}, delete_groups={4: ((lo, lo + 3, 3),)})
    assert [(op.set_name, op.delete) for op in element_ops(moved)] == [("lb4_0", False), ("groups4_0", True)]
    back = nft.NftChange(delete_prefixes={4: ((lo, lo + 3),)}, add_groups={4: ((lo, lo + 3, 3),)})
    assert [(op.set_name, op.delete) for op in element_ops(back)] == [("groups4_0", False), ("lb4_0", True)]
    # an interval grown in its set: its old piece deleted, then the new one added
    grown = nft.NftChange(delete_prefixes={4: ((lo, lo + 3),)}, add_prefixes={4: ((lo, lo + 7),)},
                          delete_routers=(("eth0", "02:00:00:00:00:01"),),
                          set_routers={("eth0", "02:00:00:00:00:01"): 2})
    assert [(op.set_name, op.delete) for op in element_ops(grown)] == [
        ("lb4_0", True), ("lb4_0", False), (nft.ROUTERS_MAP, True), (nft.ROUTERS_MAP, False)]


def test_a_table_of_an_nra_before_the_group_shards_is_made_anew():
    want = nft.desired_table([], ["eth0"], {}, FIELD)
    old = dataclasses.replace(want, sets=nft.NRA_SETS - set(nft.GROUP_SHARD_MAPS[4]) - set(nft.GROUP_SHARD_MAPS[6]))
    change = nft.diff(want, old)
    assert change.rebuild and change.reason == "group maps not sharded"
    # one shard map missing is remade in place
    some = dataclasses.replace(want, sets=nft.NRA_SETS - {"groups4_3"})
    assert nft.diff(want, some).remake_sets == ("groups4_3",) and not nft.diff(want, some).rebuild


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.lists(st.integers(0, 60), max_size=6),
                          st.sampled_from([(4,), (4, 6)])), min_size=1, max_size=8))
def test_kept_group_maps_follow_every_change_exactly(steps):
    """GroupMaps after any sequence of changes (a group's prefixes added or removed, a group
    made or gone, a family turned off) equals group_intervals() of the groups afresh, and
    its delta is the exact change from the result before (what diff() then sends alone)."""
    import ipaddress

    def net(i: int, family: int):
        # /30s eight apart in one /24 (sometimes adjacent through a /29), their v6 twins
        return ipaddress.ip_network(f"10.0.{i // 32}.{(i % 32) * 8}/{30 if i % 5 else 29}" if family == 4
                                    else f"fd00::{i:x}00/{126 if i % 5 else 125}")

    maps = nft.GroupMaps()
    groups: dict[int, frozenset] = {}
    for group, drop, members, families in steps:
        index = 3 + group
        if drop:
            groups.pop(index, None)
        else:
            changed = {net(i, f) for i in members for f in (4, 6)}
            groups[index] = groups.get(index, frozenset()) ^ changed
        before = maps.result
        got = maps.update(dict(groups), families)
        fresh, problems = nft.group_intervals(groups, families)
        assert got == fresh and maps.problems == problems
        if maps.delta is not None:
            previous, changes = maps.delta
            assert previous is before
            for family in (4, 6):
                gone, added = changes.get(family, ((), ()))
                assert (set(before[family]) - set(gone)) | set(added) == set(got[family])
