"""Render kustomizations with kubectl and check objects offline against Kubernetes' schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# The oldest Kubernetes we promise to deploy on; its schemas ship inside kubernetes-validate.
KUBERNETES_VERSION = "1.30"


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(kustomization: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` (offline) -> the objects it renders."""
    done = subprocess.run([kubectl() or "kubectl", "kustomize", str(kustomization)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise AssertionError(f"kubectl kustomize {kustomization} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def schema_errors(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """How `obj` breaks the Kubernetes `version` schema, checked strictly (unknown fields
    are errors); [] when it is valid. A kind without a schema is an error too."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        return [f"{describe(obj)}: {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{describe(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {version}"]
    return []
