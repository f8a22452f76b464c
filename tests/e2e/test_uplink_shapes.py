"""Uplink shapes of issue 16 in the BIRD lab, with traffic counted on the routers (`rules`
mode, plain routers: a reply leaves by whichever router the node's table names).

- A multihop peer: a loopback address on both routers (10.76.0.9, as an anycast route
  reflector), reached by the node over a multipath route via r1 and r2. The pool's replies
  leave via both; the route to the loopback changes to r2 alone and the replies follow, with no
  timer (the route change is the event), never by the node's default gateway.
- An unnumbered point-to-point uplink: a link from the node to r1 with IPv6 link-local
  addresses only (`interface: up0`, `dualStackAddressFamily`). nra finds r1's link-local
  address there and routes the replies of both families through it, IPv4 `via inet6`.
- The multihop peer in `conntrack` mode with stateful routers: its gateways are the routers
  (their MACs), and every connection, to the pod behind DNAT and to the listener, returns
  through the router its request came in by.
- `conntrack` mode, stateful routers, r1 reached over the unnumbered link only (its requests
  come in on up0) and r2 an on-link peer: every IPv4 connection returns through the router of
  its request, r1's `via inet6` over up0 (a reply by the wrong router is dropped as invalid).
"""

from __future__ import annotations

import re

import pytest

from testbed.lab import AS_NODE, AS_ROUTERS, LB4, POOL4, POOL6, R, SVC4
from tests.e2e.conftest import FIGURES, lab_up, nra_daemon
from tests.e2e.test_return_path import assert_symmetric, flows_by_router
from tests.wait import wait_for

pytestmark = pytest.mark.e2e

LOOPBACK = "10.76.0.9"
FLOWS = 32


@pytest.fixture(scope="module")
def lab():
    with lab_up("up", stateful_routers=False) as lab:
        yield lab


def objects(peer: str) -> str:
    return (f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: up}}
