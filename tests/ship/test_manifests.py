"""Every way nra is deployed renders with `kubectl kustomize` and is valid Kubernetes.

Offline: kubectl renders locally, kubernetes-validate carries the schemas. Besides the
schema, check the promises docs/install.md makes about the objects (least privilege,
env var names the agent knows, probes on the health port).
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from nra.settings import ENV_NAMES, load_settings
from tests.ship.k8s_schema import (
    KUBERNETES_VERSION,
    describe,
    kubectl,
    render,
    schema_errors,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
WAYS = {
    "configmap": DEPLOY / "overlays" / "configmap",
    "crds": DEPLOY / "overlays" / "crds",
    "crds-frrk8s": DEPLOY / "overlays" / "crds-frrk8s",
    "configmap-secure-metrics": DEPLOY / "overlays" / "configmap-secure-metrics",
    "oneshot": DEPLOY / "oneshot",
    "cleanup": DEPLOY / "cleanup",
}
# Env vars in the manifests that are not nra settings, and why they are there.
HELPER_ENV = {"HOST_IP"}  # the node's address, expanded into HEALTH_ADDRESS
READ_VERBS = {"get", "list", "watch"}
# The optional component's Role and RoleBinding: in FRR-K8s's namespace, not MetalLB's.
SESSION_STATES = "nra-frrk8s-session-states"
SESSION_STATES_COMPONENT = DEPLOY / "components" / "frrk8s-session-states"
# The daemon's Role and RoleBinding for Events on its Node: in `default`, where the API server
# accepts Events about a cluster-scoped object.
NODE_EVENTS = "nra-node-events"

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
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding") and \
                obj["metadata"]["name"] not in (SESSION_STATES, NODE_EVENTS):
            assert obj["metadata"].get("namespace") == "metallb-system", describe(obj)


CONFIGMAP_BY_NAME = {("", "configmaps", ("config",)): {"list", "watch"}}
CRD_OBJECTS = {("metallb.io", r, ()): READ_VERBS for r in ("bgppeers", "ipaddresspools", "bgpadvertisements")}
EVENTS = {("", "events", ()): {"create"}}


def role_rules_with_names(role: dict[str, Any]) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    return {(g, r, tuple(rule.get("resourceNames", ()))): set(rule["verbs"])
            for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def test_rbac_is_read_only_and_minimal(rendered):
    """Only the chosen mode's objects (the ConfigMap by name), read-only; events, in
    `default`, for the daemon only."""
    wanted = {"configmap": CONFIGMAP_BY_NAME, "crds": CRD_OBJECTS, "oneshot": CONFIGMAP_BY_NAME}
    for way, rules in wanted.items():
        by_kind = {o["kind"]: o for o in rendered[way] if o["metadata"]["name"] != NODE_EVENTS}
        assert role_rules_with_names(by_kind["Role"]) == rules, way
        events = {o["kind"]: o for o in rendered[way] if o["metadata"]["name"] == NODE_EVENTS}
        if way == "oneshot":
            assert not events, "ONESHOT creates no Events"
        else:
            assert set(events) == {"Role", "RoleBinding"}, way
            assert {o["metadata"]["namespace"] for o in events.values()} == {"default"}
            assert role_rules_with_names(events["Role"]) == EVENTS
            assert events["RoleBinding"]["roleRef"]["name"] == NODE_EVENTS
            assert events["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "nra",
                                                         "namespace": "metallb-system"}]
        cluster_rules = {(g, r): set(rule["verbs"]) for rule in by_kind["ClusterRole"]["rules"]
                         for g in rule["apiGroups"] for r in rule["resources"]}
        assert cluster_rules == {("", "nodes"): READ_VERBS}
        for binding in ("RoleBinding", "ClusterRoleBinding"):
            subjects = by_kind[binding]["subjects"]
            assert subjects == [{"kind": "ServiceAccount", "name": "nra", "namespace": "metallb-system"}]
    assert {o["kind"] for o in rendered["cleanup"]} == {"DaemonSet"}, "cleanup needs no API access"


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def session_state_objects(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects if o["metadata"]["name"] == SESSION_STATES}


def test_session_states_are_readable_only_with_the_component(rendered):
    objects = rendered["crds-frrk8s"]
    (where, pod), = pod_specs(objects)
    env = env_of(pod["containers"][0])
    namespace = env["FRRK8S_NAMESPACE"]
    assert namespace == "frr-k8s-system" and env["METALLB_USE_CRDS"] == "1"
    extra = session_state_objects(objects)
    assert set(extra) == {"Role", "RoleBinding"}
    assert extra["Role"]["metadata"]["namespace"] == extra["RoleBinding"]["metadata"]["namespace"] == namespace
    assert rules_of(extra["Role"]) == {("frrk8s.metallb.io", "bgpsessionstates"): READ_VERBS}
    assert extra["RoleBinding"]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                               "name": SESSION_STATES}
    assert extra["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "nra", "namespace": "metallb-system"}]
    # Otherwise exactly the crds overlay: the one setting added, nothing else granted.
    rest = copy.deepcopy([o for o in objects if o["metadata"]["name"] != SESSION_STATES])
    for obj in rest:
        if obj["kind"] == "DaemonSet":
            agent = obj["spec"]["template"]["spec"]["containers"][0]
            agent["env"] = [e for e in agent["env"] if e["name"] != "FRRK8S_NAMESPACE"]
    assert sorted(rest, key=describe) == sorted(rendered["crds"], key=describe)
    for way in ("configmap", "crds", "oneshot", "cleanup"):
        assert not session_state_objects(rendered[way]), way


def test_session_states_namespace_is_written_once(tmp_path):
    # Moving the Role (e.g. to metallb-system, where MetalLB's FRR-K8s mode runs it) moves the
    # RoleBinding and the agent's FRRK8S_NAMESPACE with it.
    copied = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copied)
    rbac = copied / "components" / "frrk8s-session-states" / "rbac.yaml"
    text = rbac.read_text()
    role, binding = text.split("\n---\n")
    rbac.write_text(role.replace("namespace: frr-k8s-system", "namespace: metallb-system") + "\n---\n" + binding)
    objects = render(copied / "overlays" / "crds-frrk8s")
    extra = session_state_objects(objects)
    assert extra["Role"]["metadata"]["namespace"] == extra["RoleBinding"]["metadata"]["namespace"] == "metallb-system"
    (where, pod), = pod_specs(objects)
    assert env_of(pod["containers"][0])["FRRK8S_NAMESPACE"] == "metallb-system"


@pytest.mark.parametrize("way", ["configmap", "crds", "crds-frrk8s"])
def test_the_agent_accepts_the_settings(rendered, way, monkeypatch):
    # What the kubelet would give the container: downward-API values and $(VAR) expanded.
    (where, pod), = pod_specs(rendered[way])
    known = {"NODE_NAME": "node-a", "HOST_IP": "10.0.0.1"}
    for entry in pod["containers"][0]["env"]:
        value = known.get(entry["name"]) or re.sub(r"\$\((\w+)\)", lambda m: known[m[1]], entry["value"])
        known[entry["name"]] = value
        monkeypatch.setenv(entry["name"], value)
    settings = load_settings()
    assert settings.frrk8s_namespace == ("frr-k8s-system" if way == "crds-frrk8s" else None)


@pytest.mark.parametrize("way", WAYS)
def test_pods_are_locked_down(rendered, way):
    for where, pod in pod_specs(rendered[way]):
        # the node's own network for pods that program it; none for the rest (the uninstall
        # hook's Job only reads a DaemonSet's status)
        assert pod.get("hostNetwork", False) is bool(nra_containers(pod)), where
        # every taint tolerated, as MetalLB's speaker does
        assert {"operator": "Exists"} in pod.get("tolerations", []), where
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


@pytest.mark.parametrize("way,use_crds", [("configmap", "0"), ("crds", "1"), ("crds-frrk8s", "1")])
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
    assert c["startupProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # the startup probe gives the process two minutes to listen; the liveness probe then needs
    # no initial delay
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 120
    assert "initialDelaySeconds" not in c["livenessProbe"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
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
