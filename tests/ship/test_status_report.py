"""`nra status`: the /status document built from what the agent knows, its text form, and
the client against a real HTTP server on 127.0.0.1 (and against a real agent once the
endpoint is wired into nra/observe/server.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import json
import sys

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from nra.config.intent import Intent, Peer
from nra.daemon import wiring
from nra.daemon.reconciler import Outcome
from nra.observe.server import start_health_server, stop_health_server
from nra.observe.status import AgentStatus
from nra.observe.status_report import (
    StatusDetails,
    client_address,
    format_status,
    status_document,
)
from nra.settings import Settings
from testbed.ports import free_port
from tests.agent.helpers import (
    TWO_PEERS_V4_V6,
    Daemon,
    clean_env,
    http_status,
)
from tests.wait import wait_for

NOW = 1_800_000_000.0
LEFT_OUT = "peer 10.99.0.3 does not answer ARP/ND (neighbour entry failed); left out of the IPv4 route until it does"


def a_registry() -> CollectorRegistry:
    """The contract's names with known values (nra's global registry is shared by tests)."""
    registry = CollectorRegistry()
    peers = Gauge("nra_peers_in_route", "", ["family"], registry=registry)
    peers.labels("ipv4").set(1)
    peers.labels("ipv6").set(2)
    rules = Gauge("nra_rules_installed", "", ["family"], registry=registry)
    rules.labels("ipv4").set(2)
    rules.labels("ipv6").set(1)
    left = Gauge("nra_peers_left_out", "", ["family", "reason"], registry=registry)
    left.labels("ipv4", "no-arp").set(1)
    left.labels("ipv4", "off-link").set(0)
    Gauge("nra_config_errors", "", registry=registry).set(1)
    Counter("nra_config_loads", "", registry=registry).inc(3)
    Counter("nra_reconciles", "", ["trigger"], registry=registry).labels("timer").inc(7)
    Counter("nra_reconcile_failures", "", ["trigger"], registry=registry).labels("timer").inc(1)
    Counter("nra_drift_repairs", "", registry=registry).inc(2)
    return registry


def an_agent() -> tuple[AgentStatus, StatusDetails]:
    status = AgentStatus(source_name="configmap", config_loaded=True, in_sync=True, last_reconcile_ok=True,
                         last_reconcile_at=NOW - 12, source_synced=True)
    intent = Intent(
        peers=frozenset({Peer(ipaddress.ip_address("10.99.0.2"), 100, "peer 0"),
                         Peer(ipaddress.ip_address("10.99.0.3"), 100, "peer 1"),
                         Peer(ipaddress.ip_address("fd99::2"), 50, "")}),
        prefixes=frozenset({ipaddress.ip_network("198.51.100.0/26"), ipaddress.ip_network("198.51.100.100/30"),
                            ipaddress.ip_network("2001:db8:100::/120")}))
    outcome = Outcome(ok=True, applied=1, warnings=(LEFT_OUT,), degraded=True)
    settings = Settings(TABLE_WEIGHT=20, RULE_PRIORITY=20, RULE_FWMARK="0x14")
    path = wiring.return_path(settings).describe()
    return status, StatusDetails(intent=intent, outcome=outcome, settings=settings, config_loaded_at=NOW - 300,
                                 return_path=path)


def test_document_answers_the_first_questions():
    status, details = an_agent()
    doc = status_document(status, details, registry=a_registry(), now=NOW)
    assert doc["ready"] is True and doc["ready_reason"] == "ok" and doc["live"] is True
    assert doc["source"] == {"name": "configmap", "synced": True, "config_loaded": True, "loads": 3,
                             "last_load_at": NOW - 300, "bad_entries": 1, "refused": False, "missing": False}
    assert [p["address"] for p in doc["peers"]] == ["10.99.0.2", "10.99.0.3", "fd99::2"]
    assert doc["peers"][2] == {"address": "fd99::2", "family": "ipv6", "weight": 50, "name": ""}
    assert doc["prefixes"] == {"ipv4": ["198.51.100.0/26", "198.51.100.100/30"], "ipv6": ["2001:db8:100::/120"]}
    assert doc["kernel"] == {"table": 20, "rule_priority": 20, "fwmark": "0x14",
                             "peers_in_route": {"ipv4": 1, "ipv6": 2}, "rules_installed": {"ipv4": 2, "ipv6": 1},
                             "return_path": {"mode": "rules", "table": 20, "rule_priority": 20,
                                             "fwmark": "0x14/0xffffffff", "uplink_tables": "1000-1063"},
                             "uplinks": []}
    assert doc["left_out"] == [{"family": "ipv4", "reason": "no-arp", "count": 1}]
    assert doc["last_reconcile"] == {"at": NOW - 12, "age_seconds": 12.0, "ok": True, "applied": 1,
                                     "failed": [], "warnings": [LEFT_OUT]}
    assert (doc["reconciles"], doc["reconcile_failures"], doc["drift_repairs"]) == (7, 1, 2)
    json.dumps(doc)  # the endpoint sends it as JSON


def test_document_of_an_agent_that_knows_nothing_yet():
    doc = status_document(AgentStatus(source_name="crds"), registry=CollectorRegistry(), now=NOW)
    assert doc["ready"] is False and "no configuration" in doc["ready_reason"]
    assert doc["peers"] is None and doc["prefixes"] is None and doc["last_reconcile"] is None
    assert doc["kernel"]["peers_in_route"] == {} and doc["drift_repairs"] == 0
    text = format_status(doc, now=NOW)
    assert text.startswith("nra ") and "NOT READY (no configuration loaded yet from crds)" in text
    assert "last reconcile:  none yet" in text


def test_text_form():
    status, details = an_agent()
    text = format_status(status_document(status, details, registry=a_registry(), now=NOW), now=NOW)
    version = text.split()[1].rstrip(":")
    assert text == f"""\
