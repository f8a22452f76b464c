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
