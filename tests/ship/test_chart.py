"""The Helm chart (charts/nra), rendered by Helm 3 and Helm 4 offline, like the kustomize
manifests: every object valid Kubernetes (strict), the values schema refusing typos, the
Node.js chart's values still working, and the same DaemonSet as deploy/ for the same
settings. Helm comes from scripts/setup (.venv/helm3, .venv/helm4).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nra.settings import ENV_NAMES
from tests.ship import monitoring_schema
from tests.ship.k8s_schema import describe, kubectl, schema_errors
from tests.ship.k8s_schema import render as kustomize
from tests.ship.test_manifests import (
    CONFIGMAP_BY_NAME,
    CRD_OBJECTS,
    EVENTS,
    NODE_EVENTS,
    READ_VERBS,
    SESSION_STATES,
    containers,
    env_of,
    pod_specs,
    role_rules_with_names,
    rules_of,
)
from tests.ship.test_manifests import (
    test_env_names_are_settings_the_agent_knows as check_env_names,
)
from tests.ship.test_manifests import (
    test_env_references_are_defined_before_use as check_env_references,
)
from tests.ship.test_manifests import test_pods_are_locked_down as check_locked_down

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "nra"
FIXTURES = Path(__file__).parent / "fixtures"
NODEJS_VALUES = FIXTURES / "nodejs-chart-values.yaml"
HELMS = {major: REPO / ".venv" / f"helm{major}" / "helm" for major in (3, 4)}
NAMESPACE = "metallb-system"
EVERYTHING_ON = [  # every optional object at once (the cleanup needs the agent off)
    "--set", "daemonset.enabled=false", "--set", "cleanup.enabled=true",
    "--set", "oneshot.enabled=true", "--set", "oneshot.nodes={node-a,node-b}",
    "--set", "prometheus.rule.enabled=true", "--set", "prometheus.dashboard.enabled=true",
]
FRRK8S_NAMESPACE = "frr-k8s-system"
SESSION_STATES_ON = ["--set", "env.METALLB_USE_CRDS=1", "--set", f"env.FRRK8S_NAMESPACE={FRRK8S_NAMESPACE}"]
MONITORS_ON = ["--set", "prometheus.serviceMonitor.enabled=true", "--set", "prometheus.podMonitor.enabled=true"]
SECURE_METRICS = ["--set", "prometheus.secureMetricsPort=9120",
                  "--set", "prometheus.scrapers[0].name=prometheus-k8s",
                  "--set", "prometheus.scrapers[0].namespace=monitoring"]
VARIANTS = {
    "defaults": [],
    "nodejs-values": ["-f", str(NODEJS_VALUES)],
    "crds": ["--set", "env.METALLB_USE_CRDS=1"],
    "session-states": SESSION_STATES_ON,
    "everything": EVERYTHING_ON,
    "monitors": MONITORS_ON + ["--set", "prometheus.rule.enabled=true"],
    "secure-metrics": MONITORS_ON + SECURE_METRICS + ["--set", "prometheus.metricsTLSSecret=nra-metrics-tls",
                                                      "--set", "prometheus.bearerTokenSecret.name=scraper-token"],
}


def helm_params() -> list[Any]:
    return [pytest.param(major, marks=pytest.mark.skipif(not path.exists(), reason=f"{path} missing: run scripts/setup"),
                         id=f"helm{major}") for major, path in HELMS.items()]


def run_helm(major: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELMS[major]), *args], capture_output=True, text=True, timeout=120)


def helm_template(major: int, *args: str, release: str = "nra") -> list[dict[str, Any]]:
    done = run_helm(major, "template", release, str(CHART), "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def template_error(major: int, *args: str) -> str:
    done = run_helm(major, "template", "nra", str(CHART), "--namespace", NAMESPACE, *args)
    assert done.returncode != 0, "helm template accepted it"
    return done.stderr


def all_errors(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    for obj in objects:
        if obj["apiVersion"] == monitoring_schema.API_VERSION and monitoring_schema.available():
            errors += monitoring_schema.schema_errors(obj)
        else:
            errors += schema_errors(obj)
    return errors


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


def by_kind(objects: list[dict[str, Any]], kind: str, hooks: bool = False) -> list[dict[str, Any]]:
    """The release's objects of a kind; Helm's hooks (run at uninstall) only when asked."""
    return [o for o in objects if o["kind"] == kind and (hooks or not is_hook(o))]


def agent_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (daemonset,) = [d for d in by_kind(objects, "DaemonSet") if d["metadata"]["name"] == "nra"]
    return daemonset["spec"]["template"]["spec"]


@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("values", [[], ["-f", str(NODEJS_VALUES)]], ids=["defaults", "nodejs-values"])
def test_helm_lint(major, values):
    done = run_helm(major, "lint", "--strict", str(CHART), *values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid(major, variant):
    objects = helm_template(major, *VARIANTS[variant])
    assert objects
    assert all_errors(objects) == []
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            elsewhere = {SESSION_STATES: FRRK8S_NAMESPACE, NODE_EVENTS: "default"}
            expected = elsewhere.get(obj["metadata"]["name"], NAMESPACE)
            assert obj["metadata"]["namespace"] == expected, describe(obj)
    rendered = {variant: objects}
    check_env_names(rendered, variant)
    check_env_references(rendered, variant)
    if variant != "nodejs-values":  # that file adds NET_RAW, as the Node.js chart did
        check_locked_down(rendered, variant)


@pytest.mark.skipif(not monitoring_schema.available(), reason="cloudcoil-models-prometheus-operator missing: run scripts/setup")
def test_validator_rejects_broken_monitoring_objects():
    objects = helm_template(4, *MONITORS_ON, "--set", "prometheus.rule.enabled=true")
    monitor = by_kind(objects, "ServiceMonitor")[0]
    assert monitoring_schema.schema_errors(monitor) == []
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["intervall"] = "30s"
    assert "intervall" in monitoring_schema.schema_errors(typo)[0]
    rule = copy.deepcopy(by_kind(objects, "PrometheusRule")[0])
    rule["spec"]["groups"][0]["rules"][0]["for"] = 15
    assert "for" in monitoring_schema.schema_errors(rule)[0]


# -- the values schema ---------------------------------------------------------------------

def test_schema_has_an_env_entry_for_every_setting():
    schema = json.loads((CHART / "values.schema.json").read_text())
    env = schema["properties"]["env"]
    assert env["additionalProperties"] is False
    assert set(env["properties"]) == set(ENV_NAMES.values()), \
        "the chart's env settings differ from nra.settings: run scripts/chart_schema.py"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["env"]) <= set(ENV_NAMES.values())


def test_schema_is_what_the_generator_writes():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "chart_schema.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("args,complaint", [
    (["--set", "env.TABLE_WEGHT=20"], "TABLE_WEGHT"),                   # misspelt setting
    (["--set", "env.TABLE_WEIGHT=twenty"], "TABLE_WEIGHT"),             # not a number
    (["--set-json", "env.PEER_WEIGHT=[100]"], "PEER_WEIGHT"),           # not a scalar
    (["--set", "env.METALLB_USE_CRDS=maybe"], "METALLB_USE_CRDS"),      # not a flag
    (["--set", "env.LOG_LEVEL=loud"], "LOG_LEVEL"),                     # not a level
    (["--set", "nodeSelecter.disk=ssd"], "nodeSelecter"),               # misspelt value
    (["--set", "rbac.create=maybe"], "rbac"),                           # wrong type
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "prometheus.podMonitor.interval=often"], "interval"),
    (["--set", "prometheus.secureMetricsPort=0"], "secureMetricsPort"),
    (["--set", "prometheus.secureMetricsPort=65536"], "secureMetricsPort"),
    (["--set", "prometheus.secureMetricsPort=https"], "secureMetricsPort"),
    (["--set", "prometheus.metricsTLSSecret=Not_A_Name"], "metricsTLSSecret"),
    (["--set", "prometheus.scrapers[0].name=prometheus-k8s"], "namespace"),
    (["--set", "prometheus.serviceMonitor.tlsConfig=insecure"], "tlsConfig"),
    (["--set", "prometheus.bearerTokenSecret.nam=x"], "nam"),
])
def test_schema_refuses(major, args, complaint):
    assert complaint in template_error(major, *args)


@pytest.mark.parametrize("major", helm_params())
def test_schema_accepts_what_nra_accepts(major):
    objects = helm_template(major, "--set", "env.METALLB_USE_CRDS=true", "--set", "env.LOG_LEVEL=warning",
                            "--set", "env.HOOK_TIMEOUT=2.5", "--set", "env.RULE_FWMARK=0x14/0xff",
                            "--set-string", "env.TABLE_WEIGHT=4294967295")
    env = env_of(agent_pod(objects)["containers"][0])
    assert env["METALLB_USE_CRDS"] == "true" and env["LOG_LEVEL"] == "warning"
    assert env["HOOK_TIMEOUT"] == "2.5" and env["RULE_FWMARK"] == "0x14/0xff"
    assert env["TABLE_WEIGHT"] == "4294967295"


@pytest.mark.parametrize("major", helm_params())
def test_whole_numbers_from_a_values_file_stay_whole(major, tmp_path):
    # YAML numbers reach Helm's templates as float64: 4294967295 must not become 4.294967295e+09
    values = tmp_path / "values.yaml"
    values.write_text("env:\n  TABLE_WEIGHT: 4294967295\n  RULE_PRIORITY: 32765\n  HOOK_TIMEOUT: 2.5\n")
    env = env_of(agent_pod(helm_template(major, "-f", str(values)))["containers"][0])
    assert (env["TABLE_WEIGHT"], env["RULE_PRIORITY"], env["HOOK_TIMEOUT"]) == ("4294967295", "32765", "2.5")


# -- the same DaemonSet as deploy/ ------------------------------------------------------------

HASHED = re.compile(r"^(?P<name>.+)-[a-z0-9]{10}$")  # kustomize's configMapGenerator suffix


def comparable_pod_template(daemonset: dict[str, Any]) -> dict[str, Any]:
    """The DaemonSet's spec without what legitimately differs between Helm and kustomize:
    labels (Helm adds instance/chart/version), the hooks ConfigMap's name (kustomize hashes
    it, the chart rolls pods with a checksum annotation instead), env order (a list in one,
    a map in the other; $(VAR) ordering is checked separately) and the fieldRef apiVersion
    default."""
    spec = copy.deepcopy(daemonset["spec"])
    spec["selector"]["matchLabels"] = {k: v for k, v in spec["selector"]["matchLabels"].items()
                                       if k != "app.kubernetes.io/instance"}
    template = spec["template"]
    template["metadata"]["labels"] = {k: v for k, v in template["metadata"]["labels"].items()
                                      if k != "app.kubernetes.io/instance"}
    template["metadata"].get("annotations", {}).pop("checksum/hooks", None)
    if not template["metadata"].get("annotations"):
        template["metadata"].pop("annotations", None)
    pod = template["spec"]
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            volume["configMap"]["name"] = (HASHED.match(name) or {"name": name})["name"]
    for c in containers(pod):
        env = env_of(c)
        for value in env.values():
            if isinstance(value, dict) and "fieldRef" in value:
                value["fieldRef"].pop("apiVersion", None)
        c["env"] = dict(sorted(env.items()))
    return spec


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: cannot render deploy/")
@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("overlay,args", [("configmap", []), ("crds", ["--set", "env.METALLB_USE_CRDS=1"]),
                                          ("crds-frrk8s", SESSION_STATES_ON),
                                          ("configmap-secure-metrics", SECURE_METRICS)])
def test_daemonset_is_the_same_as_deploy(major, overlay, args):
    (deployed,) = by_kind(kustomize(REPO / "deploy" / "overlays" / overlay), "DaemonSet")
    (charted,) = by_kind(helm_template(major, *args), "DaemonSet")
    assert charted["metadata"]["name"] == deployed["metadata"]["name"]
    chart_spec = comparable_pod_template(charted)
    # both node-critical: an agent whose absence breaks replies is not evicted first
    assert chart_spec["template"]["spec"]["priorityClassName"] == "system-node-critical"
    assert chart_spec == comparable_pod_template(deployed)


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed: cannot render deploy/")
@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("overlay,args", [("configmap", []), ("crds-frrk8s", SESSION_STATES_ON),
                                          ("configmap-secure-metrics", SECURE_METRICS)])
def test_rbac_is_the_same_as_deploy(major, overlay, args):
    def rbac(objects):
        objects = [o for o in objects if not is_hook(o)]
        roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o["rules"]
                 for o in objects if o["kind"] in ("Role", "ClusterRole")}
        bindings = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): (o["roleRef"], o["subjects"])
                    for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")}
        return roles, bindings
    assert rbac(helm_template(major, *args)) == rbac(kustomize(REPO / "deploy" / "overlays" / overlay))


# -- the Node.js chart's values ----------------------------------------------------------------

@pytest.mark.parametrize("major", helm_params())
def test_nodejs_chart_values_still_work(major):
    objects = helm_template(major, "-f", str(NODEJS_VALUES))
    pod = agent_pod(objects)
    (agent,) = pod["containers"]
    env = env_of(agent)
    names = [e["name"] for e in agent["env"]]
    # extraEnv wins over the chart's env, and no name appears twice
    assert len(names) == len(set(names))
    assert (env["METALLB_USE_CRDS"], env["LOG_LEVEL"], env["TABLE_WEIGHT"]) == ("1", "debug", "120")
    # configMapData: in the hooks ConfigMap, mounted at the old /tmp/config and at /etc/nra/hooks
    (hooks,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "nra-hooks"]
    assert set(hooks["data"]) == {"pre.sh", "post.sh"}
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    assert mounts["/tmp/config"] == mounts["/etc/nra/hooks"] == "hooks"
    assert env["PRE_RECONCILE_SCRIPT_PATH"] == "/tmp/config/pre.sh"
    assert pod["priorityClassName"] == "system-cluster-critical"
    # rbac.enabled: false and serviceAccount.create: false: nothing of either rendered
    kinds = {o["kind"] for o in objects}
    assert kinds.isdisjoint({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"})
    assert pod["serviceAccountName"] == "metallb-speaker"
    # a repository naming its own registry is used as is
    assert agent["image"] == "registry.example.com/platform/nra:0.1.0"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "node-role.example.com/edge": "true"}
    assert agent["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True  # defaults kept under the merge
    assert agent["resources"]["limits"] == {"cpu": "100m", "memory": "128Mi"}


@pytest.mark.parametrize("major", helm_params())
def test_rbac_create_and_service_account(major):
    objects = helm_template(major, "--set", "env.METALLB_NAMESPACE=metallb", "--set", "serviceAccount.name=agent")
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "nra"]
    (binding,) = [b for b in by_kind(objects, "RoleBinding") if b["metadata"]["name"] == "nra"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "metallb", \
        "the Role must live where MetalLB's objects are"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agent", "namespace": NAMESPACE}]
    assert by_kind(objects, "ServiceAccount")[0]["metadata"]["name"] == "agent"
    assert not by_kind(helm_template(major, "--set", "rbac.create=false"), "Role")
    # the Node.js name wins when given
    assert by_kind(helm_template(major, "--set", "rbac.create=false", "--set", "rbac.enabled=true"), "Role")


@pytest.mark.parametrize("major", helm_params())
def test_role_grants_only_the_chosen_modes_objects(major):
    def roles(*args, namespace=NAMESPACE):
        objects = helm_template(major, *args) if namespace == NAMESPACE else \
            [o for o in yaml.safe_load_all(run_helm(major, "template", "nra", str(CHART), "--namespace", namespace,
                                                    *args).stdout) if o]
        return {(r["metadata"]["namespace"], r["metadata"]["name"]): role_rules_with_names(r)
                for r in by_kind(objects, "Role")}

    def role(*args):
        return roles(*args)[(NAMESPACE, "nra")]
    assert role() == CONFIGMAP_BY_NAME
    assert role("--set", "env.METALLB_CONFIGMAP_NAME=metallb-config") == \
        {("", "configmaps", ("metallb-config",)): {"list", "watch"}}
    assert role("--set", "extraEnv[0].name=METALLB_CONFIGMAP_NAME", "--set", "extraEnv[0].value=old") == \
        {("", "configmaps", ("old",)): {"list", "watch"}}
    for crds in ("1", "true", "yes", "on"):
        assert role("--set-string", f"env.METALLB_USE_CRDS={crds}") == CRD_OBJECTS
    # the daemon's Events on its Node: in `default`, the only place the API server takes them
    assert roles() == {(NAMESPACE, "nra"): CONFIGMAP_BY_NAME, ("default", "nra-node-events"): EVENTS}
    assert ("default", "nra-node-events-edge") in roles(namespace="edge")  # two releases stay apart
    # ONESHOT alone creates no Events
    assert roles("--set", "daemonset.enabled=false", "--set", "oneshot.enabled=true",
                 "--set", "oneshot.nodes={node-a}") == {(NAMESPACE, "nra"): CONFIGMAP_BY_NAME}


@pytest.mark.parametrize("major", helm_params())
def test_session_state_rbac_follows_frrk8s_namespace(major):
    def session_states(*args, release="nra"):
        return {o["kind"]: o for o in helm_template(major, *args, release=release)
                if o["metadata"]["name"].endswith("-frrk8s-session-states")}
    assert session_states() == {} and session_states("--set", "env.METALLB_USE_CRDS=1") == {}
    granted = session_states(*SESSION_STATES_ON, "--set", "serviceAccount.name=agent", release="edge")
    assert set(granted) == {"Role", "RoleBinding"}
    assert rules_of(granted["Role"]) == {("frrk8s.metallb.io", "bgpsessionstates"): READ_VERBS}
    assert {o["metadata"]["namespace"] for o in granted.values()} == {FRRK8S_NAMESPACE}
    assert granted["RoleBinding"]["roleRef"]["name"] == granted["Role"]["metadata"]["name"] == \
        "edge-nra-frrk8s-session-states"
    assert granted["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "agent", "namespace": NAMESPACE}]
    # extraEnv (the Node.js chart's key) sets it as well as env does
    assert set(session_states("--set", "env.METALLB_USE_CRDS=1", "--set", "extraEnv[0].name=FRRK8S_NAMESPACE",
                              "--set", "extraEnv[0].value=metallb-system")) == {"Role", "RoleBinding"}
    # only the resident agent watches them (ONESHOT does not); no RBAC, none of it
    assert session_states(*SESSION_STATES_ON, "--set", "rbac.create=false") == {}
    assert session_states(*SESSION_STATES_ON, "--set", "daemonset.enabled=false", "--set", "oneshot.enabled=true",
                          "--set", "oneshot.nodes={node-a}") == {}


# -- switches, image, health port ----------------------------------------------------------------

@pytest.mark.parametrize("major", helm_params())
def test_oneshot_and_cleanup_switches(major):
    objects = helm_template(major, *EVERYTHING_ON, "--set", "env.TABLE_WEIGHT=120")
    assert [d["metadata"]["name"] for d in by_kind(objects, "DaemonSet")] == ["nra-cleanup"]
    cronjobs = by_kind(objects, "CronJob")
    assert [c["metadata"]["name"] for c in cronjobs] == ["nra-oneshot-node-a", "nra-oneshot-node-b"]
    for cronjob, node in zip(cronjobs, ("node-a", "node-b")):
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/hostname"] == node
        env = env_of(pod["containers"][0])
        assert (env["ONESHOT"], env["HEALTH_ADDRESS"], env["TABLE_WEIGHT"]) == ("1", "off", "120")
        assert "livenessProbe" not in pod["containers"][0]
    (cleanup,) = pod_specs(by_kind(objects, "DaemonSet"))
    env = env_of(cleanup[1]["initContainers"][0])
    assert (env["CLEANANDEXIT"], env["TABLE_WEIGHT"]) == ("1", "120"), "cleanup cleans the agent's table"


@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("args,complaint", [
    (["--set", "cleanup.enabled=true"], "daemonset.enabled=false"),
    (["--set", "oneshot.enabled=true"], "oneshot.nodes"),
    (["--set", "env.ONESHOT=1"], "oneshot.enabled"),
    (["--set", "env.CLEANANDEXIT=true"], "cleanup.enabled"),
    (MONITORS_ON + ["--set", "env.HEALTH_ADDRESS=off"], "HEALTH_ADDRESS"),
    (["--set", f"env.FRRK8S_NAMESPACE={FRRK8S_NAMESPACE}"], "METALLB_USE_CRDS=1"),
    (["--set", "prometheus.secureMetricsPort=9101"], "must differ from HEALTH_ADDRESS's port"),
    (["--set", "prometheus.secureMetricsPort=9120", "--set", "env.HEALTH_ADDRESS=off"], "needs the health listener"),
    (["--set", "prometheus.metricsTLSSecret=nra-tls"], "needs prometheus.secureMetricsPort"),
    (["--set", "prometheus.secureMetricsPort=9120", "--set", "env.METRICS_ADDRESS=:9130"], "leave METRICS_ADDRESS"),
    (["--set", "prometheus.secureMetricsPort=9120", "--set", "prometheus.podMonitor.enabled=true"],
     "needs prometheus.bearerTokenSecret"),
])
def test_contradictions_are_refused(major, args, complaint):
    assert complaint in template_error(major, *args)


@pytest.mark.parametrize("major", helm_params())
def test_health_port_follows_health_address(major):
    agent = agent_pod(helm_template(major, "--set", "env.HEALTH_ADDRESS=$(HOST_IP):9200", *MONITORS_ON))["containers"][0]
    assert agent["ports"] == [{"name": "health", "containerPort": 9200, "protocol": "TCP"}]
    assert agent["livenessProbe"]["httpGet"]["port"] == "health"
    off = agent_pod(helm_template(major, "--set", "env.HEALTH_ADDRESS=off"))["containers"][0]
    assert "ports" not in off and not {"startupProbe", "livenessProbe", "readinessProbe"} & set(off)


@pytest.mark.parametrize("major", helm_params())
def test_secure_metrics_make_nra_serve_https_and_the_monitors_scrape_it(major):
    objects = helm_template(major, *MONITORS_ON, *SECURE_METRICS, "--set", "prometheus.metricsTLSSecret=nra-tls",
                            "--set", "prometheus.bearerTokenSecret.name=scraper-token")
    pod = agent_pod(objects)
    (agent,) = pod["containers"]  # no sidecar: nra serves HTTPS itself
    env = env_of(agent)
    assert env["METRICS_ADDRESS"] == "$(HOST_IP):9120" and "METRICS_AUTH" not in env  # kubernetes, nra's default
    assert env["METRICS_TLS_CERT_FILE"] == "/etc/nra/metrics-tls/tls.crt"
    assert env["METRICS_TLS_KEY_FILE"] == "/etc/nra/metrics-tls/tls.key"
    assert {"name": "metrics-https", "containerPort": 9120, "protocol": "TCP"} in agent["ports"]
    assert {"name": "metrics-tls", "mountPath": "/etc/nra/metrics-tls", "readOnly": True} in agent["volumeMounts"]
    assert {"name": "metrics-tls", "secret": {"secretName": "nra-tls"}} in pod["volumes"]
    assert agent["livenessProbe"]["httpGet"]["port"] == "health"  # the probes stay plain HTTP
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics-https", "port": 9120, "targetPort": "metrics-https",
                                         "protocol": "TCP"}]
    (service_endpoint,) = by_kind(objects, "ServiceMonitor")[0]["spec"]["endpoints"]
    (pod_endpoint,) = by_kind(objects, "PodMonitor")[0]["spec"]["podMetricsEndpoints"]
    for endpoint in (service_endpoint, pod_endpoint):
        assert endpoint["port"] == "metrics-https" and endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
        assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "scraper-token", "key": "token"}}
    roles = {o["metadata"]["name"]: o["rules"] for o in by_kind(objects, "ClusterRole")}
    assert roles["nra-metrics-reader"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert roles["nra-metrics-auth"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]
    bindings = {o["metadata"]["name"]: o for o in by_kind(objects, "ClusterRoleBinding")}
    assert bindings["nra-metrics-auth"]["subjects"] == [{"kind": "ServiceAccount", "name": "nra",
                                                         "namespace": NAMESPACE}]
    assert bindings["nra-metrics-reader"]["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                                           "namespace": "monitoring"}]


@pytest.mark.parametrize("major", helm_params())
def test_secure_metrics_defaults_self_signed_prometheus_token_and_auth_none(major):
    objects = helm_template(major, *SECURE_METRICS, "--set", "prometheus.serviceMonitor.enabled=true")
    env = env_of(agent_pod(objects)["containers"][0])
    assert "METRICS_TLS_CERT_FILE" not in env  # self-signed, made by nra at start
    (endpoint,) = by_kind(objects, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert all_errors(objects) == []
    none = helm_template(major, *SECURE_METRICS, "--set", "prometheus.serviceMonitor.enabled=true",
                         "--set", "env.METRICS_AUTH=none")
    (endpoint,) = by_kind(none, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and "bearerTokenFile" not in endpoint and "authorization" not in endpoint
    assert not [o for o in by_kind(none, "ClusterRole") if o["metadata"]["name"].endswith("-metrics-auth")]
    plain = helm_template(major, *MONITORS_ON)  # without secureMetricsPort: as before
    assert [e["port"] for e in by_kind(plain, "ServiceMonitor")[0]["spec"]["endpoints"]] == ["health"]
    assert not [o for o in by_kind(plain, "ClusterRole") if "metrics" in o["metadata"]["name"]]


@pytest.mark.parametrize("major", helm_params())
@pytest.mark.parametrize("args,image", [
    ([], "ghcr.io/nra-project/nra:0.1.0"),
    (["--set", "image.registry=registry.example.com", "--set", "image.tag=1.2.3"], "registry.example.com/nra-project/nra:1.2.3"),
    (["--set", "image.repository=localhost:5000/nra"], "localhost:5000/nra:0.1.0"),
    (["--set", "image.digest=sha256:" + "a" * 64], "ghcr.io/nra-project/nra:0.1.0@sha256:" + "a" * 64),
])
def test_image_reference(major, args, image):
    assert agent_pod(helm_template(major, *args))["containers"][0]["image"] == image


@pytest.mark.parametrize("major", helm_params())
def test_names_follow_the_release(major):
    objects = helm_template(major, "--set", "hooks.post-reconcile=#!/bin/sh", release="edge")
    assert {o["metadata"]["name"] for o in by_kind(objects, "DaemonSet")} == {"edge-nra"}
    (hooks,) = by_kind(objects, "ConfigMap")
    assert hooks["metadata"]["name"] == "edge-nra-hooks" and hooks["data"] == {"post-reconcile": "#!/bin/sh"}
    pod = agent_pod_named(objects, "edge-nra")
    assert pod["volumes"][0]["configMap"]["name"] == "edge-nra-hooks"
    assert "/tmp/config" not in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}


def agent_pod_named(objects, name):
    (daemonset,) = [d for d in by_kind(objects, "DaemonSet") if d["metadata"]["name"] == name]
    return daemonset["spec"]["template"]["spec"]


@pytest.mark.parametrize("major", helm_params())
def test_table_name_mounts_the_nodes_rt_tables_d(major):
    assert "TABLE_NAME" in ENV_NAMES.values()
    objects = helm_template(major, "--set", "env.TABLE_NAME=metallb")
    pod = agent_pod(objects)
    assert {"name": "rt-tables", "hostPath": {"path": "/etc/iproute2/rt_tables.d", "type": "DirectoryOrCreate"}} \
        in pod["volumes"]
    assert {"name": "rt-tables", "mountPath": "/etc/iproute2/rt_tables.d"} in pod["containers"][0]["volumeMounts"]
    assert env_of(pod["containers"][0])["TABLE_NAME"] == "metallb"
    assert all_errors(objects) == []
    cleanup = helm_template(major, "--set", "env.TABLE_NAME=metallb", *EVERYTHING_ON[:4])
    (_, clean_pod), = pod_specs(by_kind(cleanup, "DaemonSet"))
    assert env_of(clean_pod["initContainers"][0])["TABLE_NAME"] == "metallb"
    assert clean_pod["initContainers"][0]["volumeMounts"] == [{"name": "rt-tables", "mountPath": "/etc/iproute2/rt_tables.d"}]
    assert all_errors(cleanup) == []
    assert "rt-tables" not in json.dumps(helm_template(major)), "no host mount without TABLE_NAME"


# -- helm uninstall cleans every node -------------------------------------------------------

@pytest.mark.parametrize("major", helm_params())
def test_uninstall_runs_the_cleanup_on_every_node_and_waits(major):
    objects = [o for o in helm_template(major, "--set", "env.TABLE_WEIGHT=120") if is_hook(o)]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "DaemonSet", "Job"}
    for obj in objects:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-delete", describe(obj)
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in objects}
    assert weights["Role"] < weights["DaemonSet"] < weights["Job"], "RBAC, then the cleaners, then the wait"
    (cleaner,) = by_kind(objects, "DaemonSet", hooks=True)
    pod = cleaner["spec"]["template"]["spec"]
    wait, clean = pod["initContainers"]
    assert wait["name"] == "wait-for-agent" and "nra status --address" in wait["args"][0] and ":9101" in wait["args"][0]
    assert env_of(clean)["CLEANANDEXIT"] == "1" and env_of(clean)["TABLE_WEIGHT"] == "120"
    assert pod["hostNetwork"] is True
    (role,) = by_kind(objects, "Role", hooks=True)
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["daemonsets"],
                              "resourceNames": [cleaner["metadata"]["name"]], "verbs": ["get"]}]
    (job,) = by_kind(objects, "Job", hooks=True)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[1:] == ["/etc/nra/wait/wait-for-cleanup.py", NAMESPACE, cleaner["metadata"]["name"], "300"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 330
    (script,) = by_kind(objects, "ConfigMap", hooks=True)
    assert script["data"]["wait-for-cleanup.py"] == (CHART / "files" / "wait-for-cleanup.py").read_text()
    assert all_errors(objects) == []
    # opt out, or nothing to clean after (no agent), or no RBAC for the wait: no hook
    for args in (["--set", "cleanup.onUninstall=false"], EVERYTHING_ON[:4], ["--set", "rbac.create=false"]):
        assert not [o for o in helm_template(major, *args) if is_hook(o)], args
    assert "onUninstall" in template_error(major, "--set", "cleanup.onUninstall=maybe")


def test_the_uninstall_wait_reads_the_daemonset_until_every_node_is_clean(tmp_path):
    """files/wait-for-cleanup.py against a local HTTP stand-in of the API server."""
    import http.server
    import threading

    statuses = [{"desiredNumberScheduled": 3, "numberReady": 1, "updatedNumberScheduled": 3},
                {"desiredNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 3}]
    seen = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers["Authorization"]))
            body = json.dumps({"status": statuses[0] if len(seen) < 2 else statuses[1]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("secret\n")
    env = {"NRA_API_URL": f"http://127.0.0.1:{server.server_port}", "NRA_TOKEN_FILE": str(token), "PATH": "/usr/bin"}
    script = str(CHART / "files" / "wait-for-cleanup.py")
    try:
        done = subprocess.run([sys.executable, script, "metallb-system", "nra-uninstall-cleanup", "30"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "every node cleaned (3 of 3)" in done.stdout
        assert seen[0] == ("/apis/apps/v1/namespaces/metallb-system/daemonsets/nra-uninstall-cleanup", "Bearer secret")
        statuses[1] = statuses[0]  # never done: fails after the deadline, saying how far it got
        late = subprocess.run([sys.executable, script, "metallb-system", "nra-uninstall-cleanup", "3"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert late.returncode == 1 and "cleanup not finished after 3 s: 1 of 3 nodes cleaned" in late.stderr
    finally:
        server.shutdown()


@pytest.mark.parametrize("major", helm_params())
def test_global_image_registry_replaces_the_registry(major):
    images = {c["image"] for _, pod in pod_specs(helm_template(major, "--set", "global.imageRegistry=mirror.example:5000"))
              for c in containers(pod)}
    assert images == {"mirror.example:5000/nra-project/nra:0.1.0"}
    # a repository that names its own registry is still used as it is
    own = {c["image"] for _, pod in pod_specs(helm_template(major, "--set", "global.imageRegistry=mirror.example",
                                                            "--set", "image.repository=docker.io/me/nra"))
           for c in containers(pod)}
    assert own == {"docker.io/me/nra:0.1.0"}


@pytest.mark.parametrize("major", helm_params())
def test_alerts_have_switches_severities_and_runbook_urls(major):
    def rules(*args):
        (rule,) = by_kind(helm_template(major, "--set", "prometheus.rule.enabled=true", *args), "PrometheusRule")
        return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    default = rules()
    assert len(default) == 10
    assert all(r["annotations"]["runbook_url"] == "https://github.com/nra-project/nra/blob/main/docs/runbooks.md#"
               + name.lower() for name, r in default.items())
    changed = rules("--set", "prometheus.rule.alerts.NraDriftRepairedOften.enabled=false",
                    "--set", "prometheus.rule.alerts.NraNotReady.severity=critical",
                    "--set", "prometheus.rule.runbookBaseURL=https://wiki.example/nra")
    assert set(default) - set(changed) == {"NraDriftRepairedOften"}
    assert changed["NraNotReady"]["labels"]["severity"] == "critical" and default["NraNotReady"]["labels"]["severity"] == "warning"
    assert changed["NraReturnPathDown"]["annotations"]["runbook_url"] == "https://wiki.example/nra#nrareturnpathdown"
    assert {k: v for k, v in changed["NraReturnPathDown"].items()} == \
        {**default["NraReturnPathDown"], "annotations": changed["NraReturnPathDown"]["annotations"]}
    assert "NraTypo" in template_error(major, "--set", "prometheus.rule.alerts.NraTypo.enabled=false")


def test_dashboard_filters_by_the_node_label_the_monitors_add():
    dashboard = json.loads((CHART / "files" / "nra-dashboard.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert variable["name"] == "node" and variable["definition"] == "label_values(nra_reconciles_total, node)"
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs and all('node=~"$node"' in e for e in exprs) and not any("$instance" in e for e in exprs)


# -- the chart refuses what nra refuses, and accepts what nra accepts (issue 18.1) ------------

def rounds(cases: list) -> list[tuple[dict[str, Any], bool]]:
    """The cases as few values files' env as can hold them, one value of each setting per
    file: (env, together); a case that needs other settings is alone with them (together)."""
    files: list[tuple[dict[str, Any], bool]] = []
    for env, value, others in cases:
        if others:
            files.append(({**others, env: value}, True))
            continue
        free = next((f for f, together in files if env not in f and not together), None)
        if free is None:
            free = {}
            files.append((free, False))
        free[env] = value
    return files


def render_env(major: int, tmp_path: Path, env: dict[str, Any]) -> subprocess.CompletedProcess:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"env": env}, ensure_ascii=False))  # JSON is YAML, every string quoted
    return run_helm(major, "template", "nra", str(CHART), "--namespace", NAMESPACE, "-f", str(values))


@pytest.mark.parametrize("major", helm_params())
def test_the_chart_refuses_every_value_nra_refuses(major, tmp_path):
    from tests.settings_cases import REFUSED

    for env, together in rounds(REFUSED):
        done = render_env(major, tmp_path, env)
        assert done.returncode != 0, f"helm {major} rendered {env}"
        named = [name for name in env if name in done.stderr]
        assert together and "env" in done.stderr or named == list(env), (env, done.stderr[-2000:])


@pytest.mark.parametrize("major", helm_params())
def test_the_chart_accepts_every_value_nra_accepts_at_its_bounds(major, tmp_path):
    from nra.settings import Settings
    from tests.settings_cases import AT_BOUNDS

    for env, together in rounds(AT_BOUNDS):
        done = render_env(major, tmp_path, env)
        assert done.returncode == 0, (env, done.stderr[-2000:])
        rendered = env_of(agent_pod([d for d in yaml.safe_load_all(done.stdout) if d])["containers"][0])
        for group in [list(env)] if together else [[name] for name in env]:  # what the pod gets, nra takes
            Settings(**{name: rendered[name] for name in group})


@pytest.mark.parametrize("major", helm_params())
def test_what_only_nra_can_refuse_renders_and_nra_refuses_it(major, tmp_path):
    """The schema's known gap, stated: relations between numbers and files on the node."""
    from nra.settings import SettingsError, load_settings
    from tests.settings_cases import REFUSED_BY_NRA_ONLY

    for (name, value, others), why in REFUSED_BY_NRA_ONLY:
        done = render_env(major, tmp_path, {**others, name: value})
        assert done.returncode == 0, (name, value, why, done.stderr[-1000:])
        rendered = env_of(agent_pod([d for d in yaml.safe_load_all(done.stdout) if d])["containers"][0])
        given = {ENV_FIELDS[k]: rendered[k] for k in {**others, name: value}}
        with pytest.raises(SettingsError):
            load_settings(**given)


