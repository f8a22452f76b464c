"""nra against a real kube-apiserver (tests/realcluster.py), under the identity the chart
gives it: the chart's ServiceAccount, Roles and bindings as `helm template` renders them,
applied to the server, and a token for that ServiceAccount by TokenRequest. A verb the chart
forgets fails these tests; one taken away is reported by nra (log and /readyz) instead of
acted on. nra programs a throwaway network namespace (--netns), never the root one.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import Cluster
from testbed.ports import free_port
from tests.agent.helpers import Daemon, clean_env
from tests.metallb_docs import LEGACY_ZONED_PEER as LEGACY
from tests.netns import NetNS
from tests.realcluster import apply, chart_rbac, create_namespace, identity, unique
from tests.wait import wait_for

pytestmark = pytest.mark.kernel


def node(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def configmap(ns: str, text: str, name: str = "config") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"config": text}}


def peer(ns: str, name: str, address: str, selectors: list[dict] | None = None) -> dict:
    spec: dict = {"myASN": 64512, "peerASN": 64512, "peerAddress": address}
    if selectors is not None:
        spec["nodeSelectors"] = selectors
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def pool(ns: str, name: str, *addresses: str) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name, "namespace": ns},
            "spec": {"addresses": list(addresses)}}


def advertisement(ns: str, name: str = "all") -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": name, "namespace": ns}, "spec": {}}


def session_state(ns: str, name: str, node_name: str, peer_address: str) -> dict:
    return {"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "BGPSessionState",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"frrk8s.metallb.io/node": node_name, "frrk8s.metallb.io/peer": peer_address,
                                    "frrk8s.metallb.io/vrf": ""}}}


def set_session(cluster: Cluster, ns: str, name: str, node_name: str, peer_address: str, bgp: str) -> None:
    """What FRR-K8s's status exporter writes: the status subresource."""
    status = {"status": {"node": node_name, "peer": peer_address, "vrf": "", "bgpStatus": bgp, "bfdStatus": "N/A"}}
    cluster.kubectl("patch", "bgpsessionstate", name, "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps(status))


def node_events(cluster: Cluster, node_name: str) -> list[str]:
    """The reasons of the Events about this Node (in `default`, where Node events live)."""
    doc = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json").stdout)
    return [e["reason"] for e in doc["items"] if e["involvedObject"].get("name") == node_name]


def table(ns: NetNS) -> tuple[list[str], set[str]]:
    """Table 20 as nra programs it: the rules' sources and the gateways of its route."""
    rules = [f"{r['src']}/{r['srclen']}" for r in json.loads(ns.ip("-j -4 rule show table 20") or "[]")]
    proc = ns.run(["ip", "-j", "-4", "route", "show", "table", "20"], capture_output=True, text=True)
    routes = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    hops = [h for r in routes for h in r.get("nexthops", [r])]
    return sorted(rules), {h["gateway"] for h in hops if "gateway" in h}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


class Nra:
    """The nra daemon against the real server, programming `ns`, health on a free port."""

    def __init__(self, kubeconfig: Path, ns: NetNS, namespace: str, node_name: str, log: Path, *args: str):
        self.port = free_port()
        self.daemon = Daemon("--netns", ns.name, "--kubeconfig", str(kubeconfig), "--namespace", namespace,
                             "--node-name", node_name, *args, log_path=log,
                             env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{self.port}", MAX_RECONCILE_WAIT="0"))

    def readyz(self) -> tuple[int, str]:
        return get(self.port, "/readyz")

    def wait_ready(self, timeout: float = 20) -> None:
        wait_for(lambda: self.readyz()[0] == 200 or self.daemon.proc.poll() is not None, timeout,
                 what="nra ready")
        assert self.readyz()[0] == 200, self.daemon.log()

    def stop(self) -> str:
        self.daemon.stop()
        return self.daemon.log()


@pytest.fixture
def scratch(real_cluster: Cluster) -> dict[str, str]:
    """Names of this test's own: MetalLB's namespace (also the release's), FRR-K8s's, a node."""
    ns = unique("mlb")
    return {"ns": ns, "frr": f"{ns}-frr", "node": unique("node")}


def wait_table(ns: NetNS, want: tuple[list[str], set[str]], nra: Nra, timeout: float = 20) -> None:
    try:
        wait_for(lambda: table(ns) == want, timeout, interval=0.05, what=f"table 20 = {want}")
    except AssertionError:
        raise AssertionError(f"table 20 is {table(ns)}, want {want}; nra's log:\n{nra.daemon.log()}") from None


def no_traceback(log: str) -> None:
    assert "Traceback" not in log, log


# A 403 status in the log, not the digits of a timestamp's milliseconds ("15.403+0000").
STATUS_403 = re.compile(r"(?<![.\d])403(?!\d)")


def never_refused(log: str) -> None:
    assert not STATUS_403.search(log) and "Forbidden" not in log and "RBAC does not let" not in log, log


# -- (a) the chart's identity, each mode ---------------------------------------------------------

def test_configmap_mode_under_the_charts_identity(real_cluster: Cluster, scratch, node_ns: NetNS, tmp_path: Path):
    ns, name = scratch["ns"], scratch["node"]
    kubeconfig = identity(real_cluster, chart_rbac(ns), tmp_path / "nra.kubeconfig")
    apply(real_cluster, node(name, {"zone": "a"}), configmap(ns, LEGACY),
          configmap(ns, "peers: [{peer-address: 10.99.0.9}]", name="other"))
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log")
    try:
        wait_table(node_ns, (["198.51.100.0/28"], {"10.99.0.2"}), nra)
        nra.wait_ready()
        # the node moves to zone b: the second peer's selector matches now
        apply(real_cluster, node(name, {"zone": "b"}))
        wait_table(node_ns, (["198.51.100.0/28"], {"10.99.0.2", "10.99.0.3"}), nra)
        # the ConfigMap changes (kubectl edits it): a new pool
        apply(real_cluster, configmap(ns, LEGACY.replace("198.51.100.0/28", "198.51.100.32/28")))
        wait_table(node_ns, (["198.51.100.32/28"], {"10.99.0.2", "10.99.0.3"}), nra)
        # deleted: the last good configuration stays, readiness says why
        real_cluster.kubectl("delete", "configmap", "config", "-n", ns)
        wait_for(lambda: nra.readyz()[0] == 503, 10, what="not ready once the ConfigMap is gone")
        assert "missing" in nra.readyz()[1]
        assert table(node_ns) == (["198.51.100.32/28"], {"10.99.0.2", "10.99.0.3"})
    finally:
        log = nra.stop()
    no_traceback(log)
    never_refused(log)


def test_crd_mode_under_the_charts_identity(real_cluster: Cluster, scratch, node_ns: NetNS, tmp_path: Path):
    ns, name = scratch["ns"], scratch["node"]
    kubeconfig = identity(real_cluster, chart_rbac(ns, "--set", "env.METALLB_USE_CRDS=1"), tmp_path / "nra.kubeconfig")
    apply(real_cluster, node(name, {"zone": "a"}), peer(ns, "r1", "10.99.0.2"),
          peer(ns, "r2", "10.99.0.3", [{"matchLabels": {"zone": "b"}}]),
          pool(ns, "lb", "198.51.100.16-198.51.100.23"), advertisement(ns))
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log", "--use-crds")
    try:
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2"}), nra)
        nra.wait_ready()
        apply(real_cluster, node(name, {"zone": "b"}))
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3"}), nra)
        apply(real_cluster, pool(ns, "more", "198.51.100.64/28"))
        wait_table(node_ns, (["198.51.100.16/29", "198.51.100.64/28"], {"10.99.0.2", "10.99.0.3"}), nra)
        real_cluster.kubectl("delete", "bgppeer", "r1", "-n", ns)
        wait_table(node_ns, (["198.51.100.16/29", "198.51.100.64/28"], {"10.99.0.3"}), nra)
        assert nra.readyz()[0] == 200
    finally:
        log = nra.stop()
    no_traceback(log)
    never_refused(log)


def test_session_states_under_the_charts_identity(real_cluster: Cluster, scratch, node_ns: NetNS, tmp_path: Path):
    ns, frr, name = scratch["ns"], scratch["frr"], scratch["node"]
    create_namespace(real_cluster, frr)
    rbac = chart_rbac(ns, "--set", "env.METALLB_USE_CRDS=1", "--set", f"env.FRRK8S_NAMESPACE={frr}")
    kubeconfig = identity(real_cluster, rbac, tmp_path / "nra.kubeconfig")
    apply(real_cluster, node(name, {}), peer(ns, "r1", "10.99.0.2"), peer(ns, "r2", "10.99.0.3"),
          pool(ns, "lb", "198.51.100.16/29"), advertisement(ns),
          session_state(frr, "s1", name, "10.99.0.2"), session_state(frr, "s2", name, "10.99.0.3"),
          session_state(frr, "other", "another-node", "10.99.0.2"))
    for session, address in (("s1", "10.99.0.2"), ("s2", "10.99.0.3")):
        set_session(real_cluster, frr, session, name, address, "Established")
    set_session(real_cluster, frr, "other", "another-node", "10.99.0.2", "Active")  # not this node's
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log", "--use-crds", "--frrk8s-namespace", frr,
              "--bgp-session-hold", "0.5")
    try:
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3"}), nra)
        set_session(real_cluster, frr, "s1", name, "10.99.0.2", "Active")  # r1's session dropped
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.3"}), nra)
        # the Event on the Node, created under the chart's identity (its Role in `default`)
        try:
            wait_for(lambda: node_events(real_cluster, name) == ["ReturnPathDegraded"], 10,
                     what="a ReturnPathDegraded Event on the node")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; nra's log:\n{nra.daemon.log()}") from None
        set_session(real_cluster, frr, "s1", name, "10.99.0.2", "Established")
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3"}), nra)
    finally:
        log = nra.stop()
    no_traceback(log)
    never_refused(log)


# -- (b) a verb or resource taken away from the chart's Role ---------------------------------------

def without(rbac: list[dict[str, Any]], kind: str, resource: str, verb: str | None) -> list[dict[str, Any]]:
    """The RBAC objects with `verb` (None: every verb) taken from `resource` in the rule of
    `kind` (Role/ClusterRole) that grants it; the rule's other resources keep every verb."""
    out = json.loads(json.dumps(rbac))
    (role,) = [o for o in out if o["kind"] == kind and any(resource in r["resources"] for r in o["rules"])]
    (rule,) = [r for r in role["rules"] if resource in r["resources"]]
    rule["resources"].remove(resource)
    if verb is not None:
        role["rules"].append({**rule, "resources": [resource], "verbs": [v for v in rule["verbs"] if v != verb]})
    role["rules"] = [r for r in role["rules"] if r["resources"] and r["verbs"]]
    return out


@pytest.mark.parametrize("kind, resource, verb, mode", [
    ("Role", "bgpadvertisements", "watch", "crds"),
    ("Role", "ipaddresspools", "list", "crds"),
    ("ClusterRole", "nodes", None, "crds"),
    ("Role", "configmaps", "list", "configmap"),
])
def test_a_verb_the_role_lacks_is_reported_not_acted_on(real_cluster: Cluster, scratch, node_ns: NetNS,
                                                        tmp_path: Path, kind, resource, verb, mode):
    ns, name = scratch["ns"], scratch["node"]
    args = ["--set", "env.METALLB_USE_CRDS=1"] if mode == "crds" else []
    full = chart_rbac(ns, *args)
    kubeconfig = identity(real_cluster, without(full, kind, resource, verb), tmp_path / "nra.kubeconfig")
    if mode == "crds":
        apply(real_cluster, node(name, {}), peer(ns, "r1", "10.99.0.2"), pool(ns, "lb", "198.51.100.16/29"),
              advertisement(ns))
    else:
        apply(real_cluster, node(name, {}), configmap(ns, LEGACY))
    node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")  # what a previous run left
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log", *(["--use-crds"] if mode == "crds" else []))
    denied = f"RBAC does not let nra {verb or 'list'} {resource}"
    try:
        if verb == "watch":
            # the list is allowed, so the first view is complete and applied; the watch is
            # refused: readiness says so and the listed state is kept
            wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2"}), nra)
        try:
            wait_for(lambda: denied in nra.readyz()[1], 20, what=f"/readyz naming {denied!r}")
        except AssertionError:
            raise AssertionError(f"/readyz: {nra.readyz()}; nra's log:\n{nra.daemon.log()}") from None
        status, reason = nra.readyz()
        assert status == 503, reason
        if verb != "watch":
            # never a partial view: nothing was read, so nothing is applied and the old rule stays
            assert table(node_ns) == (["203.0.113.0/24"], set())
        # the chart's full Role restored: nra goes on by itself
        apply(real_cluster, *full)
        nra.wait_ready(30)
        wait_table(node_ns, (["198.51.100.0/28" if mode == "configmap" else "198.51.100.16/29"], {"10.99.0.2"}), nra)
    finally:
        log = nra.stop()
    no_traceback(log)
    assert denied in log and STATUS_403.search(log), log
    assert "granted again" in log, log


def test_a_token_the_server_refuses_is_reported(real_cluster: Cluster, scratch, node_ns: NetNS, tmp_path: Path):
    ns, name = scratch["ns"], scratch["node"]
    kubeconfig = real_cluster.write_kubeconfig(tmp_path / "bad.kubeconfig", "not-a-token", "nobody")
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log")
    try:
        wait_for(lambda: "does not accept nra's credentials" in nra.readyz()[1], 20,
                 what="/readyz naming the refused credentials")
        assert nra.readyz()[0] == 503
    finally:
        log = nra.stop()
    no_traceback(log)
    assert re.search(r"(?<![.\d])401(?!\d)", log), log


# -- (d) what only a real server does ----------------------------------------------------------

async def test_a_list_is_read_page_by_page(real_cluster: Cluster, scratch, monkeypatch):
    """nra asks for `limit` objects a page. Its lists (resourceVersion=0) come from the watch
    cache, which ignores `limit`: one page. A consistent read (what a server without a watch
    cache does with any list) is paged with continue tokens: nra reads every page, and the
    continue pages carry no resourceVersion (the token holds it)."""
    from nra.sources.kube import api_client_factory
    from nra.sources.kube.client import KubeHTTP
    from nra.sources.kube.reflector import Reflector, ResourceKind

    ns = scratch["ns"]
    create_namespace(real_cluster, ns)
    apply(real_cluster, *(peer(ns, f"p{i:02d}", f"10.99.0.{10 + i}") for i in range(7)))
    monkeypatch.setattr("nra.sources.kube.reflector.LIST_PAGE_SIZE", 2)
    api = await api_client_factory(str(real_cluster.kubeconfig))()
    pages: list[dict] = []

    async def listed(first_page_version: str) -> list[str]:
        monkeypatch.setattr("nra.sources.kube.reflector.LIST_RESOURCE_VERSION", first_page_version)
        pages.clear()
        reflector = Reflector(http, kind, lambda: None)
        await reflector.list()
        assert reflector.objects is not None
        return sorted(n for _, n in reflector.objects)

    try:
        http = KubeHTTP(api)
        real_get = http.get_json

        async def counted(path: str, **query):  # the real request, seen on the way
            doc = await real_get(path, **query)
            pages.append({"query": query, "items": len(doc.get("items") or [])})
            return doc

        http.get_json = counted  # type: ignore[method-assign]
        kind = ResourceKind("bgppeers", f"/apis/metallb.io/v1beta2/namespaces/{ns}/bgppeers", "metallb.io/v1beta2",
                            "BGPPeer")
        everything = [f"p{i:02d}" for i in range(7)]
        assert await listed("0") == everything
        assert [p["items"] for p in pages] == [7], "the watch cache answered resourceVersion=0 in pages"
        assert pages[0]["query"] == {"limit": "2", "resourceVersion": "0"}
        assert await listed("") == everything
    finally:
        await api.close()
    assert [p["items"] for p in pages] == [2, 2, 2, 1]
    assert all(p["query"]["limit"] == "2" for p in pages) and all("continue" in p["query"] for p in pages[1:])
    assert not any("resourceVersion" in p["query"] for p in pages)


STORAGE_FAMILIES = ("etcd_requests_total", "apiserver_storage_list_total",
                    "apiserver_watch_cache_consistent_read_total")


def storage_counters(cluster: Cluster, resources: tuple[str, ...]) -> dict[tuple[str, str, str], float]:
    """(family, resource, storage or operation) -> value, from the server's /metrics."""
    status, doc = cluster.request("GET", "/metrics", timeout=30)
    assert status == 200, doc
    out: dict[tuple[str, str, str], float] = {}
    for line in doc["message"].splitlines():
        family, _, rest = line.partition("{")
        if family not in STORAGE_FAMILIES:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if labels.get("resource") in resources:
            detail = labels.get("storage") or labels.get("operation") or f"fallback={labels.get('fallback')}"
            key = (family, labels["resource"], detail)
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def test_lists_are_served_from_the_watch_cache(real_cluster: Cluster, scratch):
    """nra's lists carry resourceVersion=0: the server answers each from its watch cache,
    with no request to etcd; a list without it (a consistent read) costs an etcd request
    (getCurrentResourceVersion) and a wait for the cache to catch up."""
    from nra.sources.kube import CRDSource, api_client_factory
    from tests.kube.conftest import COALESCE_S, FAST, Recorder, running

    ns, name = scratch["ns"], scratch["node"]
    create_namespace(real_cluster, ns)
    apply(real_cluster, node(name, {}), peer(ns, "r1", "10.99.0.2"), pool(ns, "lb", "198.51.100.16/29"),
          advertisement(ns))
    resources = ("bgppeers", "ipaddresspools", "bgpadvertisements", "nodes")
    paths = [f"/apis/metallb.io/v1beta2/namespaces/{ns}/bgppeers",
             *(f"/apis/metallb.io/v1beta1/namespaces/{ns}/{r}" for r in resources[1:3]), "/api/v1/nodes"]

    def served_from_cache(path: str, resource: str) -> bool:
        """A CRD's watch cache starts with its first request: wait until it answers."""
        before = storage_counters(real_cluster, (resource,)).get(("apiserver_storage_list_total", resource,
                                                                   "watchcache"), 0.0)
        status, _ = real_cluster.request("GET", path + "?resourceVersion=0")
        return status == 200 and storage_counters(real_cluster, (resource,)).get(
            ("apiserver_storage_list_total", resource, "watchcache"), 0.0) > before

    for path, resource in zip(paths, resources):
        wait_for(lambda: served_from_cache(path, resource), 30, interval=0.2, what=f"{resource} from the watch cache")

    before = storage_counters(real_cluster, resources)
    recorder = Recorder()
    source = CRDSource(api_client_factory(str(real_cluster.kubeconfig)), ns, name, 100, FAST, COALESCE_S)
    async with running(source, recorder):
        await recorder.wait_for(lambda r: bool(r.intent.peers), timeout=20)
    after = storage_counters(real_cluster, resources)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after.keys() | before.keys()}
    for resource in resources:
        assert delta.get(("apiserver_storage_list_total", resource, "watchcache"), 0) >= 1, (resource, delta)
    assert not {k: v for k, v in delta.items() if v and k[0] != "apiserver_storage_list_total"}, \
        f"nra's lists made consistent reads or etcd requests: {delta}"
    assert not delta.get(("apiserver_storage_list_total", "bgppeers", "etcd")), delta


