"""Datapath detection: namespaces built to look like each datapath (kube-proxy's real nftables
table or iptables chain, IPVS's link, Cilium's and Calico's devices with a BPF program
attached by tc), the agent run in each, and the verdict `nra status` prints; `conntrack` is
refused where netfilter never sees the packets.

The kernel here has no dummy driver ("Unknown device type"), so kube-ipvs0 is an ifb device
(detection goes by name). The BPF program is a minimal eBPF classifier compiled by LLVM's
`llc` from IR when it is installed, else a classic BPF program (`tc ... bpf bytecode`): a
real program attached either way.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent.helpers import (
    TWO_PEERS_V4_V6,
    Daemon,
    clean_env,
    http_status,
    run_nra,
)
from tests.netns import NetNS
from tests.ship.test_health_agent import free_port
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

BPF_IR = """target triple = "bpf"
define i32 @cil_from_netdev(i8* %skb) section "classifier" {
  ret i32 0
}
@_license = global [4 x i8] c"GPL\\00", section "license"
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "metallb.yaml"
    path.write_text(TWO_PEERS_V4_V6)
    return path


def attach_bpf(ns: NetNS, link: str, tmp_path: Path) -> None:
    ns.exec(["tc", "qdisc", "add", "dev", link, "clsact"])
    llc = shutil.which("llc")
    if llc:
        (tmp_path / "prog.ll").write_text(BPF_IR)
        subprocess.run([llc, "-march=bpf", "-filetype=obj", str(tmp_path / "prog.ll"), "-o", str(tmp_path / "prog.o")],
                       check=True, capture_output=True)
        ns.exec(["tc", "filter", "add", "dev", link, "ingress", "bpf", "da", "obj", str(tmp_path / "prog.o"),
                 "sec", "classifier"])
    else:
        ns.exec(["tc", "filter", "add", "dev", link, "ingress", "bpf", "bytecode", "1,6 0 0 4294967295,"])
    assert " bpf " in ns.exec(["tc", "filter", "show", "dev", link, "ingress"]).stdout


def kube_proxy_nftables(ns: NetNS, tmp_path: Path) -> None:
    ns.nft("add table ip kube-proxy\nadd chain ip kube-proxy services\n")


def kube_proxy_iptables(ns: NetNS, tmp_path: Path) -> None:
    ns.exec(["iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES"])


def kube_proxy_ipvs(ns: NetNS, tmp_path: Path) -> None:
    ns.ip("link add kube-ipvs0 type ifb")
    kube_proxy_iptables(ns, tmp_path)  # IPVS mode keeps iptables chains as well


def cilium_devices(ns: NetNS, tmp_path: Path) -> None:
    ns.ip("link add cilium_host type veth peer name cilium_net")
    attach_bpf(ns, "cilium_host", tmp_path)


def cilium_with_kube_proxy(ns: NetNS, tmp_path: Path) -> None:
    cilium_devices(ns, tmp_path)
    kube_proxy_nftables(ns, tmp_path)


def calico_ebpf(ns: NetNS, tmp_path: Path) -> None:
    ns.ip("link add bpfout.cali type veth peer name bpfin.cali")
    attach_bpf(ns, "eth0", tmp_path)


