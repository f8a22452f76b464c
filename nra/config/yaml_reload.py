"""Re-reading a YAML text that changed by a few list items, without parsing all of it again.

The daemon re-reads its whole configuration at every change; at 10,000 prefixes parsing is
most of the time from a file change to the kernel. When the new text differs from the last
one only in whole lines that are items of one block sequence of one-line scalars (an
operator adding or removing `- 10.0.0.0/24` lines under `addresses:`), the last documents
are copied along the path to that sequence and its items replaced: the result is what a full
parse of the new text gives (tests/unit/test_yaml_reload.py checks that against PyYAML on
random edits). Any other change is parsed whole. The bounds hold either way: the size is
checked first, and a patch adds nodes to the last count but no depth.
"""

from __future__ import annotations

import re
from typing import Any

from nra.config.yaml_loader import (
    MAX_NODES,
    InputTooLarge,
    ItemLines,
    Scanned,
    check_size,
    plain_scalar_value,
    scan_yaml,
)

# A new item line a patch accepts: `<indent>- <plain scalar>`, the scalar of characters that
# cannot start or end a YAML structure (no space, quote, `#`, `:` at the end, flow or other
# indicators); addresses and ranges fit. Anything else is parsed whole.
_ITEM = re.compile(r"( *)- ([0-9A-Za-z][0-9A-Za-z.:/%_-]*)")
# line breaks that YAML counts and str.split("\n") does not: a text with one is parsed whole
_OTHER_BREAKS = ("\r", "\x85", "\u2028", "\u2029", "\ufeff")
_MISSING = object()


class YamlReloader:
    """Loads the successive texts of one configuration; `load` gives what
    bounds.load_yaml_documents gives, patching the last documents where it can."""

    def __init__(self) -> None:
        #: record where the lists are from the first text on, not the second: a daemon sets
        #: it (its first edit is then a patch too: at 100,000 prefixes ~30 ms, not ~100)
        self.record_first = False
        self._text: str | None = None
        self._scanned: Scanned | None = None
        self.patched = 0  # loads that were patches (for tests and figures)
        #: what the last load patched: (the sequence's items before, after, the items
        #: removed, the items added), the lists those of the last and new documents; None
        #: when the text was parsed whole (metallb.PoolEntries re-parses only these items)
        self.patch: tuple[list, list, list, list] | None = None
        #: item line -> its value, for the lines the last patch removed
        self._removed: dict[str, Any] = {}

    def load(self, text: str) -> list[Any]:
        check_size(text)
        self.patch = None
        scanned = self._patch(text)
        if scanned is None:
            self._removed = {}
            # where the lists are is recorded from the second text on (or the first, see
            # record_first): a text read once (ONESHOT) does not pay for it
            record = (self._text is not None or self.record_first) and not any(b in text for b in _OTHER_BREAKS)
            scanned = scan_yaml(text, text.split("\n") if record else None)
        else:
            self.patched += 1
        self._text, self._scanned = text, scanned
        return [d for d in scanned.docs if d is not None]

    def _patch(self, new: str) -> Scanned | None:
        old, last = self._text, self._scanned
        if old is None or last is None or not last.sequences or any(b in new for b in _OTHER_BREAKS):
            return None
        start, old_end, new_end = _changed_lines(old, new)
        first_line = old.count("\n", 0, start)
        # (the regions' lines are not split into strings: at 100,000 items a delete of half
        # or its undo made 150,000 of them, ~10 MB of small objects at once, and the
        # allocator's arenas they grew stayed in the RSS)
        old_count = _line_count(old, start, old_end)
        seq = _sequence_at(last.sequences, first_line, old_count)
        if seq is None:
            return None
        at = first_line - seq.first_line
        # the old items by value: a new item of the same text keeps the old item, the very
        # object, as does one the last patch removed (an edit undone); metallb's entry memo
        # holds the first read's strings as keys, and new equal strings were a second copy
        # (6 MB at 100,000). Only strings with a "/" are taken so: whatever else such a plain
        # scalar holds it is that string (yaml_loader's rule), so the old item is its value.
        known = {item: item for item in seq.items[at:at + old_count] if type(item) is str}
        removed_before, missing = self._removed, _MISSING
        values = []
        pos = start
        while pos < new_end:
            eol = new.find("\n", pos, new_end)
            if eol < 0:
                eol = new_end
            match = _ITEM.fullmatch(new, pos, eol)
            if match is None or match.end(1) - pos != seq.indent or new[eol - 1] == ":":
                return None
            pos = eol + 1
            scalar = match.group(2)
            value = missing
            if "/" in scalar:
                value = known.pop(scalar, missing)
                if value is missing:
                    value = removed_before.get(scalar, missing)
            if value is missing:
                built, value = plain_scalar_value(scalar)  # as the full scan would build it
                if not built:
                    return None
            values.append(value)
        count = seq.count - old_count + len(values)
        nodes = last.nodes - old_count + len(values)
        if count < 1:  # an emptied `key:` is null, not []: parse it
            return None
        if nodes > MAX_NODES:
            raise InputTooLarge(f"nodes: more than {MAX_NODES:,} YAML nodes")
        if _follow(last.docs, seq.path) is not seq.items:  # e.g. a duplicate key replaced it
            return None
        items = seq.items[:at] + values + seq.items[at + old_count:]
        docs = _replaced(last.docs, seq.path, items)
        shift = len(values) - old_count
        sequences = []
        for other in last.sequences:
            if other is seq:
                other = ItemLines(seq.path, items, seq.indent, seq.first_line, count)
            elif other.first_line > seq.first_line:
                other = ItemLines(other.path, other.items, other.indent, other.first_line + shift, other.count)
            sequences.append(other)
        self.patch = (seq.items, items, seq.items[at:at + old_count], values)
        # what is left of `known` was removed: kept for the next patch only (an edit undone),
        # copied so that its table is the size of what is left
        self._removed = dict(known) if known else {}
        return Scanned(docs, nodes, sequences)


