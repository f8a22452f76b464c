"""The Kubernetes sources against the API server stand-in: real HTTP, the real
kubernetes-asyncio client, MetalLB's own sample objects as data."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from nra.config.intent import Intent
from nra.config.metallb import parse_legacy_config, parse_objects
from nra.observe import metrics
from nra.settings import Settings
from nra.sources.kube import (
    ConfigMapSource,
    CRDSource,
    KubeSourceError,
    api_client_factory,
    make_kube_source,
)
from nra.sources.kube.client import resolve_namespace
from tests.kube.apiserver import FakeApiServer, load_objects
from tests.kube.conftest import COALESCE_S, FAST, Recorder, running
from tests.wait import wait_for_async

NS = "metallb-system"
NODE = "node-a"
WEIGHT = 100


def node(labels: dict[str, str], name: str = NODE) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def peer(name: str, address: str, selectors: list[dict] | None = None, labels: dict | None = None) -> dict:
    spec: dict = {"myASN": 64512, "peerASN": 64512, "peerAddress": address}
    if selectors is not None:
        spec["nodeSelectors"] = selectors
    meta: dict = {"name": name, "namespace": NS}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": meta, "spec": spec}


def configmap(text: str, name: str = "config") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS},
            "data": {"config": text}}


def addresses(intent: Intent) -> set[str]:
    return {str(p.address) for p in intent.peers}


def crd_source(factory, **kw) -> CRDSource:
    return CRDSource(factory, NS, kw.pop("node_name", NODE), WEIGHT, FAST, COALESCE_S)


def cm_source(factory, node_name: str | None = NODE) -> ConfigMapSource:
    return ConfigMapSource(factory, NS, "config", node_name, WEIGHT, FAST, COALESCE_S)


@pytest.fixture
def samples(shared_dir: Path) -> Path:
    return shared_dir / "metallb" / "configsamples"


@pytest.fixture
def corpus(shared_dir: Path) -> Path:
    return shared_dir / "metallb" / "configmap-to-crds" / "configmap-yaml"


@pytest.fixture
def simple_crds(samples: Path) -> list[dict]:
    """One peer (172.30.0.3), one pool with CIDRs, a range and IPv6, an empty advertisement."""
    return load_objects(samples / "bgppeer_simple.yaml") + load_objects(samples / "simple_pool_adv_bgp.yaml")


def restarts(resource: str, reason: str) -> float:
    return metrics.WATCH_RESTARTS.labels(resource, reason)._value.get()


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


# -- snapshot discipline --------------------------------------------------------------------


async def test_first_publish_only_after_every_list(apiserver: FakeApiServer, factory, recorder: Recorder,
                                                   simple_crds):
    apiserver.put(node({"zone": "a"}), *simple_crds)
    apiserver.fail_next(4, "json500", match="ipaddresspools", verb="list")
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        await settle()
    assert apiserver.count("list", "ipaddresspools") == 5
    assert len(recorder.results) == 1, "a partial view was published before every list completed"
    expected = parse_objects(simple_crds, {"zone": "a"}, WEIGHT)
    assert recorder.last == expected
    assert addresses(recorder.last.intent) == {"172.30.0.3"}
    assert ipaddress.ip_network("192.168.10.0/24") in recorder.last.intent.prefixes


@pytest.mark.parametrize("node_fault", ["late-list", "created-later"])
async def test_labels_after_peers_publish_no_half_built_state(apiserver: FakeApiServer, factory,
                                                              recorder: Recorder, simple_crds, node_fault):
    zone_a = peer("zone-a", "10.99.0.11", [{"matchLabels": {"zone": "a"}}])
    zone_b = peer("zone-b", "10.99.0.12", [{"matchLabels": {"zone": "b"}}])
    pools = [o for o in simple_crds if o["kind"] != "BGPPeer"]
    apiserver.put(zone_a, zone_b, *pools)
    if node_fault == "late-list":
        apiserver.put(node({"zone": "a"}))
        apiserver.fail_next(10_000, "text503", match="/nodes", verb="list")
    async with running(crd_source(factory), recorder):
        # (waited for, not slept on: on a busy machine the first lists took over 0.4 s)
        await wait_for_async(lambda: apiserver.count("list", "bgppeers") >= 1, 10, what="the peers listed")
        if node_fault == "late-list":
            await wait_for_async(lambda: apiserver.count("list", "/nodes") >= 3, 10, what="three failed node lists")
        else:
            await settle(0.4)  # (the node list's answer, an empty one, has time to come)
        assert recorder.results == [], "published before this node's labels were known"
        if node_fault == "created-later":
            apiserver.put(node({"zone": "a"}))
        else:
            apiserver.faults.clear()
        await recorder.wait_count(1)
        await settle()
    assert len(recorder.results) == 1
    assert addresses(recorder.last.intent) == {"10.99.0.11"}


async def test_relist_with_same_objects_publishes_nothing(apiserver: FakeApiServer, factory, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        lists = apiserver.count("list")
        gone = restarts("bgppeers", "gone")
        apiserver.compact()
        apiserver.gone_streams()
        await settle(0.5)
        assert apiserver.count("list") == lists + 4, "every resource should have been relisted"
    assert restarts("bgppeers", "gone") == gone + 1
    assert len(recorder.results) == 1


@pytest.mark.parametrize("gone_as_event", [True, False], ids=["error-event", "http-410"])
async def test_410_relists_and_picks_up_missed_change(apiserver: FakeApiServer, factory, recorder, simple_crds,
                                                      gone_as_event):
    apiserver.gone_as_event = gone_as_event
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        lists = apiserver.count("list", "bgppeers")
        # While the watch is away, a peer is added and the history compacted: resuming
        # from the old resourceVersion gets 410 and only a relist can see the new peer.
        apiserver.fail_next(2, "json500", match="bgppeers", verb="watch")
        apiserver.cut_streams("bgppeers")
        apiserver.put(peer("late", "172.30.0.9"))
        apiserver.compact()
        await recorder.wait_for(lambda r: "172.30.0.9" in addresses(r.intent))
        assert apiserver.count("list", "bgppeers") == lists + 1
    assert len(recorder.results) == 2


async def test_cut_stream_resumes_without_relist(apiserver: FakeApiServer, factory, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        lists = apiserver.count("list")
        last_rv = apiserver.rv
        apiserver.fail_next(2, "json500", match="bgppeers", verb="watch")
        assert apiserver.cut_streams() == 4
        apiserver.put(peer("while-cut", "172.30.0.7"))
        await recorder.wait_for(lambda r: "172.30.0.7" in addresses(r.intent), 10)
        apiserver.end_streams()  # a clean end (timeoutSeconds) resumes the same way
        apiserver.put(peer("after-end", "172.30.0.8"))
        # (10 s: the resumed watches' backoff after the two failures, on a busy machine)
        await recorder.wait_for(lambda r: "172.30.0.8" in addresses(r.intent), 10)
    assert apiserver.count("list") == lists, "a cut or ended stream must resume, not relist"
    resumed = [q for v, p, q in apiserver.requests if v == "watch" and "bgppeers" in p]
    assert any(int(q["resourceVersion"]) >= last_rv for q in resumed[1:])
    assert all(q.get("allowWatchBookmarks") == "true" and int(q["timeoutSeconds"]) > 0 for q in resumed)


@pytest.mark.parametrize("kind", ["json500", "text503", "garbage"])
async def test_server_errors_back_off_and_recover(apiserver: FakeApiServer, factory, recorder, simple_crds, kind):
    apiserver.put(node({}), *simple_crds)
    apiserver.fail_next(10_000, kind, match="bgppeers", verb="list")
    async with running(crd_source(factory), recorder):
        await settle(1.0)
        attempts = apiserver.count("list", "bgppeers")
        assert recorder.results == []
        # Backoff 0.02 s doubling to a 0.2 s cap: about ten attempts a second, not hundreds.
        assert 3 <= attempts <= 25
        apiserver.faults.clear()
        await recorder.wait_count(1)
        errors = restarts("bgppeers", "error")
        apiserver.fail_next(3, kind, match="bgppeers", verb="watch")
        apiserver.cut_streams("bgppeers")
        apiserver.put(peer("after-errors", "172.30.0.5"))
        await recorder.wait_for(lambda r: "172.30.0.5" in addresses(r.intent))
    assert restarts("bgppeers", "error") >= errors + 3
    assert len(recorder.results) == 2


async def test_bookmarks_advance_the_resume_point(apiserver: FakeApiServer, factory, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        peers_rv = int(apiserver.get("BGPPeer", "peer", NS)["metadata"]["resourceVersion"])
        apiserver.put(node({"unrelated": "change"}))  # moves the server's resourceVersion on
        await settle(3 * apiserver.bookmark_interval_s)
        bookmark_rv = apiserver.rv
        assert bookmark_rv > peers_rv
        apiserver.cut_streams("bgppeers")
        await settle(0.3)
    resumed = [q for v, p, q in apiserver.requests if v == "watch" and "bgppeers" in p][-1]
    assert int(resumed["resourceVersion"]) == bookmark_rv


async def test_stalled_watch_is_restarted(apiserver: FakeApiServer, factory, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        stalled = restarts("ipaddresspools", "stalled")
        lists = apiserver.count("list")
        assert apiserver.stall_streams("ipaddresspools") == 1
        pool = copy.deepcopy(apiserver.get("IPAddressPool", "example", NS))
        pool["spec"]["addresses"].append("203.0.113.0/24")
        apiserver.put(pool)
        await recorder.wait_for(lambda r: ipaddress.ip_network("203.0.113.0/24") in r.intent.prefixes,
                                timeout=FAST.stall_timeout_s + 2)
        assert apiserver.count("list") == lists
    assert restarts("ipaddresspools", "stalled") == stalled + 1


async def test_api_down_at_start_then_up(tmp_path: Path, recorder, simple_crds):
    server = FakeApiServer(bookmark_interval_s=0.2)
    factory = api_client_factory(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    server.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await settle(0.6)
        assert recorder.results == []
        await server.start()
        try:
            await recorder.wait_count(1, timeout=3)
            # ...and down again: nothing is published while it is away.
            await server.stop()
            await settle(0.5)
            assert len(recorder.results) == 1
            await server.start()
            server.put(peer("back", "172.30.0.6"))
            await recorder.wait_for(lambda r: "172.30.0.6" in addresses(r.intent))
        finally:
            await server.stop()


async def test_bursts_are_coalesced_and_fast(apiserver: FakeApiServer, factory, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(30):
            apiserver.put(peer(f"burst-{i}", f"172.31.0.{i + 1}"))
        await recorder.wait_for(lambda r: len(r.intent.peers) == 31)
        elapsed = loop.time() - started
        await settle()
    assert elapsed < 1.0
    assert len(recorder.results) <= 3, f"{len(recorder.results) - 1} publishes for one burst"


async def test_cancel_closes_the_http_session(apiserver: FakeApiServer, kubeconfig: Path, recorder, simple_crds):
    apiserver.put(node({}), *simple_crds)
    made = []
    inner = api_client_factory(str(kubeconfig))

    async def factory():
        made.append(await inner())
        return made[-1]

    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
    assert len(made) == 1
    assert made[0].rest_client.pool_manager.closed


# -- content changes ------------------------------------------------------------------------


async def test_configmap_edited_then_deleted(backend, backend_factory, recorder, corpus: Path):
    cm = load_objects(corpus / "config-yaml-address-pools.yaml")[0]
    peers_cm = load_objects(corpus / "config-yaml-peers.yaml")[0]
    labels = {"kubernetes.io/hostname": NODE}
    backend.put(node(labels), cm)
    source = cm_source(backend_factory)
    async with running(source, recorder):
        first = await recorder.wait_for(lambda r: True)
        assert first == parse_legacy_config(cm["data"]["config"], labels, WEIGHT)
        assert ipaddress.ip_network("198.51.100.0/24") in first.intent.prefixes
        # Edited: peers added to the same document.
        both = yaml.safe_load(cm["data"]["config"]) | yaml.safe_load(peers_cm["data"]["config"])
        edited = configmap(yaml.safe_dump(both))
        backend.put(edited)
        second = await recorder.wait_for(lambda r: r.intent.peers != first.intent.peers)
        assert second == parse_legacy_config(edited["data"]["config"], labels, WEIGHT)
        assert {"10.96.0.100", "10.96.0.101"} <= addresses(second.intent)
        # Broken text: nothing is published, the last good state stands.
        backend.put(configmap("peers: [unclosed"))
        await settle()
        assert recorder.last == second
        # Deleted: "configuration missing"; MetalLB's speaker keeps its last configuration
        # (its routers still send traffic), so the last good state stays (issue 11, item 13).
        backend.delete("ConfigMap", "config", NS)
        await settle()
        assert recorder.last == second and len(recorder.results) == 2
        assert "configuration missing: ConfigMap metallb-system/config does not exist" in source.problem
        assert metrics.CONFIG_MISSING._value.get() == 1
        # Re-created under the same name: used again, the problem is over.
        backend.put(cm)
        await recorder.wait_for(lambda r: r == first)
        assert source.problem is None and metrics.CONFIG_MISSING._value.get() == 0
        # A ConfigMap that exists and names nothing still cleans up.
        backend.put(configmap("peers: []\n"))
        await recorder.wait_for(lambda r: r.intent == Intent())
    assert len(recorder.results) == 4


async def test_configmap_absent_is_missing_and_other_configmaps_ignored(backend, backend_factory, recorder,
                                                                        corpus: Path):
    backend.put(node({}), configmap("peers: [{peer-address: 10.0.0.9, peer-asn: 1, my-asn: 2}]", name="other"))
    source = cm_source(backend_factory)
    async with running(source, recorder):
        await settle()
        assert recorder.results == [] and "configuration missing" in source.problem
        backend.put(load_objects(corpus / "config-yaml-peers.yaml")[0])
        await recorder.wait_for(lambda r: "10.96.0.100" in addresses(r.intent))
    assert "10.0.0.9" not in addresses(recorder.last.intent)


async def test_node_label_change_adds_and_removes_a_legacy_peer(backend, backend_factory, recorder,
                                                                corpus: Path):
    # peer 10.0.0.1 selects kubernetes.io/hostname=prod-01 and arch in (amd64, arm).
    backend.put(node({"kubernetes.io/hostname": "prod-01", "kubernetes.io/arch": "arm64"}),
                  load_objects(corpus / "config-yaml-peers.yaml")[0])
    async with running(cm_source(backend_factory), recorder):
        await recorder.wait_count(1)
        assert addresses(recorder.last.intent) == {"10.96.0.100", "10.96.0.101"}
        backend.put(node({"kubernetes.io/hostname": "prod-01", "kubernetes.io/arch": "amd64"}))
        await recorder.wait_for(lambda r: "10.0.0.1" in addresses(r.intent))
        backend.put(node({"kubernetes.io/hostname": "prod-01"}))
        await recorder.wait_for(lambda r: "10.0.0.1" not in addresses(r.intent))
    assert len(recorder.results) == 3


async def test_configmap_without_node_name_uses_no_labels(apiserver: FakeApiServer, factory, recorder, corpus: Path):
    apiserver.put(load_objects(corpus / "config-yaml-peers.yaml")[0])
    async with running(cm_source(factory, node_name=None), recorder):
        await recorder.wait_count(1)
    assert addresses(recorder.last.intent) == {"10.96.0.100", "10.96.0.101"}
    assert apiserver.count("list", "/nodes") == 0


async def test_the_watch_after_a_list_misses_no_change(backend, backend_factory, recorder, simple_crds):
    """Peers created one after another while the source starts: whatever version its list
    is at (resourceVersion=0: on the real server the watch cache's, which may lag etcd),
    the watch from that version delivers every later one, so none is missed."""
    backend.put(node({}), *simple_crds)
    names = [f"race-{i:02d}" for i in range(12)]
    want = {"172.30.0.3"} | {f"172.31.0.{i + 1}" for i in range(len(names))}
    started = asyncio.Event()

    async def writer() -> None:
        for i, name in enumerate(names):
            if isinstance(backend, FakeApiServer):
                backend.put(peer(name, f"172.31.0.{i + 1}"))
                await asyncio.sleep(0.01)
            else:  # kubectl: off the loop, so the source lists and watches meanwhile
                await asyncio.to_thread(backend.put, peer(name, f"172.31.0.{i + 1}"))
            if i == 2:
                started.set()

    writing = asyncio.create_task(writer())
    try:
        await asyncio.wait_for(started.wait(), 30)
        async with running(crd_source(backend_factory), recorder):
            await writing
            await recorder.wait_for(lambda r: addresses(r.intent) == want, timeout=15)
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing


async def test_bgppeer_disabled_by_label_is_removed(backend, backend_factory, recorder, simple_crds):
    backend.put(node({}), *simple_crds, peer("second", "172.30.0.4"))
    async with running(crd_source(backend_factory), recorder):
        await recorder.wait_for(lambda r: addresses(r.intent) == {"172.30.0.3", "172.30.0.4"})
        backend.put(peer("second", "172.30.0.4", labels={"metallb-nra/enabled": "false"}))
        await recorder.wait_for(lambda r: addresses(r.intent) == {"172.30.0.3"})


async def test_pool_added_to_advertisement_adds_its_prefixes(backend, backend_factory, recorder, samples):
    pools = load_objects(samples / "simple_pool_adv_bgp.yaml")[:1]  # pool "example" only
    second = load_objects(samples / "ipaddresspool_with_selector.yaml")[0]  # 192.168.20.0/24
    advert = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
              "metadata": {"name": "adv", "namespace": NS}, "spec": {"ipAddressPools": ["example"]}}
    backend.put(node({}), *load_objects(samples / "bgppeer_simple.yaml"), *pools, second, advert)
    extra = ipaddress.ip_network("192.168.20.0/24")
    source = crd_source(backend_factory)
    async with running(source, recorder):
        await recorder.wait_count(1)
        assert extra not in recorder.last.intent.prefixes
        assert ipaddress.ip_network("192.168.10.0/24") in recorder.last.intent.prefixes
        advert["spec"]["ipAddressPools"].append(second["metadata"]["name"])
        backend.put(advert)
        await recorder.wait_for(lambda r: extra in r.intent.prefixes)
        # All metallb.io objects gone: "configuration missing", the last good state stays.
        kept = recorder.last
        everything = [*load_objects(samples / "bgppeer_simple.yaml"), *pools, second, advert]
        for obj in everything:
            backend.delete(obj["kind"], obj["metadata"]["name"], NS)
        await settle()
        assert recorder.last == kept and "configuration missing: no BGPPeer" in source.problem
        backend.put(*everything)
        await settle()
        assert source.problem is None and recorder.last == kept


async def test_bgppeer_version_found_by_discovery(recorder, tmp_path: Path, simple_crds):
    server = FakeApiServer(bgppeer_versions=("v1beta1",))
    await server.start()
    try:
        factory = api_client_factory(str(server.write_kubeconfig(tmp_path / "kc")))
        server.put(node({}), *simple_crds)
        source = crd_source(factory)
        async with running(source, recorder):
            await recorder.wait_count(1)
        assert source.versions["bgppeers"] == "v1beta1"
        assert server.count("list", "/apis/metallb.io/v1beta1/namespaces/metallb-system/bgppeers") == 1
    finally:
        await server.stop()


# -- construction -----------------------------------------------------------------------------


def test_crd_mode_needs_node_name():
    with pytest.raises(KubeSourceError, match="NODE_NAME"):
        make_kube_source(Settings(METALLB_USE_CRDS="1", KUBECONFIG=None, NODE_NAME=None))


def test_make_kube_source_picks_mode_namespace_and_checks_kubeconfig(tmp_path: Path, kubeconfig: Path):
    source = make_kube_source(Settings(KUBECONFIG=str(kubeconfig), METALLB_NAMESPACE="lb",
                                       METALLB_CONFIGMAP_NAME="cfg", NODE_NAME="n"))
    assert isinstance(source, ConfigMapSource)
    assert (source.name, source.namespace, source.configmap_name) == ("configmap", "lb", "cfg")
    crds = make_kube_source(Settings(KUBECONFIG=str(kubeconfig), METALLB_USE_CRDS="1", NODE_NAME="n"))
    assert isinstance(crds, CRDSource) and crds.name == "crds"
    with pytest.raises(KubeSourceError, match="not a readable file"):
        make_kube_source(Settings(KUBECONFIG=str(tmp_path / "missing")))


def test_namespace_resolution(tmp_path: Path):
    sa = tmp_path / "namespace"
    assert resolve_namespace("mine", sa) == "mine"
    assert resolve_namespace(None, sa) == "metallb-system"
    sa.write_text("from-pod\n")
    assert resolve_namespace(None, sa) == "from-pod"
    assert resolve_namespace("  ", sa) == "from-pod"


async def test_bad_kubeconfig_is_one_line_and_retried(tmp_path: Path, recorder):
    bad = tmp_path / "kc"
    bad.write_text("clusters: 17\n")
    source = cm_source(api_client_factory(str(bad)))
    async with running(source, recorder) as task:
        await settle(0.3)
        assert not task.done() and recorder.results == []
    with pytest.raises(KubeSourceError) as info:
        await api_client_factory(str(bad))()
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
