"""The /status head of each family, kept across intents by what a change added or removed,
equals a whole sort after every step (PrefixHeads)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from nra.config.prefixes import parse_address_entry
from nra.observe.documents import PrefixHeads, sorted_prefixes


def _net(family: int, n: int):
    text = f"10.{n >> 8 & 255}.{n & 255}.0/24" if family == 4 else f"2001:db8:{n:x}::/48"
    return parse_address_entry(text)[0]


def _expected(prefixes: frozenset, needed: int) -> dict[int, list]:
    ordered = sorted_prefixes(prefixes)
    return {f: [p for p in ordered if p.version == f][:needed] for f in (4, 6)}


steps = st.lists(st.tuples(st.sets(st.tuples(st.sampled_from((4, 6)), st.integers(0, 300)), max_size=3),
                           st.integers(0, 12), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(start=st.sets(st.tuples(st.sampled_from((4, 6)), st.integers(0, 300)), max_size=200), steps=steps,
       needed=st.integers(1, 20), spare=st.integers(0, 8))
def test_heads_equal_a_whole_sort_after_every_change(start, steps, needed, spare) -> None:
    heads = PrefixHeads(needed, spare)
    current = frozenset(_net(f, n) for f, n in start)
    for add, drop, front in steps:
        got = heads.update(current)
        want = _expected(current, needed)
        assert {f: got[f][:needed] for f in (4, 6)} == want
        ordered = sorted(current, key=lambda p: (p.version, p))
        # from the front (inside the head) or spread over the whole set
        chosen = ordered[:drop] if front else ordered[::max(1, len(ordered) // max(drop, 1))][:drop]
        removed = frozenset(chosen)
        current = (current - removed) | frozenset(_net(f, n) for f, n in add)
    got = heads.update(current)
    assert {f: got[f][:needed] for f in (4, 6)} == _expected(current, needed)


def test_a_removal_inside_the_head_with_no_spare_sorts_again() -> None:
    everything = frozenset(_net(4, n) for n in range(50))
    heads = PrefixHeads(3, spare=0)
    assert [str(p) for p in heads.update(everything)[4]] == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
    fewer = everything - {_net(4, 1)}
    assert [str(p) for p in heads.update(fewer)[4]] == ["10.0.0.0/24", "10.0.2.0/24", "10.0.3.0/24"]


def test_an_added_prefix_never_jumps_the_unknown_rest() -> None:
    """Past the kept head, the set's other prefixes are unknown: a prefix added after them must
    not be shown before them once the head's own prefixes are removed."""
    nets = [_net(4, n) for n in range(6)]
    heads = PrefixHeads(1, spare=2)  # keeps 3 of the 6
    current = frozenset(nets)
    assert heads.update(current)[4][0] == nets[0]
    current = (current - {nets[0]}) | {_net(4, 200)}
    assert heads.update(current)[4][0] == nets[1]
    current = current - {nets[1], nets[2]}
    assert heads.update(current)[4][0] == nets[3]


@settings(max_examples=150, deadline=None)
@given(st.sets(st.tuples(st.sampled_from((4, 6)), st.integers(0, 2000)), max_size=300))
def test_sorted_prefixes_are_ipv4_then_ipv6_each_in_address_order(chosen) -> None:
    """One family (sorted by the interval each prefix holds) or both (by family, then the
    interval): what ipaddress's own order gives."""
    prefixes = frozenset(_net(f, n) for f, n in chosen)
    assert sorted_prefixes(prefixes) == sorted(prefixes, key=lambda p: (p.version, p))
    for family in (4, 6):
        one = frozenset(p for p in prefixes if p.version == family)
        assert sorted_prefixes(one) == sorted(one)



def test_a_sort_of_one_family_makes_no_key_per_prefix() -> None:
    """100,000 IPv4 prefixes sorted for /status: no (family, interval) tuple per prefix (6.4
    MB of small objects at once, whose allocator arenas outlived the sort in the RSS): the
    sort's peak is its lists' (the keys' array and the result: 0.8 MB each)."""
    import tracemalloc
    prefixes = frozenset(_net(4, n) for n in range(60000)) | frozenset(
        parse_address_entry(f"100.{n >> 8 & 255}.{n & 255}.0/24")[0] for n in range(40000))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ordered = sorted_prefixes(prefixes)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(ordered) == 100000
    assert peak < 3 * 2**20, f"{peak / 2**20:.1f} MiB"
