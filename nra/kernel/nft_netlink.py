"""nf_tables over netlink, for what libnftables does slowly or cannot say: element changes
in bulk, the table's flags, the ruleset generation, and change notifications. Encoded and
decoded with nra's one netlink codec (nra.kernel.codec: messages, attributes) and sent
through its one socket type (nra.kernel.socket.NetlinkSocket of NETLINK_NETFILTER).

libnftables loads every element of an interval set before it adds one (to merge and check
overlaps), so one prefix more costs a dump of all of them: 80 ms at 10,000 prefixes, seconds
at 100,000. nra's prefixes are already collapsed and disjoint, so it encodes the kernel's
own interval representation itself (a start element, and an end element one past the
prefix flagged INTERVAL_END) and sends every element change of a reconcile (prefixes, links,
routers, and the table's flags) as one batch: one transaction, applied whole or not at all.
Pure: the socket is the caller's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, Mapping, Sequence

from nra.kernel.codec import (
    NLA_F_NESTED,
    NLA_HDR,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_HDR,
    Message,
    attribute,
    attributes,
    messages,
    request,
)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFNLGRP_NFTABLES = 7
NFPROTO_INET = 1
# attributes
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_USERDATA = 1, 2, 3, 6
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFTA_GEN_ID, NFTA_GEN_PROC_PID = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_USERDATA = 7
NFTNL_UDATA_RULE_COMMENT = 0  # libnftnl's user data TLV of a rule's comment
NFTA_CHAIN_NAME = 3
NFTA_SET_NAME, NFTA_SET_FLAGS = 2, 3
NFT_SET_ANONYMOUS, NFT_SET_MAP = 0x1, 0x4
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFT_REG_VERDICT = 0
NFT_JUMP, NFT_GOTO = -3, -4
NLM_F_APPEND = 0x800
NFT_SET_ELEM_INTERVAL_END = 1
# libnftnl's element user data "this interval has no end" (it runs to the top of the space),
# so that `nft list` shows it as the prefix it is
UDATA_INTERVAL_OPEN = bytes([1, 4]) + struct.pack("<I", 1)
IFNAMSIZ = 16

NFGENMSG = struct.Struct("!BBH")  # family, version, resource id (big endian)
BE32 = struct.Struct("!I")
BE64 = struct.Struct("!Q")
# elements per message: a netlink message must stay well under 64 KiB of attributes
ELEMENTS_PER_MESSAGE = 1000


def nested(kind: int, *parts: bytes) -> bytes:
    return attribute(kind | NLA_F_NESTED, b"".join(parts))


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """One nfnetlink message: the nfgenmsg header, then `body` (attributes)."""
    return request(kind, flags, seq, NFGENMSG.pack(family, 0, res_id) + body)


def _nft_type(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def message_attributes(message: Message) -> dict[int, bytes]:
    """The top-level attributes of an nfnetlink message (after its nfgenmsg)."""
    return dict(attributes(message.data, message.body + NFGENMSG.size, message.end))


# -- elements (pure) ----------------------------------------------------------------------


def _element(key: bytes, flags: int = 0, data: bytes = b"", udata: bytes = b"") -> bytes:
    parts = [nested(NFTA_SET_ELEM_KEY, attribute(NFTA_DATA_VALUE, key))]
    if flags:
        parts.append(attribute(NFTA_SET_ELEM_FLAGS, struct.pack("!I", flags)))
    if data:
        parts.append(nested(NFTA_SET_ELEM_DATA, data))
    if udata:
        parts.append(attribute(NFTA_SET_ELEM_USERDATA, udata))
    return nested(NFTA_LIST_ELEM, *parts)


def _headers(key_length: int, flags: int) -> bytes:
    """What comes before the key in an element with only a key (and flags): the same bytes
    for every element of a set, so 200,000 elements cost a concatenation each, not six
    struct packs (the attributes are 4-byte aligned: IPv4 and IPv6 keys need no padding)."""
    value = NLA_HDR.size + key_length
    key = NLA_HDR.size + value
    flag_attr = NLA_HDR.size + 4 if flags else 0
    return (NLA_HDR.pack(NLA_HDR.size + key + flag_attr, NFTA_LIST_ELEM | NLA_F_NESTED)
            + NLA_HDR.pack(key, NFTA_SET_ELEM_KEY | NLA_F_NESTED) + NLA_HDR.pack(value, NFTA_DATA_VALUE))


_START = {w: _headers(w // 8, 0) for w in (32, 128)}
_END = {w: _headers(w // 8, NFT_SET_ELEM_INTERVAL_END) for w in (32, 128)}
_END_FLAGS = attribute(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))


def interval_elements(low: int, high: int, width: int) -> list[bytes]:
    """The addresses low..high (ints, of `width` bits) as the kernel's interval set holds
    them: the first address, and the one after the last flagged as an interval end (none at
    the top of the space)."""
    start = low.to_bytes(width // 8, "big")
    after = high + 1
    if after >> width:
        return [_element(start, udata=UDATA_INTERVAL_OPEN)]
    return [_START[width] + start, _END[width] + after.to_bytes(width // 8, "big") + _END_FLAGS]


class IntervalElements:
    """A set's elements for these intervals (and the floor first, if given), encoded as a
    batch takes them, ELEMENTS_PER_MESSAGE at a time: not all at once (a rebuild at 100,000
    prefixes made 200,000 small bytes objects together, ~10 MB, and a delete of half
    100,000; the allocator's arenas they grew outlived them in the RSS). Iterable again."""

    __slots__ = ("intervals", "width", "floor")

    def __init__(self, intervals: Sequence[tuple[int, int]], width: int, floor: bytes | None = None):
        self.intervals, self.width, self.floor = intervals, width, floor

    def __bool__(self) -> bool:
        return bool(self.intervals) or self.floor is not None

    def __iter__(self) -> Iterator[bytes]:
        if self.floor is not None:
            yield self.floor
        width = self.width
        for low, high in self.intervals:
            yield from interval_elements(low, high, width)


def interval_floor(version: int) -> bytes:
    """The interval end at address 0 that nft puts first in every interval set (everything
    below the first start is outside the set); idempotent to add again."""
    return _element(bytes(4 if version == 4 else 16), NFT_SET_ELEM_INTERVAL_END)


def ifname_element(name: str) -> bytes:
    """An element of an `ifname` set (the name, NUL-padded to IFNAMSIZ)."""
    return _element(name.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0"))


def goto_element(key: bytes, chain: str | None) -> bytes:
    """A verdict map element `key : goto chain` (chain None: the key alone, for a delete);
    `key` as the kernel holds it (nft_table.router_key_bytes)."""
    if chain is None:
        return _element(key)
    return _element(key, data=_verdict(NFT_GOTO, chain))


def interval_goto_elements(low: int, high: int, width: int, chain: str | None) -> list[bytes]:
    """An interval of a verdict map: its start with `goto chain` (chain None: the key alone,
    for a delete), and the interval end (none at the top of the space)."""
    start = low.to_bytes(width // 8, "big")
    data = _verdict(NFT_GOTO, chain) if chain is not None else b""
    after = high + 1
    if after >> width:
        return [_element(start, data=data, udata=UDATA_INTERVAL_OPEN)]
    return [_element(start, data=data), _END[width] + after.to_bytes(width // 8, "big") + _END_FLAGS]


def _verdict(code: int, chain: str) -> bytes:
    return nested(NFTA_DATA_VERDICT, attribute(NFTA_VERDICT_CODE, struct.pack("!i", code)),
                  attribute(NFTA_VERDICT_CHAIN, _string(chain)))


def rule_comment(text: str) -> bytes:
    """A rule's NFTA_RULE_USERDATA holding a comment, as libnftnl encodes it (what
    `nft add rule ... comment "text"` writes): one TLV, NFTNL_UDATA_RULE_COMMENT."""
    value = text.encode() + b"\0"
    return bytes((NFTNL_UDATA_RULE_COMMENT, len(value))) + value


def jump_rule_message(table: str, chain: str, target: str, seq: int, comment: str = "") -> bytes:
    """NEWRULE appending `jump target` to a chain: one immediate expression into the
    verdict register (what nft compiles `jump target` to), with `comment` (nra's digest of
    the rule, see nft_table.Rule)."""
    expression = nested(NFTA_LIST_ELEM, attribute(NFTA_EXPR_NAME, _string("immediate")), nested(
        NFTA_EXPR_DATA, attribute(NFTA_IMMEDIATE_DREG, BE32.pack(NFT_REG_VERDICT)),
        nested(NFTA_IMMEDIATE_DATA, _verdict(NFT_JUMP, target))))
    return message(_nft_type(NFT_MSG_NEWRULE), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, seq,
                   NFPROTO_INET, attribute(NFTA_RULE_TABLE, _string(table)) + attribute(NFTA_RULE_CHAIN, _string(chain))
                   + nested(NFTA_RULE_EXPRESSIONS, expression)
                   + (attribute(NFTA_RULE_USERDATA, rule_comment(comment)) if comment else b""))


def delete_rule_message(table: str, chain: str, handle: int, seq: int) -> bytes:
    """DELRULE of one rule, by its handle."""
    return message(_nft_type(NFT_MSG_DELRULE), NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET,
                   attribute(NFTA_RULE_TABLE, _string(table)) + attribute(NFTA_RULE_CHAIN, _string(chain))
                   + attribute(NFTA_RULE_HANDLE, BE64.pack(handle)))


def table_flags_message(table: str, flags: int, seq: int) -> bytes:
    """NEWTABLE of an existing table with these flags: the kernel updates them in place
    (clearing `dormant` turns the table's hooks on again)."""
    return message(_nft_type(NFT_MSG_NEWTABLE), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq, NFPROTO_INET,
                   attribute(NFTA_TABLE_NAME, _string(table)) + attribute(NFTA_TABLE_FLAGS, BE32.pack(flags)))


def element_messages(table: str, set_name: str, elements: Iterable[bytes], delete: bool,
                     first_seq: int) -> list[bytes]:
    """NEWSETELEM/DELSETELEM messages for these elements, ELEMENTS_PER_MESSAGE at most each
    (the elements taken a message's worth at a time: see IntervalElements)."""
    msgs = []
    kind = _nft_type(NFT_MSG_DELSETELEM if delete else NFT_MSG_NEWSETELEM)
    flags = NLM_F_REQUEST | NLM_F_ACK | (0 if delete else NLM_F_CREATE)
    head = attribute(NFTA_SET_ELEM_LIST_TABLE, _string(table)) + attribute(NFTA_SET_ELEM_LIST_SET, _string(set_name))
    pending = iter(elements)
    while chunk := tuple(islice(pending, ELEMENTS_PER_MESSAGE)):
        body = head + nested(NFTA_SET_ELEM_LIST_ELEMENTS, *chunk)
        msgs.append(message(kind, flags, first_seq + len(msgs), NFPROTO_INET, body))
    return msgs


@dataclass(frozen=True)
class ElementOp:
    """Elements of one set to add or delete, encoded (or IntervalElements: as the batch
    takes them)."""
    set_name: str
    elements: tuple[bytes, ...] | IntervalElements
    delete: bool = False


def batch(table: str, ops: Iterable[ElementOp], first_seq: int, table_flags: int | None = None,
          jumps: Sequence[tuple[str, str, str]] = (), delete_rules: Sequence[tuple[str, int]] = ()) -> tuple[bytes, list[int]]:
    """One transaction: BATCH_BEGIN, the rules (chain, handle) to delete, the table's flags (if
    given), the element messages in order, the `jump` rules (chain, target, comment) appended
    last, BATCH_END. Returns the bytes and the sequence numbers whose acks to wait for."""
    seq = first_seq
    parts = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES)]
    acked: list[int] = []
    seq += 1
    for chain, handle in delete_rules:
        parts.append(delete_rule_message(table, chain, handle, seq))
        acked.append(seq)
        seq += 1
    if table_flags is not None:
        parts.append(table_flags_message(table, table_flags, seq))
        acked.append(seq)
        seq += 1
    for op in ops:
        if not op.elements:
            continue
        msgs = element_messages(table, op.set_name, op.elements, op.delete, seq)
        acked += range(seq, seq + len(msgs))
        seq += len(msgs)
        parts += msgs
    for chain, target, comment in jumps:
        parts.append(jump_rule_message(table, chain, target, seq, comment))
        acked.append(seq)
        seq += 1
    parts.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES))
    return b"".join(parts), acked


def delete_table(table: str, first_seq: int) -> tuple[bytes, list[int]]:
    """The transaction that deletes the table (with everything in it), as batch() gives it."""
    return b"".join((message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first_seq, 0, b"", NFNL_SUBSYS_NFTABLES),
                     message(_nft_type(NFT_MSG_DELTABLE), NLM_F_REQUEST | NLM_F_ACK, first_seq + 1, NFPROTO_INET,
                             attribute(NFTA_TABLE_NAME, _string(table))),
                     message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, first_seq + 2, 0, b"", NFNL_SUBSYS_NFTABLES))), \
        [first_seq + 1]


