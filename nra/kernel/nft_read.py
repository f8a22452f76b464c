"""nra's nft table read back through nf_tables netlink dumps of nra's own: the table's flags
(GETTABLE), its chains (GETCHAIN), their rules (GETRULE), its sets (GETSET) and the elements
of nra's sets (GETSETELEM). No libnftables: its JSON listing of 100,000 intervals took 1.4 s
and +193 MB of peak RSS (it builds an expression tree for every element, then JSON text,
then Python parses that); these dumps decode in a fraction of that, into plain ints.

Rules are not decoded: each is known by the digest nra writes as its comment (see
nft_table.Rule); one without nra's comment reads as not nra's. Elements are decoded by
comparing each element's bytes with the layout nra writes (one regex over a message whose
elements are all in those layouts, else bytes.startswith at an offset; one int per
address), falling back to a walk of its attributes for any other layout.

The read is several dumps: the ruleset generation is read before and after, and a read that
another transaction came between is made again.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import struct
from itertools import repeat
from operator import itemgetter, le, lt
from typing import Callable

from nra.kernel import nft_table as nft
from nra.kernel.codec import NLA_HDR, NLM_F_DUMP, NLM_F_REQUEST, Message, attribute
from nra.kernel.nft_netlink import (
    BE32,
    NFGENMSG,
    NFPROTO_INET,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFT_GOTO,
    NFT_SET_ELEM_INTERVAL_END,
    NFTA_DATA_VALUE,
    NFTA_DATA_VERDICT,
    NFTA_LIST_ELEM,
    NFTA_RULE_CHAIN,
    NFTA_RULE_TABLE,
    NFTA_RULE_USERDATA,
    NFTA_SET_ELEM_DATA,
    NFTA_SET_ELEM_FLAGS,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_USERDATA,
    NFTA_VERDICT_CHAIN,
    NFTNL_UDATA_RULE_COMMENT,
    decode_generation,
    decode_table_flags,
    encode_getgen,
    encode_gettable,
    message,
    _name,
    _nft_type,
)
from nra.kernel.socket import KernelRefused, NetlinkSocket

NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN = 3, 4
NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 7, 10, 13
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_HANDLE = 3
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS = 1, 2, 3
NFT_SET_ANONYMOUS, NFT_SET_MAP = 0x1, 0x8
#: the inet family's hooks (NF_INET_*), as nft names them
HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting", 5: "ingress"}
POLICIES = {0: "drop", 1: "accept"}
#: a read another transaction came between is made again this many times at most
READ_ATTEMPTS = 4
TYPE_MASK = 0x3FFF
BE64 = struct.Struct("!Q")
PRIORITY = struct.Struct("!i")


def _attrs(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """type -> (offset, end) of each attribute's payload between two offsets (no copies)."""
    found = {}
    unpack = NLA_HDR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4:
            break
        found[kind & TYPE_MASK] = (start + 4, start + length)
        start += (length + 3) & ~3
    return found


def _top(msg: Message) -> dict[int, tuple[int, int]]:
    return _attrs(msg.data, msg.body + NFGENMSG.size, msg.end)


def _text(data: bytes, span: tuple[int, int] | None) -> str:
    return _name(data[span[0]:span[1]]) if span else ""


def dump_message(kind: int, seq: int, table: str, set_name: str | None = None) -> bytes:
    """A dump request of nra's table's chains, rules, sets or one set's elements (attribute
    1 names the table in all four; attribute 2 the set)."""
    body = attribute(1, table.encode() + b"\0")
    if set_name is not None:
        body += attribute(2, set_name.encode() + b"\0")
    return message(_nft_type(kind), NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO_INET, body)


# -- chains, rules, sets ------------------------------------------------------------------