def _changed_lines(old: str, new: str) -> tuple[int, int, int]:
    """Where the texts differ, as whole lines: (start, end in old, end in new); the start is
    a line start, and each end a line start or the end of its text."""
    shortest = min(len(old), len(new))
    same = _common_length(old, new, shortest, from_end=False)
    tail = _common_length(old, new, shortest - same, from_end=True)
    start = old.rfind("\n", 0, same) + 1
    old_end, new_end = len(old) - tail, len(new) - tail
    if old_end > 0 and old[old_end - 1] != "\n":  # move the common tail to a line start
        line_end = old.find("\n", old_end)
        moved = (line_end + 1 if line_end >= 0 else len(old)) - old_end
        old_end, new_end = old_end + moved, new_end + moved
    return start, max(old_end, start), max(new_end, start)


#: characters compared at a time while looking for the first difference
_CHUNK = 1 << 14


def _common_length(old: str, new: str, limit: int, from_end: bool) -> int:
    """The length of the common prefix (or suffix) of the texts, at most `limit`: the first
    differing chunk found by chunk comparisons, then a binary search inside it (comparisons
    of slices run in C; a binary search over the whole texts copied ~40 MB at 2 MB)."""
    def same_chunk(begin: int, end: int) -> bool:
        if from_end:
            return old[len(old) - end:len(old) - begin] == new[len(new) - end:len(new) - begin]
        return old[begin:end] == new[begin:end]

    low = 0
    while low < limit:
        end = min(limit, low + _CHUNK)
        if not same_chunk(low, end):
            break
        low = end
    else:
        return limit
    high = min(limit, low + _CHUNK) - 1  # the answer is in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if same_chunk(low, mid):  # [0, low) is already known to be the same
            low = mid
        else:
            high = mid - 1
    return low


def _line_count(text: str, start: int, end: int) -> int:
    """How many lines text[start:end] holds (a last one without its line break counts)."""
    if end <= start:
        return 0
    return text.count("\n", start, end) + (text[end - 1] != "\n")


def _sequence_at(sequences: list[ItemLines], line: int, count: int) -> ItemLines | None:
    """The sequence whose item lines hold lines [line, line + count); for an insertion
    (count 0), the one it goes into: before an item, or right after the last."""
    for seq in sequences:
        if seq.first_line <= line and line + count <= seq.first_line + seq.count:
            return seq
    return None


def _follow(docs: list, path: tuple) -> Any:
    node: Any = docs
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _replaced(container: Any, path: tuple, value: Any) -> Any:
    """A copy of `container` with the value at `path` replaced; what is off the path is
    shared (nothing downstream mutates loaded documents)."""
    if not path:
        return value
    copy = list(container) if type(container) is list else dict(container)
    copy[path[0]] = _replaced(container[path[0]], path[1:], value)
    return copy
