"""The differences recorded between sets of prefixes (nra.config.prefix_delta): over any chain
of patches, what it says is the true difference, and the counts it derives the true counts."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from nra.config import prefix_delta
from nra.config.intent import Intent
from nra.config.prefixes import parse_address_entry

POOL = [parse_address_entry(f"10.0.{i}.0/24")[0] for i in range(12)] + \
       [parse_address_entry(f"2001:db8:{i}::/64")[0] for i in range(6)]


@settings(max_examples=200, deadline=None, database=None)
@given(st.sets(st.sampled_from(POOL)),
       st.lists(st.tuples(st.sets(st.sampled_from(POOL), max_size=3), st.sets(st.sampled_from(POOL), max_size=3)),
                min_size=1, max_size=prefix_delta.KEPT + 2))
def test_a_chain_of_patches_gives_the_true_difference(start, steps):
    first = frozenset(start)
    Intent(prefixes=first).prefix_counts  # (counted, so the next sets' counts can be derived)
    chain = [first]
    for add, remove in steps:
        old = chain[-1]
        removed, added = frozenset(remove) & old, frozenset(add) - old
        new = old.difference(removed).union(added)
        prefix_delta.remember(new, old, added, removed)
        chain.append(new)
        intent = Intent(prefixes=new)
        v4 = sum(1 for p in new if p.version == 4)
        assert intent.prefix_counts == {4: v4, 6: len(new) - v4}
    last = chain[-1]
    for back, old in enumerate(reversed(chain)):
        found = prefix_delta.delta(last, old)
        if back <= prefix_delta.KEPT:
            assert found == (last - old, old - last)
        else:
            assert found is None
    assert prefix_delta.delta(last, frozenset(POOL[:1]) | {ipaddress.ip_network("192.0.2.0/24")}) is None


def test_a_settled_set_lets_go_of_the_one_before_and_still_counts_the_next():
    import gc
    import weakref

    class Prefixes(frozenset):  # (a frozenset a weak reference can follow)
        pass

    old = Prefixes(POOL[:6])
    Intent(prefixes=old).prefix_counts
    new = old.difference(POOL[:1])
    prefix_delta.remember(new, old, (), POOL[:1])
    assert Intent(prefixes=new).prefix_counts == {4: 5, 6: 0}
    gone = weakref.ref(old)
    other = frozenset(POOL[6:8])
    prefix_delta.settled(other)  # another set's: nothing happens
    assert prefix_delta.delta(new, old) == (frozenset(), frozenset(POOL[:1]))
    del old
    prefix_delta.settled(new)
    gc.collect()
    assert gone() is None, "the record of a settled set kept the set before it"
    # the next patch of the settled set still derives its counts from the settled set's
    newer = new.union(POOL[12:13])
    prefix_delta.remember(newer, new, POOL[12:13], ())
    assert prefix_delta.family_counts(newer) == {4: 5, 6: 1}