def decode_chain(msg: Message) -> tuple[str, tuple | None] | None:
    """(name, hook) of a NEWCHAIN in nra's table; hook: (type, hook, priority, policy) as
    nft_table renders them, None for a chain without one."""
    if msg.kind != _nft_type(NFT_MSG_NEWCHAIN):
        return None
    data, found = msg.data, _top(msg)
    if _text(data, found.get(NFTA_CHAIN_TABLE)) != nft.TABLE:
        return None
    hook = None
    if NFTA_CHAIN_HOOK in found:
        inner = _attrs(data, *found[NFTA_CHAIN_HOOK])
        number = BE32.unpack_from(data, inner[NFTA_HOOK_HOOKNUM][0])[0] if NFTA_HOOK_HOOKNUM in inner else -1
        priority = PRIORITY.unpack_from(data, inner[NFTA_HOOK_PRIORITY][0])[0] if NFTA_HOOK_PRIORITY in inner else 0
        policy = BE32.unpack_from(data, found[NFTA_CHAIN_POLICY][0])[0] if NFTA_CHAIN_POLICY in found else 1
        hook = (_text(data, found.get(NFTA_CHAIN_TYPE)), HOOKS.get(number, f"hook {number}"), priority,
                POLICIES.get(policy, f"policy {policy}"))
    return _text(data, found.get(NFTA_CHAIN_NAME)), hook


def rule_comment_of(udata: bytes) -> str | None:
    """The comment in a rule's user data (libnftnl's TLVs), if any."""
    at = 0
    while at + 2 <= len(udata):
        kind, length = udata[at], udata[at + 1]
        if kind == NFTNL_UDATA_RULE_COMMENT:
            return _name(udata[at + 2:at + 2 + length])
        at += 2 + length
    return None


def decode_rule(msg: Message) -> tuple[str, nft.Rule] | None:
    """(chain, rule) of a NEWRULE in nra's table: the rule known by nra's digest in its
    comment, or, without one, by its handle (a digest no rule of nra's has)."""
    if msg.kind != _nft_type(NFT_MSG_NEWRULE):
        return None
    data, found = msg.data, _top(msg)
    if _text(data, found.get(NFTA_RULE_TABLE)) != nft.TABLE:
        return None
    comment = None
    if NFTA_RULE_USERDATA in found:
        start, end = found[NFTA_RULE_USERDATA]
        comment = rule_comment_of(data[start:end])
    if comment is None or not comment.startswith("nra:"):
        handle = BE64.unpack_from(data, found[NFTA_RULE_HANDLE][0])[0] if NFTA_RULE_HANDLE in found else 0
        comment = f"(rule handle {handle}, not nra's: comment {comment!r})"
    return _text(data, found.get(NFTA_RULE_CHAIN)), nft.Rule(comment)


def decode_set(msg: Message) -> tuple[str, int] | None:
    """(name, flags) of a NEWSET in nra's table; anonymous sets (a rule's own, such as the
    vmap of dispatch_in, which the kernel keeps constant) are left out."""
    if msg.kind != _nft_type(NFT_MSG_NEWSET):
        return None
    data, found = msg.data, _top(msg)
    if _text(data, found.get(NFTA_SET_TABLE)) != nft.TABLE:
        return None
    flags = BE32.unpack_from(data, found[NFTA_SET_FLAGS][0])[0] if NFTA_SET_FLAGS in found else 0
    if flags & NFT_SET_ANONYMOUS:
        return None
    return _text(data, found.get(NFTA_SET_NAME)), flags


# -- elements -----------------------------------------------------------------------------


class Elements:
    """One dump message's elements of one set: interval starts and ends as ints (the layouts
    nra writes, matched byte for byte), and any other element as (key, flags, chain, user
    data) (a map's elements, an element someone else wrote with more attributes)."""

    __slots__ = ("starts", "ends", "chains", "others")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.chains: list[bytes] = []  # a verdict map's: each start's `goto` chain (NUL-padded)
        self.others: list[tuple[bytes, int, str | None, bytes]] = []


def _layouts(key_length: int) -> tuple[bytes, bytes, bytes]:
    """The bytes that begin an interval's start element (the key alone) and its end element
    (the key, then the flags), and the end's flags attribute, for this key length (4 or 16:
    no padding), as the kernel dumps them (its nests carry no NLA_F_NESTED)."""
    value = NLA_HDR.pack(4 + key_length, NFTA_DATA_VALUE)
    key = NLA_HDR.pack(8 + key_length, NFTA_SET_ELEM_KEY) + value
    start = NLA_HDR.pack(12 + key_length, NFTA_LIST_ELEM) + key
    end = NLA_HDR.pack(20 + key_length, NFTA_LIST_ELEM) + key
    return start, end, NLA_HDR.pack(8, NFTA_SET_ELEM_FLAGS) + BE32.pack(NFT_SET_ELEM_INTERVAL_END)


