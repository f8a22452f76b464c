#!/usr/bin/env python3
"""The `env` part of charts/nra/values.schema.json, generated from nra.settings.Settings.

Every setting gets a property named by its environment variable (nra.settings.ENV_NAMES),
typed from the field's annotation, described by its README row. The rest of the schema is
written by hand; only `properties.env.properties` is rewritten.

    .venv/bin/python scripts/chart_schema.py          # rewrite the schema
    .venv/bin/python scripts/chart_schema.py --check  # exit 1 if it is stale (CI does this)
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "charts" / "nra" / "values.schema.json"
README = REPO / "docs" / "settings.md"  # the settings table
sys.path.insert(0, str(REPO))

from nra import settings as nra_settings  # noqa: E402

# What nra's boolean settings accept (nra.settings._flag), besides YAML's true/false.
FLAG_WORDS = sorted(nra_settings._TRUE | nra_settings._FALSE)
INTEGER_TEXT = r"^\s*[+-]?[0-9]+\s*$"
NUMBER_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


def readme_meanings(text: str) -> dict[str, str]:
    """`| \\`VAR\\` | flag | default | meaning |` rows of the README's settings table."""
    meanings = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            meanings[cells[0].strip("`")] = " | ".join(cells[3:]).replace("`", "")
    return meanings


def _type_schema(annotation: Any) -> dict[str, Any]:
    """JSON schema of what a value of this Python type may look like in a values file
    (env values are strings in the pod; numbers and booleans are accepted and quoted)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        inner = [_type_schema(a) for a in options]
        flat = [s for schema in inner for s in schema.get("anyOf", [schema])]
        if type(None) in args:
            flat.append({"type": "null"})
        return flat[0] if len(flat) == 1 else {"anyOf": flat}
    if typing.get_origin(annotation) is typing.Literal:
        return {"enum": list(args)}
    if annotation is bool:
        return {"enum": [True, False, 0, 1, *FLAG_WORDS]}
    if annotation is int:
        return {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": INTEGER_TEXT}]}
    if annotation is float:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": NUMBER_TEXT}]}
    if annotation is str:
        return {"type": "string"}
    # A type this generator does not know yet: any scalar, nra checks it at start.
    return {"type": ["string", "number", "boolean"]}


def env_properties() -> dict[str, Any]:
    meanings = readme_meanings(README.read_text())
    props: dict[str, Any] = {}
    for field_name, field in nra_settings.Settings.model_fields.items():
        env = nra_settings.ENV_NAMES[field_name]
        schema = _type_schema(field.annotation)
        if field_name == "log_level":  # accepted aliases (nra.settings._LOG_LEVEL_ALIASES)
            schema = {"enum": [*schema["enum"], *nra_settings._LOG_LEVEL_ALIASES]}
        # null: leave the setting unset (nra's own default)
        if "anyOf" not in schema:
            schema = {"anyOf": [schema]}
        if {"type": "null"} not in schema["anyOf"]:
            schema["anyOf"].append({"type": "null"})
        description = meanings.get(env) or field.description or ""
        props[env] = {"description": description, **schema}
    return dict(sorted(props.items()))


def generated(current: dict[str, Any]) -> dict[str, Any]:
    schema = json.loads(json.dumps(current))
    schema["properties"]["env"]["properties"] = env_properties()
    return schema


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    current_text = SCHEMA.read_text()
    wanted = dump(generated(json.loads(current_text)))
    if "--check" in argv:
        if wanted != current_text:
            print(f"{SCHEMA.relative_to(REPO)} is stale: run scripts/chart_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