nra {version}: ready (ok)
source:          configmap, synced, configuration loaded; 3 load(s), last 2027-01-15T07:55:00Z (5 min ago); 1 bad entry skipped
peers:           10.99.0.2 w100 (peer 0), 10.99.0.3 w100 (peer 1), fd99::2 w50
in the route:    IPv4 1 nexthop(s), IPv6 2 nexthop(s)
left out:        1 ipv4 (no-arp)
                 {LEFT_OUT}
prefixes IPv4:   198.51.100.0/26, 198.51.100.100/30
prefixes IPv6:   2001:db8:100::/120
held:            table 20, priority 20, fwmark 0x14: IPv4 2 rule(s), IPv6 1 rule(s)
last reconcile:  2027-01-15T07:59:48Z (12 s ago), ok, 1 change(s) applied
reconciles:      7 (1 failed); drift repairs: 2
"""


def test_failed_reconcile_is_shown():
    status, details = an_agent()
    status.last_reconcile_ok, status.in_sync = False, False
    outcome = Outcome(ok=False, applied=0, failed=["ip -4 route replace ...: Invalid argument (errno 22)"])
    doc = status_document(status, StatusDetails(intent=details.intent, outcome=outcome), registry=a_registry(), now=NOW)
    text = format_status(doc, now=NOW)
    assert "NOT READY (kernel not in sync: the last reconcile failed)" in text
    assert "FAILED, 0 change(s) applied" in text and "failed: ip -4 route replace" in text


@pytest.mark.parametrize("given,asked", [
    ("127.0.0.1:9101", "127.0.0.1:9101"), (":9101", "127.0.0.1:9101"), ("0.0.0.0:9200", "127.0.0.1:9200"),
    ("[::1]:9101", "[::1]:9101"), ("10.1.2.3:9101", "10.1.2.3:9101"),
])
def test_client_address(given, asked):
    assert client_address(given) == asked


async def run_client(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nra.observe.status_report", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def served_status():
    status, details = an_agent()
    status.details = lambda: details
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status)
    try:
        yield status, port
    finally:
        await stop_health_server(server)


async def test_client_against_a_served_status(served_status):
    status, port = served_status
    code, out, err = await run_client("--address", f"127.0.0.1:{port}")
    assert code == 0, err
    assert out.startswith("nra ") and ": ready (ok)" in out and "peers:           10.99.0.2 w100" in out
    code, out, _ = await run_client("--address", f"127.0.0.1:{port}", "--json")
    assert code == 0 and json.loads(out)["source"]["name"] == "configmap"
    status.config_loaded = False
    code, out, _ = await run_client("--address", f"127.0.0.1:{port}")
    assert code == 1 and "NOT READY" in out


async def test_client_says_why_it_cannot_ask():
    closed = free_port()
    code, out, err = await run_client("--address", f"127.0.0.1:{closed}")
    assert (code, out) == (2, "") and err.startswith("nra status: cannot reach the agent at http://127.0.0.1:")
    code, _, err = await run_client("--address", "off")
    assert code == 2 and "HEALTH_ADDRESS=off" in err
    # an older agent: a listener without /status
    runner = web.AppRunner(web.Application())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        code, _, err = await run_client("--address", f"127.0.0.1:{port}")
        assert code == 2 and "not found" in err
    finally:
        await runner.cleanup()


def test_status_of_a_real_agent(node_ns, tmp_path):
    """End to end: a real daemon serves /status and `nra status` reads it."""
    import subprocess

    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    port = free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name,
                    env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}", MAX_RECONCILE_WAIT="0"),
                    log_path=tmp_path / "nra.log")

    def answer(path: str) -> int:
        return http_status(port, path)

    try:
        wait_for(lambda: answer("/readyz") == 200, timeout=15, what="/readyz 200")
        done = subprocess.run([sys.executable, "-m", "nra.observe.status_report", "--address", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert ": ready (ok)" in done.stdout
        assert "in the route:    IPv4 2 nexthop(s), IPv6 1 nexthop(s)" in done.stdout
    finally:
        assert daemon.stop() == 0, daemon.log()


async def test_client_asks_for_every_prefix_on_request(served_status):
    status, port = served_status
    code, out, _ = await run_client("--address", f"127.0.0.1:{port}", "--json", "--all-prefixes")
    doc = json.loads(out)
    assert code == 0 and doc["prefixes_complete"] is True
    assert doc["prefix_counts"] == {"ipv4": 2, "ipv6": 1} and len(doc["prefixes"]["ipv4"]) == 2


def test_client_asks_loopback_when_health_is_on_another_address(monkeypatch):
    # the chart's HEALTH_ADDRESS=$(HOST_IP):9101: /status is on loopback, same port
    monkeypatch.setenv("HEALTH_ADDRESS", "10.1.2.3:9101")
    monkeypatch.delenv("STATUS_ACCESS", raising=False)
    assert client_address(None) == "127.0.0.1:9101"
    monkeypatch.setenv("STATUS_ACCESS", "health")
    assert client_address(None) == "10.1.2.3:9101"


def test_document_names_the_conntrack_return_path():
    status, details = an_agent()
    settings = Settings(TABLE_WEIGHT=20, RULE_PRIORITY=20, RETURN_PATH="conntrack")
    details = dataclasses.replace(details, return_path=wiring.return_path(settings).describe())
    path = status_document(status, details, registry=a_registry(), now=NOW)["kernel"]["return_path"]
    assert path["mode"] == "conntrack" and path["table"] == 20 and path["router_tables"] == "21-35"


def test_each_uplink_group_and_how_its_peers_were_resolved_is_shown():
    from nra.config.metallb import parse_objects
    from nra.config.uplinks import NodeFacts, RouteLookup, resolve_intent
    from tests.unit.test_metallb import advertisement, bgp_peer, pool

    status, details = an_agent()
    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), pool("p", "198.51.100.0/24"), advertisement("x")]
    intent = parse_objects(objects, {"kubernetes.io/hostname": "n"}, 100).intent
    gateway = ipaddress.ip_address("10.1.0.254")
    resolved = resolve_intent(intent, NodeFacts({"192.0.2.9": RouteLookup("eth1", (gateway,))}))
    outcome = Outcome(ok=True, intent=resolved)
    doc = status_document(status, StatusDetails(intent=intent, outcome=outcome, settings=details.settings),
                          registry=a_registry(), now=NOW)
    assert doc["uplinks"] == [{"pools": ["p"], "vrf": None, "table": 20, "peers": [
        {"name": "loop", "key": "192.0.2.9", "kind": "multihop", "how": "via 10.1.0.254 (eth1)",
         "next_hops": ["10.1.0.254"]}]}]
    text = format_status(doc, now=NOW)
    assert "uplink group:    pools p; default vrf; table 20\n" \
           "                 peer loop (192.0.2.9): multihop via 10.1.0.254 (eth1)\n" in text
    # an intent that describes no peers (no specs): no uplink lines
    plain = status_document(status, details, registry=a_registry(), now=NOW)
    assert "uplink group" not in format_status(plain, now=NOW)
def test_status_shows_each_uplink_group_and_its_routers():
    """`nra status` (and `nra plan`, the same lines): each uplink group's peers, pools, table
    and mark; in conntrack mode each router's link, MAC, table and mark."""
    from nra.config.intent import PeerSpec, PoolBinding
    from nra.kernel.model import KernelState
    from nra.plan.planner import Plan

    status, details = an_agent()
    settings = Settings(TABLE_WEIGHT=20, RULE_PRIORITY=20, RETURN_PATH="conntrack")
    a1, a2, b1 = (ipaddress.ip_address(a) for a in ("10.1.0.2", "10.1.0.3", "10.2.0.2"))
    pools = frozenset({PoolBinding("a", frozenset({ipaddress.ip_network("198.51.100.0/24")}), frozenset({"10.1.0.2", "10.1.0.3"})),
                       PoolBinding("b", frozenset({ipaddress.ip_network("198.51.101.0/24")}), frozenset({"10.2.0.2"}))})
    intent = Intent(frozenset({Peer(a1, 100, "a1"), Peer(a2, 100, "a2"), Peer(b1, 100, "b1")}),
                    frozenset().union(*(p.prefixes for p in pools)),
                    frozenset({PeerSpec("a1", a1, 100), PeerSpec("a2", a2, 100), PeerSpec("b1", b1, 100)}), pools)
    vmac = "00:00:5e:00:01:01"
    state = KernelState(lladdrs={a1: vmac, a2: vmac, b1: vmac}, links={a1: frozenset({1}), a2: frozenset({1}),
                                                                      b1: frozenset({2})},
                        link_names={1: "eth1", 2: "eth2"})
    plan = wiring.return_path(settings).plan(intent, state, {})
    assert isinstance(plan, Plan)
    details = dataclasses.replace(details, intent=intent, outcome=Outcome(ok=True, applied=0, plan=plan))
    doc = status_document(status, details, registry=a_registry(), now=NOW)
    json.dumps(doc)
    text = format_status(doc, now=NOW).splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("uplinks:"))
    lines = [text[start]] + list(itertools.takewhile(lambda line: line.startswith(" " * 17), text[start + 1:]))
    # routers 1, 2 (one virtual MAC on two links: two routers), then the groups' fallbacks 3, 4;
    # router i's mark is the value 0x2 and i spread over the bits 0x3c, its table 20 + i
    assert lines == [
        "uplinks:         group 10.1.0.2, 10.1.0.3: pools a (1 prefix(es)); table 23, mark 0xe",
        "                   router eth1 00:00:5e:00:01:01 (a1 (10.1.0.2), a2 (10.1.0.3)): table 21, mark 0x6",
        "                 group 10.2.0.2: pools b (1 prefix(es)); table 24, mark 0x12",
        "                   router eth2 00:00:5e:00:01:01 (b1 (10.2.0.2)): table 22, mark 0xa",
    ]


