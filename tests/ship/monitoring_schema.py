"""Strict offline checks of the Prometheus operator's objects (ServiceMonitor, PodMonitor,
PrometheusRule), which kubernetes-validate has no schema for.

The schemas come from the operator's API models as packaged on PyPI
(cloudcoil-models-prometheus-operator, pydantic models generated from the CRDs), turned
into JSON schema and made strict: every object that lists its properties refuses others,
as `kubectl apply --validate=strict` would.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jsonschema

# scripts/setup installs the models here, outside site-packages (see there why).
MODELS = Path(__file__).resolve().parents[2] / ".venv" / "prometheus-operator-models"
KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
API_VERSION = "monitoring.coreos.com/v1"


def available() -> bool:
    if MODELS.is_dir() and str(MODELS) not in sys.path:
        sys.path.append(str(MODELS))
    try:
        import cloudcoil.models.prometheus_operator.v1  # noqa: F401
    except ImportError:
        return False
    return True


def _strict(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    available()
    from cloudcoil.models.prometheus_operator import v1

    schema = getattr(v1, kind).model_json_schema(by_alias=True)
    _strict(schema)
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name", "?")
    if kind not in KINDS or obj.get("apiVersion") != API_VERSION:
        return [f"{kind}/{name}: not a {API_VERSION} kind this checks ({', '.join(KINDS)})"]
    return [f"{kind}/{name}: {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in _validator(kind).iter_errors(obj)]
