"""One MetalLB address entry (`addresses:` item of a pool) turned into networks.

MetalLB accepts a CIDR (host bits allowed: Go's net.ParseCIDR keeps the network part) or a
range `first-last`; we also accept a bare address as a single-host network. A range becomes
the exact set of CIDRs covering it, so one `ip rule` per CIDR matches exactly the range.
"""

from __future__ import annotations

import ipaddress
import operator
import socket
from itertools import compress, repeat

from nra.config.intent import IPAddress, IPNetwork
from nra.config.yaml_loader import shown


class AddressEntryError(ValueError):
    """An address entry that is not a CIDR, an address or a range; the message says why."""


class _KeepsHashAndInterval:
    """A network that keeps its hash and its address interval: both are asked for at every
    re-read of the configuration and every reconcile, and ipaddress computes them again each
    time, in Python (10 ms per pass over 10,000 prefixes). Equal to, and hashed like, the
    ipaddress network of the same prefix."""

    def __init__(self, address: object, strict: bool = True):
        super().__init__(address, strict)  # type: ignore[call-arg]
        low = int(self.network_address)  # type: ignore[attr-defined]
        self.interval = (low, low + (1 << (self.max_prefixlen - self.prefixlen)) - 1)  # type: ignore[attr-defined]
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class Prefix4(_KeepsHashAndInterval, ipaddress.IPv4Network):
    """An IPv4 network that keeps no IPv4Address of its own: `network_address` is made when
    asked for, from the interval's first address (a daemon at 100,000 prefixes kept 100,000
    of them, 4.6 MB, for the few callers that ask). Compared (==, <) by its interval and
    length, as ipaddress compares by network address and netmask."""

    family = 4

    @property
    def network_address(self) -> ipaddress.IPv4Address:  # type: ignore[override]
        address = _new(ipaddress.IPv4Address)
        address._ip = self.interval[0]
        return address

    @network_address.setter
    def network_address(self, address: ipaddress.IPv4Address) -> None:
        # (ipaddress's constructor sets it before the netmask; _KeepsHashAndInterval then
        # sets the whole interval)
        low = int(address)
        self.interval = (low, low)

    def __hash__(self) -> int:
        # ipaddress's hash(int(network) ^ int(netmask)): an IPv4 value is its own hash, so
        # it is computed from what the network holds rather than kept (an int a prefix,
        # 3 MB at 100,000)
        return self.interval[0] ^ self.netmask._ip  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if type(other) is Prefix4:
            return self.interval == other.interval  # type: ignore[attr-defined]
        return super().__eq__(other)

    def __lt__(self, other: object) -> bool:
        if type(other) is Prefix4:
            return (self.interval[0], self._prefixlen) < (other.interval[0], other._prefixlen)  # type: ignore[attr-defined]
        return super().__lt__(other)


class Prefix6(_KeepsHashAndInterval, ipaddress.IPv6Network):
    family = 6


_V4_MASKS = [(ipaddress.IPv4Network._make_netmask(n)[0], ((1 << n) - 1) << (32 - n), n) for n in range(33)]
_new = object.__new__


def prefix4(address: int, length: int) -> Prefix4:
    """Prefix4((address, length), strict=False), its attributes set directly (ipaddress's
    constructor parses its argument and makes the addresses through their own checks: 3x
    this on a first read of 100,000 CIDRs). Equal to, and hashed like, what the constructor
    makes (tests/unit/test_prefixes.py compares them)."""
    netmask, mask, length = _V4_MASKS[length]
    low = address & mask
    net = _new(Prefix4)
    net.netmask, net._prefixlen = netmask, length
    net.interval = (low, low | (mask ^ 0xFFFFFFFF))
    if length == 31:
        net.hosts = net.__iter__
    elif length == 32:
        net.hosts = lambda: [ipaddress.IPv4Address(address)]
    return net