_LAYOUTS = {length: _layouts(length) for length in (4, 16)}


def element_fields(data: bytes, start: int, end: int) -> tuple[bytes, int, str | None, bytes]:
    """(key, flags, verdict chain, user data) of one element's attributes."""
    found = _attrs(data, start, end)
    key = b""
    if NFTA_SET_ELEM_KEY in found:
        value = _attrs(data, *found[NFTA_SET_ELEM_KEY]).get(NFTA_DATA_VALUE)
        key = data[value[0]:value[1]] if value else b""
    flags = BE32.unpack_from(data, found[NFTA_SET_ELEM_FLAGS][0])[0] if NFTA_SET_ELEM_FLAGS in found else 0
    chain = None
    if NFTA_SET_ELEM_DATA in found:
        verdict = _attrs(data, *found[NFTA_SET_ELEM_DATA]).get(NFTA_DATA_VERDICT)
        named = _attrs(data, *verdict).get(NFTA_VERDICT_CHAIN) if verdict else None
        chain = _text(data, named) if named else None
    udata = data[found[NFTA_SET_ELEM_USERDATA][0]:found[NFTA_SET_ELEM_USERDATA][1]] \
        if NFTA_SET_ELEM_USERDATA in found else b""
    return key, flags, chain, udata


#: a verdict map element's data after its key, up to the chain's name: DATA > VERDICT >
#: CODE (goto), CHAIN (the lengths are the name's: not compared)
_GOTO_CODE = NLA_HDR.pack(8, 1) + PRIORITY.pack(NFT_GOTO)


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_PLUS_ONE, _MINUS_ONE = (1).__add__, (-1).__add__


def element_decoder(set_name: str, key_length: int | None, verdicts: bool = False,
                    tiled: bool = True) -> Callable[[Message], Elements | None]:
    """A dump `keep` for the elements of one of nra's sets; key_length: an interval set's
    (4 or 16), None for any other set (every element in `others`); verdicts: an interval
    verdict map's, whose starts carry `goto chain` (in `chains`). tiled=False: every
    message through the element loop (the tests' reference for the regex pass)."""
    start_layout, end_layout, end_flags = _LAYOUTS[key_length] if key_length else (b"\xff", b"\xff", b"")
    if verdicts:  # the start of an element with a key and more (its length differs)
        start_layout = start_layout[4:]
    start_size, end_size = 12 + (key_length or 0), 20 + (key_length or 0)
    # an interval set's message is usually nothing but starts and ends in nra's layouts: one
    # regex finds them all (each match a start's key or an end's), and the loop below reads
    # any message they do not tile whole
    tiling = None if verdicts or not key_length or not tiled else re.compile(
        re.escape(start_layout) + b"(.{%d})|" % key_length + re.escape(end_layout) + b"(.{%d})" % key_length
        + re.escape(end_flags), re.DOTALL)
    kind = _nft_type(NFT_MSG_NEWSETELEM)
    unpack = NLA_HDR.unpack_from
    from_bytes = int.from_bytes

    def keep(msg: Message) -> Elements | None:
        if msg.kind != kind:
            return None
        data, found = msg.data, _top(msg)
        if (_text(data, found.get(NFTA_SET_ELEM_LIST_TABLE)) != nft.TABLE
                or _text(data, found.get(NFTA_SET_ELEM_LIST_SET)) != set_name
                or NFTA_SET_ELEM_LIST_ELEMENTS not in found):
            return None
        out = Elements()
        at, stop = found[NFTA_SET_ELEM_LIST_ELEMENTS]
        if tiling is not None:
            # every element in nra's layouts, one after the other: the keys by one regex pass
            pairs = tiling.findall(data, at, stop)
            start_keys = list(filter(None, map(_FIRST, pairs)))
            end_keys = list(filter(None, map(_SECOND, pairs)))
            if len(start_keys) * start_size + len(end_keys) * end_size == stop - at:
                # (matches that do not overlap and add up to the region cover all of it)
                out.starts = list(map(from_bytes, start_keys, repeat("big")))
                out.ends = list(map(from_bytes, end_keys, repeat("big")))
                return out
        starts, ends, others, chains = out.starts.append, out.ends.append, out.others.append, out.chains.append
        while at + 4 <= stop:
            if verdicts and data.startswith(start_layout, at + 4) and data.startswith(_GOTO_CODE, at + start_size + 8):
                # key, then DATA > VERDICT > CODE goto, CHAIN: the data fills the element
                length, after = unpack(data, at)[0], at + start_size
                if (unpack(data, after)[0] == length - start_size and data[after + 2] == NFTA_SET_ELEM_DATA
                        and data[after + 18] == NFTA_VERDICT_CHAIN):
                    starts(from_bytes(data[at + 12:after], "big"))
                    chains(data[after + 20:at + length])
                    at += length
                    continue
            elif not verdicts and data.startswith(start_layout, at):
                starts(from_bytes(data[at + 12:at + start_size], "big"))
                at += start_size
                continue
            if data.startswith(end_layout, at) and data.startswith(end_flags, at + start_size):
                ends(from_bytes(data[at + 12:at + start_size], "big"))
                at += end_size
            else:
                length = unpack(data, at)[0]
                if length < 4:
                    break
                others(element_fields(data, at + 4, at + length))
                at += (length + 3) & ~3
        return out

    return keep


