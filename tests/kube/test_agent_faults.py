"""The whole agent, CRD mode, against the API server stand-in, programming a real kernel in a
throwaway namespace, through 100 injected API faults. A netlink listener on that namespace
records every change to the managed table and its rules: the faults must not remove a
single desired route, nexthop or rule, and the final state must be exact.

This is the Node.js agent's failure: cut watches restarted everything, peers were seen
before the node's labels, and half-built snapshots flapped the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
from pathlib import Path

import pyroute2.config
import pytest
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV4_RULE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE,
)

import nra.observe.logs  # noqa: F401  registers the VERBOSE level the agent logs with
from nra.config.intent import Intent
from nra.config.metallb import parse_objects
from nra.daemon.agent import Agent
from nra.kernel.codec import NLMSG_HDR, decode_rule
from nra.kernel.model import KernelRule
from nra.settings import Settings
from nra.sources.kube import CRDSource, api_client_factory
from tests.kube.apiserver import FakeApiServer, load_objects
from tests.kube.conftest import COALESCE_S, FAST
from tests.netns import NetNS
from tests.pyroute2_routes import route_from_message, table_of
from tests.wait import wait_for_async

pytestmark = pytest.mark.kernel

NS, NODE, TABLE, WEIGHT = "metallb-system", "worker-a1", 20, 100
GROUPS = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE
FAULTS = 100


def zone_peer(name: str, address: str, zone: str) -> dict:
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name, "namespace": NS},
            "spec": {"myASN": 64512, "peerASN": 64512, "peerAddress": address,
                     "nodeSelectors": [{"matchLabels": {"topology.kubernetes.io/zone": zone}}]}}


NODE_OBJ = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE,
                                                  "topology.kubernetes.io/zone": "zone-a"}}}
PEERS = [zone_peer("a1", "10.99.0.11", "zone-a"), zone_peer("a2", "10.99.0.12", "zone-a"),
         zone_peer("a6", "fd99::11", "zone-a"), zone_peer("b1", "10.99.0.21", "zone-b"),
         zone_peer("c1", "10.99.0.31", "zone-c"), zone_peer("b6", "fd99::21", "zone-b")]


def rule_from_message(msg) -> KernelRule:
    """A rule pyroute2 received, decoded from its bytes by nra's own codec."""
    start = msg.offset + NLMSG_HDR.size
    return decode_rule(bytes(msg.data[start:msg.offset + msg["header"]["length"]]))


class TableRecorder:
    """Every netlink change to table TABLE's routes and rules in one namespace."""

    def __init__(self, netns: str):
        self.netns = netns
        self.events: list[tuple[str, object]] = []  # (RTM_*, KernelRoute | KernelRule)
        self.ready = asyncio.Event()

    async def run(self) -> None:
        sock = AsyncIPRoute(groups=GROUPS, netns=self.netns, flags=0)
        try:
            await sock.setup_endpoint()
            await sock.bind(groups=GROUPS)
            self.ready.set()
            while True:
                async for msg in sock.get():
                    event = msg.get("event")
                    if event in ("RTM_NEWROUTE", "RTM_DELROUTE") and table_of(msg) == TABLE:
                        self.events.append((event, route_from_message(msg)))
                    elif event in ("RTM_NEWRULE", "RTM_DELRULE") and rule_from_message(msg).table == TABLE:
                        self.events.append((event, rule_from_message(msg)))
        finally:
            sock.close()


async def kernel_view(netns: str) -> tuple[set, set]:
    """(rule sources, (family, dst, gateways)) of table TABLE, read from the kernel."""
    async with AsyncIPRoute(netns=netns, flags=0) as ipr:
        rules, routes = set(), set()
        for family in (2, 10):
            async for msg in await ipr.get_rules(family=family):
                rule = rule_from_message(msg)
                if rule.table == TABLE:
                    rules.add(rule.src)
            async for msg in await ipr.route("dump", family=family, table=TABLE):
                if table_of(msg) == TABLE:
                    route = route_from_message(msg)
                    routes.add((route.family, route.dst, frozenset(nh.gateway for nh in route.nexthops)))
    return rules, routes


def expected_view(intent: Intent) -> tuple[set, set]:
    routes = set()
    for version, default in ((4, "0.0.0.0/0"), (6, "::/0")):
        gateways = frozenset(p.address for p in intent.peers_of(version))
        if gateways and intent.prefixes_of(version):
            routes.add((version, ipaddress.ip_network(default), gateways))
    return set(intent.prefixes), routes


async def wait_kernel(netns: str, want: tuple[set, set], timeout: float) -> None:
    async def reached() -> bool:
        return await kernel_view(netns) == want

    await wait_for_async(reached, timeout, interval=0.05, what=f"the kernel at the desired state {want}")


