"""The netlink codec: fixed byte fixtures (written from the uapi layouts, not captured from
the code under test), and encode -> kernel -> decode round trips in a throwaway namespace."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import pytest

from nra.kernel.codec import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_NEWNEIGH,
    RTM_NEWRULE,
    decode_neighbour,
    decode_rule,
    encode_dump_request,
    encode_rule,
    messages,
    request,
    rule_owner,
)
from nra.kernel.model import FULL_MASK, NRA_PROTOCOL, KernelRule, NeighbourEntry
from nra.kernel.rules import Rules
from nra.kernel.socket import NetlinkSocket
from tests.netns import NetNS

# `from 192.0.2.0/24 lookup 20 priority 20`: fib_rule_hdr (family AF_INET=2, dst_len 0,
# src_len 24, tos 0, table 20, res1, res2, action FR_ACT_TO_TBL=1, flags 0), then
# FRA_TABLE(15)=20, FRA_PRIORITY(6)=20, FRA_PROTOCOL(21)=245 (nra's, padded), FRA_SRC(2)=192.0.2.0;
# attributes are (u16 length, u16 type, payload), little-endian on this machine.
RULE_V4 = bytes.fromhex(
    "02 00 18 00 14 00 00 01 00000000"
    "0800 0f00 14000000"
    "0800 0600 14000000"
    "0500 1500 f5000000"
    "0800 0200 c0000200"
)
# `from 2001:db8::/64 fwmark 0x14/0xff lookup 100000 priority 7` (table > 255: the header
# says RT_TABLE_COMPAT=252, the attribute holds the id)
RULE_V6_MARK = bytes.fromhex(
    "0a 00 40 00 fc 00 00 01 00000000"
    "0800 0f00 a0860100"
    "0800 0600 07000000"
    "0500 1500 f5000000"
    "1400 0200 20010db8000000000000000000000000"
    "0800 0a00 14000000"
    "0800 1000 ff000000"
)


def test_encode_rule_matches_the_fixture_bytes():
    assert encode_rule(4, ip_network("192.0.2.0/24"), 20, 20) == RULE_V4
    assert encode_rule(6, ip_network("2001:db8::/64"), 7, 100000, 0x14, 0xFF) == RULE_V6_MARK


def test_decode_rule_from_the_fixture_bytes():
    assert decode_rule(RULE_V4) == KernelRule(4, ip_network("192.0.2.0/24"), 20, 20)
    assert decode_rule(RULE_V6_MARK) == KernelRule(6, ip_network("2001:db8::/64"), 7, 100000, 0x14, 0xFF)
    assert rule_owner(RULE_V4) == (20, NRA_PROTOCOL) and rule_owner(RULE_V6_MARK) == (100000, NRA_PROTOCOL)
    # a rule of another protocol (someone else's, or an older nra's) is never taken for nra's
    theirs = RULE_V4.replace(bytes.fromhex("0500 1500 f5000000"), bytes.fromhex("0500 1500 04000000"))
    assert decode_rule(theirs).extra == ("protocol 4",) and decode_rule(theirs).key() is None
    assert decode_rule(RULE_V4).wire == RULE_V4


def test_decode_rule_names_every_other_selector():
    body = (bytes.fromhex("02 08 00 10 00 00 00 01 02000000")  # dst_len 8, tos 0x10, flags INVERT
            + bytes.fromhex("0800 0f00 14000000 0800 0600 14000000")
            + bytes.fromhex("0800 0100 0a000000")  # FRA_DST 10.0.0.0
            + bytes.fromhex("0900 0300 65746831 00 000000")  # FRA_IIFNAME "eth1\0" padded
            + bytes.fromhex("0800 0e00 ffffffff")  # FRA_SUPPRESS_PREFIXLEN unset: not a selector
            + bytes.fromhex("0800 1800 50005a00")  # FRA_DPORT_RANGE 80-90
            + bytes.fromhex("0500 1500 04 000000"))  # FRA_PROTOCOL static: someone else's rule
    rule = decode_rule(body)
    assert set(rule.extra) == {"not", "tos 0x10", "to 10.0.0.0/8", "iifname eth1", "dport_range 80:90",
                               "protocol 4"}
    assert rule.key() is None


def test_a_mark_of_0_with_a_mask_is_a_selector():
    # as the kernel lists `from 192.0.2.0/24 fwmark 0/0xff lookup 20 priority 20`: FRA_FWMASK
    # alone (no FRA_FWMARK for a mark of 0), between FRA_SUPPRESS_PREFIXLEN and FRA_PROTOCOL
    # (made by nra: FRA_PROTOCOL 245)
    listed = bytes.fromhex("02001800140000010000000008000f001400000008000e00ffffffff05001500f50000000800"
                           "06001400000008001000ff00000008000200c0000200")
    rule = decode_rule(listed)
    assert (rule.fwmark, rule.fwmask, rule.extra) == (0, 0xFF, ())
    assert rule.key() != KernelRule(4, ip_network("192.0.2.0/24"), 20, 20).key()
    # we send the mark too: the kernel takes either
    assert encode_rule(4, ip_network("192.0.2.0/24"), 20, 20, 0, 0xFF).endswith(
        bytes.fromhex("0800 0a00 00000000 0800 1000 ff000000"))


def test_a_mark_with_mask_zero_is_no_selector_and_a_lone_mark_gets_the_full_mask():
    header = bytes.fromhex("02 00 00 00 14 00 00 01 00000000 0800 0f00 14000000")
    assert decode_rule(header + bytes.fromhex("0800 0a00 00000000 0800 1000 00000000")).fwmark is None
    lone = decode_rule(header + bytes.fromhex("0800 0a00 07000000"))
    assert (lone.fwmark, lone.fwmask) == (7, FULL_MASK)


def test_messages_walk_the_buffer_and_stop_at_a_truncated_one():
    data = request(RTM_NEWRULE, 2, 5, RULE_V4) + request(RTM_NEWRULE, 2, 6, RULE_V4)
    assert [(m.kind, m.seq, m.body_bytes()) for m in messages(data)] == [(RTM_NEWRULE, 5, RULE_V4),
                                                                        (RTM_NEWRULE, 6, RULE_V4)]
    assert [m.seq for m in messages(data[:-4])] == [5]


def test_dump_request_bytes():
    # nlmsghdr(len 28, RTM_GETRULE=34, REQUEST|DUMP=0x301, seq 9, pid 0) + fib_rule_hdr(AF_INET6)
    assert encode_dump_request(34, 10, 9) == bytes.fromhex("1c000000 2200 0103 09000000 00000000"
                                                            "0a000000 00000000 00000000")
    # RTM_GETNEIGH of one link: ndmsg(AF_INET) + NDA_IFINDEX(8)=3
    assert encode_dump_request(30, 2, 1, selector=3) == bytes.fromhex("24000000 1e00 0103 01000000 00000000"
                                                                      "02000000 00000000 0000 0000"
                                                                      "0800 0800 03000000")
    # RTM_GETROUTE(26) of table 255: rtmsg(AF_INET, table 255) + RTA_TABLE(15)=255
    assert encode_dump_request(26, 2, 2, selector=255) == bytes.fromhex("24000000 1a00 0103 02000000 00000000"
                                                                         "02000000 ff000000 00000000"
                                                                         "0800 0f00 ff000000")


def test_decode_neighbour_keeps_only_wanted_addresses():
    # ndmsg(AF_INET, ifindex 3, state NUD_REACHABLE=0x02, flags 0, type 1) + NDA_DST(1)=10.99.0.2
    body = bytes.fromhex("02 00 0000 03000000 0200 00 01 0800 0100 0a630002")
    message = next(messages(request(RTM_NEWNEIGH, 0, 0, body)))
    wanted = ip_address("10.99.0.2").packed
    assert decode_neighbour(message, {wanted}) == NeighbourEntry(ip_address("10.99.0.2"), 3, "REACHABLE")
    assert decode_neighbour(message, set()) is None


# -- round trips through the kernel ------------------------------------------------------------

ROUND_TRIPS = [
    (4, "192.0.2.0/24", 20, 20, None, None),
    (4, "198.51.100.7/32", 1234, 20, 0x14, None),
    (4, None, 5, 20, 0x10, 0xF0),
    (6, "2001:db8::/64", 20, 100000, None, None),
    (6, "2001:db8:1::/48", 20, 20, 0x14, 0xFF),
    (4, "192.0.2.128/25", 20, 20, 0, 0xFF),
]


@pytest.mark.kernel
def test_rules_round_trip_through_the_kernel(netns: NetNS):
    sock = NetlinkSocket(netns.name)
    try:
        bodies = [encode_rule(f, ip_network(s) if s else None, p, t, m, k) for f, s, p, t, m, k in ROUND_TRIPS]
        assert sock.request_batch(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, bodies) \
            == [0] * len(bodies)
        listed = asyncio.run(Rules(sock, 20).read()) + asyncio.run(Rules(sock, 100000).read())
    finally:
        sock.close()
    expected = {KernelRule(f, ip_network(s) if s else None, p, t, m, FULL_MASK if m is not None and k is None else k)
                for f, s, p, t, m, k in ROUND_TRIPS}
    assert set(listed) == expected
    # and `ip` reads what we wrote the way we meant it
    assert "1234:\tfrom 198.51.100.7 fwmark 0x14 lookup 20 proto 245" in netns.rules("-4")
    assert "5:\tfrom all fwmark 0x10/0xf0 lookup 20 proto 245" in netns.rules("-4")
    assert "20:\tfrom 2001:db8::/64 lookup 100000 proto 245" in netns.rules("-6", table=100000)
