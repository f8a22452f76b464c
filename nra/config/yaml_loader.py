"""Bounds on untrusted configuration: size, YAML nesting depth and alias expansion, and
short reprs for messages.

Every configuration nra reads (a static file, a ConfigMap's `config` text) goes through
`load_yaml_documents` (or nra.config.yaml_reload, which uses the same scan), which refuses:
- text longer than MAX_CONFIG_BYTES, before parsing;
- nesting deeper than MAX_DEPTH (libyaml's composer recurses in C: 50,000 levels crash
  the process, so depth is checked on the parser's events, which are produced iteratively);
- more than MAX_NODES YAML nodes once aliases are expanded (a 433-byte "billion laughs"
  document expands to hundreds of millions of nodes for whoever walks it).

One pass over the parser's events checks the bounds and builds the values (PyYAML's own
constructor only for what the pass does not build: anchors and aliases, tags, merge keys,
and only after the whole text passed the bounds). It stops at the first bound crossed, so a
hostile document is refused in milliseconds, having built at most MAX_NODES values; a
10,000-prefix file takes about 25 ms.

Messages quote user values through `shown` (a repr) or `clip` (text), never whole: a value
may be a 2 MB string or a list that expands to millions of items.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
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
    """Every non-empty YAML document of `text`, within the bounds above: the same values as
    `yaml.load_all(text, CSafeLoader)`.

    Raises InputTooLarge (a bound crossed) or yaml.YAMLError (not YAML).
    """
    return [d for d in scan_yaml(text).docs if d is not None]


def check_size(text: str) -> None:
    size = len(text.encode("utf-8")) if len(text) * 4 > MAX_CONFIG_BYTES else len(text)
    if size > MAX_CONFIG_BYTES:
        raise InputTooLarge(f"size: {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,} bytes")


@dataclass
class ItemLines:
    """A block sequence whose items are one-line scalars, one per line, on consecutive lines
    (`- 10.0.0.0/24`): where it is in the documents and in the text."""

    path: tuple  # document index, then the mapping keys and list indexes down to it
    items: list  # the list itself
    indent: int  # the column of its `-`
    first_line: int
    count: int = 0
    ok: bool = True


@dataclass
class Scanned:
    docs: list[Any]  # every document, None for an empty one
    nodes: int
    sequences: list[ItemLines]  # (when asked for, and the text was built in one pass)


def scan_yaml(text: str, lines: list[str] | None = None) -> Scanned:
    """The documents of `text` within the bounds; with `lines` (the text split at "\n"),
    also the block sequences of one-line scalars and their lines."""
    check_size(text)
    sequences: list[ItemLines] | None = [] if lines is not None else None
    docs, nodes = _scan(text, lines, sequences)
    if docs is None:  # anchors, tags or merge keys: PyYAML's own constructor (bounds checked)
        return Scanned(list(yaml.load_all(text, Loader=_YAML_LOADER)), nodes, [])
    return Scanned(docs, nodes, [s for s in sequences or () if s.ok and s.count])


class _Open:
    """A collection being scanned: where it started, and how deep its content went."""

    __slots__ = ("anchor", "nodes_before", "depth", "deepest")

    def __init__(self, anchor: str | None, nodes_before: int, depth: int):
        self.anchor = anchor
        self.nodes_before = nodes_before
        self.depth = depth
        self.deepest = depth


# What the one-pass builder constructs itself; any other tag (timestamp, binary, set, merge
# `<<`, value `=`, explicit tags) hands the document to PyYAML's constructor.
_STR, _NULL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"
_SCALAR_TAGS = {_STR, _NULL, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"}
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_UNSUPPORTED = object()
_NO_KEY = object()
#: plain scalars longer than this are resolved every time rather than remembered
_MEMO_MAX_LEN = 256
#: plain scalars remembered; past this the memo starts again (a few MB at most)
_MEMO_MAX_ITEMS = 1 << 17
# The same address strings come back at every re-read of a configuration; the values are
# immutable (str, int, float, bool, None), so sharing them is safe. A plain dict: an
# lru_cache costs twice as much per look-up, and one pass over 10,000 scalars matters here.
_plain_memo: dict[str, Any] = {}


def _plain_scalar(value: str) -> Any:
    """A plain (unquoted) scalar's value as PyYAML's SafeLoader constructs it (YAML 1.1:
    `yes` is True, `1:20` is 80), or _UNSUPPORTED."""
    # No implicit type (bool, int, float, null, timestamp, merge, value) has a "/": a CIDR
    # is a string without trying the resolver's regular expressions (a test checks them).
    tag = _STR if "/" in value else _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    if tag == _STR:
        result: Any = value
    elif tag not in _SCALAR_TAGS:
        result = _UNSUPPORTED
    else:
        result = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))
    if len(value) <= _MEMO_MAX_LEN:
        if len(_plain_memo) >= _MEMO_MAX_ITEMS:
            _plain_memo.clear()
        _plain_memo[value] = result
    return result


def plain_scalar_value(text: str) -> tuple[bool, Any]:
    """What PyYAML's SafeLoader makes of `text` written as a plain scalar: (True, the value),
    or (False, None) for a type the one-pass scan leaves to PyYAML (a timestamp, say)."""
    value = _plain_memo.get(text, _UNSUPPORTED)
    if value is _UNSUPPORTED:
        value = _plain_scalar(text)
    return (False, None) if value is _UNSUPPORTED else (True, value)


def _scan(text: str, lines: list[str] | None = None,
          sequences: list[ItemLines] | None = None) -> tuple[list[Any] | None, int]:
    """Walk the parser's events, raise InputTooLarge past a bound, and construct the
    documents on the way: a list of them and the node count; the list is None when the
    text uses what only PyYAML's constructor handles (anchors, aliases, explicit tags, merge
    keys, complex keys). With `lines` and `sequences`: every block sequence built is
    appended to `sequences`, with whether its items are one-line scalars on lines of their
    own (`ok`).

    Checking and building in one pass costs less than PyYAML's constructor alone (its
    composer and constructor run in Python per node). Each anchored node's expanded size and
    height are remembered, so an alias costs what its target costs: that is what a consumer
    walking the loaded value pays.
    """
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height in levels)
    stack: list[_Open] = []
    nodes = 0
    aliases_used = False
    build = True  # until something only PyYAML's constructor handles; the bounds go on
    # the builder: the open containers, and for each its pending key (_NO_KEY: none, or a list)
    docs: list[Any] = []
    values: list[Any] = []
    keys: list[Any] = []
    top: Any = None  # values[-1]
    top_is_list = False
    recording = lines is not None and sequences is not None
    records: list[ItemLines | None] = []  # per open container: its ItemLines, if a block sequence
    memo = _plain_memo
    unsupported, no_key = _UNSUPPORTED, _NO_KEY
    scalar_event, seq_start, map_start = yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent
    seq_end, map_end = yaml.SequenceEndEvent, yaml.MappingEndEvent
    loader = _YAML_LOADER(text)
    get_event = loader.get_event
    try:
        while True:
            event = get_event()
            kind = type(event)
            if kind is scalar_event:
                nodes += 1
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 0)
                    build = False
                if not build:
                    pass
                elif event.tag is not None and event.tag != "!":
                    build = False
                else:
                    value = event.value
                    if event.implicit[0]:
                        value = memo.get(value, no_key)
                        if value is no_key:
                            value = _plain_scalar(event.value)
                    if value is unsupported:
                        build = False
                    elif top_is_list:
                        if recording and (record := records[-1]) is not None and record.ok:
                            _record_item(record, event, lines)
                        top.append(value)
                    elif not values:
                        docs.append(value)
                    elif keys[-1] is no_key:
                        keys[-1] = value
                    else:
                        top[keys[-1]] = value
                        keys[-1] = no_key
            elif kind is seq_start or kind is map_start:
                nodes += 1
                depth = len(stack) + 1
                if depth > MAX_DEPTH:
                    raise InputTooLarge(f"depth: nesting deeper than {MAX_DEPTH} levels at {_mark(event)}")
                if stack and depth > stack[-1].deepest:
                    stack[-1].deepest = depth
                stack.append(_Open(event.anchor, nodes - 1, depth))
                if build:
                    if event.anchor is not None or (event.tag is not None and event.tag != "!") or \
                            (not top_is_list and values and keys[-1] is no_key):
                        build = False  # anchored, tagged, or a mapping/sequence as a key
                    else:
                        if recording:
                            if top_is_list and records[-1] is not None:
                                records[-1].ok = False  # a list that holds a container
                            records.append(_new_record(event, kind is seq_start, docs, values, keys, sequences))
                        top = {} if kind is map_start else []
                        top_is_list = kind is seq_start
                        values.append(top)
                        keys.append(no_key)
                        if records and records[-1] is not None:
                            records[-1].items = top
            elif kind is seq_end or kind is map_end:
                done = stack.pop()
                if stack and done.deepest > stack[-1].deepest:
                    stack[-1].deepest = done.deepest
                if done.anchor is not None:
                    anchors[done.anchor] = (nodes - done.nodes_before, done.deepest - done.depth + 1)
                if build:
                    keys.pop()
                    value = values.pop()
                    if recording:
                        records.pop()
                    if not values:
                        docs.append(value)
                        top, top_is_list = None, False
                        continue
                    top = values[-1]
                    top_is_list = type(top) is list
                    if top_is_list:
                        top.append(value)
                    elif keys[-1] is no_key:
                        build = False  # (cannot happen: a container key stops the build at its start)
                    else:
                        top[keys[-1]] = value
                        keys[-1] = no_key
            elif kind is yaml.AliasEvent:
                aliases_used = True
                build = False
                size, height = anchors.get(event.anchor, (1, 0))  # unknown: the loader says so
                nodes += size
                reached = len(stack) + height
                if reached > MAX_DEPTH:
                    raise InputTooLarge(f"alias expansion: *{clip(event.anchor, 40)} nests deeper than "
                                        f"{MAX_DEPTH} levels at {_mark(event)}")
                if stack and reached > stack[-1].deepest:
                    stack[-1].deepest = reached
            elif kind is yaml.StreamEndEvent:
                return (docs if build else None), nodes
            if nodes > MAX_NODES:
                _too_many(nodes, aliases_used, event)
    finally:
        loader.dispose()


def _new_record(event: Any, is_sequence: bool, docs: list, values: list, keys: list,
                sequences: list[ItemLines]) -> ItemLines | None:
    if not is_sequence or event.flow_style:
        return None
    path = (len(docs), *(len(v) if type(v) is list else k for v, k in zip(values, keys)))
    record = ItemLines(path, [], event.start_mark.column, event.start_mark.line)
    sequences.append(record)
    return record


def _record_item(record: ItemLines, event: Any, lines: list[str]) -> None:
    """Count one scalar item of a block sequence, or mark the sequence not one-line items:
    the item must be on the next line, alone on it after `-` and one space, on one line."""
    mark = event.start_mark
    line = mark.line
    if (line == record.first_line + record.count and mark.column == record.indent + 2
            and event.end_mark.line == line
            and lines[line].startswith(" " * record.indent + "- ")):
        record.count += 1
    else:
        record.ok = False


def _too_many(nodes: int, aliases_used: bool, event: Any) -> None:
    what = "alias expansion" if aliases_used else "nodes"
    raise InputTooLarge(f"{what}: more than {MAX_NODES:,} YAML nodes"
                        f"{' once aliases are expanded' if aliases_used else ''} at {_mark(event)}")


def _mark(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"
