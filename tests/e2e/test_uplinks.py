"""Uplink groups on the lab (issue 16): a node with three uplinks on three links, each to its own
pair of stateful routers (BIRD), pool A advertised to r1 r2 (eth1), pool B to r3 r4 (eth2),
pool C to r5 r6 (eth3), through BGPAdvertisement.spec.peers. r1 and r3 share one MAC on two
uplinks; r5 and r6 share one virtual MAC on one link (a VRRP-style pair). testbed/uplinks_lab.py
draws it.

Every flow is counted on the routers: the client ports of the requests and of the replies each
forwarded. Order matters: `rules` mode first (ONESHOT, then cleaned), then the conntrack daemon.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from testbed import uplinks_lab as topo
from tests.e2e.conftest import FIGURES, REPO, lab_up, nra_daemon

pytestmark = pytest.mark.e2e

FLOWS = {4: 64, 6: 32}
CONNTRACK = ("--return-path", "conntrack")
PAIR = {pool: tuple(r.name for r in topo.R.values() if r.pool == pool) for pool in topo.POOLS}


@pytest.fixture(scope="module")
def lab():
    with lab_up("up", lab_class=topo.UplinksLab) as lab:
        yield lab


def run_nra(lab, *args: str, command: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nra", *command, *lab.nra_argv()[1:], *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def flows(lab, pool: str, family: int) -> tuple[dict, dict]:
    lab.clear_flows()
    result = lab.tcp(family, FLOWS[family], timeout=1, target=topo.lb(pool, family))
    return result, lab.flows(family)


def never_by_another_uplink(pool: str, result: dict, seen: dict) -> None:
    """No request or reply of these flows crossed a router outside the pool's pair."""
    ports = set(result["ports"])
    for router in topo.ROUTERS:
        if router not in PAIR[pool]:
            assert not (seen[router]["requests"] | seen[router]["replies"]) & ports, (pool, router, seen[router])


def test_rules_mode_keeps_each_pool_on_its_uplink_but_not_on_its_router(lab):
    """`rules` mode: each group's table routes via its own pair only, so no reply leaves by
    another uplink; which router of the pair is the hash's choice, and a stateful router drops
    the replies of requests it did not forward. The VRRP-style pair works whole: both of its
    next hops are the one virtual MAC, and the frame reaches the router holding the state."""
    assert run_nra(lab, "--oneshot").returncode == 0
    try:
        worked = {}
        for pool in topo.POOLS:
            for family in (4, 6):
                result, seen = flows(lab, pool, family)
                never_by_another_uplink(pool, result, seen)
                worked[(pool, family)] = result["ok"]
        assert worked[("c", 4)] == FLOWS[4] and worked[("c", 6)] == FLOWS[6], worked
        # (A and B: the hash's choice. In this lab IPv4's L4 hash happens to be the same on the
        # client and the node, one kernel with one hash key, so their IPv4 flows all work; IPv6's
        # does not, and about half of those fail: recorded, not asserted)
        FIGURES["uplinks, rules mode: flows that worked (A: r1/r2, B: r3/r4, C: virtual-MAC pair)"] = ", ".join(
            f"{pool.upper()} IPv{f} {worked[(pool, f)]}/{FLOWS[f]}" for pool in topo.POOLS for f in (4, 6))
    finally:
        assert run_nra(lab, "--clean-and-exit").returncode == 0
        lab.flush_conntrack()
        lab.restart_echo()


@pytest.fixture(scope="module")
def nra(lab):
    with nra_daemon(lab, *CONNTRACK) as proc:
        yield proc


@pytest.mark.parametrize("family", (4, 6))
@pytest.mark.parametrize("pool", tuple(topo.POOLS))
def test_every_reply_leaves_by_the_router_of_its_request(lab, nra, pool, family):
    result, seen = flows(lab, pool, family)
    assert (result["ok"], result["failed"]) == (FLOWS[family], 0), result
    ports = set(result["ports"])
    for router in PAIR[pool]:
        through = seen[router]["requests"] & ports
        assert seen[router]["replies"] & ports == through, (router, seen)
    assert set().union(*(seen[r]["requests"] for r in PAIR[pool])) >= ports
    never_by_another_uplink(pool, result, seen)
    FIGURES[f"uplinks, conntrack, pool {pool.upper()} IPv{family}: flows via {'/'.join(PAIR[pool])} "
            "(requests = replies)"] = "/".join(str(len(seen[r]["replies"] & ports)) for r in PAIR[pool])


def lb_sets(table: str, family: int) -> str:
    """The listing of nra's prefix sets of a family (lb4, and lb4_0 to lb4_15: by block)."""
    return "\n".join(re.findall(rf"\n\tset lb{family}(?:_\d+)? {{.*?\n\t}}", table, re.S))


def group_maps(table: str, family: int) -> str:
    """The listing of nra's group maps of a family (groups4, and groups4_0 to groups4_15: by block)."""
    return "\n".join(re.findall(rf"\n\tmap groups{family}(?:_\d+)? {{.*?\n\t}}", table, re.S))


def test_routers_are_told_apart_by_link_and_mac(lab, nra):
    """r1 and r3 share a MAC on two uplinks: two map elements, two marks. r5 and r6 share one
    virtual MAC on eth3: one element, one table with a multipath route via both, said once."""
    routers = lab.exec("node", ["nft", "list", "map", "inet", "nra", "link_routers"]).stdout
    shared = [line for line in routers.replace(",", "\n").splitlines() if topo.SHARED_MAC in line]
    assert len(shared) == 2 and {'"eth1"' in shared[0] or '"eth1"' in shared[1],
                                 '"eth2"' in shared[0] or '"eth2"' in shared[1]} == {True}, routers
    assert len({line.split("goto")[1].strip() for line in shared}) == 2, routers
    assert routers.count(topo.VIRTUAL_MAC) == 1, routers
    log = (lab.run_dir / "nra.log").read_text()
    said = [line for line in log.splitlines() if f"share link-layer address {topo.VIRTUAL_MAC} on eth3" in line]
    assert len(said) == 2 and all("r5v" in line and "r6v" in line for line in said), said  # once per family
    for family, pool_of in ((4, topo.pool4), (6, topo.pool6)):
        table = lab.exec("node", ["nft", "list", "table", "inet", "nra"]).stdout
        groups, prefixes = group_maps(table, family), lb_sets(table, family)
        # each pool is its uplink's own: in its group's map alone (the prefix sets hold no group's)
        assert all(pool_of(pool) in groups and pool_of(pool) not in prefixes for pool in topo.POOLS), (groups, prefixes)


def test_plan_shows_each_group_its_routers_tables_and_marks(lab, nra):
    out = run_nra(lab, *CONNTRACK, command=("plan",))
    assert out.returncode == 0, out.stdout + out.stderr  # the daemon holds it all: nothing to do
    lines = [line for line in out.stdout.splitlines() if line.startswith(("# group", "#   router"))]
    assert len([line for line in lines if line.startswith("# group")]) == 3, out.stdout
    assert len([line for line in lines if "router" in line]) == 5, out.stdout  # r5 + r6: one router
    assert any("pool-c" in line for line in lines), out.stdout


def test_clean_and_exit_leaves_nothing(lab, nra):
    nra.terminate()  # (the daemon would put it all back)
    nra.wait(10)
    assert run_nra(lab, *CONNTRACK, "--clean-and-exit").returncode == 0
    assert "table inet nra" not in lab.exec("node", ["nft", "list", "tables"]).stdout
    for family in (4, 6):
        assert "fwmark" not in lab.ip("node", f"-{family} rule show")