# -- queries (the socket is nra.kernel.socket.NetlinkSocket) ------------------------------


def encode_getgen(seq: int) -> bytes:
    return message(_nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, b"")


def decode_generation(message: Message) -> int | None:
    """The ruleset generation id of a NEWGEN reply (None: another message)."""
    if message.kind != _nft_type(NFT_MSG_NEWGEN):
        return None
    return BE32.unpack(message_attributes(message)[NFTA_GEN_ID])[0]


def encode_gettable(table: str, seq: int) -> bytes:
    return message(_nft_type(NFT_MSG_GETTABLE), NLM_F_REQUEST, seq, NFPROTO_INET,
                   attribute(NFTA_TABLE_NAME, _string(table)))


def decode_table_flags(message: Message) -> int | None:
    """The flags of a NEWTABLE reply (None: another message). Read here, not from
    libnftables' listing: nft 1.0.6 lists a dormant table's flags as garbage in JSON."""
    if message.kind != _nft_type(NFT_MSG_NEWTABLE):
        return None
    found = message_attributes(message)
    return BE32.unpack(found[NFTA_TABLE_FLAGS])[0] if NFTA_TABLE_FLAGS in found else 0


# -- notifications ------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """One set element of a notification: its key, its flags, the chain of its verdict."""
    key: bytes
    flags: int = 0
    chain: str | None = None


