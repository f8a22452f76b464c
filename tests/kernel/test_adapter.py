"""The kernel adapter against the real kernel, each test in its own throwaway namespace."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.kernel.adapter import KernelAdapter
from nra.kernel.events import TableChange
from nra.kernel.model import KernelState, Nexthop
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import plan
from tests.netns import NetNS, new_netns

pytestmark = pytest.mark.kernel

POLICY = RoutingPolicy(table=20, priority=20, fwmark=None, fwmask=None,
                       destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))


def intent(peers, prefixes) -> Intent:
    return Intent(frozenset(Peer(ip_address(a), w, f"p{i}") for i, (a, w) in enumerate(peers)),
                  frozenset(ip_network(p) for p in prefixes))


def addresses(want: Intent):
    return [p.address for p in want.peers]


async def reconcile(adapter: KernelAdapter, want: Intent, policy: RoutingPolicy = POLICY):
    state = await adapter.read_state(addresses(want))
    the_plan = plan(want, state, policy)
    report = await adapter.apply(the_plan.operations)
    assert report.failed == []
    return the_plan, report


async def steady(adapter: KernelAdapter, want: Intent, policy: RoutingPolicy = POLICY) -> KernelState:
    state = await adapter.read_state(addresses(want))
    assert plan(want, state, policy).operations == ()
    return state


async def test_round_trip_both_families_with_weights(node_ns: NetNS):
    want = intent([("10.99.0.2", 100), ("10.99.0.3", 5), ("fd99::2", 3), ("fd99::3", 256)],
                  ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/64"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        first, _ = await reconcile(adapter, want)
        assert len(first.operations) == 5
        state = await steady(adapter, want)
    v4 = next(r for r in state.routes if r.family == 4)
    assert sorted(v4.nexthops) == [Nexthop(ip_address("10.99.0.2"), 100), Nexthop(ip_address("10.99.0.3"), 5)]
    v6 = next(r for r in state.routes if r.family == 6)
    assert sorted(v6.nexthops) == [Nexthop(ip_address("fd99::2"), 3), Nexthop(ip_address("fd99::3"), 256)]
    # and `ip` agrees
    assert node_ns.rules("-4") == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245", "20:\tfrom 198.51.100.7 lookup 20 proto 245"]
    assert node_ns.rules("-6") == ["20:\tfrom 2001:db8::/64 lookup 20 proto 245"]
    v4_text = "\n".join(node_ns.routes("-4"))
    assert "nexthop via 10.99.0.2 dev eth0 weight 100" in v4_text
    assert "nexthop via 10.99.0.3 dev eth0 weight 5" in v4_text
    assert "nexthop via fd99::3 dev eth0 weight 256" in "\n".join(node_ns.routes("-6"))


async def test_weight_change_is_one_replace_and_single_peer_is_steady(node_ns: NetNS):
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        await reconcile(adapter, intent([("10.99.0.2", 1), ("10.99.0.3", 1)], ["192.0.2.0/24"]))
        changed = intent([("10.99.0.2", 1), ("10.99.0.3", 40)], ["192.0.2.0/24"])
        p, _ = await reconcile(adapter, changed)
        assert [op.kind for op in p.operations] == ["replace_route"]
        await steady(adapter, changed)
        single = intent([("10.99.0.3", 40)], ["192.0.2.0/24"])
        await reconcile(adapter, single)
        await steady(adapter, single)
    assert node_ns.routes("-4") == ["default via 10.99.0.3 dev eth0 proto 245"]


@pytest.mark.parametrize("fwmark,fwmask,shown", [(0x14, 0xFF, "fwmark 0x14/0xff"), (0x14, None, "fwmark 0x14"),
                                                 (0, 0xFF, "fwmark 0/0xff")])
async def test_fwmark_with_and_without_mask(node_ns: NetNS, fwmark, fwmask, shown):
    policy = dataclasses.replace(POLICY, fwmark=fwmark, fwmask=fwmask)
    want = intent([("10.99.0.2", 1), ("fd99::2", 1)], ["192.0.2.0/24", "2001:db8::/64"])
    async with KernelAdapter(policy.table, netns=node_ns.name) as adapter:
        await reconcile(adapter, want, policy)
        await steady(adapter, want, policy)
    assert node_ns.rules("-4") == [f"20:\tfrom 192.0.2.0/24 {shown} lookup 20 proto 245"]
    assert node_ns.rules("-6") == [f"20:\tfrom 2001:db8::/64 {shown} lookup 20 proto 245"]


async def test_a_mark_0_rule_is_not_taken_for_ours_without_a_fwmark(node_ns: NetNS):
    """`fwmark 0/0xff` selects packets whose low byte is 0: a real selector (issue 11 #5)."""
    node_ns.ip("rule add from 192.0.2.0/24 fwmark 0/0xff lookup 20 priority 20 protocol 245")  # as nra's
    want = intent([("10.99.0.2", 1)], ["192.0.2.0/24"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        p, _ = await reconcile(adapter, want)
        assert [op.kind for op in p.operations] == ["replace_route", "add_rule", "delete_rule"]
        assert p.operations[2].reason == "imposter: fwmark/mask differ"
        await steady(adapter, want)
    assert node_ns.rules("-4") == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245"]


async def test_scoped_routes_in_the_table_are_really_deleted(node_ns: NetNS):
    """A device route (scope link) and a local one (scope host) in our table: deleted with
    their own scope; without it the kernel answered ESRCH, taken for "already gone", and the
    daemon planned the same delete for ever (issue 11 #6)."""
    node_ns.ip("route add 10.50.0.0/24 dev eth0 table 20")
    node_ns.ip("route add local 10.99.0.1 dev lo table 20")
    want = intent([("10.99.0.2", 1)], ["192.0.2.0/24"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        p, _ = await reconcile(adapter, want)
        assert sum(op.kind == "delete_route" for op in p.operations) == 2
        await steady(adapter, want)
    assert node_ns.routes("-4") == ["default via 10.99.0.2 dev eth0 proto 245"]


async def test_addresses_that_are_no_nexthop_are_named_and_left_out(node_ns: NetNS):
    """The node's own address (replies would be blackholed), a broadcast, a network, an
    anycast or a multicast address as a peer: left out as invalid, each named (issue 11 #7)."""
    want = intent([("10.99.0.2", 1), ("10.99.0.1", 1), ("10.99.0.255", 1), ("10.99.0.0", 1), ("224.0.0.5", 1),
                   ("fd99::2", 1), ("fd99::1", 1), ("fd99::", 1)], ["192.0.2.0/24", "2001:db8::/64"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        p, _ = await reconcile(adapter, want)
        await steady(adapter, want)
    assert p.left_out == {ip_address(a): "invalid" for a in ("10.99.0.1", "10.99.0.255", "10.99.0.0", "224.0.0.5",
                                                             "fd99::1", "fd99::")}
    text = "\n".join(p.warnings)
    for needle in ("peer 10.99.0.1 (p1) is this node's own address", "10.99.0.255 (p2) is a broadcast address",
                   "10.99.0.0 (p3) is the network address of 10.99.0.0/24", "224.0.0.5 (p4) is a multicast",
                   "fd99::1 (p6) is this node's own address", "fd99:: (p7) is the subnet-router anycast address"):
        assert needle in text, text
    assert node_ns.routes("-4") == ["default via 10.99.0.2 dev eth0 proto 245"]
    assert node_ns.routes("-6") == ["default via fd99::2 dev eth0 proto 245 metric 1024 pref medium"]


def wait_link_local_route(ns: NetNS, dev: str) -> None:
    deadline = time.monotonic() + 5
    while "fe80::/64" not in ns.ip(f"-6 route show dev {dev}"):
        assert time.monotonic() < deadline, f"no fe80::/64 on {dev}"
        time.sleep(0.02)


def link_to(ns: NetNS, other: NetNS, dev: str) -> None:
    """A veth `dev` from `ns` to `other` (so `ns` has one end only), up, with its link-local route."""
    ns.ip(f"link add name {dev} type veth peer name {dev} netns {other.name}")
    ns.ip(f"link set dev {dev} up")
    other.ip(f"link set dev {dev} up")
    wait_link_local_route(ns, dev)


async def test_a_link_local_peer_is_installed_with_its_link(netns: NetNS):
    """fe80::1%eth0 goes in with `dev eth0`; fe80::2 without a zone takes the node's one
    link; with two candidate links it is named and left out (issue 11 #9)."""
    node_ns, other = netns, new_netns("nra-ll")
    try:
        await _link_local_peers(node_ns, other)
    finally:
        other.delete()


async def _link_local_peers(node_ns: NetNS, other: NetNS) -> None:
    link_to(node_ns, other, "eth0")
    peers = [("fe80::1%eth0", 1), ("fe80::2", 1)]
    want = Intent(frozenset(Peer(ip_address(a), w, f"p{i}") for i, (a, w) in enumerate(peers)),
                  frozenset({ip_network("2001:db8::/64")}))
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        p, _ = await reconcile(adapter, want)
        await steady(adapter, want)
        text = "\n".join(node_ns.routes("-6"))
        assert "nexthop via fe80::1 dev eth0 weight 1" in text and "nexthop via fe80::2 dev eth0 weight 1" in text
        # a second link that carries IPv6: fe80::2 is now ambiguous, fe80::1%eth0 is not
        link_to(node_ns, other, "eth1")
        p, _ = await reconcile(adapter, want)
        assert p.left_out == {ip_address("fe80::2"): "invalid"}
        assert any("fe80::2 (p1) is a link-local address on 2 links: name one as fe80::2%<link>" in w
                   for w in p.warnings), p.warnings
        await steady(adapter, want)
    assert node_ns.routes("-6") == ["default via fe80::1 dev eth0 proto 245 metric 1024 pref medium"]


async def test_imposter_rules_and_routes_are_removed(node_ns: NetNS):
    want = intent([("10.99.0.2", 1), ("fd99::2", 1)], ["192.0.2.0/24", "2001:db8::/64"])
    ns = node_ns
    # (the kernel takes a rule as a duplicate of one with more selectors: add the general ones first)
    ns.ip("rule add lookup 20 priority 20")  # no from
    ns.ip("rule add from 192.0.2.0/24 lookup 20 priority 20 protocol 245")  # ours, already there
    ns.ip("rule add from 192.0.2.0/24 lookup 20 priority 30")  # other priority
    ns.ip("rule add from 192.0.2.0/24 fwmark 0x7 lookup 20 priority 20")  # other mark
    ns.ip("rule add from 192.0.2.0/24 iif eth0 lookup 20 priority 20")  # extra selector
    ns.ip("rule add from 192.0.2.0/24 to 10.0.0.0/8 lookup 20 priority 20")  # extra selector
    ns.ip("rule add not from 198.51.100.0/24 lookup 20 priority 20")  # inverted
    ns.ip("rule add from 192.0.2.0/24 dport 80-90 lookup 20 priority 20")  # port range
    ns.ip("rule add from 192.0.2.0/24 uidrange 1000-2000 lookup 20 priority 20")  # uid range
    ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")  # not announced
    ns.ip("-6 rule add lookup 20 priority 20")
    ns.ip("-6 rule add from 2001:db8::/64 lookup 20 priority 21")
    ns.ip("route add 10.0.0.0/8 via 10.99.0.2 table 20")  # other destination
    ns.ip("route add default via 10.99.0.3 table 20 metric 50")  # other metric
    ns.ip("route add blackhole default table 20 metric 7")  # other type
    ns.ip("-6 route add unreachable 2001:db8:9::/48 table 20")
    ns.ip("rule add from 192.0.2.0/24 lookup 99 priority 20")  # another table: not ours, stays
    async with KernelAdapter(POLICY.table, netns=ns.name) as adapter:
        p, report = await reconcile(adapter, want)
        assert sum(op.kind == "delete_rule" for op in p.operations) == 11
        assert sum(op.kind == "delete_route" for op in p.operations) == 4
        reasons = [op.reason for op in p.operations if op.kind == "delete_rule"]
        for selector in ("iifname eth0", "to 10.0.0.0/8", "dport_range 80:90", "uid_range 1000:2000", "not"):
            assert any(r.startswith("imposter: extra selector") and selector in r for r in reasons), selector
        assert "duplicate" not in reasons
        await steady(adapter, want)
    assert ns.rules("-4") == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245"]
    assert ns.rules("-6") == ["20:\tfrom 2001:db8::/64 lookup 20 proto 245"]
    assert ns.routes("-4") == ["default via 10.99.0.2 dev eth0 proto 245"]
    assert ns.routes("-6") == ["default via fd99::2 dev eth0 proto 245 metric 1024 pref medium"]
    assert ns.rules("-4", table=99) == ["20:\tfrom 192.0.2.0/24 lookup 99"]


async def test_duplicate_rules_keep_exactly_one(node_ns: NetNS):
    from nra.kernel.codec import (
        NLM_F_ACK,
        NLM_F_CREATE,
        NLM_F_REQUEST,
        RTM_NEWRULE,
        encode_rule,
    )
    from nra.kernel.socket import NetlinkSocket

    # `ip rule add` refuses an exact duplicate (NLM_F_EXCL); without EXCL the kernel keeps copies.
    body = encode_rule(4, ip_network("192.0.2.0/24"), 20, 20)
    sock = NetlinkSocket(node_ns.name)
    try:
        assert sock.request_batch(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, [body] * 3) == [0, 0, 0]
    finally:
        sock.close()
    assert len(node_ns.rules("-4")) == 3
    want = intent([("10.99.0.2", 1)], ["192.0.2.0/24"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        p, _ = await reconcile(adapter, want)
        assert [op.kind for op in p.operations] == ["replace_route", "delete_rule", "delete_rule"]
        await steady(adapter, want)
    assert node_ns.rules("-4") == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245"]


async def test_off_link_peer_is_dropped_with_a_warning(node_ns: NetNS):
    want = intent([("10.99.0.2", 10), ("10.55.0.1", 10), ("fd99::2", 1), ("fd55::1", 1)],
                  ["192.0.2.0/24", "2001:db8::/64"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        state = await adapter.read_state(addresses(want))
        assert state.unreachable == {ip_address("10.55.0.1"), ip_address("fd55::1")}
        p, _ = await reconcile(adapter, want)
        assert any("10.55.0.1" in w for w in p.warnings) and any("fd55::1" in w for w in p.warnings)
        await steady(adapter, want)
    assert node_ns.routes("-4") == ["default via 10.99.0.2 dev eth0 proto 245"]
    assert len(node_ns.rules("-4")) == 1 and len(node_ns.rules("-6")) == 1


async def test_replace_retries_without_a_refused_nexthop(node_ns: NetNS):
    """A route replace planned with a nexthop the kernel refuses still goes in with the rest."""
    from nra.kernel.operations import ReplaceRoute

    op = ReplaceRoute(4, ip_network("0.0.0.0/0"), 20, 0,
                      (Nexthop(ip_address("10.55.0.1"), 1), Nexthop(ip_address("10.99.0.2"), 2),
                       Nexthop(ip_address("10.99.0.3"), 3)))
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        report = await adapter.apply([op])
    assert report.failed == [] and report.applied == [op]
    assert report.dropped == [(op, (ip_address("10.55.0.1"),))]
    text = "\n".join(node_ns.routes("-4"))
    assert "via 10.99.0.2" in text and "via 10.99.0.3" in text and "10.55.0.1" not in text


async def test_link_down_and_up_restores_the_route_and_events_tell(node_ns: NetNS):
    want = intent([("10.99.0.2", 1), ("10.99.0.3", 1)], ["192.0.2.0/24"])
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        await reconcile(adapter, want)
        events = adapter.events()
        reasons: asyncio.Queue[str] = asyncio.Queue()

        async def collect():
            async for event in events:
                await reasons.put(event.reason)

        watcher = asyncio.create_task(collect())
        try:
            await asyncio.sleep(0.3)  # the event socket is bound and the link dump done
            node_ns.ip("link set dev eth0 down")
            seen = [await asyncio.wait_for(reasons.get(), 1.0)]
            await asyncio.sleep(0.1)
            while not reasons.empty():
                seen.append(reasons.get_nowait())
            # (IPv4 flushes routes through a dead link without a notification: the link
            # event is what tells the agent)
            assert any(r.startswith("link eth0 down") for r in seen), seen
            # the kernel dropped the route with the link; the peers are not on-link now
            state = await adapter.read_state(addresses(want))
            assert state.routes == () and len(state.unreachable) == 2
            assert plan(want, state, POLICY).operations == ()  # rules stay, nothing to churn

            node_ns.ip("link set dev eth0 up")
            up = await asyncio.wait_for(reasons.get(), 1.0)
            while "up" not in up:
                up = await asyncio.wait_for(reasons.get(), 1.0)
            p, _ = await reconcile(adapter, want)
            assert [op.kind for op in p.operations] == ["replace_route"]
            await steady(adapter, want)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    assert len(node_ns.routes("-4")) == 3  # multipath: header + 2 nexthops


async def test_events_report_foreign_rule_changes(node_ns: NetNS):
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        events = adapter.events()
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.3)
        node_ns.ip("rule add from 203.0.113.0/24 lookup 99 priority 20")  # another table: silent
        node_ns.ip("-6 rule add from 2001:db8::/64 lookup 20 priority 5")
        event = await asyncio.wait_for(first, 1.0)
        await events.aclose()
    assert event == TableChange("rule added: IPv6 from 2001:db8::/64 priority 5")


async def clean(adapter: KernelAdapter) -> int:
    """What CLEANANDEXIT does: reconcile to the empty intent; how many objects went."""
    _, report = await reconcile(adapter, Intent())
    await steady(adapter, Intent())
    return len(report.applied)


async def test_clean_removes_both_families_and_returns_zero_when_empty(node_ns: NetNS):
    want = intent([("10.99.0.2", 1), ("fd99::2", 1)], ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64"])
    node_ns.ip("rule add lookup 20 priority 99")
    node_ns.ip("rule add from 192.0.2.0/24 lookup 21 priority 20")  # another table stays
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        await reconcile(adapter, want)
        node_ns.ip("rule add lookup 20 priority 99")
        node_ns.ip("route add 10.0.0.0/8 via 10.99.0.2 table 20")
        assert await clean(adapter) == 3 + 2 + 1 + 1
        assert await clean(adapter) == 0
    for family in ("-4", "-6"):
        assert node_ns.rules(family) == [] and node_ns.routes(family) == []
    assert node_ns.rules("-4", table=21) == ["20:\tfrom 192.0.2.0/24 lookup 21"]


async def test_table_ids_above_255(node_ns: NetNS):
    policy = dataclasses.replace(POLICY, table=100000, priority=1234, fwmark=0x10, fwmask=0xF0)
    want = intent([("10.99.0.2", 3), ("10.99.0.3", 4), ("fd99::2", 1)], ["192.0.2.0/24", "2001:db8::/64"])
    node_ns.ip("rule add from 192.0.2.0/24 lookup 20 priority 1234")  # table 20 is not ours now
    async with KernelAdapter(policy.table, netns=node_ns.name) as adapter:
        await reconcile(adapter, want, policy)
        await steady(adapter, want, policy)
        assert node_ns.rules("-4", table=100000) == ["1234:\tfrom 192.0.2.0/24 fwmark 0x10/0xf0 lookup 100000 proto 245"]
        assert "weight 4" in "\n".join(node_ns.routes("-4", table=100000))
        assert node_ns.routes("-6", table=100000)
        assert await clean(adapter) == 4
    assert node_ns.rules("-4", table=20) == ["1234:\tfrom 192.0.2.0/24 lookup 20"]


async def test_missing_namespace_is_an_error_not_a_new_namespace():
    with pytest.raises(Exception):
        async with KernelAdapter(POLICY.table, netns="nra-does-not-exist-42") as adapter:
            await adapter.read_state([])
    import os
    assert not os.path.exists("/var/run/netns/nra-does-not-exist-42")
