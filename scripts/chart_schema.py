#!/usr/bin/env python3
"""The `env` part of charts/nra/values.schema.json, generated from nra.settings.Settings.

Every setting gets a property named by its environment variable (nra.settings.ENV_NAMES):
what its kind of value accepts (nra.settings.kinds: bounds, reserved ids, patterns, choices),
or null (unset), described by its own help. So the chart refuses at `helm install` what nra
would refuse at start, as far as a JSON schema can tell; what only nra can tell (relations
between numbers, files on the node) is listed in the description. The rest of the schema is
written by hand; only `properties.env.properties` is rewritten.

    .venv/bin/python scripts/chart_schema.py          # rewrite the schema
    .venv/bin/python scripts/chart_schema.py --check  # exit 1 if it is stale (CI does this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "charts" / "nra" / "values.schema.json"
sys.path.insert(0, str(REPO))

from nra import settings as nra_settings  # noqa: E402


def env_properties() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for field_name, field in nra_settings.Settings.model_fields.items():
        kind = nra_settings.kind_of(field_name)
        description = field.description or ""
        if getattr(kind, "agent_only", ""):
            description += f" (nra also refuses at start: {kind.agent_only})"
        # null: leave the setting unset (nra's own default)
        props[nra_settings.ENV_NAMES[field_name]] = {"description": description.replace("`", ""),
                                                     **nullable(kind.json_schema())}
    return dict(sorted(props.items()))


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}


def env_together() -> list[dict[str, Any]]:
    """What nra checks across settings, as far as a schema can: RULE_PRIORITY in conntrack mode."""
    conntrack = {"type": "string", "pattern": nra_settings.Choice(("conntrack",)).json_schema()["pattern"]}
    return [{"if": {"properties": {"RETURN_PATH": conntrack}, "required": ["RETURN_PATH"]},
             "then": {"properties": {"RULE_PRIORITY": nullable(nra_settings.CONNTRACK_PRIORITY.json_schema())}}}]


def generated(current: dict[str, Any]) -> dict[str, Any]:
    schema = json.loads(json.dumps(current))
    schema["properties"]["env"]["properties"] = env_properties()
    schema["properties"]["env"]["allOf"] = env_together()
    return schema


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_or_check(path: Path, wanted: str, argv: list[str], script: str) -> int:
    """Write the generated file, or with --check exit 1 when the file differs from it."""
    if "--check" in argv:
        if not path.exists() or path.read_text() != wanted:
            print(f"{path.relative_to(REPO)} is stale: run scripts/{script}", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


def main(argv: list[str]) -> int:
    return write_or_check(SCHEMA, dump(generated(json.loads(SCHEMA.read_text()))), argv, "chart_schema.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
