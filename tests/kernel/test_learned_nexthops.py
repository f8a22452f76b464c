"""Learned routes through nexthop objects, as FRR's zebra installs them (`ip nexthop`, routes
with `nhid`), against the real kernel in a throwaway namespace: at the namespace's
`net.ipv4.nexthop_compat_mode` 1 a route still lists its gateways, at 0 it names only the
object, and liveness must read the same either way (issue 17)."""

from __future__ import annotations

import asyncio

import pytest

from nra.kernel.adapter import KernelAdapter
from tests.kernel.test_learned_routes import A4, A6, B4, B6, LEARNED, _learned_events, _next
from tests.netns import NetNS

pytestmark = pytest.mark.kernel


def objects_and_routes(ns: NetNS) -> None:
    ns.ip("nexthop add id 11 via 10.99.0.2 dev eth0")
    ns.ip("nexthop add id 12 via 10.99.0.3 dev eth0")
    ns.ip("nexthop add id 13 group 11/12")
    ns.ip("nexthop add id 21 via fd99::2 dev eth0")
    ns.ip("route add 10.200.1.0/24 nhid 11 proto bgp")
    ns.ip("route add 10.200.2.0/24 nhid 13 proto bgp")  # a group: both peers
    ns.ip("route add 10.200.3.0/24 nhid 12 proto static")  # not a daemon's
    ns.ip("-6 route add 2001:db8:200::/64 nhid 21 proto bgp")


@pytest.mark.parametrize("compat", [1, 0])
async def test_routes_through_nexthop_objects_count_for_their_gateways(node_ns: NetNS, compat: int):
    node_ns.sysctl(**{"net.ipv4.nexthop_compat_mode": str(compat)})
    objects_and_routes(node_ns)
    listed = node_ns.ip("route show 10.200.1.0/24")
    assert ("via 10.99.0.2" in listed) == bool(compat), listed  # what the mode changes
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        assert (await adapter.read_state([A4, B4, A6, B6])).learned == {A4: 2, B4: 1, A6: 1}


@pytest.mark.parametrize("compat", [1, 0])
async def test_a_nexthop_object_removed_takes_its_routes_and_is_an_event(node_ns: NetNS, compat: int):
    # The kernel removes the routes of a deleted object without a route notification: the
    # object's own notification is the event.
    node_ns.sysctl(**{"net.ipv4.nexthop_compat_mode": str(compat)})
    objects_and_routes(node_ns)
    async with KernelAdapter(20, netns=node_ns.name, learned_protos=LEARNED) as adapter:
        await adapter.read_state([A4, B4, A6, B6])  # says which peers are watched
        events: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(_learned_events(adapter, events))
        try:
            await adapter.subscribed()
            node_ns.ip("nexthop add id 31 via 10.99.0.9 dev eth0")  # via no peer: not an event
            node_ns.ip("nexthop del id 11")  # 10.99.0.2's object: its route and its group slot go
            reasons = {await _next(events)}
            reasons.add(await _next(events))  # the group's change
            assert reasons == {"nexthop object 11 via 10.99.0.2 removed", "nexthop group 13 changed"}, reasons
            node_ns.ip("route add 10.200.4.0/24 nhid 12 proto bird")
            added = await _next(events)
            expected = ("learned route added: IPv4 10.200.4.0/24 via 10.99.0.3 (proto 12)" if compat else
                        "learned route added: IPv4 10.200.4.0/24 via nexthop object 12 (proto 12)")
            assert added == expected
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert (await adapter.read_state([A4, B4, A6, B6])).learned == {B4: 2, A6: 1}
