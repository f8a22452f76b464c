"""Every deploy/ variant (`kubectl apply -k`) and the chart (`helm install`, Helm 3 and 4)
into a real kube-apiserver (tests/realcluster.py): every object accepted by the server's own
validation, unknown fields refused (`--validate=strict`). There is no kubelet and no
controller-manager: the pods need not run, the objects need only be accepted.

Left out: deploy/monitoring and the chart's Prometheus operator objects (PodMonitor,
ServiceMonitor, PrometheusRule), whose CRDs are not in ../shared; tests/ship/test_chart_monitoring.py
checks them against the operator's own models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from testbed.cluster import Cluster
from tests.realcluster import CHART, create_namespace, helm, helm_template, is_hook, unique
from tests.ship.test_chart import NODEJS_VALUES
from tests.ship.test_manifests import WAYS

MONITORING_GROUP = "monitoring.coreos.com/"
RELEASE_VARIANTS = {
    "defaults": [],
    "nodejs-values": ["-f", str(NODEJS_VALUES)],
    "crds": ["--set", "env.METALLB_USE_CRDS=1"],
    "session-states": ["--set", "env.METALLB_USE_CRDS=1", "--set", "env.FRRK8S_NAMESPACE={frr}"],
    "oneshot-and-dashboard": ["--set", "oneshot.enabled=true", "--set", "oneshot.nodes={node-a,node-b}",
                              "--set", "prometheus.dashboard.enabled=true"],
    "cleanup": ["--set", "daemonset.enabled=false", "--set", "cleanup.enabled=true"],
    "secure-metrics": ["--set", "prometheus.secureMetricsPort=9120", "--set", "prometheus.metricsTLSSecret=nra-tls",
                       "--set", "prometheus.scrapers[0].name=prometheus-k8s",
                       "--set", "prometheus.scrapers[0].namespace=monitoring"],
}


def namespaces_of(objects: list[dict]) -> set[str]:
    return {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}


@pytest.mark.parametrize("way", sorted(WAYS))
def test_kubectl_apply_k_is_accepted(real_cluster: Cluster, way: str):
    path = WAYS[way]
    rendered = [o for o in yaml.safe_load_all(real_cluster.kubectl("kustomize", str(path)).stdout) if o]
    assert rendered, f"{path} renders nothing"
    for ns in sorted(namespaces_of(rendered)):
        create_namespace(real_cluster, ns)
    try:
        done = real_cluster.kubectl("apply", "-k", str(path), "--validate=strict", check=False)
        assert done.returncode == 0, f"kubectl apply -k {path}:\n{done.stderr}"
        assert "Warning" not in done.stderr, done.stderr  # e.g. a field the server drops
        # each object is there, as applied
        for obj in rendered:
            meta = obj["metadata"]
            group = obj["apiVersion"].rpartition("/")[0]
            args = ["get", f"{obj['kind'].lower()}.{group}".rstrip("."), meta["name"], "-o", "json"]
            if meta.get("namespace"):
                args += ["-n", meta["namespace"]]
            got = json.loads(real_cluster.kubectl(*args).stdout)
            assert got["metadata"]["name"] == meta["name"]
    finally:
        real_cluster.kubectl("delete", "-k", str(path), "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.parametrize("major", [3, 4], ids=["helm3", "helm4"])
@pytest.mark.parametrize("variant", sorted(RELEASE_VARIANTS))
def test_helm_install_is_accepted(real_cluster: Cluster, major: int, variant: str):
    ns, release = unique("rel"), unique("nra")
    frr = f"{ns}-frr"
    values = [a.replace("{frr}", frr) for a in RELEASE_VARIANTS[variant]]
    create_namespace(real_cluster, frr)
    done = helm(major, "install", release, str(CHART), "--namespace", ns, "--create-namespace", *values,
                kubeconfig=real_cluster.kubeconfig)
    try:
        assert done.returncode == 0, f"helm {major} install {variant}:\n{done.stderr}"
        manifest = helm(major, "get", "manifest", release, "--namespace", ns, kubeconfig=real_cluster.kubeconfig)
        assert manifest.returncode == 0, manifest.stderr
        objects = [o for o in yaml.safe_load_all(manifest.stdout) if o]
        assert objects, "helm installed nothing"
        for obj in objects:
            meta = obj["metadata"]
            kind = obj["kind"].lower()
            args = ["get", kind, meta["name"], "-o", "name"]
            if meta.get("namespace") or kind not in ("clusterrole", "clusterrolebinding"):
                args += ["-n", meta.get("namespace") or ns]
            real_cluster.kubectl(*args)
        # the hooks (run at uninstall, so never created here): accepted by a server dry run
        hooks = [o for o in helm_template(ns, *values, release=release, major=major) if is_hook(o)]
        assert hooks or variant != "defaults", "the chart's defaults render no uninstall hooks"
        if hooks:
            text = "\n---\n".join(json.dumps(h) for h in hooks)
            dry = real_cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-",
                                       input=text, check=False)
            assert dry.returncode == 0, dry.stderr
    finally:
        # --no-hooks: the post-delete cleanup Job would wait for a kubelet that is not there
        helm(major, "uninstall", release, "--namespace", ns, "--no-hooks", kubeconfig=real_cluster.kubeconfig)
