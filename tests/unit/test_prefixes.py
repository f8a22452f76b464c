import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nra.config.prefixes import AddressEntryError, parse_address_entry


def nets(*texts: str) -> tuple:
    return tuple(ipaddress.ip_network(t) for t in texts)


def covered(networks) -> set:
    return {int(a) for n in networks for a in n}


@pytest.mark.parametrize("entry,expected", [
    ("192.168.10.0/24", ["192.168.10.0/24"]),
    # host bits are allowed and dropped, like Go's net.ParseCIDR
    ("192.168.10.5/24", ["192.168.10.0/24"]),
    ("  10.1.2.3/8 ", ["10.0.0.0/8"]),
    ("10.1.2.3/32", ["10.1.2.3/32"]),
    ("0.0.0.0/0", ["0.0.0.0/0"]),
    ("fc00:f853:0ccd:e799::/124", ["fc00:f853:ccd:e799::/124"]),
    ("2001:db8::1234/64", ["2001:db8::/64"]),
    ("10.0.0.7", ["10.0.0.7/32"]),
    ("2001:db8::7", ["2001:db8::7/128"]),
])
def test_cidrs_and_bare_addresses(entry, expected):
    assert parse_address_entry(entry) == nets(*expected)


@pytest.mark.parametrize("entry,expected", [
    ("192.168.0.150-192.168.0.200",
     ["192.168.0.150/31", "192.168.0.152/29", "192.168.0.160/27", "192.168.0.192/29", "192.168.0.200/32"]),
    ("10.0.0.1 - 10.0.0.6", ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]),
    ("10.0.0.0-10.0.0.255", ["10.0.0.0/24"]),
    ("10.0.0.5-10.0.0.5", ["10.0.0.5/32"]),
    # crosses an octet boundary
    ("10.0.0.255-10.0.1.0", ["10.0.0.255/32", "10.0.1.0/32"]),
    ("0.0.0.0-255.255.255.255", ["0.0.0.0/0"]),
    ("2001:db8::1-2001:db8::4", ["2001:db8::1/128", "2001:db8::2/127", "2001:db8::4/128"]),
    ("fd00::-fd00::ffff", ["fd00::/112"]),
])
def test_ranges_become_exact_covering_cidrs(entry, expected):
    result = parse_address_entry(entry)
    assert result == nets(*expected)
    first, _, last = entry.partition("-")
    lo, hi = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
    if int(hi) - int(lo) < 100_000:
        assert covered(result) == set(range(int(lo), int(hi) + 1))


def test_awkward_v6_range_covers_exactly_and_minimally():
    lo, hi = ipaddress.ip_address("2001:db8::3"), ipaddress.ip_address("2001:db8::1:7")
    result = parse_address_entry(f"{lo}-{hi}")
    assert covered(result) == set(range(int(lo), int(hi) + 1))
    # minimal: no two neighbouring CIDRs could be merged into one
    assert list(ipaddress.collapse_addresses(result)) == sorted(result)
    assert all(n.version == 6 for n in result)


@pytest.mark.parametrize("entry,needle", [
    ("not-an-address", "is not a CIDR, an address or a range"),
    ("hello", "not an IPv4 or IPv6 address"),
    ("999.1.1.1/24", "'999.1.1.1' is not an IPv4 or IPv6 address"),
    ("10.0.0.0/33", "/33 is longer than /32 for IPv4"),
    ("2001:db8::/129", "/129 is longer than /128 for IPv6"),
    ("10.0.0.0/", "prefix length '' is not a number"),
    ("10.0.0.0/abc", "prefix length 'abc' is not a number"),
    ("10.0.0.0/-1", "plain addresses"),
    ("10.0.0.0/+8", "not a number"),
    ("10.0.0.9-10.0.0.1", "range is reversed"),
    ("2001:db8::9-2001:db8::1", "range is reversed"),
    ("10.0.0.1-2001:db8::1", "mixes IPv4 and IPv6"),
    ("10.0.0.1-10.0.0.5-10.0.0.9", "range (first-last, one '-')"),
    ("10.0.0.1-", "'' is not an IPv4 or IPv6 address"),
    ("10.0.0.0/24-10.0.1.0/24", "plain addresses"),
    ("fe80::1%eth0", "zone index"),
    ("", "empty address entry"),
    ("   ", "empty address entry"),
])
def test_errors_say_what_is_wrong(entry, needle):
    with pytest.raises(AddressEntryError) as info:
        parse_address_entry(entry)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 24, ["10.0.0.0/24"], {"cidr": "10.0.0.0/24"}])