def parse_address_entry(text: object) -> tuple[IPNetwork, ...]:
    """`10.0.0.5/24` -> (10.0.0.0/24,); `10.0.0.1` -> (10.0.0.1/32,);
    `10.0.0.1 - 10.0.0.6` -> (10.0.0.1/32, 10.0.0.2/31, 10.0.0.4/31, 10.0.0.6/32)."""
    if not isinstance(text, str):
        raise AddressEntryError(f"{shown(text)} is not a CIDR, an address or a range (expected a string)")
    found = _memo.get(text)
    if found is not None:
        return (found,)
    networks = _parse_entry(text)
    if len(text) <= _MEMO_MAX_LEN and len(networks) == 1:
        if len(_memo) >= _MEMO_MAX_ITEMS:
            _memo.clear()
        _memo[text] = networks[0]
    return networks


def parse_address_entries(entries: list) -> tuple[set[IPNetwork], list[AddressEntryError]]:
    """Every entry of a pool's list: the networks, and an error per bad entry.

    A re-read of 100,000 remembered entries is one look-up each at C speed (map, chain),
    where a loop in Python cost ~100 ms; only the entries not remembered are parsed."""
    try:
        found = list(map(_memo.get, entries))
    except TypeError:  # an unhashable entry (a list or mapping in the YAML): one at a time
        found = [None] * len(entries)
    remembered = list(filter(None, found))
    parsed: set[IPNetwork] = set(remembered)
    errors: list[AddressEntryError] = []
    if len(remembered) != len(found):  # (not `None in found`: a network's __eq__ is Python's)
        missing = list(compress(entries, map(operator.is_, found, repeat(None)))) if remembered else entries
        batch = _v4_cidrs(missing)
        if batch is not None:
            parsed.update(batch)
            return parsed, errors
        for entry, networks in zip(entries, found):
            if networks is None:
                try:
                    parsed.update(parse_address_entry(entry))
                except AddressEntryError as exc:
                    errors.append(exc)
    return parsed, errors


_FIRST, _LAST = operator.itemgetter(0), operator.itemgetter(2)


#: entries read per batch step: the steps' lists (partitions, texts, packed addresses) are
#: a few hundred KB at a time, not ~30 MB at 100,000 entries at once
_CHUNK = 4096


def _v4_cidrs(entries: list) -> list[IPNetwork] | None:
    """Entries that are all `a.b.c.d/n` as _v4_cidr reads them (no space, the C parser's
    dotted quad, a length of one or two digits up to 32): their networks, remembered, each
    step at C speed over _CHUNK entries at a time (map) where a loop over
    parse_address_entry cost 2-4 µs an entry; None when any entry is anything else (the
    entries are then read one by one, each bad one named)."""
    networks: list[IPNetwork] = []
    for at in range(0, len(entries), _CHUNK):
        chunk = _v4_cidr_chunk(entries[at:at + _CHUNK])
        if chunk is None:
            return None
        networks += chunk
    if len(_memo) + len(entries) > _MEMO_MAX_ITEMS:
        _memo.clear()
    if len(entries) <= _MEMO_MAX_ITEMS:
        _memo.update(zip(entries, networks))
    return networks


def _v4_cidr_chunk(entries: list) -> list[IPNetwork] | None:
    try:
        parts = list(map(str.partition, entries, repeat("/")))
    except TypeError:  # not all strings
        return None
    # as _v4_cidr reads one: the address before the first "/", the length after it (none
    # or more than digits: not a CIDR of the batch)
    addresses, length_texts = list(map(_FIRST, parts)), list(map(_LAST, parts))
    del parts
    digits = "".join(length_texts)
    if not (digits.isascii() and digits.isdigit()) or min(map(len, length_texts)) < 1 or \
            max(map(len, length_texts)) > 2:
        return None
    lengths = list(map(int, length_texts))
    if max(lengths) > 32:
        return None
    try:
        packed = list(map(socket.inet_pton, repeat(socket.AF_INET), addresses))
    except (OSError, UnicodeError, ValueError):
        return None
    return list(map(prefix4, map(int.from_bytes, packed, repeat("big")), lengths))