def test_rules_mode_shows_each_group_and_its_uplink_table():
    """`rules` mode: each group with its table (TABLE_WEIGHT for every peer, else one of
    UPLINK_TABLES); `nra plan -o json` carries the same as `uplinks`."""
    from nra.config.intent import PeerSpec, PoolBinding
    from nra.daemon.modes import plan_document
    from nra.kernel.model import KernelState

    a1, b1 = ipaddress.ip_address("10.1.0.2"), ipaddress.ip_address("10.2.0.2")
    pools = frozenset({PoolBinding("a", frozenset({ipaddress.ip_network("198.51.100.0/24")}), frozenset({"10.1.0.2"})),
                       PoolBinding("all", frozenset({ipaddress.ip_network("203.0.113.0/24")}),
                                   frozenset({"10.1.0.2", "10.2.0.2"}))})
    intent = Intent(frozenset({Peer(a1, 100, "a1"), Peer(b1, 100, "b1")}), frozenset().union(*(p.prefixes for p in pools)),
                    frozenset({PeerSpec("a1", a1, 100), PeerSpec("b1", b1, 100)}), pools)
    plan = wiring.return_path(Settings(TABLE_WEIGHT=20, RULE_PRIORITY=20)).plan(intent, KernelState(), {})
    groups = {tuple(g["pools"]): g for g in plan_document(intent, plan)["uplinks"]}
    assert groups[("all",)]["table"] == 20 and groups[("all",)]["peers"] == ["10.1.0.2", "10.2.0.2"]
    assert groups[("a",)]["table"] in range(1000, 1064) and groups[("a",)]["peers"] == ["10.1.0.2"]
    status, details = an_agent()
    details = dataclasses.replace(details, intent=intent, outcome=Outcome(ok=True, applied=0, plan=plan))
    text = format_status(status_document(status, details, registry=a_registry(), now=NOW), now=NOW)
    assert f"group 10.1.0.2: pools a (1 prefix(es)); table {groups[('a',)]['table']}" in text
    assert "group 10.1.0.2, 10.2.0.2: pools all (1 prefix(es)); table 20" in text
