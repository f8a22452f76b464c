"""nf_tables over netlink, for what libnftables does slowly: set elements in bulk, the
ruleset generation, and change notifications.

libnftables loads every element of an interval set before it adds one (to merge and check
overlaps), so one prefix more costs a dump of all of them: 80 ms at 10,000 prefixes, seconds
at 100,000. nra's prefixes are already collapsed and disjoint, so it encodes the kernel's
own interval representation itself (a start element, and an end element one past the
prefix flagged INTERVAL_END) and sends every element change of a reconcile as one batch:
one transaction, applied whole or not at all. The encoders are pure; the socket functions
are the only I/O.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFNLGRP_NFTABLES = 7
NFPROTO_INET = 1
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
# attributes
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_USERDATA = 1, 2, 3, 6
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFTA_GEN_ID, NFTA_GEN_PROC_PID = 1, 2
NFT_GOTO = -4
NFT_SET_ELEM_INTERVAL_END = 1
# libnftnl's element user data "this interval has no end" (it runs to the top of the space),
# so that `nft list` shows it as the prefix it is
UDATA_INTERVAL_OPEN = bytes([1, 4]) + struct.pack("<I", 1)
IFNAMSIZ = 16

NLMSG_HDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("!BBH")  # family, version, resource id (big endian)
NLA_HDR = struct.Struct("=HH")
RCVBUF = 32 * 1024 * 1024
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
# elements per message: a netlink message must stay well under 64 KiB of attributes
ELEMENTS_PER_MESSAGE = 1000


def nla(kind: int, payload: bytes) -> bytes:
    data = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(parts))


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    payload = NFGENMSG.pack(family, 0, res_id) + body
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), kind, flags, seq, 0) + payload


def _nft_type(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


# -- elements (pure) ----------------------------------------------------------------------


def _element(key: bytes, flags: int = 0, data: bytes = b"", udata: bytes = b"") -> bytes:
    parts = [nested(NFTA_SET_ELEM_KEY, nla(NFTA_DATA_VALUE, key))]
    if flags:
        parts.append(nla(NFTA_SET_ELEM_FLAGS, struct.pack("!I", flags)))
    if data:
        parts.append(nested(NFTA_SET_ELEM_DATA, data))
    if udata:
        parts.append(nla(NFTA_SET_ELEM_USERDATA, udata))
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
_END_FLAGS = nla(NFTA_SET_ELEM_FLAGS, struct.pack("!I", NFT_SET_ELEM_INTERVAL_END))


def interval_elements(low: int, high: int, width: int) -> list[bytes]:
    """The addresses low..high (ints, of `width` bits) as the kernel's interval set holds
    them: the first address, and the one after the last flagged as an interval end (none at
    the top of the space)."""
    start = low.to_bytes(width // 8, "big")
    after = high + 1
    if after >> width:
        return [_element(start, udata=UDATA_INTERVAL_OPEN)]
    return [_START[width] + start, _END[width] + after.to_bytes(width // 8, "big") + _END_FLAGS]


def interval_floor(version: int) -> bytes:
    """The interval end at address 0 that nft puts first in every interval set (everything
    below the first start is outside the set); idempotent to add again."""
    return _element(bytes(4 if version == 4 else 16), NFT_SET_ELEM_INTERVAL_END)


def ifname_element(name: str) -> bytes:
    return _element(name.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0"))


def lladdr_bytes(lladdr: str) -> bytes:
    return bytes(int(part, 16) for part in lladdr.split(":"))


def goto_element(lladdr: str, chain: str | None) -> bytes:
    """A verdict map element `lladdr : goto chain` (chain None: the key alone, for a delete)."""
    if chain is None:
        return _element(lladdr_bytes(lladdr))
    verdict = nested(NFTA_DATA_VERDICT, nla(NFTA_VERDICT_CODE, struct.pack("!i", NFT_GOTO)),
                     nla(NFTA_VERDICT_CHAIN, _string(chain)))
    return _element(lladdr_bytes(lladdr), data=verdict)


def element_messages(table: str, set_name: str, elements: Sequence[bytes], delete: bool,
                     first_seq: int) -> list[bytes]:
    """NEWSETELEM/DELSETELEM messages for these elements, ELEMENTS_PER_MESSAGE at most each."""
    msgs = []
    kind = _nft_type(NFT_MSG_DELSETELEM if delete else NFT_MSG_NEWSETELEM)
    flags = NLM_F_REQUEST | NLM_F_ACK | (0 if delete else NLM_F_CREATE)
    for i in range(0, len(elements), ELEMENTS_PER_MESSAGE):
        body = (nla(NFTA_SET_ELEM_LIST_TABLE, _string(table)) + nla(NFTA_SET_ELEM_LIST_SET, _string(set_name))
                + nested(NFTA_SET_ELEM_LIST_ELEMENTS, *elements[i:i + ELEMENTS_PER_MESSAGE]))
        msgs.append(message(kind, flags, first_seq + len(msgs), NFPROTO_INET, body))
    return msgs


@dataclass(frozen=True)
class ElementOp:
    """Elements of one set to add or delete, already encoded."""
    set_name: str
    elements: tuple[bytes, ...]
    delete: bool = False


def batch(table: str, ops: Iterable[ElementOp], first_seq: int) -> tuple[bytes, list[int]]:
    """One transaction: BATCH_BEGIN, the element messages in order, BATCH_END. Returns the
    bytes and the sequence numbers whose acks to wait for."""
    seq = first_seq
    parts = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES)]
    acked: list[int] = []
    seq += 1
    for op in ops:
        if not op.elements:
            continue
        msgs = element_messages(table, op.set_name, op.elements, op.delete, seq)
        acked += range(seq, seq + len(msgs))
        seq += len(msgs)
        parts += msgs
    parts.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES))
    return b"".join(parts), acked


# -- sockets ------------------------------------------------------------------------------


def open_socket(groups: int = 0) -> socket.socket:
    """A NETLINK_NETFILTER socket in the calling thread's namespace (see libnft.enter_netns)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((0, groups))
    return sock


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, pid, offset) of each message in a buffer."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, flags, seq, pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            return
        yield kind, flags, seq, pid, offset
        offset += (length + 3) & ~3


