"""FRR-K8s's BGPSessionStates as an advisory liveness signal, against the API server stand-in
(real HTTP): the watch alone, then the whole agent in CRD mode programming a throwaway
namespace."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from nra.sources.kube.session_states import (
    SessionStateFeed,
    SessionStateWatch,
    session_up,
)
from tests.agent.helpers import REPO, clean_env
from tests.kube.apiserver import FakeApiServer
from tests.kube.conftest import COALESCE_S, FAST, Recorder, running
from tests.kube.test_sources import NODE, NS, node, peer
from tests.netns import NetNS
from tests.wait import holds_async, wait_for_async

FRR_NS = "frr-k8s-system"
A, B = "10.99.0.2", "10.99.0.3"  # sessions are keyed as PeerSpec.key


def state(name: str, peer_address: str, bgp: str = "Established", bfd: str = "N/A", node_name: str = NODE,
          vrf: str = "") -> dict:
    return {"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "BGPSessionState",
            "metadata": {"name": name, "namespace": FRR_NS,
                         "labels": {"frrk8s.metallb.io/node": node_name, "frrk8s.metallb.io/peer": peer_address,
                                    "frrk8s.metallb.io/vrf": vrf}},
            "status": {"node": node_name, "peer": peer_address, "vrf": vrf, "bgpStatus": bgp, "bfdStatus": bfd}}


def test_session_up_reads_this_nodes_sessions():
    objects = [state("a", "10.99.0.2"), state("b", "10.99.0.3", bfd="Down"), state("c", "10.99.0.4", bgp="Active"),
               state("d", "10.99.0.5", node_name="other"), state("e", "10.99.0.6", vrf="red"),
               state("f", "not an address"), {"metadata": {"name": "g"}},
               state("h", "fd99::2%eth0", bfd="Up"), state("i", "10.99.0.2", bgp="Connect"),
               state("j", "fd99-0000-0000-0000-0000-0000-0000-0003"), state("k", "eth1", vrf="default")]
    assert session_up(objects, NODE) == {A: False, B: False, "10.99.0.4": False, "10.99.0.6@red": True,
                                         "fd99::2": True, "fd99::3": True, "%eth1": True}  # of two, down wins
    assert session_up([state("a", "10.99.0.2")], NODE) == {A: True}


def test_the_session_state_feed_drops_stale_reports_only_after_the_hold():
    feed = SessionStateFeed(hold_s=3.0)
    feed.states = {A: False}
    assert feed.current() == {A: False}
    assert feed.check(True, 0.0) is False
    assert feed.check(False, 10.0) is False and feed.current() == {A: False}  # a routine stream cut
    assert feed.check(True, 11.0) is False and feed.current() == {A: False}
    assert feed.check(False, 20.0) is False
    assert feed.check(False, 23.0) is True and feed.current() is None  # failing for the hold: all unknown
    assert feed.check(False, 30.0) is False
    assert feed.check(True, 31.0) is True and feed.current() == {A: False}

async def test_the_watch_follows_this_nodes_objects_only(apiserver: FakeApiServer, factory):
    apiserver.put(state("a", "10.99.0.2"), state("b", "10.99.0.3", bgp="Active"),
                  state("x", "10.99.0.9", bgp="Active", node_name="other"))
    recorder = Recorder()
    watch = SessionStateWatch(factory, FRR_NS, NODE, FAST, COALESCE_S)
    async with running(watch, recorder):
        await recorder.wait_for(lambda r: r == {A: True, B: False})
        apiserver.put(state("b", "10.99.0.3"))
        await recorder.wait_for(lambda r: r == {A: True, B: True})
        apiserver.delete("BGPSessionState", "a", FRR_NS)
        await recorder.wait_for(lambda r: r == {B: True})
    selectors = {q.get("labelSelector") for verb, path, q in apiserver.requests if "bgpsessionstates" in path}
    assert selectors == {f"frrk8s.metallb.io/node={NODE}"}


def gateways(ns: NetNS) -> set[str]:
    proc = ns.run(["ip", "-j", "-4", "route", "show", "table", "20"], capture_output=True, text=True)
    routes = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    hops = [h for r in routes for h in r.get("nexthops", [r])]
    return {h["gateway"] for h in hops if "gateway" in h}


async def wait_gateways(ns: NetNS, want: set[str], timeout: float) -> None:
    await wait_for_async(lambda: gateways(ns) == want, timeout, interval=0.05, what=f"table 20 via {want}")


@pytest.mark.kernel
async def test_the_agent_leaves_out_a_peer_whose_session_stays_down(apiserver: FakeApiServer, kubeconfig: Path,
                                                                    node_ns: NetNS, tmp_path: Path):
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lb", "namespace": NS}, "spec": {"addresses": ["198.51.100.16/29"]}}
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "all", "namespace": NS},
           "spec": {}}
    apiserver.put(node({"zone": "a"}), peer("r1", "10.99.0.2"), peer("r2", "10.99.0.3"), pool, adv,
                  state("s1", "10.99.0.2"), state("s2", "10.99.0.3"))
    log = open(tmp_path / "nra.log", "w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nra", "--use-crds", "--netns", node_ns.name,
        "--kubeconfig", str(kubeconfig), "--namespace", NS, "--node-name", NODE, "--frrk8s-namespace", FRR_NS,
        "--bgp-session-hold", "0.5", cwd=REPO, env=clean_env(MAX_RECONCILE_WAIT="0"), stdout=log, stderr=log)
    try:
        await wait_gateways(node_ns, {"10.99.0.2", "10.99.0.3"}, 10)
        apiserver.put(state("s1", "10.99.0.2", bgp="Active"))  # r1's session dropped
        # within the hold: nothing yet
        await holds_async(lambda: gateways(node_ns) == {"10.99.0.2", "10.99.0.3"}, 0.3, what="both peers kept")
        await wait_gateways(node_ns, {"10.99.0.3"}, 3)
        apiserver.put(state("s2", "10.99.0.3", bfd="Down"))  # the last peer: kept whatever it says
        await holds_async(lambda: gateways(node_ns) == {"10.99.0.3"}, 1.5, interval=0.1, what="the last peer kept")
        apiserver.put(state("s2", "10.99.0.3"), state("s1", "10.99.0.2"))  # both up again
        await wait_gateways(node_ns, {"10.99.0.2", "10.99.0.3"}, 3)
        apiserver.put(state("s1", "10.99.0.2", bgp="Idle"))
        await wait_gateways(node_ns, {"10.99.0.3"}, 3)
        apiserver.delete("BGPSessionState", "s1", FRR_NS)  # no object: unknown, not down
        await wait_gateways(node_ns, {"10.99.0.2", "10.99.0.3"}, 3)
        apiserver.put(state("s1", "10.99.0.2", bgp="Idle"))
        await wait_gateways(node_ns, {"10.99.0.3"}, 3)
        await apiserver.stop()  # the API goes away: stale reports must not keep r1 out for ever
        await wait_gateways(node_ns, {"10.99.0.2", "10.99.0.3"}, 5)
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
    text = (tmp_path / "nra.log").read_text()
    assert "bgpsessionstates" in text and "Traceback" not in text, text