CONNTRACK_FITS = "fits: conntrack fits"
#: build, RETURN_PATH to run with, the datapath line and the mode line `nra status` prints
CASES = {
    "kube-proxy-nftables": (kube_proxy_nftables, "conntrack", "datapath:        kube-proxy-nftables (nftables table ip kube-proxy)",
                            "mode:            fits: conntrack fits kube-proxy-nftables"),
    "kube-proxy-iptables": (kube_proxy_iptables, "rules",
                            "datapath:        kube-proxy-iptables (iptables chain ip nat KUBE-SERVICES)",
                            "mode:            cannot tell: rules on kube-proxy-iptables: only replies whose source"),
    "kube-proxy-ipvs": (kube_proxy_ipvs, "rules", "datapath:        kube-proxy-ipvs (link kube-ipvs0; iptables chain ip nat KUBE-SERVICES)",
                        "mode:            fits: rules fit kube-proxy-ipvs"),
    "cilium-ebpf": (cilium_devices, "rules", "datapath:        cilium-ebpf (links cilium_host, cilium_net; BPF programs on cilium_host: ",
                    "mode:            fits: rules fit cilium-ebpf"),
    "cilium-with-kube-proxy": (cilium_with_kube_proxy, "conntrack",
                               "datapath:        kube-proxy-nftables (nftables table ip kube-proxy; links cilium_host, "
                               "cilium_net (Cilium, with kube-proxy))", "mode:            fits: conntrack fits kube-proxy-nftables"),
    "calico-ebpf": (calico_ebpf, "rules", "datapath:        calico-ebpf (links bpfout.cali, bpfin.cali; BPF programs on eth0: ",
                    "mode:            cannot tell: rules on calico-ebpf: set CALICO_EXT_SERVICE_MARK"),
    "unknown": (lambda ns, tmp: None, "rules", "datapath:        unknown (no kube-proxy table, chain or IPVS link",
                "mode:            cannot tell: rules: datapath unknown"),
}


@pytest.mark.parametrize("case", CASES)
def test_status_says_which_datapath_and_whether_the_mode_fits(node_ns, config, tmp_path, case):
    build, mode, datapath_line, mode_line = CASES[case]
    build(node_ns, tmp_path)
    port = free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, "--return-path", mode,
                    env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}"), log_path=tmp_path / "nra.log")
    try:
        wait_for(lambda: http_status(port, "/readyz") == 200, 15, what="ready")
        status = run_nra("status", "--address", f"127.0.0.1:{port}")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert any(line.startswith(datapath_line) for line in lines), status.stdout
        assert any(line.startswith(mode_line) for line in lines), status.stdout
        assert f"RETURN_PATH={mode}: " in daemon.log()  # said in the log too
    finally:
        assert daemon.stop() == 0, daemon.log()


@pytest.mark.parametrize("build", [cilium_devices, calico_ebpf])
def test_conntrack_is_refused_where_netfilter_never_sees_the_packets(node_ns, config, tmp_path, build):
    build(node_ns, tmp_path)
    proc = run_nra("--oneshot", "--static-file", str(config), "--netns", node_ns.name, "--return-path", "conntrack")
    assert proc.returncode == 2, proc.stderr
    refusal = [line for line in proc.stderr.splitlines() if "conntrack cannot work" in line]
    assert len(refusal) == 1 and "DATAPATH_CHECK=warn" in refusal[0], proc.stderr
    assert node_ns.rules("-4") == [] and node_ns.nft("list tables", check=False).stdout.strip() == ""
    # overridden: it runs, and says it does not fit
    port = free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, "--return-path", "conntrack",
                    "--datapath-check", "warn", env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}"),
                    log_path=tmp_path / "nra.log")
    try:
        wait_for(lambda: http_status(port, "/readyz") == 200, 15, what="ready")
        status = run_nra("status", "--address", f"127.0.0.1:{port}").stdout
        assert "mode:            DOES NOT FIT: conntrack cannot work on" in status, status
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_calico_mark_makes_the_rules_match_it(node_ns, config, tmp_path):
    calico_ebpf(node_ns, tmp_path)
    proc = run_nra("--oneshot", "--static-file", str(config), "--netns", node_ns.name,
                   "--calico-ext-service-mark", "0x10000000")
    assert proc.returncode == 0, proc.stderr
    assert "rules fit calico-ebpf: the rules match mark 0x10000000" in proc.stderr
    assert node_ns.rules("-4") == ["20:\tfrom 198.51.100.0/26 fwmark 0x10000000 lookup 20 proto 245",
                                   "20:\tfrom 198.51.100.100/30 fwmark 0x10000000 lookup 20 proto 245"]
    both = run_nra("--oneshot", "--static-file", str(config), "--netns", node_ns.name,
                   "--calico-ext-service-mark", "0x10000000", "--fwmark", "0x14")
    assert both.returncode == 2 and "differ" in both.stderr