def send_batch(sock: socket.socket, data: bytes, acked: Sequence[int]) -> None:
    """Send a batch and wait for its acks; the first error raises OSError (the kernel then
    applied none of it)."""
    # a batch is one datagram: the send buffer must hold it (libnftables does the same)
    if len(data) > sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + (1 << 16))
    sock.send(data)
    waiting = set(acked)
    while waiting:
        answer = sock.recv(1 << 20)
        for kind, _, seq, _, offset in _messages(answer):
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", answer, offset + NLMSG_HDR.size)[0]
                if code:
                    raise OSError(code, f"nf_tables element batch: {os.strerror(code)}")
                waiting.discard(seq)


def attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found = {}
    while start + NLA_HDR.size <= end:
        length, kind = NLA_HDR.unpack_from(data, start)
        if length < NLA_HDR.size:
            break
        found[kind & 0x3FFF] = data[start + NLA_HDR.size:start + length]
        start += (length + 3) & ~3
    return found


def generation(sock: socket.socket, seq: int) -> int:
    """The ruleset generation id: it changes with every nf_tables transaction, anyone's."""
    sock.send(message(_nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, b""))
    while True:
        data = sock.recv(1 << 16)
        for kind, _, got_seq, _, offset in _messages(data):
            if got_seq != seq:
                continue
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, offset + NLMSG_HDR.size)[0]
                raise OSError(code, f"nf_tables generation: {os.strerror(code)}")
            if kind == _nft_type(NFT_MSG_NEWGEN):
                length = NLMSG_HDR.unpack_from(data, offset)[0]
                found = attrs(data, offset + NLMSG_HDR.size + NFGENMSG.size, offset + length)
                return struct.unpack("!I", found[NFTA_GEN_ID])[0]


# -- notifications ------------------------------------------------------------------------


@dataclass(frozen=True)
class Transaction:
    """What one nf_tables transaction (ended by its NEWGEN notification) touched."""
    generation: int
    pid: int  # the process that made it
    tables: frozenset[str]  # tables it changed (or deleted)


class NotificationReader:
    """Groups nf_tables notifications into transactions: each change names its table, and
    the NEWGEN that ends a transaction names the process that made it."""

    def __init__(self) -> None:
        self._tables: set[str] = set()

    def feed(self, data: bytes) -> list[Transaction]:
        done = []
        for kind, _, _, _, offset in _messages(data):
            if kind >> 8 != NFNL_SUBSYS_NFTABLES:
                continue
            length = NLMSG_HDR.unpack_from(data, offset)[0]
            found = attrs(data, offset + NLMSG_HDR.size + NFGENMSG.size, offset + length)
            if kind & 0xFF == NFT_MSG_NEWGEN:
                gen = struct.unpack("!I", found[NFTA_GEN_ID])[0] if NFTA_GEN_ID in found else 0
                pid = struct.unpack("!I", found[NFTA_GEN_PROC_PID])[0] if NFTA_GEN_PROC_PID in found else 0
                done.append(Transaction(gen, pid, frozenset(self._tables)))
                self._tables = set()
            elif 1 in found:  # every table, chain, rule, set and element message: its table first
                self._tables.add(found[1].split(b"\0", 1)[0].decode(errors="replace"))
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
