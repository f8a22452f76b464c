"""Every way nra is deployed renders with `kubectl kustomize` and is valid Kubernetes.

Offline: kubectl renders locally, kubernetes-validate carries the schemas. Besides the
schema, check the promises README.md makes about the objects (least privilege,
env var names the agent knows, probes on the health port).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from nra.settings import ENV_NAMES
from tests.ship.k8s_schema import KUBERNETES_VERSION, describe, kubectl, render, schema_errors

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
WAYS = {
    "configmap": DEPLOY / "overlays" / "configmap",
    "crds": DEPLOY / "overlays" / "crds",
    "oneshot": DEPLOY / "oneshot",
    "cleanup": DEPLOY / "cleanup",
}
# Env vars in the manifests that are not nra settings, and why they are there.
HELPER_ENV = {"HOST_IP"}  # the node's address, expanded into HEALTH_ADDRESS
READ_VERBS = {"get", "list", "watch"}

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: cannot render the kustomizations")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {way: render(path) for way, path in WAYS.items()}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            specs.append((describe(obj), spec["template"]["spec"]))
    return specs


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def nra_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers that run the agent (not the cleanup DaemonSet's idle one)."""
    return [c for c in containers(pod) if "command" not in c]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("way", WAYS)
def test_every_object_is_valid_kubernetes(rendered, way):
    objects = rendered[way]
    assert objects, f"{way} rendered nothing"
    errors = [e for obj in objects for e in schema_errors(obj, KUBERNETES_VERSION)]
    assert errors == []


def test_validator_rejects_a_broken_daemonset(rendered):
    daemonset = next(o for o in rendered["crds"] if o["kind"] == "DaemonSet")
    assert schema_errors(daemonset) == []
    typo = copy.deepcopy(daemonset)
    typo["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert "imagee" in schema_errors(typo)[0]
    wrong_type = copy.deepcopy(daemonset)
    wrong_type["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    assert "hostNetwork" in schema_errors(wrong_type)[0]
    missing = copy.deepcopy(daemonset)
    del missing["spec"]["selector"]
    assert "'selector' is a required property" in schema_errors(missing)[0]


def test_validator_rejects_an_unknown_kind():
    peer = {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "x"}}
    assert "no schema" in schema_errors(peer)[0]


@pytest.mark.parametrize("way", WAYS)
def test_everything_lives_in_metallbs_namespace(rendered, way):
    for obj in rendered[way]:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace") == "metallb-system", describe(obj)


def test_rbac_is_read_only_and_minimal(rendered):
    for way in ("configmap", "crds", "oneshot"):
        by_kind = {o["kind"]: o for o in rendered[way]}
        role_rules = {(g, r): set(rule["verbs"]) for rule in by_kind["Role"]["rules"]
                      for g in rule["apiGroups"] for r in rule["resources"]}
        assert role_rules == {
            ("", "configmaps"): READ_VERBS,
            ("metallb.io", "bgppeers"): READ_VERBS,
            ("metallb.io", "ipaddresspools"): READ_VERBS,
            ("metallb.io", "bgpadvertisements"): READ_VERBS,
        }
        cluster_rules = {(g, r): set(rule["verbs"]) for rule in by_kind["ClusterRole"]["rules"]
                         for g in rule["apiGroups"] for r in rule["resources"]}
        assert cluster_rules == {("", "nodes"): READ_VERBS}
        for binding in ("RoleBinding", "ClusterRoleBinding"):
            subjects = by_kind[binding]["subjects"]
            assert subjects == [{"kind": "ServiceAccount", "name": "nra", "namespace": "metallb-system"}]
    assert {o["kind"] for o in rendered["cleanup"]} == {"DaemonSet"}, "cleanup needs no API access"


@pytest.mark.parametrize("way", WAYS)
def test_pods_are_locked_down(rendered, way):
    for where, pod in pod_specs(rendered[way]):
        assert pod["hostNetwork"] is True, where
        tolerated = {t["key"] for t in pod.get("tolerations", [])}
        assert "node-role.kubernetes.io/control-plane" in tolerated, where
        for c in containers(pod):
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert ctx["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert set(ctx["capabilities"].get("add", [])) <= {"NET_ADMIN"}, (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (where, c["name"])
        for c in nra_containers(pod):
            assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"], (where, c["name"])


@pytest.mark.parametrize("way", WAYS)
def test_env_names_are_settings_the_agent_knows(rendered, way):
    known = set(ENV_NAMES.values()) | HELPER_ENV
    for where, pod in pod_specs(rendered[way]):
        for c in nra_containers(pod):
            unknown = set(env_of(c)) - known
            assert unknown == set(), f"{where}/{c['name']}: {sorted(unknown)} are not nra settings"


@pytest.mark.parametrize("way", WAYS)
def test_env_references_are_defined_before_use(rendered, way):
    # Kubernetes expands $(NAME) only from variables listed earlier; a later or missing
    # one stays literal text and HEALTH_ADDRESS would be refused at start.
    for where, pod in pod_specs(rendered[way]):
        for c in containers(pod):
            seen: set[str] = set()
            for entry in c.get("env", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                    assert ref in seen, f"{where}/{c['name']}: {entry['name']} uses $({ref}) before it is set"
                seen.add(entry["name"])


@pytest.mark.parametrize("way,use_crds", [("configmap", "0"), ("crds", "1")])
def test_overlays_pick_the_source(rendered, way, use_crds):
    (where, pod), = pod_specs(rendered[way])
    env = env_of(pod["containers"][0])
    assert env["METALLB_USE_CRDS"] == use_crds
    assert env["NODE_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}} or \
        env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "ONESHOT" not in env and "CLEANANDEXIT" not in env


@pytest.mark.parametrize("way", ["configmap", "crds"])
def test_probes_hit_the_health_listener(rendered, way):
    (where, pod), = pod_specs(rendered[way])
    c = pod["containers"][0]
    port = int(env_of(c)["HEALTH_ADDRESS"].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        named = c[probe]["httpGet"]["port"]
        assert ports[named] == port, f"{probe} targets {named}, the agent listens on {port}"


@pytest.mark.parametrize("way", ["configmap", "crds", "oneshot"])
def test_hooks_configmap_is_mounted_executable(rendered, way):
    configmaps = {o["metadata"]["name"] for o in rendered[way] if o["kind"] == "ConfigMap"}
    (where, pod), = pod_specs(rendered[way])
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] in configmaps, "the generated (hashed) name must be referenced"
    assert volume["configMap"]["defaultMode"] == 0o555
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == "/etc/nra/hooks" and mount["readOnly"] is True


def test_modes(rendered):
    (_, oneshot), = pod_specs(rendered["oneshot"])
    assert env_of(oneshot["containers"][0])["ONESHOT"] == "1"
    assert oneshot["restartPolicy"] == "Never"
    (_, cleanup), = pod_specs(rendered["cleanup"])
    assert env_of(cleanup["initContainers"][0])["CLEANANDEXIT"] == "1"
    assert cleanup["automountServiceAccountToken"] is False
