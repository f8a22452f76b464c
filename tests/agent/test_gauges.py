"""The kernel gauges say what the kernel holds, not what the intent asks for."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.daemon.wiring import reconciler
from nra.kernel.model import KernelRoute, KernelRule, KernelState, Nexthop
from nra.kernel.operations import AddRule, ApplyReport, DeleteRule, ReplaceRoute
from nra.observe import metrics
from nra.observe.status import AgentStatus
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.base import counts_after
from nra.settings import Settings
from tests.netns import NetNS

POLICY = RoutingPolicy(table=20, priority=20)
V4 = ip_network("0.0.0.0/0")


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_counts_after_what_went_in_not_what_was_asked():
    a, b, c = (ip_address(f"10.99.0.{i}") for i in (2, 3, 4))
    kept = KernelRoute(4, V4, 20, (Nexthop(a), Nexthop(b)))
    rules = tuple(KernelRule(4, ip_network(f"192.0.2.{i}/32"), 20, 20) for i in range(3))
    state = KernelState(routes=(kept,), rules=rules)
    # nothing applied: the kept route's two nexthops, the three rules
    assert counts_after(state, ApplyReport(), POLICY) == ({4: 2, 6: 0}, {4: 3, 6: 0})
    # a replace that went in without a refused nexthop; one delete done, one failed; one add
    replace = ReplaceRoute(4, V4, 20, 0, (Nexthop(a), Nexthop(b), Nexthop(c)))
    report = ApplyReport(applied=[replace, DeleteRule(rules[0]), AddRule(4, ip_network("198.51.100.0/24"), 20, 20)],
                         failed=[(DeleteRule(rules[1]), "Operation not permitted (errno 1)")],
                         dropped=[(replace, (c,))])
    assert counts_after(state, report, POLICY) == ({4: 2, 6: 0}, {4: 3, 6: 0})


@pytest.mark.kernel
def test_gauges_from_a_kernel_that_differs_from_the_intent(node_ns: NetNS):
    """Both peers off-link: the intent gives them no place, but the route the kernel holds
    is kept with its two nexthops. The old gauge (from the intent) said 0."""
    node_ns.ip("route add default table 20 nexthop via 10.99.0.2 nexthop via 10.99.0.3")
    node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")  # an imposter, deleted
    want = Intent(frozenset({Peer(ip_address("10.55.0.1"), 1), Peer(ip_address("10.55.0.2"), 1)}),
                  frozenset({ip_network("192.0.2.0/24"), ip_network("198.51.100.0/24")}))
    settings = Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off")

    async def run():
        async with reconciler(settings, AgentStatus(config_loaded=True)) as one:
            return await one.reconcile(want, "test")

    outcome = asyncio.run(run())
    assert outcome.ok and outcome.degraded
    assert gauge("nra_peers_in_route", family="ipv4") == 2
    assert gauge("nra_rules_installed", family="ipv4") == 2
    assert gauge("nra_peers_configured", family="ipv4") == 2
    assert gauge("nra_prefixes", family="ipv4") == 2
    assert gauge("nra_peers_left_out", family="ipv4", reason="off-link") == 2
    assert gauge("nra_peers_left_out", family="ipv4", reason="no-arp") == 0
    assert gauge("nra_ready") == 1
    assert len(node_ns.routes("-4")) == 3  # still the kept multipath route