def test_api_server_restart_after_compaction_relists_and_keeps_the_table(
        real_cluster: Cluster, scratch, node_ns: NetNS, tmp_path: Path):
    """etcd compacted, then the API server restarted under a running nra: the resumed watch
    is refused with 410 Gone (its resourceVersion is older than anything the new server
    has), nra lists again; the table is never empty meanwhile, and a change made after the
    restart is applied."""
    ns, name = scratch["ns"], scratch["node"]
    kubeconfig = identity(real_cluster, chart_rbac(ns, "--set", "env.METALLB_USE_CRDS=1"), tmp_path / "nra.kubeconfig")
    apply(real_cluster, node(name, {}), peer(ns, "r1", "10.99.0.2"), peer(ns, "r2", "10.99.0.3"),
          pool(ns, "lb", "198.51.100.16/29"), advertisement(ns))
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log", "--use-crds")
    sampler = TableSampler(node_ns)
    try:
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3"}), nra)
        nra.wait_ready()
        sampler.start()
        # history nra's watches never saw: changes elsewhere, then compacted away
        other = create_namespace(real_cluster, unique("churn"))
        apply(real_cluster, *(configmap(other, f"n: {i}", name=f"c{i}") for i in range(20)))
        real_cluster.compact_etcd()
        real_cluster.restart_apiserver()
        apply(real_cluster, peer(ns, "r3", "10.99.0.4"))
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3", "10.99.0.4"}), nra, timeout=30)
        nra.wait_ready(30)
    finally:
        sampler.stop()
        log = nra.stop()
    no_traceback(log)
    sampler.assert_never_empty(["198.51.100.16/29"])
    assert "410 Gone" in log and "relisting" in log, log


