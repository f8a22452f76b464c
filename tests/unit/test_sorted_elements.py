"""GroupElements and SortedIntervals (nra.kernel.nft_table): the compact forms the desired
table keeps its group map elements and merged intervals in behave as the frozensets they
replace, for every reader (==, in, len, iteration in order, set operators, diff())."""

from __future__ import annotations

import ipaddress
from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from nra.config.prefixes import Prefix4, prefix4
from nra.kernel import nft_table as nft


def _disjoint(starts: list[int], index_of=lambda i: 3) -> list[tuple[int, int, int]]:
    """Disjoint, not adjacent elements from distinct starts (each 4 wide, 8 apart)."""
    return [(s * 8, s * 8 + 3, index_of(s)) for s in sorted(set(starts))]


elements = st.lists(st.integers(0, 200), max_size=30).map(lambda s: _disjoint(s, lambda i: 3 + i % 3))


@settings(max_examples=50, deadline=None)
@given(elements, elements)
def test_group_elements_behave_as_the_frozenset_of_their_tuples(mine, other):
    got = nft.GroupElements.of(mine)
    want = frozenset(mine)
    assert len(got) == len(want)
    assert list(got) == sorted(want)  # (in order: placed_groups and _rebuild rely on it)
    assert got == want and want == got and not (got != want)
    assert got == nft.GroupElements.of(reversed(mine))
    theirs = frozenset(other)
    assert (got == theirs) == (want == theirs)
    assert (got == nft.GroupElements.of(other)) == (want == theirs)
    for element in [*mine, *other, (0, 3, 99), (1, 3, 3), "x", (1, 2)]:
        assert (element in got) == (element in want), element
    assert got - theirs == want - theirs and theirs - got == theirs - want
    assert got | theirs == want | theirs and got & theirs == want & theirs
    assert isinstance(got - theirs, frozenset)
    assert nft.frozen_groups(got) == want and nft.sorted_groups(got) == tuple(sorted(want))
    assert nft.sorted_groups(want) == tuple(sorted(want)) and nft.frozen_groups(want) is want


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=30), st.lists(st.integers(0, 200), max_size=30))
def test_sorted_intervals_behave_as_the_frozenset_of_their_intervals(mine, other):
    intervals = sorted({(s * 8, s * 8 + 3) for s in mine})
    theirs = frozenset((s * 8, s * 8 + 3) for s in other)
    got, want = nft.SortedIntervals(intervals), frozenset(intervals)
    assert len(got) == len(want) and list(got) == sorted(want)
    assert got == want and want == got and (got == theirs) == (want == theirs)
    assert (got == nft.SortedIntervals(sorted(theirs))) == (want == theirs)
    for element in [*intervals, *theirs, (1, 3), (0, 4), "x", None]:
        assert (element in got) == (element in want), element
    assert got - theirs == want - theirs and theirs - got == theirs - want
    assert got | theirs == want | theirs and got & theirs == want & theirs
    assert set(theirs) <= got or not set(theirs) <= want  # (a notification's check)
    assert (set(theirs) <= got) == (set(theirs) <= want)


def test_a_group_elements_contains_check_builds_no_tuples():
    """`in` and len() bisect the columns: they never iterate (which makes the tuples)."""

    class Counted(nft.GroupElements):
        __slots__ = ()
        iterated = 0

        def __iter__(self):
            type(self).iterated += 1
            return super().__iter__()

    got = Counted([(0, 3), (8, 11), (16, 19)], nft.array("I", [3, 4, 3]))
    assert (8, 11, 4) in got and (8, 11, 3) not in got and (9, 11, 4) not in got and len(got) == 3
    assert Counted.iterated == 0


