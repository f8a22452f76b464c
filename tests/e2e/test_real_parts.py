"""The return path through the lab made of the real parts (testbed/kubelab.py): real
kube-proxy (nftables, then iptables mode) in the node namespace, MetalLB's controller
assigning the Services' LB IPs, MetalLB's speaker in FRR mode announcing both over BGP
through FRR (zebra, bgpd and the lab's reloader in the node namespace), nra in CRD mode
reading the same objects from the same real kube-apiserver.

Order matters: `rules` mode first (nra ONESHOT, then cleaned), then the conntrack daemon.
"""

from __future__ import annotations

import ipaddress
import os
import re
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
        for family, ip in ips.items():
            FIGURES[f"real parts: IPv{family} LB IP announced to the client after"] = \
                f"{lab.wait_announced(family, ip):.1f} s"
        kube.lb = ips
        FIGURES["real parts: FRR reloads on the speaker's signal (frr-reload.py --reload)"] = \
            ", ".join(re.findall(r"--reload: rc \d+ in ([\d.]+ s)", kube.log("frr-reloader"))) or "none"
        yield kube
    except ClusterError as exc:
        pytest.fail(f"{exc}\nMetalLB speaker's log ends:\n{kube.log('metallb-speaker')[-3000:]}\n"
                    f"the FRR reloader's log ends:\n{kube.log('frr-reloader')[-3000:]}", pytrace=False)
    finally:
        kube.stop()
        lab.down()
        # FRR's daemons and the reloader are gone, and so are libfrr's per-process directories
        assert not kube.frr_alive(), kube.frr_alive()
        assert not [d for d in kube.frr_scratch() if d.exists()], kube.frr_scratch()


def flows(lab, family: int, target: str) -> tuple[dict, dict]:
    lab.clear_flows()
    result = lab.tcp(family, FLOWS[family], timeout=1, target=target)
    return result, lab.flows(family)


def run_nra(lab, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "nra", *lab.nra_argv()[1:], *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_metallb_assigned_the_lb_ips_and_its_speaker_announces_both_through_frr(parts):
    lab = parts.lab
    written = parts.speaker_conf.read_text()  # what the speaker wrote for FRR
    running = parts.vtysh("show running-config")  # what the reloader applied to bgpd
    for family, pool in ((4, topo.POOL4), (6, topo.POOL6)):
        lb = parts.lb[family]
        assert ipaddress.ip_address(lb) in ipaddress.ip_network(pool), parts.lb
        prefix = f"{lb}/{32 if family == 4 else 128}"
        assert f"network {prefix}" in written, written
        assert f"network {prefix}" in running, running
        for r in topo.R.values():
            # learned over the router's session to the node of the family (FRR's, the node
            # runs no BIRD), its AS path the node's AS, its next hop the node's address
            route = lab.birdc(r.name, f"show route {prefix} all")
            assert f"node{family}" in route and f"BGP.as_path: {topo.AS_NODE}" in route, route
            node = topo.NODE4 if family == 4 else topo.NODE6
            assert f"via {node}" in lab.ip(r.name, f"-{family} route show {lb}"), lab.ip(r.name, f"-{family} route")
    assert "success" in parts.frr_reloads() and "failure" not in parts.frr_reloads(), parts.log("frr-reloader")[-3000:]
    assert not lab.bird_running("node")


@contextmanager
def nra_for(parts, *args: str):
    """nra in CRD mode, reading MetalLB's own objects from the real API server. Yields once
    nra's table has the routes of both families (the daemon) or nra has exited (ONESHOT)."""
    lab = parts.lab
    lab.nra_source = parts.crd_source
    if "--oneshot" in args:
        proc = run_nra(lab, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        try:
            yield proc
        finally:
            assert run_nra(lab, "--clean-and-exit").returncode == 0
        return
    with nra_daemon(lab, *args, wait=False) as proc:
        for family in FAMILIES:
            wait_for(lambda: lab.table_routes(family), 20, interval=0.05, what=f"nra's IPv{family} route in table 20")
        yield proc


def use_kube_proxy(parts, mode: str) -> None:
    """kube-proxy in `mode`, its rules for both LB IPs written (restarted only to change mode)."""
    if parts.kube_proxy_mode != mode:
        parts.start_kube_proxy(mode)
        FIGURES[f"real parts: kube-proxy {mode} rules for the LB IPs after"] = \
            f"{parts.wait_kube_proxy(list(parts.lb.values())):.1f} s"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", kubelab.KUBE_PROXY_MODES)
def test_rules_mode_fails_as_the_readme_says(parts, mode, family):
    """Behind kube-proxy the replies leave the node with the pod's address: no `from <prefix>`
    rule matches them, they take the default route to the gateway, which drops them
    (docs/return-path.md, the decision table the README links)."""
    lab = parts.lab
    use_kube_proxy(parts, mode)
    with nra_for(parts, "--oneshot"):
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
    use_kube_proxy(parts, mode)
    rules = parts.kube_proxy_rules()
    assert (topo.POD4 if family == 4 else topo.POD6) in rules, rules
    with nra_for(parts, *CONNTRACK):
        result, seen = flows(lab, family, parts.lb[family])
    assert_symmetric(result, seen, FLOWS[family])
    FIGURES[f"real parts, kube-proxy {mode}, IPv{family}: {FLOWS[family]} flows via r1/r2"] = \
        f"{len(seen['r1']['replies'])}/{len(seen['r2']['replies'])}"


def test_nothing_global_written(parts):
    """kube-proxy, MetalLB and FRR ran in the node namespace only: the global conntrack
    settings are as they were, the root namespace has no kube-proxy rules, and FRR's files are
    all in the lab's FRR directory (none in the host's /etc/frr or /var/run/frr)."""
    parts.check_globals_untouched()
    paths = parts.frr_paths()
    # (beside libfrr's own per-process directory, /var/tmp/frr/<daemon>.<pid>, which it removes
    # at exit: checked when the lab is torn down)
    own = (parts.frr_dir, parts.dir, *parts.frr_scratch())
    elsewhere = {p for p in paths if not any(p.is_relative_to(d) for d in own)}
    assert paths and not elsewhere, elsewhere
    assert parts.frr_etc_before == kubelab.host_frr_state(), "the host's /etc/frr changed"
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "kube-proxy" not in tables, tables
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool, "-t", "nat"], capture_output=True, text=True).stdout
        assert "KUBE-" not in out, out
