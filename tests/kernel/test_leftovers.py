"""nra's own rules and routes (NRA_PROTOCOL) in tables its settings no longer name are found
and removed: a new TABLE or RETURN_PATH_TABLES range, a mark whose capacity shrank the
range, conntrack switched to rules. Someone else's rules and routes there stay."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from nra.kernel.adapter import KernelAdapter
from nra.kernel.model import NRA_PROTOCOL, KernelReads, KernelRoute, KernelRule, Nexthop
from nra.kernel.operations import AddRule, ReplaceRoute
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import plan
from tests.kernel.test_adapter import intent, reconcile
from tests.netns import NetNS

pytestmark = pytest.mark.kernel

WANT = intent([("10.99.0.2", 1), ("fd99::2", 1)], ["192.0.2.0/24", "2001:db8::/64"])


def policy(table: int) -> RoutingPolicy:
    return RoutingPolicy(table=table, priority=20, fwmark=None, fwmask=None,
                         destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))


async def router_table(adapter: KernelAdapter, table: int, mark: int) -> None:
    """A router table as the conntrack return path writes it: its route, its mark's rule."""
    report = await adapter.apply([
        ReplaceRoute(4, ip_network("0.0.0.0/0"), table, 0, (Nexthop(ip_address("10.99.0.3")),)),
        AddRule(4, None, 20, table, mark, 0x3E)])
    assert report.failed == []


async def test_a_new_table_removes_the_old_ones_rules_and_routes(node_ns: NetNS):
    async with KernelAdapter(20, netns=node_ns.name) as adapter:
        await reconcile(adapter, WANT, policy(20))
    assert all("proto 245" in line for line in node_ns.rules("-4") + node_ns.routes("-4"))
    node_ns.ip("rule add from 198.51.100.0/24 lookup 20 priority 5")  # someone else's: stays
    async with KernelAdapter(30, netns=node_ns.name) as adapter:
        state = await adapter.read_state([p.address for p in WANT.peers])
        assert {(type(x).__name__, x.table) for x in state.leftovers} == {("KernelRule", 20), ("KernelRoute", 20)}
        assert len(state.leftovers) == 4  # a rule and a route per family
        the_plan = plan(WANT, state, policy(30))
        assert sum("left over: table 20" in op.reason for op in the_plan.operations) == 4
        report = await adapter.apply(the_plan.operations)
        assert report.failed == []
        assert (await adapter.read_state([])).leftovers == ()
    for family in ("-4", "-6"):
        assert node_ns.routes(family, table=20) == []
    assert node_ns.rules("-4", table=20) == ["5:\tfrom 198.51.100.0/24 lookup 20"]
    assert node_ns.rules("-6", table=20) == []
    assert node_ns.rules("-4", table=30) and node_ns.routes("-4", table=30)


@pytest.mark.parametrize("now", [range(21, 22), None], ids=["range-shrank", "conntrack-to-rules"])
async def test_router_tables_no_longer_named_are_removed(node_ns: NetNS, now):
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=range(21, 24))) as adapter:
        for i, table in enumerate(range(21, 24)):
            await router_table(adapter, table, (i + 1) << 1)
    node_ns.ip("route add 10.0.0.0/8 via 10.99.0.2 table 23")  # someone else's route there: stays
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=now or range(0))) as adapter:
        state = await adapter.read_state([])
        gone = {x.table for x in state.leftovers}
        assert gone == set(range(21, 24)) - set(now or ())
        assert all(isinstance(x, KernelRule) or isinstance(x, KernelRoute) and x.proto == NRA_PROTOCOL
                   for x in state.leftovers)
        # (the leftovers' deletes alone: the router tables still named are the conntrack
        # planner's business, not this rules-mode plan's)
        ops = [op for op in plan(intent([], []), state, policy(20)).operations if op.reason.startswith("left over")]
        assert len(ops) == 2 * len(gone)
        report = await adapter.apply(ops)
        assert report.failed == []
    for table in gone:
        assert node_ns.rules("-4", table=table) == []
    assert node_ns.routes("-4", table=23) == ["10.0.0.0/8 via 10.99.0.2 dev eth0"]
    for table in set(now or ()):
        assert node_ns.rules("-4", table=table) and node_ns.routes("-4", table=table)
