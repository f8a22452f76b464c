"""The conntrack return path on the lab, both families: routers that drop a reply whose
request they did not forward, a Service's LB IP DNATed to a pod the way kube-proxy does it
(nftables, then iptables-nft), a listener bound to the LB IP, clients inside the cluster.

Every flow is counted on the routers themselves: the client ports whose requests each router
forwarded, and those whose replies it forwarded. Order matters: `rules` mode first (nra
ONESHOT, then cleaned), then the conntrack daemon for the rest of the module.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from testbed import lab as topo
from tests.e2e.conftest import FIGURES, REPO, lab_up, nra_daemon
from tests.wait import wait_for

pytestmark = pytest.mark.e2e

FAMILIES = (4, 6)
SERVICE = {4: topo.SVC4, 6: topo.SVC6}
LISTENER = {4: topo.LB4, 6: topo.LB6}
CONNTRACK = ("--return-path", "conntrack")
ROUTER_TABLES = (21, 22)  # the first two of the default ROUTER_TABLES: one per lab router


def router_table(lab, router: str, timeout: float = 5) -> int:
    """The router table nra gave `router`: the one whose routes go via its addresses (one
    table for its IPv4 and its IPv6 peer: one box). Never assume r1 is 21: nra numbers new
    routers in the order of their link-layer addresses, and the lab's veth addresses are
    random, so r1 is table 22 in about half of the labs."""
    r = topo.R[router]

    def single() -> int | None:
        found = {family: [t for t in ROUTER_TABLES
                          if f" via {gateway} " in lab.ip("node", f"-{family} route show table {t}")]
                 for family, gateway in ((4, r.seg4), (6, r.seg6))}
        return found[4][0] if len(found[4]) == 1 and found[4] == found[6] else None

    return wait_for(single, timeout, interval=0.05, what=f"a single router table via {router}")


@pytest.fixture(scope="module")
def lab():
    with lab_up("ct", stateful_routers=True) as lab:
        yield lab


def run_nra(lab, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nra", *lab.nra_argv()[1:], *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def flows_by_router(lab, family: int, target: str, flows: int = 32) -> tuple[dict, dict]:
    """Open `flows` connections from the client; (the client's result, per router the
    client ports of the requests and of the replies it forwarded)."""
    lab.clear_flows()
    result = lab.tcp(family, flows, timeout=1, target=target)
    return result, lab.flows(family)


def assert_symmetric(result: dict, seen: dict, flows: int) -> None:
    """Every connection worked, and each one's replies crossed the router its requests did."""
    assert (result["ok"], result["failed"]) == (flows, 0), result
    ports = set(result["ports"])
    for router, other in (("r1", "r2"), ("r2", "r1")):
        through = seen[router]["requests"] & ports
        assert seen[router]["replies"] & ports == through, (router, seen)
        assert not (seen[other]["replies"] & through), (router, seen)
    assert (seen["r1"]["requests"] | seen["r2"]["requests"]) >= ports


def test_rules_mode_fails_the_same_test(lab):
    """Today's return path: replies from the pod leave with the pod's address, which no
    `from <prefix>` rule matches; replies of the local listener pick a router by their own
    hash, and a stateful router drops those that chose the other one."""
    assert run_nra(lab, "--oneshot").returncode == 0
    try:
        lost = {}
        for family in FAMILIES:
            before = lab.counters()
            result, seen = flows_by_router(lab, family, SERVICE[family])
            assert result["ok"] == 0, result
            assert lab.counters()["gw"][family] > before["gw"][family]  # sent the wrong way
            local, seen = flows_by_router(lab, family, LISTENER[family])
            lost[family] = local["failed"]
        FIGURES["rules mode, stateful routers, 32 TCP flows: failed to the pod / to the LB-bound listener"] = \
            ", ".join(f"IPv{f} 32/{lost[f]}" for f in FAMILIES)
    finally:
        assert run_nra(lab, "--clean-and-exit").returncode == 0
        # the half-open connections left behind must not be found again by a reused port
        lab.flush_conntrack()
        lab.restart_echo()


@pytest.fixture(scope="module")
def nra(lab):
    with nra_daemon(lab, *CONNTRACK) as proc:
        yield proc


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", ["pod behind kube-proxy nftables DNAT", "listener bound to the LB IP"])
def test_every_connection_returns_through_its_router(lab, nra, family, where):
    target = SERVICE[family] if where.startswith("pod") else LISTENER[family]
    result, seen = flows_by_router(lab, family, target)
    assert_symmetric(result, seen, 32)
    FIGURES[f"conntrack, IPv{family} {where}: flows via r1/r2 (requests = replies)"] = \
        f"{len(seen['r1']['replies'])}/{len(seen['r2']['replies'])}"


def test_kube_proxy_iptables_mode_too(lab, nra):
    lab.set_kube_proxy("iptables")
    try:
        for family in FAMILIES:
            result, seen = flows_by_router(lab, family, SERVICE[family])
            assert_symmetric(result, seen, 32)
    finally:
        lab.set_kube_proxy("nftables")