async def inject(server: FakeApiServer, kind: str) -> None:
    """One API fault; returns once it has been set off."""
    if kind == "cut":
        server.cut_streams()
    elif kind == "end":
        server.end_streams()
    elif kind == "gone":
        server.compact()
        server.gone_streams()
    elif kind == "compact-while-away":  # resume from an old version -> HTTP 410 -> relist
        server.gone_as_event = not server.gone_as_event
        server.fail_next(1, "json500", verb="watch")
        server.cut_streams()
        server.compact()
    elif kind in ("json500", "text503", "garbage"):
        server.fail_next(2, kind, verb="any")
        server.cut_streams()
    elif kind == "peers-before-labels":  # node list failing while everything else relists
        server.fail_next(3, "text503", match="/nodes", verb="list")
        server.compact()
        server.gone_streams()
    elif kind == "stall":
        server.stall_streams()
        await asyncio.sleep(FAST.stall_timeout_s)
    elif kind == "restart":
        await server.stop()
        await asyncio.sleep(0.1)
        await server.start()
    elif kind == "same-objects":  # MODIFIED events that change nothing that matters
        server.put(NODE_OBJ, PEERS[3])
    else:
        raise ValueError(kind)
    await asyncio.sleep(0.12)


FAULT_KINDS = ["cut", "json500", "end", "gone", "text503", "stall", "garbage", "compact-while-away",
               "same-objects", "peers-before-labels", "restart"]


async def test_agent_keeps_the_table_through_100_api_faults(node_ns: NetNS, tmp_path: Path, shared_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    # pyroute2 forks a child to open a socket in a named netns and stops it with SIGTERM;
    # the child inherits asyncio's signal wakeup fd, so the parent loop ran the agent's
    # SIGTERM handler and the agent stopped itself (reported to the lead). Children with
    # default signal handling die without writing to that fd.
    monkeypatch.setattr(pyroute2.config, "disable_mp_signal", True)
    pools = load_objects(shared_dir / "metallb" / "configsamples" / "simple_pool_adv_bgp.yaml")
    server = FakeApiServer(bookmark_interval_s=0.2)
    server.put(*PEERS, *pools, NODE_OBJ)
    # The node's labels arrive after the peers: its list fails for a while at start.
    server.fail_next(8, "text503", match="/nodes", verb="list")
    await server.start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    settings = Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off", MAX_RECONCILE_WAIT=0, NODE_NAME=NODE,
                        METALLB_USE_CRDS="1", KUBECONFIG=str(kubeconfig), TABLE_WEIGHT=TABLE)
    source = CRDSource(api_client_factory(str(kubeconfig)), NS, NODE, WEIGHT, FAST, COALESCE_S)
    published: list = []
    agent = Agent(settings, source)
    original_publish = agent.publish

    def publish(result):
        published.append(result)
        original_publish(result)

    agent.publish = publish  # type: ignore[method-assign]
    recorder = TableRecorder(node_ns.name)
    listening = asyncio.create_task(recorder.run())
    await asyncio.wait_for(recorder.ready.wait(), 5)
    running = asyncio.create_task(agent.run())
    try:
        intent = parse_objects([*PEERS, *pools], NODE_OBJ["metadata"]["labels"], WEIGHT).intent
        assert {str(p.address) for p in intent.peers} == {"10.99.0.11", "10.99.0.12", "fd99::11"}
        want = expected_view(intent)
        await wait_kernel(node_ns.name, want, timeout=10)
        assert [r.intent for r in published] == [intent], "a partial state was published before the node's labels"
        settled = len(recorder.events)

        for kind in itertools.islice(itertools.cycle(FAULT_KINDS), FAULTS):
            await inject(server, kind)
            assert not running.done(), f"the agent stopped during fault {kind}"

        server.faults.clear()
        await asyncio.sleep(FAST.stall_timeout_s + 0.5)  # every reflector back on a live stream
        during = recorder.events[settled:]
        deletions = [(e, obj) for e, obj in during if e in ("RTM_DELROUTE", "RTM_DELRULE")]
        assert deletions == [], f"faults removed desired state: {deletions[:5]}"
        rewrites = [obj for e, obj in during if e == "RTM_NEWROUTE"
                    and frozenset(nh.gateway for nh in obj.nexthops) != next(
                        g for f, _, g in want[1] if f == obj.family)]
        assert rewrites == [], f"faults changed the nexthops: {rewrites[:5]}"
        assert all(r.intent == intent for r in published)
        assert await kernel_view(node_ns.name) == want
        # And the agent still follows the API after all that: a zone-b peer moves to zone-a.
        moved = zone_peer("b1", "10.99.0.21", "zone-a")
        server.put(moved)
        intent2 = parse_objects([*PEERS[:3], moved, *PEERS[4:], *pools], NODE_OBJ["metadata"]["labels"],
                                WEIGHT).intent
        await wait_kernel(node_ns.name, expected_view(intent2), timeout=3)
    finally:
        agent._stop.set()
        await asyncio.wait_for(running, 10)
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await server.stop()