ENV_FIELDS = {env: field for field, env in ENV_NAMES.items()}


def test_schema_and_settings_agree_on_generated_values():
    """Schema and settings never drift: for every whole-number, duration, switch and choice
    setting, any value the schema takes nra takes and the other way round; for the texts,
    any text nra takes the schema takes (what nra refuses beyond is listed per setting)."""
    import jsonschema
    from hypothesis import given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    from nra.settings import Settings, SettingsError, kind_of, load_settings
    from nra.settings.kinds import Text

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["env"]
    check = jsonschema.Draft7Validator({**schema, "additionalProperties": True, "allOf": []})
    names = sorted(n for n in Settings.model_fields if n not in ("netns", "pre_reconcile_script_path",
                                                                 "post_reconcile_script_path"))
    quarters = st.integers(-10, 20_000).map(lambda n: n / 4)  # written alike by Python and Helm
    texts = st.one_of(st.integers(-10, 2**33), quarters, st.booleans(),
                      st.text(alphabet="0123456789xXaAfF./:-, =[]\t\n٢eEinofstrubgpdkl_", max_size=24))

    @hsettings(max_examples=1500, deadline=None, derandomize=True)
    @given(st.sampled_from(names), texts)
    def agree(name, value):
        env = ENV_NAMES[name]
        schema_ok = check.is_valid({env: value})
        # as Helm writes it into the pod: true/false, whole numbers without a fraction
        text = str(value).lower() if isinstance(value, bool) else str(
            int(value) if isinstance(value, float) and value.is_integer() else value)
        try:
            load_settings(**{name: text})
            nra_ok = True
        except SettingsError:
            nra_ok = False
        if isinstance(kind_of(name), Text):  # written as strings in values (a YAML number is refused)
            assert not isinstance(value, str) or schema_ok or not nra_ok, f"{env}={value!r}: nra takes it, the schema refuses it"
        else:
            assert schema_ok == nra_ok, f"{env}={value!r}: schema {schema_ok}, nra {nra_ok}"

    agree()
