"""The request/dump socket against the real kernel: leftovers of an abandoned request are
not read as part of the next one, an abandoned dump does not poison the socket, and the
socket times out instead of blocking for ever."""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import ip_network

import pytest

from nra.kernel.codec import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    RTM_DELRULE,
    RTM_GETRULE,
    RTM_NEWRULE,
    encode_dump_request,
    encode_rule,
    request,
)
from nra.kernel.rules import Rules
from nra.kernel.socket import DumpInterrupted, NetlinkSocket
from tests.netns import NetNS

pytestmark = pytest.mark.kernel


def add_rules(sock: NetlinkSocket, count: int) -> None:
    bodies = [encode_rule(4, ip_network(f"100.64.{i // 256}.{i % 256}/32"), 20, 20) for i in range(count)]
    assert set(sock.request_batch(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, bodies)) == {0}


def test_a_stale_error_reply_in_the_socket_is_not_read_as_the_dump_failing(netns: NetNS):
    sock = NetlinkSocket(netns.name)
    try:
        add_rules(sock, 3)
        # a delete of a rule that does not exist, its ENOENT ack left unread (seq 4242)
        missing = encode_rule(4, ip_network("203.0.113.0/24"), 99, 20)
        sock.send_raw(request(RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, 4242, missing))
        rules = asyncio.run(Rules(sock, 20).read())
        assert sorted(str(r.src) for r in rules) == ["100.64.0.0/32", "100.64.0.1/32", "100.64.0.2/32"]
        assert sock.reopened == 0  # dropped by its sequence number, not by an error
    finally:
        sock.close()


def test_an_abandoned_dump_leaves_no_stale_rules_in_the_next(netns: NetNS):
    sock = NetlinkSocket(netns.name)
    try:
        add_rules(sock, 3000)  # several buffers' worth
        # a dump of the IPv4 rules (seq 777), never read: the next read must not see these
        sock.send_raw(encode_dump_request(RTM_GETRULE, socket.AF_INET, 777))
        netns.ip("rule del from 100.64.0.0/32 lookup 20 priority 20")
        rules = asyncio.run(Rules(sock, 20).read())
        assert len(rules) == 2999 and all(str(r.src) != "100.64.0.0/32" for r in rules)
        again = asyncio.run(Rules(sock, 20).read())
        assert len(again) == 2999
    finally:
        sock.close()


def test_an_interrupted_dump_is_read_to_its_done_and_not_waited_for_again():
    """The kernel flags a dump whose table changed meanwhile (NLM_F_DUMP_INTR); when its DONE
    is in the same buffer, the reader must not wait for another. Bytes in the kernel's layout,
    through a datagram socket pair (the kernel cannot be made to interrupt a dump on demand)."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.settimeout(1.0)
    try:
        body = encode_rule(4, ip_network("192.0.2.0/24"), 20, 20)
        writer.send(request(RTM_NEWRULE, NLM_F_MULTI | NLM_F_DUMP_INTR, 5, body)
                    + request(NLMSG_DONE, NLM_F_MULTI | NLM_F_DUMP_INTR, 5, b"\0\0\0\0"))
        started = time.monotonic()
        with pytest.raises(DumpInterrupted):
            NetlinkSocket()._read_dump(reader, 5, lambda m: m.seq, False)
        assert time.monotonic() - started < 0.5
        # the socket is clean after it: the next dump's replies are read as they come
        writer.send(request(RTM_NEWRULE, NLM_F_MULTI, 6, body) + request(NLMSG_DONE, NLM_F_MULTI, 6, b"\0\0\0\0"))
        assert NetlinkSocket()._read_dump(reader, 6, lambda m: m.seq, False) == [6]
    finally:
        reader.close()
        writer.close()


def test_no_answer_times_out_and_the_socket_is_reopened(netns: NetNS):
    """A dump whose answer never comes (here: a socket that is not netlink at all stands in
    for a stuck one) ends after the timeout, and the next call gets a fresh socket."""
    sock = NetlinkSocket(netns.name, timeout_s=0.2)
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        reader.settimeout(0.2)
        sock._sock = reader  # answers nothing
        started = time.monotonic()
        rules = asyncio.run(Rules(sock, 20).read())  # retried on a reopened, real socket
        assert rules == [] and sock.reopened == 1
        assert time.monotonic() - started < 2
    finally:
        sock.close()
        writer.close()