@dataclass(frozen=True)
class ElementChange:
    """Elements a transaction added to or deleted from one set."""
    table: str
    set_name: str
    delete: bool
    elements: tuple[Element, ...]


@dataclass(frozen=True)
class ObjectChange:
    """A chain, rule or set another transaction made or deleted in a table: `kind` is
    "chain", "rule" or "set"; a rule's `chain` and `handle`; a set's flags (NFT_SET_*)."""
    kind: str
    delete: bool
    table: str
    name: str = ""
    chain: str = ""
    handle: int = 0
    flags: int = 0


_OBJECT_KINDS = {NFT_MSG_NEWCHAIN: ("chain", False), NFT_MSG_DELCHAIN: ("chain", True),
                 NFT_MSG_NEWRULE: ("rule", False), NFT_MSG_DELRULE: ("rule", True),
                 NFT_MSG_NEWSET: ("set", False), NFT_MSG_DELSET: ("set", True)}


def decode_object(kind: int, table: str, found: Mapping[int, bytes]) -> ObjectChange | None:
    """A chain, rule or set notification (None: another kind of object, one nra does not follow)."""
    if kind not in _OBJECT_KINDS:
        return None
    what, delete = _OBJECT_KINDS[kind]
    if what == "rule":
        handle = BE64.unpack(found[NFTA_RULE_HANDLE])[0] if NFTA_RULE_HANDLE in found else 0
        return ObjectChange("rule", delete, table, chain=_name(found.get(NFTA_RULE_CHAIN, b"")), handle=handle)
    if what == "chain":
        return ObjectChange("chain", delete, table, _name(found.get(NFTA_CHAIN_NAME, b"")))
    flags = BE32.unpack(found[NFTA_SET_FLAGS])[0] if NFTA_SET_FLAGS in found else 0
    return ObjectChange("set", delete, table, _name(found.get(NFTA_SET_NAME, b"")), flags=flags)


