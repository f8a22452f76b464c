"""The rules pointing at nra's tables, held as the kernel's message bytes. Pure: no I/O.

100,000 `ip rule from <prefix> lookup T proto nra` differ only in their source, so a rule is
kept as two parts: its *template*, the kernel's message body with the source's address and
length zeroed (one bytes object shared by every rule of that shape), and its *member*, the
source as one int (address << 8 | length; 0 for `from all`). A rule is decoded
(nra.kernel.codec.decode_rule) only when something asks for it: a rule that goes (its
exact bytes are the template with the member put back), anyone else's rule, a leftover,
a listing (conntrack mode's few rules, tests); the planner compares members, at C speed,
against the desired ones.

Held as decoded KernelRules, 100,000 rules took ~50 MiB (the message bytes, a KernelRule and
an IPv4Network each, their keys and three dicts); as members of a template, one set of
ints (~7 MiB). docs/performance.md, "Rules mode within issue 19's RSS".

`RuleBook` is the mutable view (a full read builds one; the kept view, nra.kernel.rules,
changes it with each notification); `RuleSet` is one read of it, what KernelState.rules
holds: it shares the book's base sets, which the book no longer changes once shared (later
notifications go to a few members added and removed beside them: Members), so a read
never sees a later notification, a change of one rule at 100,000 copies nothing, and the
planner's desired members (the same overlay over the same base, once the kernel holds
them) are compared over the few.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import AbstractSet, Container, Iterable, Iterator, Mapping

from nra.config.intent import IPNetwork
from nra.kernel.codec import FIB_RULE_HDR, FRA_SRC, NLA_HDR, attributes, decode_rule, rule_owner
from nra.kernel.model import NRA_PROTOCOL, KernelRule

#: what a template's rules are to nra
OURS, LEFTOVER, FOREIGN = "ours", "leftover", "foreign"
_SRC_LEN = 2  # fib_rule_hdr: family, dst_len, src_len, ...
_COMPACT_MIN = 1024  # changes a group keeps apart from its base before making a new one
_SRC_HEADER = NLA_HDR.pack(NLA_HDR.size + 4, FRA_SRC), NLA_HDR.pack(NLA_HDR.size + 16, FRA_SRC)


def member_of(src: IPNetwork | None) -> int:
    """A source as a member: address << 8 | length; `from all` (None, or a /0) is 0, as the
    kernel lists it (no FRA_SRC)."""
    if src is None or not src.prefixlen:
        return 0
    return int(src.network_address) << 8 | src.prefixlen


def prefix_of(family: int, member: int) -> IPNetwork:
    """The source a member stands for (member_of's inverse; 0 is 0.0.0.0/0 or ::/0)."""
    return (IPv4Network if family == 4 else IPv6Network)((member >> 8, member & 0xFF))


@dataclass(frozen=True, eq=False)
class Members:
    """A set of members as `base` with `added` and without `removed` (`removed` within
    `base`, `added` outside it). The kernel view's rules and the planner's desired ones are
    both such overlays: after a change of a few rules at 100,000 they share one base set
    and differ by a few members, so neither side copies 100,000 and their diff is set
    operations over the few (a base is never changed once shared)."""

    base: AbstractSet[int]
    added: AbstractSet[int] = frozenset()
    removed: AbstractSet[int] = frozenset()

    def __len__(self) -> int:
        return len(self.base) - len(self.removed) + len(self.added)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __contains__(self, member: object) -> bool:
        return member in self.added or (member in self.base and member not in self.removed)

    def __iter__(self) -> Iterator[int]:
        removed = self.removed
        yield from (m for m in self.base if m not in removed) if removed else self.base
        yield from self.added

    def plain(self) -> AbstractSet[int]:
        """As one set (the base itself when nothing is added or removed; else a copy)."""
        if not self.added and not self.removed:
            return self.base
        return (set(self.base) - self.removed) | self.added

    def missing_from(self, kernel: AbstractSet[int] | Members) -> set[int]:
        """The members `kernel` lacks (over a shared base: from the few added and removed)."""
        if isinstance(kernel, Members):
            if kernel.base is self.base:
                return (set(self.added) - kernel.added) | (set(kernel.removed) - self.removed)
            kernel = kernel.plain()
        if kernel is self.base:
            return set(self.added)
        return (self.added - kernel) | ((self.base - kernel) - self.removed)

    def unwanted_in(self, kernel: AbstractSet[int] | Members) -> set[int]:
        """The members of `kernel` this does not hold."""
        if isinstance(kernel, Members):
            if kernel.base is self.base:
                return (set(kernel.added) - self.added) | (set(self.removed) - kernel.removed)
            kernel = kernel.plain()
        if kernel is self.base:
            return set(self.removed)
        return ((kernel - self.base) - self.added) | (kernel & self.removed)

    def changed(self, gone: AbstractSet[int], came: AbstractSet[int]) -> Members:
        """These members without `gone` and with `came`, over the same base."""
        base = self.base
        return Members(base, frozenset((set(self.added) | (came - base)) - gone),
                       frozenset((set(self.removed) | (gone & base)) - came))


NO_MEMBERS = Members(frozenset())


class _Group:
    """One template's members in a RuleBook: a base set, changed in place until a RuleSet
    shares it (`shared`), then through `adds` and `removes`."""

    __slots__ = ("base", "adds", "removes", "shared")

    def __init__(self) -> None:
        self.base: set[int] = set()
        self.adds: set[int] = set()
        self.removes: set[int] = set()
        self.shared = False

    def __contains__(self, member: int) -> bool:
        return member in self.adds or (member in self.base and member not in self.removes)

    def add(self, member: int) -> None:
        if not self.shared:
            self.base.add(member)
        elif member in self.removes:
            self.removes.discard(member)
        elif member not in self.base:
            self.adds.add(member)

    def discard(self, member: int) -> None:
        if not self.shared:
            self.base.discard(member)
        elif member in self.adds:
            self.adds.discard(member)
        elif member in self.base:
            self.removes.add(member)

    def members(self) -> Members:
        """As of now (shared from here on). Changes past an eighth of the base make a new base
        (one copy, after a large change) rather than a long list of them."""
        if len(self.adds) + len(self.removes) > max(_COMPACT_MIN, len(self.base) >> 3):
            self.base = (self.base - self.removes) | self.adds
            self.adds, self.removes = set(), set()
        self.shared = True
        return Members(self.base, frozenset(self.adds), frozenset(self.removes))


@dataclass(frozen=True, slots=True, eq=False)
class Shape:
    """One template: where a member's address goes in it, and the rule it is without a source."""

    template: bytes
    at: int  # offset of FRA_SRC's payload (-1: the template has none)
    size: int  # the payload's size: 4 (IPv4) or 16 (IPv6)
    rule: KernelRule  # the template decoded: family, priority, table, marks, extras; src None
    kind: str  # OURS, LEFTOVER or FOREIGN

    def body(self, member: int) -> bytes:
        """The kernel's message body of the rule with this member (its exact bytes)."""
        t = self.template
        if self.at < 0:
            return t[:_SRC_LEN] + bytes((member & 0xFF,)) + t[_SRC_LEN + 1:]
        return (t[:_SRC_LEN] + bytes((member & 0xFF,)) + t[_SRC_LEN + 1:self.at]
                + (member >> 8).to_bytes(self.size, "big") + t[self.at + self.size:])

    def decode(self, member: int) -> KernelRule:
        return decode_rule(self.body(member))

    def text(self, member: int) -> str:
        """`IPv4 from 192.0.2.0/24 priority 20`, without decoding the whole rule (a delete of
        50,000 rules is 50,000 notifications, each told as this)."""
        if member & 0xFF and self.at >= 0:
            address = (IPv4Address if self.size == 4 else IPv6Address)(member >> 8)
            src = f"{address}/{member & 0xFF}"
        else:
            src = "all"
        return f"IPv{self.rule.family} from {src} priority {self.rule.priority}"


def _src_offset(body: bytes) -> tuple[int, int]:
    """(offset, size) of FRA_SRC's payload in a rule body; (-1, 0) when it has none."""
    at = FIB_RULE_HDR.size
    for kind, payload in attributes(body, FIB_RULE_HDR.size, len(body)):
        length = NLA_HDR.unpack_from(body, at)[0]
        if kind == FRA_SRC:
            return at + NLA_HDR.size, len(payload)
        at += (length + 3) & ~3
    return -1, 0


class RuleSet:
    """The rules pointing at the tables (TABLE_WEIGHT, and the return path's `also`) as of
    one read. Iterating decodes every rule (conntrack mode's few, tests, tools); the rules
    return path reads `groups()` instead. `loose` are rules given decoded (a test's, the
    fake kernel's), each one as it is."""

    __slots__ = ("_groups", "_shapes", "duplicates", "loose")

    def __init__(self, groups: Mapping[bytes, Members] = {}, shapes: Mapping[bytes, Shape] = {},
                 duplicates: tuple[bytes, ...] = (), loose: tuple[KernelRule, ...] = ()):
        self._groups = groups
        self._shapes = shapes
        #: bodies of second copies of a rule in the kernel (full reads find them)
        self.duplicates = duplicates
        self.loose = loose

    @classmethod
    def of(cls, rules: Iterable[KernelRule] | RuleSet) -> RuleSet:
        """`rules` as a RuleSet (a tuple of decoded rules: each a loose one)."""
        return rules if isinstance(rules, RuleSet) else cls(loose=tuple(rules))

    def groups(self) -> Iterator[tuple[Shape, Members]]:
        """Each template's shape and its members."""
        for template, members in self._groups.items():
            if members:
                yield self._shapes[template], members

    def duplicate_rules(self) -> list[KernelRule]:
        return list(map(decode_rule, self.duplicates))

    def __len__(self) -> int:
        return sum(map(len, self._groups.values())) + len(self.duplicates) + len(self.loose)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[KernelRule]:
        for shape, members in self.groups():
            for member in sorted(members):
                yield shape.decode(member)
        yield from map(decode_rule, self.duplicates)
        yield from self.loose

    def tables(self) -> set[int]:
        """The tables the rules point at (no rule decoded)."""
        return {shape.rule.table for shape, _ in self.groups()} | {r.table for r in self.loose} | {
            rule_owner(body)[0] for body in self.duplicates}

    def families(self) -> Counter:
        """How many rules of each family (4, 6)."""
        counts: Counter = Counter()
        for shape, members in self.groups():
            counts[shape.rule.family] += len(members)
        counts.update(r.family for r in self.loose)
        counts.update(decode_rule(body).family for body in self.duplicates)
        return counts

    def of_tables(self, tables: Container[int]) -> RuleSet:
        """The rules pointing at `tables` only (sharing this set's members)."""
        shapes = {t: s for t, s in self._shapes.items() if s.rule.table in tables}
        return RuleSet({t: m for t, m in self._groups.items() if t in shapes}, shapes,
                       tuple(b for b in self.duplicates if rule_owner(b)[0] in tables),
                       tuple(r for r in self.loose if r.table in tables))


class RuleBook:
    """The rules of `table` and `also` (and nra's leftovers pointing elsewhere), changed one
    message body at a time: what a full read builds and the notifications keep in step.

    A rule is present or absent by its body: add() and discard() of the same body undo each
    other whatever their order relative to a dump (the kernel's dump and its notifications
    carry the same bytes). Duplicates (the same rule twice: `ip rule add` without EXCL) are
    one member; a full read (`dumped`) lists the second copies in `duplicates`."""

    def __init__(self, table: int, also: Container[int] = ()):
        self.table = table
        self.also = also
        self._shapes: dict[bytes, Shape] = {}
        self._groups: dict[bytes, _Group] = {}
        self._duplicates: list[bytes] = []
        self._leftovers: dict[bytes, KernelRule] = {}
        self._snapshot: tuple[RuleSet, tuple[KernelRule, ...]] | None = None
        self._guess: dict[int, tuple[int, int]] = {}  # body length -> the last template's (at, size)

    def split(self, body: bytes) -> tuple[Shape, int]:
        """A body's template (interned) and member."""
        guess = self._guess.get(len(body))
        if guess is not None:
            at, size = guess
            if at >= 0 and body[at - NLA_HDR.size:at] == _SRC_HEADER[size == 16]:
                template = body[:_SRC_LEN] + b"\0" + body[_SRC_LEN + 1:at] + bytes(size) + body[at + size:]
            else:
                template = body[:_SRC_LEN] + b"\0" + body[_SRC_LEN + 1:]
            # (equal bytes to a template whose layout was walked: the same layout)
            shape = self._shapes.get(template)
            if shape is not None and shape.at == at:
                return shape, self._member(body, shape)
        at, size = _src_offset(body)
        if at >= 0:
            template = body[:_SRC_LEN] + b"\0" + body[_SRC_LEN + 1:at] + bytes(size) + body[at + size:]
        else:
            template = body[:_SRC_LEN] + b"\0" + body[_SRC_LEN + 1:]
        shape = self._shapes.get(template)
        if shape is None:
            table, protocol = rule_owner(template)
            kind = (OURS if table == self.table or table in self.also
                    else LEFTOVER if protocol == NRA_PROTOCOL else FOREIGN)
            shape = self._shapes[template] = Shape(template, at, size, decode_rule(template), kind)
        self._guess[len(body)] = (at, size)
        return shape, self._member(body, shape)

    @staticmethod
    def _member(body: bytes, shape: Shape) -> int:
        if shape.at < 0:
            return body[_SRC_LEN]
        return int.from_bytes(body[shape.at:shape.at + shape.size], "big") << 8 | body[_SRC_LEN]

    def _group(self, template: bytes) -> _Group:
        group = self._groups.get(template)
        if group is None:
            group = self._groups[template] = _Group()
        return group

    def add(self, body: bytes, dumped: bool = False) -> tuple[Shape, int] | None:
        """One rule the kernel has (`dumped`: listed by a full read, where a second copy is a
        duplicate); None for anyone else's rule pointing elsewhere."""
        shape, member = self.split(body)
        if shape.kind == FOREIGN:
            return None
        self._snapshot = None
        if shape.kind == LEFTOVER:
            self._leftovers[body] = decode_rule(body)
        else:
            group = self._group(shape.template)
            if dumped and member in group:
                self._duplicates.append(body)
            group.add(member)
        return shape, member

    def discard(self, body: bytes) -> tuple[Shape, int] | None:
        """One rule the kernel no longer has (one copy of it)."""
        shape, member = self.split(body)
        if shape.kind == FOREIGN:
            return None
        self._snapshot = None
        if shape.kind == LEFTOVER:
            self._leftovers.pop(body, None)
        elif body in self._duplicates:
            self._duplicates.remove(body)
        elif shape.template in self._groups:
            self._groups[shape.template].discard(member)
        return shape, member

    def snapshot(self) -> tuple[RuleSet, tuple[KernelRule, ...]]:
        """(the rules, nra's leftovers elsewhere) as of now; built again only after a change."""
        if self._snapshot is None:
            groups = {t: g.members() for t, g in self._groups.items()}
            shapes = {t: self._shapes[t] for t in groups}
            self._snapshot = (RuleSet(groups, shapes, tuple(self._duplicates)), tuple(self._leftovers.values()))
        return self._snapshot

    def adopt(self, members: AbstractSet[int]) -> bool:
        """Hold `members` (someone else's set, never changed by anyone: the planner's desired
        members once nra has written them) for the one template of nra's whose members are
        exactly these, instead of the equal set the notifications built; True if one was.
        A first start in rules mode writes 100,000 rules: the view's 100,000 ints were made
        one notification at a time during the write, among the write's own short-lived
        objects, and held with the planner's equal set (two sets of 100,000, and arenas of
        the write kept); the planner's were made before it, in one go. From here on the set
        is shared (docs/performance.md, "Rules mode's first start at 100,000 prefixes")."""
        for template, group in self._groups.items():
            if self._shapes[template].kind != OURS or group.base is members:
                continue
            now = (group.base - group.removes) | group.adds if group.adds or group.removes else group.base
            if len(now) == len(members) and now == members:
                group.base, group.adds, group.removes, group.shared = members, set(), set(), True
                self._snapshot = None
                return True
        return False

    def expect(self, body: bytes) -> None:
        """A rule nra is about to write: its template's shape and its group are made now, not
        on its first notification (in the middle of the write, where they would stay among
        its short-lived objects)."""
        shape, _ = self.split(body)
        if shape.kind == OURS:
            self._group(shape.template)

    def merge(self, other: RuleBook) -> None:
        """`other`'s rules added to this book's (a dump of another family: no rule in common)."""
        self._snapshot = None
        self._shapes.update(other._shapes)
        for template, group in other._groups.items():
            if template in self._groups:
                for member in group.members():
                    self._groups[template].add(member)
            else:
                self._groups[template] = group  # (taken: `other` is done with)
        self._duplicates += other._duplicates
        self._leftovers.update(other._leftovers)

    def templates(self) -> int:
        """How many templates are held (a test's measure: one per shape, not per rule)."""
        return len(self._shapes)