def test_the_desired_table_keeps_the_compact_forms_and_diff_reads_them():
    """DesiredTables' table holds SortedIntervals and GroupElements; diff() against a table
    holding frozensets (as read back) sends exactly the difference, and a rebuild every
    element in order."""
    from nra.kernel.marks import MarkField

    field = MarkField(0x2, 0x3e)
    nets = [prefix4(int(ipaddress.IPv4Address("10.0.0.0")) + i * 8, 30) for i in range(20)]
    a, b = frozenset(nets[::2]), frozenset(nets[1::2])
    tables = nft.DesiredTables()
    got = tables.get(a | b, frozenset({4}), ["eth0"], {}, field, groups={3: a, 4: b})
    assert isinstance(got.prefixes[4], nft.SortedIntervals) and isinstance(got.groups[4], nft.GroupElements)
    fresh = nft.desired_table(a | b, ["eth0"], {}, field, (4,), groups={3: a, 4: b})
    assert got == fresh  # (frozensets in the fresh one)
    rebuild = nft.diff(got, None)
    assert rebuild.add_groups[4] == tuple(sorted(fresh.groups[4])) and rebuild.add_prefixes[4] == tuple(sorted(fresh.prefixes[4]))
    # a table read back without two of the elements, and with one not nra's
    listed = sorted(fresh.groups[4])
    foreign = (1 << 30, (1 << 30) + 3, 5)
    read = dataclasses_replace(fresh, groups={4: frozenset(listed[2:]) | {foreign}, 6: frozenset()})
    change = nft.diff(got, read)
    assert change.add_groups[4] == tuple(listed[:2]) and change.delete_groups[4] == (foreign,)


def dataclasses_replace(table, **changes):
    import dataclasses
    return dataclasses.replace(table, **changes)


def test_a_prefix4_makes_its_network_address_and_compares_as_ipaddress_does():
    plain = [ipaddress.ip_network(t) for t in ("10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/25", "9.0.0.0/8",
                                                "10.0.0.0/8", "10.0.0.1/32")]
    ours = [prefix4(int(n.network_address), n.prefixlen) for n in plain]
    built = [Prefix4(str(n)) for n in plain]
    for net, mine, other in zip(plain, ours, built):
        assert mine.network_address == net.network_address == other.network_address
        assert type(mine.network_address) is ipaddress.IPv4Address
        assert "network_address" not in vars(mine) and "network_address" not in vars(other)
        assert mine == net == other and hash(mine) == hash(net) == hash(other) and str(mine) == str(net)
        assert mine.broadcast_address == net.broadcast_address and list(islice(mine.hosts(), 2)) == list(islice(net.hosts(), 2))
    for i, x in enumerate(ours):
        for j, y in enumerate(ours):
            assert (x < y) == (plain[i] < plain[j]) and (x == y) == (plain[i] == plain[j]), (x, y)
            assert (x < plain[j]) == (plain[i] < plain[j])
    assert sorted(ours) == sorted(plain)
    # a host-bits address given loosely is the network's
    assert Prefix4("10.0.0.5/24", strict=False).network_address == ipaddress.IPv4Address("10.0.0.0")


def test_merged_intervals_keep_one_list_while_nothing_merges():
    """Distinct prefixes: the raw and merged intervals are one list, edited in place; a
    prefix that touches another parts them (before it goes in: what moved is exact), and
    the result follows every change."""
    nets = [prefix4(int(ipaddress.IPv4Address("10.0.0.0")) + i * 8, 30) for i in range(10)]
    merged = nft.MergedIntervals()
    got = merged.update(frozenset(nets))
    assert merged._raw[4] is merged._merged[4] and got[4].items == tuple(merged._raw[4]) and len(got[4]) == 10
    alone = prefix4(int(ipaddress.IPv4Address("10.0.1.0")), 30)  # (touching none)
    before = got
    got = merged.update(frozenset(nets) | {alone})
    assert merged._raw[4] is merged._merged[4] and merged.delta == {4: (frozenset(), frozenset({alone.interval}))}
    assert got == nft.prefix_intervals(frozenset(nets) | {alone}) and before[4] == nft.prefix_intervals(nets)[4]
    got = merged.update(frozenset(nets))
    assert merged._raw[4] is merged._merged[4] and merged.delta == {4: (frozenset({alone.interval}), frozenset())}
    joining = prefix4(int(ipaddress.IPv4Address("10.0.0.4")), 30)  # (between the first two)
    got = merged.update(frozenset(nets) | {joining})
    assert merged._raw[4] is not merged._merged[4] and len(merged._raw[4]) == 11
    assert got == nft.prefix_intervals(frozenset(nets) | {joining}) and len(got[4]) == 9
    first_two = {nets[0].interval, nets[1].interval}
    assert merged.delta == {4: (frozenset(first_two), frozenset({(nets[0].interval[0], nets[1].interval[1])}))}
    got = merged.update(frozenset(nets))
    assert got == nft.prefix_intervals(frozenset(nets)) and merged.delta == {4: (
        frozenset({(nets[0].interval[0], nets[1].interval[1])}), frozenset(first_two))}
