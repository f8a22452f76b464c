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


# A pool's list read in one batch (prefixes._v4_cidrs) when every entry is `a.b.c.d/n`: the
# networks and the errors of reading each entry on its own, whatever the list.

def one_by_one(entries):
    """What parse_address_entries gives without its batch: each entry parsed on its own."""
    from nra.config.prefixes import _memo

    _memo.clear()
    parsed, errors = set(), []
    for entry in entries:
        try:
            parsed.update(parse_address_entry(entry))
        except AddressEntryError as exc:
            errors.append(str(exc))
    return parsed, errors


def batched(entries, remembered=()):
    from nra.config.prefixes import _memo, parse_address_entries

    _memo.clear()
    parse_address_entries(list(remembered))
    parsed, errors = parse_address_entries(entries)
    return parsed, [str(exc) for exc in errors]


def assert_batch_is_one_by_one(entries, remembered=()):
    want = one_by_one(entries)
    got = batched(entries, remembered)
    assert got == want, entries
    by_value = {net: net for net in want[0]}
    for net in got[0]:  # the same kind of network, with its interval and hash
        assert type(net) is type(by_value[net]) and net.interval == by_value[net].interval
        assert hash(net) == hash(by_value[net]) and str(net) == str(by_value[net])
    assert batched(entries, entries) == want  # and read again from the memo


V4 = [f"10.{i // 256}.{i % 256}.0/{16 + i % 17}" for i in range(600)]


def test_a_pool_of_v4_cidrs_is_read_in_one_batch_as_one_by_one(monkeypatch):
    import nra.config.prefixes as prefixes

    assert_batch_is_one_by_one(V4)
    assert_batch_is_one_by_one(V4 + V4[:10], remembered=V4[100:200])  # repeats, some remembered
    want = one_by_one(V4)[0]
    calls = []
    monkeypatch.setattr(prefixes, "_parse_entry", lambda text: calls.append(text))
    prefixes._memo.clear()
    parsed, errors = prefixes.parse_address_entries(V4)
    assert parsed == want and len(want) > 400 and not errors and calls == []  # no entry read one by one
    assert all(map(prefixes._memo.__contains__, V4))


@pytest.mark.parametrize("odd", [
    "10.0.0.1", "10.0.0.1-10.0.0.9", "2001:db8::/64", " 10.9.0.0/24", "10.9.0.0/24 ", "10.9.0.0/024", "10.9.0.0/33",
    "10.9.0.0/", "/24", "10.9.0.0/2/4", "010.9.0.0/24", "10.9.0.256/24", "10.9.0/24", "10.9.0.0/+4", "10.9.0.0/２４",
    "10.9.0.0\x00/24", "10.9.0.0/24\n10.8.0.0/24", "", "1.2.3.4-1.2.3.5/24", 24, None, ["10.9.0.0/24"],
    ("1.2.3.4/5/6.7.8.9", "10"), ("10", "1.2.3.4/5/6.7.8.9"),  # two "/" and none: as many "/" as entries
])
def test_any_other_entry_reads_the_list_one_by_one(odd):
    odd = list(odd) if isinstance(odd, tuple) else [odd]
    assert_batch_is_one_by_one(V4[:5] + odd + V4[5:10])


entry_texts = st.one_of(
    st.tuples(st.lists(st.integers(0, 300).map(str), min_size=4, max_size=4).map(".".join),
              st.integers(0, 40).map(str)).map("/".join),
    st.text(st.sampled_from("0123456789./ -:a"), max_size=18),
    st.lists(st.integers(0, 32).map(str), min_size=1, max_size=5).map("/".join),
    st.sampled_from(["10.0.0.0/8", "10.0.0.0/08", "0.0.0.0/0", "255.255.255.255/32", "fd00::/64", "10.0.0.1"]),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(entry_texts, max_size=12), st.lists(entry_texts, max_size=4))
def test_random_pools_read_as_one_by_one(entries, remembered):
    assert_batch_is_one_by_one(entries, remembered)
