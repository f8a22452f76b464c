"""What a set of prefixes is known to differ by from another, when it was made from it.

An edit of a few lines gives a new intent whose 100,000 prefixes are the last ones with a few
added or removed (nra.config.metallb.PoolEntries patches them). Whoever then compares the two
sets (the merged nft intervals, the count of prefixes per family) would pass over all of them
again, ~3 ms a pass; this says the difference instead. Sets are frozensets, immutable: the
difference recorded stays true. The last few records are kept (with their sets, so that the
ids they are found by stay those sets'): a parse records each pool it patched and, with several
pools, their union (nra.config.metallb); each record holds two sets of up to 100,000 prefixes
at scale (4 MB each), and a longer history kept that many more alive after a few edits. Once
a set is planned and programmed, its record and every older one go (settled).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Collection, Mapping

#: records kept: a change's sets and the ones before (the daemon plans each intent in turn; two
#: edits merged into one reconcile are compared whole, two set differences at C speed): the
#: intent's set and, when it is the union of several pools, the patched pools' (two pools
#: edited at once: three records; more and the first pools' are compared whole)
KEPT = 3
#: prefix counts kept: the last set's (the next set's are derived from them)
COUNTS_KEPT = 1
#: the most changed prefixes family_counts goes through one by one
COUNT_MAX = 1024

# id(new) -> (new, old, added, removed)
_records: OrderedDict[int, tuple[frozenset, frozenset, frozenset, frozenset]] = OrderedDict()
# id(prefixes) -> (prefixes, {family: count})
_counts: OrderedDict[int, tuple[frozenset, Mapping[int, int]]] = OrderedDict()


def _keep(store: OrderedDict, key: int, value: tuple, kept: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > kept:
        store.popitem(last=False)


def remember(new: frozenset, old: frozenset, added: Collection, removed: Collection) -> None:
    """`new` is `old` without `removed` (all in old) and with `added` (none in old)."""
    _keep(_records, id(new), (new, old, frozenset(added), frozenset(removed)), KEPT)


def settled(prefixes: frozenset) -> None:
    """`prefixes` is planned and programmed: its record (and the set before it, 4 MB at
    100,000 prefixes) is no longer needed, nor those recorded before it (its pools'
    patches, planned with it); the next set made from it records its own. The counts stay
    (the next set's are derived from them)."""
    record = _records.get(id(prefixes))
    if record is not None and record[0] is prefixes:
        while _records.popitem(last=False)[1] is not record:
            pass


def delta(new: frozenset, old: frozenset) -> tuple[frozenset, frozenset] | None:
    """(added, removed) from `old` to `new` when recorded, following up to KEPT records back
    from `new`; None when not known."""
    added: frozenset = frozenset()
    removed: frozenset = frozenset()
    at = new
    for _ in range(KEPT):
        if at is old:
            return added, removed
        record = _records.get(id(at))
        if record is None or record[0] is not at:
            return None
        _, before, step_added, step_removed = record
        # from before to at, then from at to new: what one step adds and the other removes
        # cancels out
        added, removed = ((step_added - removed) | (added - step_removed),
                          (step_removed - added) | (removed - step_added))
        at = before
    return (added, removed) if at is old else None


def family_counts(prefixes: frozenset) -> Mapping[int, int] | None:
    """The prefixes per family of a set counted or derived before, None when not known."""
    found = _counts.get(id(prefixes))
    if found is not None and found[0] is prefixes:
        return found[1]
    record = _records.get(id(prefixes))
    if record is None or record[0] is not prefixes:
        return None
    before = _counts.get(id(record[1]))
    if before is None or before[0] is not record[1] or len(record[2]) + len(record[3]) > COUNT_MAX:
        return None  # (many changed: counting them all again is as quick, at C speed)
    counts = dict(before[1])
    for sign, changed in ((1, record[2]), (-1, record[3])):
        for prefix in changed:
            family = 4 if prefix.version == 4 else 6
            counts[family] += sign
    _keep(_counts, id(prefixes), (prefixes, counts), COUNTS_KEPT)
    return counts


def remember_counts(prefixes: frozenset, counts: Mapping[int, int]) -> None:
    _keep(_counts, id(prefixes), (prefixes, dict(counts)), COUNTS_KEPT)