def pair_intervals(starts: list[int], ends: list[int], width: int) -> list[nft.Interval] | None:
    """An interval set's intervals (first, last) from its elements: each start, and the
    address after its interval's end flagged INTERVAL_END (none for one running to the top of
    the space; an end at 0 is nft's floor). None when they do not pair up so (not a set nra
    wrote: the table is rebuilt). Both lists are sorted here."""
    starts.sort()
    ends.sort()
    if ends and ends[0] == 0:
        del ends[0]
    if len(starts) not in (len(ends), len(ends) + 1):
        return None
    if not (all(map(lt, starts, ends)) and all(map(le, ends, starts[1:]))):
        return None
    intervals = list(zip(starts, map(_MINUS_ONE, ends)))
    if len(starts) > len(ends):
        intervals.append((starts[-1], (1 << width) - 1))
    return intervals


def _elements(sock: NetlinkSocket, set_name: str, key_length: int | None = None, verdicts: bool = False) -> Elements:
    found = sock.dump_request(lambda seq: dump_message(NFT_MSG_GETSETELEM, seq, nft.TABLE, set_name),
                              element_decoder(set_name, key_length, verdicts))
    if len(found) == 1:
        return found[0]
    out = Elements()
    for part in found:
        out.starts += part.starts
        out.ends += part.ends
        out.chains += part.chains
        out.others += part.others
    return out