spec: {{{peer}, myASN: {AS_NODE}, peerASN: {AS_ROUTERS}}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: lab}}
spec: {{addresses: [{POOL4}, {POOL6}]}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: all}}
""")


def gateways(lab, family: int) -> set[str]:
    words = lab.table_routes(family).split()
    return {words[i + 2] if words[i + 1] in ("inet", "inet6") else words[i + 1]
            for i, w in enumerate(words) if w == "via"}


def replies_during(lab, family: int) -> tuple[dict, dict[str, int]]:
    """FLOWS TCP connections from the client to the node's LB listener, and the replies each
    router and the gateway counted meanwhile."""
    before = lab.counters()
    result = lab.tcp(family, flows=FLOWS)
    after = lab.counters()
    return result, {role: after[role][family] - before[role][family] for role in after}


def test_a_multihop_peers_replies_leave_by_its_gateways_and_follow_the_route(lab):
    r1, r2 = R["r1"], R["r2"]
    for r in (r1, r2):
        lab.ip(r.name, f"addr add {LOOPBACK}/32 dev lo")
    lab.ip("node", f"route add {LOOPBACK}/32 nexthop via {r1.seg4} dev eth0 nexthop via {r2.seg4} dev eth0")
    (lab.run_dir / "metallb.yaml").write_text(objects(f"peerAddress: {LOOPBACK}, ebgpMultiHop: true"))
    try:
        with nra_daemon(lab, "--max-reconcile-wait", "0", wait=False):
            wait_for(lambda: gateways(lab, 4) == {r1.seg4, r2.seg4}, 15, what="table 20 via both gateways")
            result, counted = replies_during(lab, 4)
            assert result["ok"] == FLOWS, result
            assert counted["gw"] == 0 and counted["r1"] > 0 and counted["r2"] > 0, counted
            FIGURES["multihop: replies per router, route via r1+r2"] = str(counted)

            lab.ip("node", f"route replace {LOOPBACK}/32 via {r2.seg4} dev eth0")
            took = wait_for(lambda: gateways(lab, 4) == {r2.seg4}, 10, what="table 20 following the route change")
            result, counted = replies_during(lab, 4)
            assert result["ok"] == FLOWS, result
            assert counted == {"r1": 0, "r2": counted["r2"], "gw": 0} and counted["r2"] > 0, counted
            FIGURES["multihop: replies per router, route via r2"] = str(counted)
            assert took
        log = (lab.run_dir / "nra.log").read_text()
        assert re.search(r"reconcile \([^)]*uplink", log), log[-3000:]
    finally:
        lab.ip("node", f"route del {LOOPBACK}/32", check=False)
        for r in (r1, r2):
            lab.ip(r.name, f"addr del {LOOPBACK}/32 dev lo", check=False)


def test_an_unnumbered_point_to_point_uplink_carries_both_families_replies_ipv4_via_inet6(lab):
    r1 = R["r1"]
    lab.ip("node", f"link add name up0 type veth peer name up0 netns {lab.ns(r1.name)}")
    try:
        for role in ("node", r1.name):
            lab.ip(role, "link set dev up0 up")
        link_local = wait_for(lambda: _link_local(lab, r1.name, "up0"), 5, what="r1's link-local address on up0")
        (lab.run_dir / "metallb.yaml").write_text(objects("interface: up0, dualStackAddressFamily: true"))
        with nra_daemon(lab, "--max-reconcile-wait", "0", wait=False):
            # the BGP session's first packets make r1's neighbour entry (here a ping): an event
            ping = ["ping", "-6", "-c", "1", "-W", "2", f"{link_local}%up0"]
            assert lab.exec("node", ping, check=False).returncode == 0
            wait_for(lambda: gateways(lab, 4) == {link_local} == gateways(lab, 6), 15,
                     what="both families via r1's link-local address")
            assert f"via inet6 {link_local} dev up0" in lab.table_routes(4)
            for family in (4, 6):
                result, counted = replies_during(lab, family)
                assert result["ok"] == FLOWS, result
                assert counted["r2"] == 0 and counted["gw"] == 0 and counted["r1"] >= FLOWS, counted
                FIGURES[f"unnumbered: IPv{family} replies per router"] = str(counted)
    finally:
        lab.ip("node", "link del up0", check=False)


def _link_local(lab, role: str, link: str) -> str:
    words = lab.ip(role, f"-6 addr show dev {link} scope link").split()
    return next((w.split("/")[0] for i, w in enumerate(words) if i and words[i - 1] == "inet6"), "")


def test_a_multihop_peer_in_conntrack_mode_returns_every_connection_through_its_router(lab):
    r1, r2 = R["r1"], R["r2"]
    for r in (r1, r2):
        lab.ip(r.name, f"addr add {LOOPBACK}/32 dev lo")
    lab.ip("node", f"route add {LOOPBACK}/32 nexthop via {r1.seg4} dev eth0 nexthop via {r2.seg4} dev eth0")
    (lab.run_dir / "metallb.yaml").write_text(objects(f"peerAddress: {LOOPBACK}, ebgpMultiHop: true"))
    lab.set_stateful_routers(True)
    try:
        with nra_daemon(lab, "--return-path", "conntrack", wait=False):
            wait_for(lambda: gateways(lab, 4) == {r1.seg4, r2.seg4}, 15, what="table 20 via both gateways")
            # one router table per gateway (the routers are the gateways, told apart by MAC)
            wait_for(lambda: sorted(sorted(gateways_of_table(lab, t)) for t in (21, 22)) == [[r1.seg4], [r2.seg4]],
                     15, what="a router table via each gateway")
            for where, target in (("pod behind DNAT", SVC4), ("listener", LB4)):
                result, seen = flows_by_router(lab, 4, target, FLOWS)
                assert_symmetric(result, seen, FLOWS)
                FIGURES[f"multihop, conntrack, IPv4 {where}: flows via r1/r2 (requests = replies)"] = \
                    f"{len(seen['r1']['replies'])}/{len(seen['r2']['replies'])}"
    finally:
        lab.set_stateful_routers(False)
        lab.flush_conntrack()
        lab.restart_echo()
        lab.ip("node", f"route del {LOOPBACK}/32", check=False)
        for r in (r1, r2):
            lab.ip(r.name, f"addr del {LOOPBACK}/32 dev lo", check=False)


def gateways_of_table(lab, table: int) -> set[str]:
    words = lab.table_routes(4, table).split()
    return {words[i + 2] if words[i + 1] in ("inet", "inet6") else words[i + 1]
            for i, w in enumerate(words) if w == "via"}


def test_an_unnumbered_router_in_conntrack_mode_gets_back_the_replies_of_its_requests(lab):
    r1, r2 = R["r1"], R["r2"]
    lab.ip("node", f"link add name up0 type veth peer name up0 netns {lab.ns(r1.name)}")
    try:
        for role in ("node", r1.name):
            lab.ip(role, "link set dev up0 up")
        r1_ll = wait_for(lambda: _link_local(lab, r1.name, "up0"), 5, what="r1's link-local address on up0")
        node_ll = wait_for(lambda: _link_local(lab, "node", "up0"), 5, what="the node's link-local address on up0")
        # r1 sends its requests for the pool over the unnumbered link (IPv4 via inet6), r2 over the segment
        for target in (LB4, SVC4):
            lab.ip(r1.name, f"route replace {target}/32 via inet6 {node_ll} dev up0 metric 1")
        (lab.run_dir / "metallb.yaml").write_text(
            objects("interface: up0, dualStackAddressFamily: true")
            + f"""---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r2}}
spec: {{peerAddress: {r2.seg4}, myASN: {AS_NODE}, peerASN: {AS_ROUTERS}}}
""")
        lab.set_stateful_routers(True)
        assert lab.exec("node", ["ping", "-6", "-c", "1", "-W", "2", f"{r1_ll}%up0"], check=False).returncode == 0
        with nra_daemon(lab, "--return-path", "conntrack", wait=False):
            wait_for(lambda: {gateways_of_table(lab, t).pop() for t in (21, 22) if gateways_of_table(lab, t)}
                     == {r1_ll, r2.seg4}, 15, what="a router table via r1's link-local address and one via r2")
            before = lab.dropped()
            for where, target in (("pod behind DNAT", SVC4), ("listener", LB4)):
                result, seen = flows_by_router(lab, 4, target, FLOWS)
                assert (result["ok"], result["failed"]) == (FLOWS, 0), result
                ports = set(result["ports"])
                # r2 forwarded the replies of exactly the requests it forwarded; r1 the others (over up0)
                assert seen["r2"]["replies"] & ports == seen["r2"]["requests"] & ports, seen
                assert 0 < len(seen["r2"]["requests"] & ports) < FLOWS, seen
                FIGURES[f"unnumbered r1 + on-link r2, conntrack, IPv4 {where}: flows via r1/r2"] = \
                    f"{FLOWS - len(seen['r2']['requests'] & ports)}/{len(seen['r2']['requests'] & ports)}"
            assert lab.dropped() == before  # no reply by the wrong router anywhere
    finally:
        lab.set_stateful_routers(False)
        lab.flush_conntrack()
        lab.restart_echo()
        for target in (LB4, SVC4):
            lab.ip(r1.name, f"route del {target}/32 metric 1", check=False)
        lab.ip("node", "link del up0", check=False)
