"""Events on the Node for a degraded return path, against the API server stand-in over HTTP."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pyroute2.config
import pytest
from loguru import logger

import nra.observe.logs  # noqa: F401  registers the VERBOSE level the agent logs with
from nra.daemon.agent import Agent
from nra.settings import Settings
from nra.sources.kube import CRDSource, api_client_factory
from nra.sources.kube.node_events import DEGRADED, RESTORED, NodeEvents
from tests.kube.apiserver import FakeApiServer
from tests.kube.conftest import COALESCE_S, FAST
from tests.netns import NetNS
from tests.wait import wait_for_async

NS, NODE = "metallb-system", "worker-a1"
EVENTS_NS = "default"  # Events about a Node: the API server refuses them in MetalLB's namespace
PEER = ipaddress.ip_address("10.99.0.11")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settled(events: NodeEvents) -> None:
    if events.pending is not None:
        await asyncio.wait_for(events.pending, 5)


async def test_degraded_and_restored_are_one_event_each_and_rate_limited(apiserver: FakeApiServer, factory):
    clock = Clock()
    events = NodeEvents(factory, EVENTS_NS, NODE, min_interval_s=300, clock=clock)
    events.observe(False, {})  # healthy from the start: not news
    await settled(events)
    assert apiserver.events == []

    events.observe(True, {PEER: "no-arp"})
    await settled(events)
    events.observe(True, {PEER: "no-arp"})  # still degraded: nothing new
    await settled(events)
    assert [e["reason"] for e in apiserver.events] == [DEGRADED]
    event = apiserver.events[0]
    assert event["type"] == "Warning" and event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": NODE}
    assert event["message"] == "return path degraded: peer 10.99.0.11 left out (no-arp)"
    assert event["metadata"]["namespace"] == EVENTS_NS and event["reportingComponent"] == "nra"

    clock.now += 60  # recovered within the interval: held back ...
    events.observe(False, {})
    await settled(events)
    assert len(apiserver.events) == 1
    clock.now += 300  # ... and sent by the first reconcile after it
    events.observe(False, {})
    await settled(events)
    assert [(e["reason"], e["type"]) for e in apiserver.events] == [(DEGRADED, "Warning"), (RESTORED, "Normal")]


async def test_a_refused_event_is_one_warning_and_the_next_gets_through(apiserver: FakeApiServer, factory):
    clock = Clock()
    events = NodeEvents(factory, EVENTS_NS, NODE, min_interval_s=10, clock=clock)
    apiserver.refuse_events = 2
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        for degraded in (True, False):
            events.observe(degraded, {PEER: "off-link"} if degraded else {})
            await settled(events)
            clock.now += 10
        assert apiserver.events == []
        events.observe(True, {PEER: "off-link"})
        await settled(events)
    finally:
        logger.remove(sink)
    assert [e["reason"] for e in apiserver.events] == [DEGRADED]
    refusals = [line for line in lines if line.startswith("cannot create")]
    assert len(refusals) == 1 and "Forbidden" in refusals[0], lines
    assert "node Events are created again" in lines


async def test_the_agent_puts_an_event_on_its_node_when_a_peer_is_off_link(node_ns: NetNS, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pyroute2.config, "disable_mp_signal", True)  # (see test_agent_faults)
    peers = [{"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name, "namespace": NS},
              "spec": {"myASN": 64512, "peerASN": 64512, "peerAddress": address}}
             for name, address in (("on-link", "10.99.0.11"), ("far", "192.0.2.50"))]
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p", "namespace": NS},
            "spec": {"addresses": ["198.51.100.0/24"]}}
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "a", "namespace": NS},
           "spec": {}}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}
    server = FakeApiServer(bookmark_interval_s=0.2)
    server.put(*peers, pool, adv, node)
    await server.start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    settings = Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off", MAX_RECONCILE_WAIT=0, NODE_NAME=NODE,
                        METALLB_USE_CRDS="1", KUBECONFIG=str(kubeconfig), METALLB_NAMESPACE=NS)
    agent = Agent(settings, CRDSource(api_client_factory(str(kubeconfig)), NS, NODE, 100, FAST, COALESCE_S))
    running = asyncio.create_task(agent.run())
    try:
        await wait_for_async(lambda: server.events, 5, what="an event posted")
        assert [e["reason"] for e in server.events] == [DEGRADED]
        assert "peer 192.0.2.50 left out (off-link)" in server.events[0]["message"]
        assert server.events[0]["involvedObject"]["name"] == NODE
        assert server.events[0]["metadata"]["namespace"] == EVENTS_NS
    finally:
        agent.stop()
        assert await asyncio.wait_for(running, 10) == 0
        await server.stop()