def _interval_set(sock: NetlinkSocket, set_name: str, family: int) -> list[nft.Interval] | None:
    got = _elements(sock, set_name, nft.WIDTH[family] // 8)
    for key, flags, _, _ in got.others:  # (a start running to the top: it carries user data)
        (got.ends if flags & NFT_SET_ELEM_INTERVAL_END else got.starts).append(int.from_bytes(key, "big"))
    return pair_intervals(got.starts, got.ends, nft.WIDTH[family])


def _group_map(sock: NetlinkSocket, set_name: str, family: int) -> tuple[list[nft.GroupInterval] | None, bool]:
    """A group map's intervals, each with its group chain's index; and whether an element
    goes to a `save_<i>` chain instead (as an nra before the group chains wrote them)."""
    got = _elements(sock, set_name, nft.WIDTH[family] // 8, verdicts=True)
    names = {_name(name) for name in set(got.chains)}
    names |= {chain for _, flags, chain, _ in got.others if not flags & NFT_SET_ELEM_INTERVAL_END}
    legacy = any((name or "").startswith("save_") for name in names)
    index = {name: nft.group_index(_name(name)) for name in set(got.chains)}
    chains: dict[int, int] = {start: index[name] for start, name in zip(got.starts, got.chains)}
    for key, flags, chain, _ in got.others:
        value = int.from_bytes(key, "big")
        if flags & NFT_SET_ELEM_INTERVAL_END:
            got.ends.append(value)
        else:
            got.starts.append(value)
            chains[value] = nft.group_index(chain)
    intervals = pair_intervals(got.starts, got.ends, nft.WIDTH[family])
    if intervals is None:
        return None, legacy
    return [(low, high, chains.get(low, -1)) for low, high in intervals], legacy


# -- the table ----------------------------------------------------------------------------


def read_once(sock: NetlinkSocket, known: nft.NftTable | None = None) -> nft.NftTable | None:
    """The table as these dumps find it (None: absent); another transaction may come between
    them (read_table checks). `known`: the table with its elements known (followed from
    the notifications): only the table, its chains, rules and sets are dumped, and the
    elements taken from it, unless nra's sets are not those it had."""
    try:
        flags = sock.query(lambda seq: encode_gettable(nft.TABLE, seq), decode_table_flags)
    except KernelRefused as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    hooks = dict(sock.dump_request(lambda seq: dump_message(NFT_MSG_GETCHAIN, seq, nft.TABLE), decode_chain))
    rules: dict[str, list[nft.Rule]] = {name: [] for name in hooks}
    for chain, rule in sock.dump_request(lambda seq: dump_message(NFT_MSG_GETRULE, seq, nft.TABLE), decode_rule):
        rules.setdefault(chain, []).append(rule)
    sets = dict(sock.dump_request(lambda seq: dump_message(NFT_MSG_GETSET, seq, nft.TABLE), decode_set))
    foreign = [f"{'map' if flags_ & NFT_SET_MAP else 'set'} {name}" for name, flags_ in sets.items()
               if name not in nft.NRA_SETS]
    chains = {name: (hooks.get(name), tuple(rules.get(name, ()))) for name in hooks}
    own_sets = frozenset(sets) & nft.NRA_SETS or frozenset({"(none)"})  # (not empty: empty means "all")
    if known is not None and own_sets == (known.sets or nft.NRA_SETS):
        return dataclasses.replace(known, chains=chains, foreign=tuple(foreign), flags=flags or 0, sets=own_sets)
    unreadable: list[str] = []
    raw: dict[str, tuple[nft.Interval, ...]] = {}
    raw_groups: dict[str, tuple[nft.GroupInterval, ...]] = {}
    for name, family in nft.PREFIX_SET_FAMILY.items():
        if name in sets:
            intervals = _interval_set(sock, name, family)
            if intervals is None:
                unreadable.append(name)
            elif intervals:
                raw[name] = tuple(intervals)
    legacy = False
    for name, family in nft.GROUP_MAP_FAMILY.items():
        if name in sets:
            tagged, old = _group_map(sock, name, family)
            legacy |= old
            if tagged is None:
                unreadable.append(name)
            elif tagged:
                raw_groups[name] = tuple(tagged)
    links: frozenset[str] = frozenset()
    if nft.LINKS_SET in sets:
        links = frozenset(_name(key) for key, _, _, _ in _elements(sock, nft.LINKS_SET).others)
    routers: dict[nft.RouterKey, int] = {}
    if nft.ROUTERS_MAP in sets:
        for key, _, chain, _ in _elements(sock, nft.ROUTERS_MAP).others:
            routers[nft.router_key_of(key)] = nft.save_index(chain)
    by_family: dict[int, list[nft.Interval]] = {4: [], 6: []}
    for name, intervals in raw.items():
        by_family[nft.PREFIX_SET_FAMILY[name]] += intervals
    groups: dict[int, list[nft.GroupInterval]] = {4: [], 6: []}
    for name, elements in raw_groups.items():
        groups[nft.GROUP_MAP_FAMILY[name]] += elements
    return nft.NftTable({f: _merged(sorted(r)) for f, r in by_family.items()}, links, routers, chains, raw, tuple(foreign),
                        flags=flags or 0, sets=own_sets, groups={f: _merged_groups(sorted(g)) for f, g in groups.items()},
                        raw_groups=raw_groups, unreadable=tuple(unreadable), legacy_groups=legacy)


def _merged(intervals: list[nft.Interval]) -> frozenset[nft.Interval]:
    """A family's sets' intervals (sorted) merged: the same tuples when none touches the next
    (the kernel's intervals as nra writes them, but for the pieces of an interval split at
    its blocks' edges), so the table holds each interval once."""
    lows, highs = map(_FIRST, intervals[1:]), map(_SECOND, intervals)
    if all(map(lt, map(_PLUS_ONE, highs), lows)):  # (each high + 1 < the next low, at C speed)
        return frozenset(intervals)
    return nft.merge(intervals)


def _merged_groups(elements: list[nft.GroupInterval]) -> frozenset[nft.GroupInterval]:
    """A family's group maps' elements (sorted) as the groups' intervals: the pieces of an
    interval split at its blocks' edges (placed_groups) joined again. One group's intervals
    are merged, so never adjacent: two adjacent pieces of one group are one interval's."""
    lows, highs = map(_FIRST, elements[1:]), map(_SECOND, elements)
    if all(map(lt, map(_PLUS_ONE, highs), lows)):  # (none touches the next: at C speed)
        return frozenset(elements)
    out: list[nft.GroupInterval] = []
    for element in elements:
        if out and out[-1][1] + 1 == element[0] and out[-1][2] == element[2]:
            out[-1] = (out[-1][0], element[1], element[2])
        else:
            out.append(element)
    return frozenset(out)


def read_table(sock: NetlinkSocket, known: nft.NftTable | None = None) -> tuple[nft.NftTable | None, int]:
    """The table (None: absent) and the ruleset generation it was read at: read again when
    another transaction came between the dumps (the last read is kept after READ_ATTEMPTS,
    with the generation -1, so that the next read is a full one). `known`: see read_once."""
    generation = sock.query(encode_getgen, decode_generation)
    for _ in range(READ_ATTEMPTS):
        try:
            table = read_once(sock, known)
        except OSError as exc:  # a set or the table went away between two dumps
            if exc.errno != errno.ENOENT:
                raise
            table = None
        after = sock.query(encode_getgen, decode_generation)
        if after == generation:
            return table, generation
        generation = after
    return table, -1


# -- every table's and chain's name (the datapath check) ----------------------------------

#: nf_tables' families (NFPROTO_*) as nft names them
FAMILY_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
NFPROTO_UNSPEC = 0


def _family(msg: Message) -> str:
    number = msg.data[msg.body]
    return FAMILY_NAMES.get(number, f"family {number}")


def _decode_any_table(msg: Message) -> str | None:
    if msg.kind != _nft_type(0):  # NFT_MSG_NEWTABLE
        return None
    found = _top(msg)
    return f"{_family(msg)} {_text(msg.data, found.get(1))}"  # NFTA_TABLE_NAME


def _decode_any_chain(msg: Message) -> tuple[str, str, str] | None:
    if msg.kind != _nft_type(NFT_MSG_NEWCHAIN):
        return None
    data, found = msg.data, _top(msg)
    return _family(msg), _text(data, found.get(NFTA_CHAIN_TABLE)), _text(data, found.get(NFTA_CHAIN_NAME))


def tables_and_chains(sock: NetlinkSocket) -> tuple[frozenset[str], frozenset[tuple[str, str, str]]]:
    """Every nf_tables table of the namespace, as "family name", and every chain, as (family,
    table, name): two dumps of all families (GETTABLE, GETCHAIN), no sets, rules or elements
    (libnftables' `list chains` fills its cache with every set's elements first: 0.5 s with
    100,000 intervals in nra's table)."""
    tables = sock.dump_request(
        lambda seq: message(_nft_type(1), NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO_UNSPEC, b""), _decode_any_table)
    chains = sock.dump_request(
        lambda seq: message(_nft_type(NFT_MSG_GETCHAIN), NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO_UNSPEC, b""),
        _decode_any_chain)
    return frozenset(tables), frozenset(chains)