def test_non_strings_are_refused(value):
    with pytest.raises(AddressEntryError, match="expected a string"):
        parse_address_entry(value)


def test_error_is_a_value_error():
    assert issubclass(AddressEntryError, ValueError)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.one_of(
    st.text(st.sampled_from("0123456789."), max_size=17),
    st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
    st.lists(st.text(st.sampled_from("0123456789 x+-"), min_size=1, max_size=4), min_size=4, max_size=4).map(".".join),
))
def test_v4_addresses_are_read_as_strictly_as_ipaddress_reads_them(text):
    """parse_address_entry reads dotted quads with the C parser first: it must accept and
    refuse exactly what ipaddress does (leading zeros, spaces, signs, out of range)."""
    try:
        want = (ipaddress.ip_network(f"{ipaddress.IPv4Address(text)}/32"),)
    except ValueError:
        want = None
    try:
        got = parse_address_entry(text)
    except AddressEntryError:
        got = None
    if text.strip() != text:  # the entry itself is stripped; ipaddress would refuse the spaces
        return
    assert got == want


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.one_of(
    st.tuples(st.text(st.sampled_from("0123456789. "), max_size=16), st.text(st.sampled_from("0123456789+ _"), max_size=4)),
    st.tuples(st.lists(st.integers(0, 300).map(str), min_size=4, max_size=4).map(".".join), st.integers(0, 40).map(str)),
))
def test_v4_cidrs_are_read_as_the_slow_path_reads_them(parts):
    """`a.b.c.d/n` takes a C fast path: the same networks, or the same refusal, as the
    general CIDR parser."""
    from nra.config.prefixes import _parse_cidr

    entry = "/".join(parts).strip()
    try:
        want = (_parse_cidr(entry),)
    except AddressEntryError as exc:
        want = str(exc)
    try:
        got = parse_address_entry(entry)
    except AddressEntryError as exc:
        got = str(exc)
    if "-" in entry or not entry:
        return  # a range, or empty: not a CIDR
    assert got == want


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_prefix4_is_the_network_the_constructor_makes(address, length):
    """prefix4 sets the attributes itself: equal, hashed, ordered, shown and iterated as
    Prefix4 through ipaddress's constructor and as the plain IPv4Network."""
    from nra.config.prefixes import Prefix4, prefix4

    got, want = prefix4(address, length), Prefix4((address, length), strict=False)
    plain = ipaddress.IPv4Network((address, length), strict=False)
    assert got == want == plain and hash(got) == hash(want) == hash(plain)
    assert "_hash" not in vars(got)  # computed, not kept: an int a prefix at 100,000 prefixes
    assert got.interval == want.interval == (int(plain.network_address), int(plain.broadcast_address))
    assert str(got) == str(plain) and repr(got) == repr(want) and got.family == 4
    assert got.prefixlen == plain.prefixlen and got.netmask == plain.netmask and got.hostmask == plain.hostmask
    assert got.broadcast_address == plain.broadcast_address and got.num_addresses == plain.num_addresses
    assert not (got < plain) and not (plain < got) and got.compare_networks(plain) == 0
    assert got.overlaps(plain) and plain.subnet_of(got) and got.supernet_of(plain)
    if length >= 29:
        assert list(got.hosts()) == list(plain.hosts()) and list(got) == list(plain)
    assert {got: 1}[plain] == 1
