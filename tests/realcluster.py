"""The real kube-apiserver (and etcd) for the tests: one per test session, started by
testbed.cluster (what `scripts/cluster up` does) and torn down at the end.

The binaries come from the cache `scripts/cluster build` fills (scripts/setup runs it). When
they are missing the tests that need the server FAIL with that message: they never skip.

Each test works in namespaces of its own (`scratch_namespace`), with Node names of its own,
so tests share the server without seeing each other's objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.cluster import CACHE, Cluster, ClusterError, binaries, missing_binaries

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "nra"
HELMS = {major: REPO / ".venv" / f"helm{major}" / "helm" for major in (3, 4)}
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"the real API server's binaries are not built ({', '.join(missing)} missing from {CACHE}): "
                    "run scripts/cluster build (scripts/setup does it; ~11 min cold on 2 cores)", pytrace=False)
    # a short path: the state directory holds nothing with a length limit, but logs name it
    cluster = Cluster(Path(tmp_path_factory.mktemp("cluster")) / "state")
    try:
        cluster.up(log=lambda _m: None)
    except ClusterError as exc:
        pytest.fail(f"the real API server did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.down()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def kubectl(cluster: Cluster, *args: str, **kw) -> subprocess.CompletedProcess:
    return cluster.kubectl(*args, **kw)


def apply(cluster: Cluster, *objects: dict[str, Any], kubeconfig: Path | None = None) -> None:
    """Create or update the objects as admin (server-side apply: the server validates them)."""
    text = "\n---\n".join(json.dumps(o) for o in objects)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text, kubeconfig=kubeconfig)


def create_namespace(cluster: Cluster, name: str) -> str:
    apply(cluster, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def helm(major: int, *args: str, kubeconfig: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    path = HELMS[major]
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/setup (it installs Helm 3 and 4)", pytrace=False)
    env = dict(os.environ, HELM_CACHE_HOME=str(REPO / ".venv" / "helm-cache"),
               HELM_CONFIG_HOME=str(REPO / ".venv" / "helm-config"), HELM_DATA_HOME=str(REPO / ".venv" / "helm-data"))
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=timeout, env=env)


def helm_template(namespace: str, *args: str, release: str = "nra", major: int = 4) -> list[dict[str, Any]]:
    done = helm(major, "template", release, str(CHART), "--namespace", namespace, *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


def chart_rbac(namespace: str, *args: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and (Cluster)Roles and bindings for these values, as
    `helm template` renders them (the release in `namespace`), hooks left out."""
    return [o for o in helm_template(namespace, *args) if o["kind"] in RBAC_KINDS and not is_hook(o)]


def identity(cluster: Cluster, rbac: list[dict[str, Any]], path: Path) -> Path:
    """Apply the rendered RBAC objects, get a token for their ServiceAccount by TokenRequest
    and write a kubeconfig for it: nra's identity, as the chart gives it."""
    namespaces = {o["metadata"]["namespace"] for o in rbac if o["metadata"].get("namespace")}
    for ns in sorted(namespaces):
        create_namespace(cluster, ns)
    apply(cluster, *rbac)
    (account,) = [o for o in rbac if o["kind"] == "ServiceAccount"]
    meta = account["metadata"]
    token = cluster.service_account_token(meta["namespace"], meta["name"])
    return cluster.write_kubeconfig(path, token, f"system:serviceaccount:{meta['namespace']}:{meta['name']}")


def kubectl_path() -> Path:
    return binaries()["kubectl"]
