"""The `nra` process against the API server stand-in: ONESHOT both ways, and refusals."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from tests.agent.helpers import REPO, clean_env
from tests.kube.apiserver import FakeApiServer
from tests.kube.test_sources import NODE, NS, configmap, node, peer
from tests.metallb_docs import LEGACY_ZONED_PEER as LEGACY
from tests.netns import NetNS

pytestmark = pytest.mark.kernel


async def run_nra(*args: str, timeout: float = 60, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nra", *args, cwd=REPO, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


def table(ns: NetNS) -> tuple[list[str], list]:
    rules = [f"{r['src']}/{r['srclen']}" for r in json.loads(ns.ip("-j -4 rule show table 20") or "[]")]
    proc = ns.run(["ip", "-j", "-4", "route", "show", "table", "20"], capture_output=True, text=True)
    routes = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    return rules, routes


async def test_oneshot_configmap_mode_programs_this_nodes_peers(backend, backend_kubeconfig: Path,
                                                                node_ns: NetNS):
    backend.put(node({"zone": "a"}), configmap(LEGACY))
    code, out = await run_nra("--oneshot", "--netns", node_ns.name, "--kubeconfig", str(backend_kubeconfig),
                              "--namespace", NS, "--node-name", NODE)
    assert code == 0, out
    rules, routes = table(node_ns)
    assert rules == ["198.51.100.0/28"]
    # the zone-b peer's selector does not match this node: one nexthop, a plain route
    assert [r.get("gateway") for r in routes] == ["10.99.0.2"]


async def test_oneshot_crd_mode(backend, backend_kubeconfig: Path, node_ns: NetNS):
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lb", "namespace": NS}, "spec": {"addresses": ["198.51.100.16-198.51.100.23"]}}
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
           "metadata": {"name": "all", "namespace": NS}, "spec": {}}
    backend.put(node({"zone": "a"}), peer("r1", "10.99.0.2"), peer("r2", "10.99.0.3"), pool, adv)
    code, out = await run_nra("--oneshot", "--use-crds", "--netns", node_ns.name,
                              "--kubeconfig", str(backend_kubeconfig),
                              "--namespace", NS, "--node-name", NODE)
    assert code == 0, out
    rules, routes = table(node_ns)
    assert rules == ["198.51.100.16/29"]
    assert sorted(h["gateway"] for h in routes[0]["nexthops"]) == ["10.99.0.2", "10.99.0.3"]


async def test_oneshot_with_the_api_down_fails_after_a_bounded_wait_and_touches_nothing(
        tmp_path: Path, node_ns: NetNS):
    # a stand-in that is never started: its kubeconfig points at a port nobody listens on
    kubeconfig = FakeApiServer().write_kubeconfig(tmp_path / "kubeconfig")
    node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")
    started = time.monotonic()
    code, out = await run_nra("--oneshot", "--netns", node_ns.name, "--kubeconfig", str(kubeconfig),
                              "--namespace", NS, "--node-name", NODE, "--source-timeout", "2")
    assert code == 1, out
    assert time.monotonic() - started < 20
    assert "no configuration" in out and "Traceback" not in out
    assert table(node_ns)[0] == ["203.0.113.0/24"]  # untouched


async def test_crd_mode_without_node_name_is_refused_with_one_line(kubeconfig: Path):
    code, out = await run_nra("--use-crds", "--kubeconfig", str(kubeconfig), HEALTH_ADDRESS="off")
    assert code == 2
    assert "NODE_NAME" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
