"""The return path through the lab made of the real parts (testbed/kubelab.py): real
kube-proxy (nftables, then iptables mode) in the node namespace, MetalLB's controller
assigning the Service's LB IPs, MetalLB's speaker announcing the IPv4 one over BGP (BIRD
on the node the IPv6 one: MetalLB's native BGP cannot), nra in CRD mode reading the same
objects from the same real kube-apiserver.

Order matters: `rules` mode first (nra ONESHOT, then cleaned), then the conntrack daemon.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from testbed import kubelab
from testbed import lab as topo
from testbed.cluster import ClusterError
from tests.e2e.conftest import FIGURES, REPO, _missing_tools, nra_daemon
from tests.e2e.test_return_path import assert_symmetric
from tests.realcluster import unique
from tests.wait import wait_for

pytestmark = pytest.mark.e2e

FAMILIES = (4, 6)
FLOWS = {4: 64, 6: 32}
CONNTRACK = ("--return-path", "conntrack")


@pytest.fixture(scope="module")
def parts(real_cluster):
    """The lab, the real parts in its node namespace and the Service's LB IPs, all torn down."""
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces)", pytrace=False)
    if missing := _missing_tools():
        pytest.fail(f"the lab needs {', '.join(missing)} (scripts/setup installs them)", pytrace=False)
    run_dir = Path(tempfile.mkdtemp(prefix="nrareal-"))
    lab = kubelab.RealLab(prefix=f"nrareal{os.getpid()}", run_dir=run_dir, stateful_routers=True, kube_proxy="none")
    kube = kubelab.KubeParts(lab, real_cluster, unique("labnode"))
    try:
        lab.up()
        lab.start_echo()
        kube.start()
        kube.start_metallb()
        ips = kube.wait_lb_ips()
        lab.announce_lb6(ips[6])
        for family, ip in ips.items():
            FIGURES[f"real parts: IPv{family} LB IP announced to the client after"] = \
                f"{lab.wait_announced(family, ip):.1f} s"
        kube.lb = ips
        (run_dir / "metallb.yaml").write_text(topo.metallb_config())
        yield kube
    except ClusterError as exc:
        pytest.fail(f"{exc}\nMetalLB speaker's log ends:\n{kube.log('metallb-speaker')[-3000:]}", pytrace=False)
    finally:
        kube.stop()
        lab.down()


def flows(lab, family: int, target: str) -> tuple[dict, dict]:
    lab.clear_flows()
    result = lab.tcp(family, FLOWS[family], timeout=1, target=target)
    return result, lab.flows(family)


def run_nra(lab, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nra", *lab.nra_argv()[1:], *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_metallb_assigned_the_lb_ips_and_its_speaker_announces_the_ipv4_one(parts):
    lab = parts.lab
    for family, pool in ((4, topo.POOL4), (6, topo.POOL6)):
        assert ipaddress.ip_address(parts.lb[family]) in ipaddress.ip_network(pool), parts.lb
    for router in topo.ROUTERS:
        # learned over the router's IPv4 session to the node: MetalLB's speaker's (BIRD on the
        # node has IPv6 sessions only), its AS path the node's AS
        route = lab.birdc(router, f"show route {parts.lb[4]}/32 all")
        assert "node4" in route and f"BGP.as_path: {topo.AS_NODE}" in route, route
        assert f"via {topo.NODE4}" in lab.ip(router, f"-4 route show {parts.lb[4]}")
        assert "node6" in lab.birdc(router, f"show route {parts.lb[6]}/128")
    assert '"event":"sessionUp"' in parts.log("metallb-speaker"), parts.log("metallb-speaker")[-2000:]


@contextmanager
def nra_for(parts, family: int, *args: str):
    """nra as the family allows: IPv4 in CRD mode, reading MetalLB's own objects from the real
    API server; IPv6 from the lab's static MetalLB file (peers and pools of both families),
    since MetalLB's native speaker refuses any configuration that advertises an IPv6 pool.
    Yields once nra's table has the family's route (the daemon) or nra has exited (ONESHOT)."""
    lab = parts.lab
    lab.nra_source = parts.crd_source if family == 4 else ("--static-file", str(lab.run_dir / "metallb.yaml"))
    if "--oneshot" in args:
        proc = run_nra(lab, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        try:
            yield proc
        finally:
            assert run_nra(lab, "--clean-and-exit").returncode == 0
        return
    with nra_daemon(lab, *args, wait=False) as proc:
        wait_for(lambda: lab.table_routes(family), 20, interval=0.05, what=f"nra's IPv{family} route in table 20")
        yield proc


@pytest.mark.parametrize("family", FAMILIES)
def test_rules_mode_fails_as_the_readme_says(parts, family):
    """Behind kube-proxy the replies leave the node with the pod's address: no `from <prefix>`
    rule matches them, they take the default route to the gateway, which drops them."""
    lab = parts.lab
    parts.start_kube_proxy("nftables")
    parts.wait_kube_proxy(list(parts.lb.values()))
    with nra_for(parts, family, "--oneshot"):
        try:
            before = lab.counters()
            result, _ = flows(lab, family, parts.lb[family])
            assert result["ok"] == 0, result
            assert lab.counters()["gw"][family] > before["gw"][family]
        finally:
            lab.flush_conntrack()
            lab.restart_echo()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", kubelab.KUBE_PROXY_MODES)
def test_every_connection_returns_through_its_router_behind_real_kube_proxy(parts, mode, family):
    lab = parts.lab
    if parts.kube_proxy_mode != mode:
        parts.start_kube_proxy(mode)
        FIGURES[f"real parts: kube-proxy {mode} rules for the LB IPs after"] = \
            f"{parts.wait_kube_proxy(list(parts.lb.values())):.1f} s"
    rules = parts.kube_proxy_rules()
    assert (topo.POD4 if family == 4 else topo.POD6) in rules, rules
    with nra_for(parts, family, *CONNTRACK):
        result, seen = flows(lab, family, parts.lb[family])
    assert_symmetric(result, seen, FLOWS[family])
    FIGURES[f"real parts, kube-proxy {mode}, IPv{family}: {FLOWS[family]} flows via r1/r2"] = \
        f"{len(seen['r1']['replies'])}/{len(seen['r2']['replies'])}"


def test_nothing_global_written(parts):
    """kube-proxy and MetalLB ran in the node namespace only: the global conntrack settings
    are as they were, and the root namespace has no kube-proxy rules."""
    parts.check_globals_untouched()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "kube-proxy" not in tables, tables
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool, "-t", "nat"], capture_output=True, text=True).stdout
        assert "KUBE-" not in out, out