def _parse_entry(text: str) -> tuple[IPNetwork, ...]:
    entry = text.strip()
    if not entry:
        raise AddressEntryError("empty address entry")
    if "-" in entry:
        return tuple(_network(n.network_address, n.prefixlen) for n in _parse_range(entry))
    if "/" in entry:
        return (_v4_cidr(entry) or _parse_cidr(entry),)
    address = _parse_address(entry, entry)
    return (_network(address, address.max_prefixlen),)


#: the longest entry remembered (the longest valid CIDR is under 50 characters)
_MEMO_MAX_LEN = 64
#: entries remembered; past this the memo starts again
_MEMO_MAX_ITEMS = 1 << 17
# A configuration is re-read whole at every change, and its entries are the same strings
# again: parsing a CIDR costs ~12 µs, a look-up ~0.1 µs. Only entries of one network are
# remembered (a range can expand to 254), so the memo stays a few tens of MB at most.
# Networks are immutable; errors are not remembered. The network itself is stored (not a
# 1-tuple of it: 5.6 MB fewer at 100,000 entries).
_memo: dict[str, IPNetwork] = {}


def _parse_address(text: str, entry: str) -> IPAddress:
    text = text.strip()
    # A zone (fe80::1%eth0) names an interface, which a routing rule's source cannot use.
    if "%" in text:
        raise AddressEntryError(f"{shown(entry)}: a zone index (%...) is not allowed in a pool address")
    if "." in text and ":" not in text:
        # the C parser first: 4x faster on a first read of 100,000 entries, and as strict as
        # ipaddress (dotted quad, no leading zeros; tests/unit/test_prefixes.py compares them)
        try:
            return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
        except (OSError, UnicodeError, ValueError):
            pass  # ipaddress says why
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise AddressEntryError(f"{shown(entry)}: {shown(text)} is not an IPv4 or IPv6 address") from None


def _v4_cidr(entry: str) -> IPNetwork | None:
    """The common case, `a.b.c.d/n`, through the C parser (half the time of _parse_cidr on a
    first read of 100,000 entries); None for anything else, which _parse_cidr reads (and
    explains, when wrong) as before."""
    address_text, _, length_text = entry.partition("/")
    if not (length_text.isascii() and length_text.isdigit() and len(length_text) <= 2 and int(length_text) <= 32):
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, address_text)
    except (OSError, UnicodeError, ValueError):
        return None
    return prefix4(int.from_bytes(packed, "big"), int(length_text))


def _parse_cidr(entry: str) -> IPNetwork:
    address_text, _, length_text = entry.partition("/")
    address = _parse_address(address_text, entry)
    length_text = length_text.strip()
    max_length = address.max_prefixlen
    # int() alone would accept "+24", " 24" or "2_4"; a prefix length is plain digits.
    if not length_text.isascii() or not length_text.isdigit():
        raise AddressEntryError(f"{shown(entry)}: prefix length {shown(length_text)} is not a number")
    length = int(length_text)
    if length > max_length:
        raise AddressEntryError(
            f"{shown(entry)}: prefix length /{length} is longer than /{max_length} for IPv{address.version}"
        )
    return _network(address, length)


def _network(address: IPAddress, length: int) -> IPNetwork:
    # From the integer, not the text: parsing the address twice doubles the cost at 10k entries.
    if address.version == 4:
        return prefix4(int(address), length)
    return Prefix6((int(address), length), strict=False)


def _parse_range(entry: str) -> list[IPNetwork]:
    first_text, _, last_text = entry.partition("-")
    if "-" in last_text:
        raise AddressEntryError(f"{shown(entry)} is not a CIDR, an address or a range (first-last, one '-')")
    if "/" in entry:
        raise AddressEntryError(f"{shown(entry)}: a range is written first-last with plain addresses, not CIDRs")
    first = _parse_address(first_text, entry)
    last = _parse_address(last_text, entry)
    if first.version != last.version:
        raise AddressEntryError(f"{shown(entry)}: range mixes IPv{first.version} and IPv{last.version}")
    if first > last:
        raise AddressEntryError(f"{shown(entry)}: range is reversed ({first} comes after {last})")
    return list(ipaddress.summarize_address_range(first, last))
