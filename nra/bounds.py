"""Bounds on untrusted configuration: size, YAML nesting depth and alias expansion, and
short reprs for messages.

Every configuration nra reads (a static file, a ConfigMap's `config` text) goes through
`load_yaml_documents`, which refuses, before any Python object is built:
- text longer than MAX_CONFIG_BYTES;
- nesting deeper than MAX_DEPTH (libyaml's composer recurses in C: 50,000 levels crash
  the process, so depth is checked on the parser's events, which are produced iteratively);
- more than MAX_NODES YAML nodes once aliases are expanded (a 433-byte "billion laughs"
  document expands to hundreds of millions of nodes for whoever walks it).

The scan costs about 2.5 µs per YAML event (25 ms for a 10,000-prefix file) and stops at
the first bound crossed, so a hostile document is refused in milliseconds.

Messages quote user values through `shown` (a repr) or `clip` (text), never whole: a value
may be a 2 MB string or a list that expands to millions of items.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

#: A Kubernetes object (so a ConfigMap) cannot exceed ~1 MiB; a static file of 100,000
#: prefixes is ~2 MB. Anything bigger is refused unread.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: MetalLB's deepest real structure (a CRD with selectors inside a List) is ~8 levels.
MAX_DEPTH = 64
#: YAML nodes after alias expansion: a 100,000-prefix configuration is ~100,000 nodes.
MAX_NODES = 500_000
#: Problems reported for one configuration; the rest are counted in one summary line.
MAX_PROBLEMS = 50

# libyaml's loader is ~6x faster on a 10,000-prefix config; same safe subset of YAML.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 4
_REPR.maxlong = 40


class InputTooLarge(ValueError):
    """The text is beyond a bound; str() is one line naming the bound (size, depth, alias
    expansion, nodes) and where it was crossed."""


def shown(value: Any) -> str:
    """A repr of a user value for a message: at most 80 characters, whatever the value
    (reprlib looks at a few items of a container, never the whole)."""
    return clip(_REPR.repr(value))


def clip(text: str, limit: int = 80) -> str:
    """A user string (a name, a key) for a message: one line, cut to `limit` characters."""
    text = str(text)
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return cut if cut.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def load_yaml_documents(text: str) -> list[Any]:
    """Every non-empty YAML document of `text`, within the bounds above.

    Raises InputTooLarge (a bound crossed) or yaml.YAMLError (not YAML).
    """
    size = len(text.encode("utf-8")) if len(text) * 4 > MAX_CONFIG_BYTES else len(text)
    if size > MAX_CONFIG_BYTES:
        raise InputTooLarge(f"size: {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,} bytes")
    check_yaml_bounds(text)
    return [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d is not None]


class _Open:
    """A collection being scanned: where it started, and how deep its content went."""

    __slots__ = ("anchor", "nodes_before", "depth", "deepest")

    def __init__(self, anchor: str | None, nodes_before: int, depth: int):
        self.anchor = anchor
        self.nodes_before = nodes_before
        self.depth = depth
        self.deepest = depth


def check_yaml_bounds(text: str) -> None:
    """Walk the parser's events (no objects built) and raise InputTooLarge past a bound.

    Each anchored node's expanded size and height are remembered, so an alias costs what
    its target costs: that is what a consumer walking the loaded value pays.
    """
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height in levels)
    stack: list[_Open] = []
    nodes = 0
    aliases_used = False
    loader = _YAML_LOADER(text)
    try:
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                nodes += 1
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 0)
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                nodes += 1
                depth = len(stack) + 1
                if depth > MAX_DEPTH:
                    raise InputTooLarge(f"depth: nesting deeper than {MAX_DEPTH} levels at {_mark(event)}")
                if stack and depth > stack[-1].deepest:
                    stack[-1].deepest = depth
                stack.append(_Open(event.anchor, nodes - 1, depth))
            elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                done = stack.pop()
                if stack and done.deepest > stack[-1].deepest:
                    stack[-1].deepest = done.deepest
                if done.anchor is not None:
                    anchors[done.anchor] = (nodes - done.nodes_before, done.deepest - done.depth + 1)
            elif kind is yaml.AliasEvent:
                aliases_used = True
                size, height = anchors.get(event.anchor, (1, 0))  # unknown: the loader says so
                nodes += size
                reached = len(stack) + height
                if reached > MAX_DEPTH:
                    raise InputTooLarge(f"alias expansion: *{clip(event.anchor, 40)} nests deeper than "
                                        f"{MAX_DEPTH} levels at {_mark(event)}")
                if stack and reached > stack[-1].deepest:
                    stack[-1].deepest = reached
            elif kind is yaml.StreamEndEvent:
                return
            if nodes > MAX_NODES:
                what = "alias expansion" if aliases_used else "nodes"
                raise InputTooLarge(f"{what}: more than {MAX_NODES:,} YAML nodes"
                                    f"{' once aliases are expanded' if aliases_used else ''} at {_mark(event)}")
    finally:
        loader.dispose()


def _mark(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"