@dataclass(frozen=True)
class Transaction:
    """What one nf_tables transaction (ended by its NEWGEN notification) touched."""
    generation: int
    pid: int  # the process that made it
    tables: frozenset[str]  # tables it changed (or deleted)
    elements: tuple[ElementChange, ...] = ()  # its element changes, in order
    structure: frozenset[str] = frozenset()  # tables whose chains, rules or sets it changed (or deleted)
    flags: Mapping[str, int] | None = None  # tables whose flags it set, to what
    # its chain, rule and set changes, in order (None in the list: one of another kind, such
    # as a stateful object or a flowtable, that nra does not follow)
    objects: tuple[ObjectChange | None, ...] = ()
    # tables it deleted and did not touch again afterwards (`delete table`, `flush ruleset`)
    deleted: frozenset[str] = frozenset()
    # how many element notifications were left undecoded (more than FOLLOW_ELEMENTS_MAX)
    elements_skipped: int = 0
    # tables it deleted, or made or deleted a set (or map) in: their elements are not known
    # from the notifications (a deleted set's are not listed)
    reshaped: frozenset[str] = frozenset()


def _name(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def decode_elements(msg: Message, found: Mapping[int, bytes]) -> ElementChange:
    """A NEWSETELEM/DELSETELEM notification's elements."""
    elements = []
    listed = found.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    for _, element in attributes(listed, 0, len(listed)):
        parts = dict(attributes(element, 0, len(element)))
        key = dict(attributes(parts.get(NFTA_SET_ELEM_KEY, b""), 0, len(parts.get(NFTA_SET_ELEM_KEY, b""))))
        flags = BE32.unpack(parts[NFTA_SET_ELEM_FLAGS])[0] if NFTA_SET_ELEM_FLAGS in parts else 0
        chain = None
        if NFTA_SET_ELEM_DATA in parts:
            data = parts[NFTA_SET_ELEM_DATA]
            verdict = dict(attributes(data, 0, len(data))).get(NFTA_DATA_VERDICT, b"")
            chain_name = dict(attributes(verdict, 0, len(verdict))).get(NFTA_VERDICT_CHAIN)
            chain = _name(chain_name) if chain_name else None
        elements.append(Element(key.get(NFTA_DATA_VALUE, b""), flags, chain))
    return ElementChange(_name(found.get(NFTA_SET_ELEM_LIST_TABLE, b"")), _name(found.get(NFTA_SET_ELEM_LIST_SET, b"")),
                         msg.kind & 0xFF == NFT_MSG_DELSETELEM, tuple(elements))


#: element notifications of one transaction decoded at most (one message per element, ~15 µs
#: each in Python): beyond, the transaction is named only and its tables read in full (at
#: 100,000 prefixes a listing costs 1-2 s where decoding 200,000 notifications cost 3.6 s)
FOLLOW_ELEMENTS_MAX = 20_000
NFTABLES_NEWSETELEM = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM
NFTABLES_DELSETELEM = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELSETELEM
#: in Transaction.tables when element changes were not decoded: any table may be among them
ANY_TABLE = "*"


class NotificationReader:
    """Groups nf_tables notifications into transactions: each change names its table, and
    the NEWGEN that ends a transaction names the process that made it. Element changes and
    table flags are decoded (a foreign change of elements is repaired from them); chains,
    rules and sets as ObjectChange. `ignore_pid`: a process whose transactions are named
    only (nra's own): its element notifications, one message per element (200,000 for a
    rebuild at 100,000 prefixes), are never decoded; others' are decoded at their NEWGEN."""

    def __init__(self, ignore_pid: int | None = None) -> None:
        self.ignore_pid = ignore_pid
        self._start()

    def _start(self) -> None:
        self._tables: set[str] = set()
        self._structure: set[str] = set()
        # undecoded, the first FOLLOW_ELEMENTS_MAX + 1 only; the tables deleted before each
        self._elements: list[tuple[Message, frozenset[str]]] = []
        self._element_count = 0
        self._deleted_now: frozenset[str] = frozenset()
        self._flags: dict[str, int] = {}
        self._objects: list[ObjectChange | None] = []
        self._deleted: set[str] = set()
        self._reshaped: set[str] = set()

    def feed(self, data: bytes) -> list[Transaction]:
        """The transactions that `data` (one read of the socket) ends. An element message's
        header only is read: 200,000 of them for a rebuild at 100,000 prefixes, of which the
        first FOLLOW_ELEMENTS_MAX + 1 are kept (more are never decoded), the rest counted."""
        done = []
        offset, size, header, unpack = 0, len(data), NLMSG_HDR.size, NLMSG_HDR.unpack_from
        element_kinds = (NFTABLES_NEWSETELEM, NFTABLES_DELSETELEM)
        keep = FOLLOW_ELEMENTS_MAX + 1
        while offset + header <= size:
            length, msg_kind, flags, seq, _ = unpack(data, offset)
            if length < header or offset + length > size:
                break  # truncated: the kernel never sends this; stop rather than misread
            at, offset = offset, offset + ((length + 3) & ~3)
            if msg_kind in element_kinds:
                self._element_count += 1
                if self._element_count <= keep:
                    self._elements.append((Message(msg_kind, flags, seq, data, at + header, at + length),
                                           self._deleted_now))
                continue
            if msg_kind >> 8 != NFNL_SUBSYS_NFTABLES:
                continue
            msg = Message(msg_kind, flags, seq, data, at + header, at + length)
            kind = msg_kind & 0xFF
            found = message_attributes(msg)
            if kind == NFT_MSG_NEWGEN:
                gen = BE32.unpack(found[NFTA_GEN_ID])[0] if NFTA_GEN_ID in found else 0
                pid = BE32.unpack(found[NFTA_GEN_PROC_PID])[0] if NFTA_GEN_PROC_PID in found else 0
                if pid and pid == self.ignore_pid:
                    done.append(Transaction(gen, pid, frozenset(self._tables)))
                    self._start()
                    continue
                if self._element_count > FOLLOW_ELEMENTS_MAX:  # (reading the table is cheaper)
                    done.append(Transaction(gen, pid, frozenset(self._tables) | {ANY_TABLE}, (),
                                            frozenset(self._structure), self._flags, tuple(self._objects),
                                            frozenset(self._deleted), elements_skipped=self._element_count,
                                            reshaped=frozenset(self._reshaped)))
                    self._start()
                    continue
                elements = []
                for element_msg, deleted_before in self._elements:
                    change = decode_elements(element_msg, message_attributes(element_msg))
                    elements.append(change)
                    self._tables.add(change.table)
                    if change.table in deleted_before:  # (the table deleted, then touched again)
                        self._deleted.discard(change.table)
                        self._deleted_now = frozenset(self._deleted)
                done.append(Transaction(gen, pid, frozenset(self._tables), tuple(elements),
                                        frozenset(self._structure), self._flags, tuple(self._objects),
                                        frozenset(self._deleted), reshaped=frozenset(self._reshaped)))
                self._start()
            elif 1 in found:  # every table, chain, rule and set message: its table first
                table = _name(found[1])
                self._tables.add(table)
                if table in self._deleted:
                    self._deleted.discard(table)
                    self._deleted_now = frozenset(self._deleted)
                if kind == NFT_MSG_NEWTABLE:
                    self._flags[table] = BE32.unpack(found[NFTA_TABLE_FLAGS])[0] if NFTA_TABLE_FLAGS in found else 0
                else:
                    self._structure.add(table)
                    if kind in (NFT_MSG_DELTABLE, NFT_MSG_NEWSET, NFT_MSG_DELSET):
                        self._reshaped.add(table)
                    if kind == NFT_MSG_DELTABLE:
                        self._deleted.add(table)
                        self._deleted_now = frozenset(self._deleted)
                    else:
                        self._objects.append(decode_object(kind, table, found))
        return done


def prefix_ops(add: Mapping[int, Iterable[tuple[int, int]]], delete: Mapping[int, Iterable[tuple[int, int]]],
               set_names: Mapping[int, str]) -> list[ElementOp]:
    """Element operations for interval changes: deletes first (a new interval may overlap an
    old one), then adds with the interval floor."""
    width = {4: 32, 6: 128}
    ops = []
    for family, name in set_names.items():
        gone = [e for low, high in delete.get(family, ()) for e in interval_elements(low, high, width[family])]
        if gone:
            ops.append(ElementOp(name, tuple(gone), delete=True))
    for family, name in set_names.items():
        new = [e for low, high in add.get(family, ()) for e in interval_elements(low, high, width[family])]
        if new:
            ops.append(ElementOp(name, (interval_floor(family), *new)))
    return ops