@pytest.mark.parametrize("role", ["node", "cpod"])
def test_clients_inside_the_cluster_never_reach_the_routers(lab, nra, role):
    before = lab.counters("internal")
    for family in FAMILIES:
        result = lab.tcp(family, 8, timeout=1, target=SERVICE[family], role=role)
        assert (result["ok"], result["failed"]) == (8, 0), (role, result)
    after = lab.counters("internal")
    # (the gateway is the node's default route; a late packet of a closed connection, no longer
    # NATed, may go there as any other non-LB traffic does)
    assert {r: after[r] for r in topo.ROUTERS} == {r: before[r] for r in topo.ROUTERS}, (before, after)


def test_what_nra_added_shows_in_nft_and_ip(lab, nra):
    table = lab.exec("node", ["nft", "list", "table", "inet", "nra"]).stdout
    assert "10.80.0.0/28" in table and "fd00:80::/120" in table
    for family in FAMILIES:
        rules = lab.ip("node", f"-{family} rule show")
        assert "fwmark 0x6/0x3e lookup 21" in rules and "fwmark 0xa/0x3e lookup 22" in rules
        assert "fwmark 0x2/0x2 lookup 20" in rules
        assert "from 10.80" not in rules and "from fd00:80" not in rules  # no rule per prefix


def test_drift_repaired_at_once_from_netfilter_notifications(lab, nra):
    lab.exec("node", ["nft", "delete", "table", "inet", "nra"])
    started = time.monotonic()
    wait_for(lambda: not lab.exec("node", ["nft", "list", "table", "inet", "nra"], check=False).returncode, 5,
             interval=0.005, what="nra's nft table put back")
    took = time.monotonic() - started
    FIGURES["conntrack: nft table deleted by someone, back after"] = f"{took * 1000:.0f} ms"
    assert took < 2.0  # the echo window may delay it to a check 1 s later, never the 60 s timer
    for family in FAMILIES:
        assert_symmetric(*flows_by_router(lab, family, SERVICE[family]), 32)


def test_nra_restarted_under_load_established_connections_survive(lab, nra):
    results: dict[int, dict] = {}

    def hold(family: int) -> None:
        results[family] = lab.tcp(family, 16, timeout=3, target=SERVICE[family], hold=4.0)

    threads = [threading.Thread(target=hold, args=(f,)) for f in FAMILIES]
    for t in threads:
        t.start()
    time.sleep(1.5)  # the connections are open: restart nra under them
    with nra_daemon(lab, *CONNTRACK, wait=False) as second:
        nra.terminate()
        nra.wait(10)
        for t in threads:
            t.join(30)
        assert second.poll() is None
    for family in FAMILIES:
        assert (results[family]["ok"], results[family]["failed"]) == (16, 0), results[family]


def test_router_dies_new_connections_through_the_other_and_its_route_withdrawn(lab):
    with nra_daemon(lab, *CONNTRACK):
        lab.wait_sessions()
        mine = router_table(lab, "r1")
        other = router_table(lab, "r2")
        cut = time.monotonic()
        lab.cut_router("r1")
        try:
            for family in FAMILIES:
                # new connections work at once: the client's BGP withdraws r1 within the hold time,
                # and until then its flows to r1 simply fail at the client side of r1
                deadline = time.monotonic() + 10
                while True:
                    result = lab.tcp(family, 8, timeout=1, target=SERVICE[family])
                    if result["ok"] == 8 or time.monotonic() > deadline:
                        break
                assert result["ok"] == 8, result
            # withdrawn once nra sees r1's neighbour entry fail. Something must send to r1 for
            # that: the node's BGP speaker retrying it every second does (4-5 s in a quiet run),
            # and a ping from the node makes sure of it on a loaded machine.
            for family in FAMILIES:
                r1 = topo.R["r1"].seg4 if family == 4 else topo.R["r1"].seg6
                while lab.ip("node", f"-{family} route show table {mine}").strip():
                    assert time.monotonic() - cut < 30, \
                        f"IPv{family}: r1's router route (table {mine}) was not withdrawn"
                    lab.exec("node", ["ping", f"-{family}", "-c", "1", "-W", "0.2", r1], check=False)
                FIGURES[f"conntrack: r1 cut, its IPv{family} router route withdrawn after"] = \
                    f"{time.monotonic() - cut:.1f} s (r1 is table {mine})"
                assert lab.ip("node", f"-{family} route show table {other}").strip()
        finally:
            lab.restore_router("r1")
        for family in FAMILIES:  # back: its route restored
            wait_for(lambda: lab.ip("node", f"-{family} route show table {mine}").strip(), 15, interval=0.1,
                     what="r1's router route back")


def test_clean_and_exit_leaves_nothing(lab):
    assert run_nra(lab, *CONNTRACK, "--clean-and-exit").returncode == 0
    assert "table inet nra" not in lab.exec("node", ["nft", "list", "tables"]).stdout
    assert "kube-proxy" in lab.exec("node", ["nft", "list", "tables"]).stdout  # others' kept
    for family in FAMILIES:
        rules = lab.ip("node", f"-{family} rule show")
        assert "fwmark" not in rules and "lookup 2" not in rules, rules
        for table in (20, *ROUTER_TABLES):
            assert not lab.ip("node", f"-{family} route show table {table}").strip()