def test_etcd_stopped_and_started_under_a_running_nra(real_cluster: Cluster, scratch, node_ns: NetNS,
                                                      tmp_path: Path):
    """etcd down for a while (the API server up, its lists and writes failing): nra keeps the
    table; etcd back, a change is applied."""
    ns, name = scratch["ns"], scratch["node"]
    kubeconfig = identity(real_cluster, chart_rbac(ns, "--set", "env.METALLB_USE_CRDS=1"), tmp_path / "nra.kubeconfig")
    apply(real_cluster, node(name, {}), peer(ns, "r1", "10.99.0.2"), pool(ns, "lb", "198.51.100.16/29"),
          advertisement(ns))
    nra = Nra(kubeconfig, node_ns, ns, name, tmp_path / "nra.log", "--use-crds")
    sampler = TableSampler(node_ns)
    try:
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2"}), nra)
        sampler.start()
        real_cluster.stop_etcd()
        down = real_cluster.kubectl("get", "--raw", "/readyz/etcd", check=False)
        assert down.returncode != 0, "the API server still reads etcd as healthy"
        sampler.wait(40)  # two seconds of samples with etcd down
        real_cluster.start_etcd()
        wait_for(lambda: real_cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 60,
                 what="the API server ready again")
        apply(real_cluster, peer(ns, "r2", "10.99.0.3"))
        wait_table(node_ns, (["198.51.100.16/29"], {"10.99.0.2", "10.99.0.3"}), nra, timeout=30)
    finally:
        sampler.stop()
        log = nra.stop()
    no_traceback(log)
    sampler.assert_never_empty(["198.51.100.16/29"])


class TableSampler:
    """Samples table 20 every 50 ms in a thread while the server is disturbed."""

    def __init__(self, ns: NetNS):
        self.ns = ns
        self.seen: list[tuple[list[str], set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(table(self.ns))
            self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def wait(self, samples: int) -> None:
        goal = len(self.seen) + samples
        wait_for(lambda: len(self.seen) >= goal, 30, what=f"{samples} more samples of table 20")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def assert_never_empty(self, rules: list[str]) -> None:
        assert self.seen, "no sample taken"
        bad = [s for s in self.seen if s[0] != rules or not s[1]]
        assert not bad, f"{len(bad)} of {len(self.seen)} samples lost the rules or the route: {bad[:5]}"
