"""Learned-route liveness against the real kernel: routes installed with a routing daemon's
`proto` (as BIRD or FRR's zebra install what they learn over BGP), in a throwaway namespace,
read and watched by the adapter, judged by PeerHealth, planned and applied."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.daemon.reconciler import ReconcileConfig, Reconciler
from nra.kernel.adapter import KernelAdapter
from nra.kernel.events import LearnedRouteChange
from nra.kernel.model import KernelReads
from nra.plan.peer_health import PeerHealth
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import RulesReturnPath
from tests.netns import NetNS

pytestmark = pytest.mark.kernel

BIRD, BGP = 12, 186
LEARNED = frozenset({BIRD, BGP})
POLICY = RoutingPolicy(table=20, priority=20, fwmark=None, fwmask=None,
                       destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))
A4, B4, C4 = ip_address("10.99.0.2"), ip_address("10.99.0.3"), ip_address("10.99.0.4")
A6, B6 = ip_address("fd99::2"), ip_address("fd99::3")


def gateways(ns: NetNS, family: str) -> set[str]:
    words = " ".join(ns.routes(family)).split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


async def test_learned_routes_are_counted_by_gateway_in_every_table_and_both_families(node_ns: NetNS):
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")
    node_ns.ip("route add 10.200.2.0/24 via 10.99.0.2 proto bird table 100")
    node_ns.ip("route add 10.200.3.0/24 proto bgp nexthop via 10.99.0.2 nexthop via 10.99.0.3")
    node_ns.ip("route add 10.200.4.0/24 via 10.99.0.3 proto static")  # not one of the daemons
    node_ns.ip("route add 10.200.5.0/24 via inet6 fd99::3 proto bird")  # IPv4 via an IPv6 peer
    node_ns.ip("-6 route add 2001:db8:200::/64 via fd99::2 proto bird")
    node_ns.ip("route add 10.200.6.0/24 via 10.99.0.9 proto bird")  # via an address that is no peer
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        state = await adapter.read_state([A4, B4, C4, A6, B6])
    assert state.learned == {A4: 3, B4: 1, A6: 1, B6: 1}
    async with KernelAdapter(20, netns=node_ns.name) as adapter:  # the setting off: not even read
        assert (await adapter.read_state([A4])).learned is None


async def test_routes_in_nras_own_tables_are_never_learned(node_ns: NetNS):
    # issue 20.11: nra's own routes counted as learned kept a peer "alive" (or out) by its own doing
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bgp table 20")  # the managed table
    node_ns.ip("route add 10.200.2.0/24 via 10.99.0.3 proto bgp table 22")  # a router table
    node_ns.ip("route add 10.200.3.0/24 via 10.99.0.3 proto bgp table 100")  # someone else's
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=range(21, 36)),
                             learned_protos=LEARNED) as adapter:
        state = await adapter.read_state([A4, B4])
    assert state.learned == {B4: 1}


async def test_an_ipv6_route_via_the_peers_link_local_address_counts_for_the_peer(node_ns: NetNS):
    # FRR's zebra installs what it learns from an IPv6 neighbour on the link via its link-local
    # address; the neighbour entries (set by hand here) tell which peer that is
    node_ns.ip("-6 neigh replace fd99::2 lladdr 02:00:00:00:00:02 dev eth0 nud reachable")
    node_ns.ip("-6 neigh replace fd99::3 lladdr 02:00:00:00:00:04 dev eth0 nud reachable")
    node_ns.ip("-6 neigh replace fe80::2 lladdr 02:00:00:00:00:02 dev eth0 nud reachable")
    node_ns.ip("-6 neigh replace fe80::3 lladdr 02:00:00:00:00:03 dev eth0 nud reachable")
    node_ns.ip("-6 route add 2001:db8:201::/64 via fe80::2 dev eth0 proto bgp")
    node_ns.ip("-6 route add 2001:db8:202::/64 via fe80::3 dev eth0 proto bgp")  # no peer has that MAC
    node_ns.ip("route add 10.200.1.0/24 via inet6 fe80::2 dev eth0 proto bgp")  # IPv4 via it too
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        state = await adapter.read_state([A6, B6])
        assert state.learned == {A6: 2}
        events: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(_learned_events(adapter, events))
        try:
            await adapter.subscribed()
            node_ns.ip("-6 route del 2001:db8:201::/64")
            assert await _next(events) == "learned route withdrawn: IPv6 2001:db8:201::/64 via fe80::2 (proto 186)"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert (await adapter.read_state([A6, B6])).learned == {A6: 1}


async def test_a_link_local_gateway_that_cannot_be_told_never_makes_a_peer_look_down(node_ns: NetNS):
    node_ns.ip("-6 neigh replace fd99::3 lladdr 02:00:00:00:00:03 dev eth0 nud reachable")
    node_ns.ip("-6 neigh replace fe80::2 lladdr 02:00:00:00:00:02 dev eth0 nud reachable")
    node_ns.ip("-6 route add 2001:db8:201::/64 via fe80::2 dev eth0 proto bgp")
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        # fd99::2 has no entry (its MAC is unknown) and fd99::3's MAC is another: fd99::2's route
        assert (await adapter.read_state([A6, B6])).learned == {A6: 1}
        # the gateway's own entry gone too: it may be either peer's
        node_ns.ip("-6 neigh del fe80::2 dev eth0")
        assert (await adapter.read_state([A6, B6])).learned == {A6: 1, B6: 1}


async def _learned_events(adapter: KernelAdapter, out: asyncio.Queue) -> None:
    async for event in adapter.events():
        if isinstance(event, LearnedRouteChange):
            await out.put(event.reason)


async def _next(queue: asyncio.Queue, timeout: float = 3.0) -> str:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_a_learned_route_via_a_peer_coming_or_going_is_an_event(node_ns: NetNS):
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        await adapter.read_state([A4, A6])  # says which peers are watched
        events: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(_learned_events(adapter, events))
        try:
            await adapter.subscribed()
            # not events: a daemon route via another address, a route via a peer of another proto
            node_ns.ip("route add 10.200.7.0/24 via 10.99.0.9 proto bird")
            node_ns.ip("route add 10.200.8.0/24 via 10.99.0.2 proto static")
            node_ns.ip("route del 10.200.1.0/24")
            assert await _next(events) == "learned route withdrawn: IPv4 10.200.1.0/24 via 10.99.0.2 (proto 12)"
            node_ns.ip("-6 route add 2001:db8:200::/64 proto bgp nexthop via fd99::2 nexthop via fd99::3")
            assert await _next(events) == "learned route added: IPv6 2001:db8:200::/64 via fd99::2 (proto 186)"
            node_ns.ip("route add 10.200.9.0/24 via inet6 fd99::2 proto bird")  # RTA_VIA
            assert await _next(events) == "learned route added: IPv4 10.200.9.0/24 via fd99::2 (proto 12)"
            # nothing else came: the next event (on the same socket, in order) is a marker's
            node_ns.ip("route add 10.200.10.0/24 via 10.99.0.2 proto bird")
            assert await _next(events) == "learned route added: IPv4 10.200.10.0/24 via 10.99.0.2 (proto 12)"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Node:
    """The reconciler on the real kernel, reconciling to one intent."""

    def __init__(self, adapter: KernelAdapter, want: Intent):
        self.reconciler = Reconciler(adapter, ReconcileConfig(RulesReturnPath(POLICY)))
        self.want = want

    async def reconcile(self):
        outcome = await self.reconciler.reconcile(self.want, "test", hooks=False)
        assert outcome.failed == [], outcome.describe()
        return outcome.plan


async def test_a_peer_is_left_out_while_its_learned_routes_are_gone_never_the_last(node_ns: NetNS):
    want = Intent(frozenset({Peer(A4, 1, "r1"), Peer(B4, 1, "r2"), Peer(C4, 1, "quiet")}),
                  frozenset({ip_network("192.0.2.0/24")}))
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")
    node_ns.ip("route add 10.200.2.0/24 via 10.99.0.3 proto bird")
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        node = Node(adapter, want)
        await node.reconcile()
        assert gateways(node_ns, "-4") == {"10.99.0.2", "10.99.0.3", "10.99.0.4"}

        node_ns.ip("route del 10.200.1.0/24")  # r1's session dropped: its daemon withdrew the route
        p = await node.reconcile()
        assert p.left_out == {A4: "bgp-down"}
        # r2 stays, and so does the peer that never had a learned route (it is not judged)
        assert gateways(node_ns, "-4") == {"10.99.0.3", "10.99.0.4"}

        node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")  # back
        p = await node.reconcile()
        assert p.left_out == {} and gateways(node_ns, "-4") == {"10.99.0.2", "10.99.0.3", "10.99.0.4"}

        # both judged peers down: the quiet one carries the family alone
        node_ns.ip("route del 10.200.1.0/24")
        node_ns.ip("route del 10.200.2.0/24")
        p = await node.reconcile()
        assert p.left_out == {A4: "bgp-down", B4: "bgp-down"} and gateways(node_ns, "-4") == {"10.99.0.4"}


async def test_a_familys_last_peers_stay_when_all_their_learned_routes_go(node_ns: NetNS):
    want = Intent(frozenset({Peer(A6, 1, "r1"), Peer(B6, 1, "r2")}), frozenset({ip_network("2001:db8::/64")}))
    node_ns.ip("-6 route add 2001:db8:201::/64 via fd99::2 proto bgp")
    node_ns.ip("-6 route add 2001:db8:202::/64 via fd99::3 proto bgp")
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        node = Node(adapter, want)
        await node.reconcile()
        node_ns.ip("-6 route del 2001:db8:201::/64")
        await node.reconcile()
        assert gateways(node_ns, "-6") == {"fd99::3"}
        node_ns.ip("-6 route del 2001:db8:202::/64")  # the last one goes too: kept as it is
        p = await node.reconcile()
        assert p.operations == () and gateways(node_ns, "-6") == {"fd99::3"}
        assert any("every on-link IPv6 peer is judged down" in w for w in p.warnings)


async def test_an_eui64_link_local_gateway_without_an_entry_counts_for_its_peer_only(node_ns: NetNS):
    # FRR's zebra installs an IPv6 route via the router's link-local address before anything
    # was sent there (no neighbour entry): its EUI-64 identifier still names the router, so
    # another router's withdrawal is not hidden by this route (was: counted for every peer)
    node_ns.ip("-6 neigh replace fd99::2 lladdr 02:00:00:00:00:02 dev eth0 nud reachable")
    node_ns.ip("-6 neigh replace fd99::3 lladdr 72:6c:1f:d3:c7:4c dev eth0 nud reachable")
    node_ns.ip("-6 route add 2001:db8:201::/64 via fe80::706c:1fff:fed3:c74c dev eth0 proto bgp")
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        assert (await adapter.read_state([A6, B6])).learned == {B6: 1}
