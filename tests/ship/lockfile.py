"""Reading requirements.lock (pip's hash-checking format, written by scripts/lock): shared by the
lock test and the image test."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO / "requirements.lock"
BUILD_LOCK = REPO / "requirements-build.lock"

# The platforms the image is built for (Debian bookworm's Python 3.11).
LINUX = {arch: {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
                "platform_system": "Linux", "os_name": "posix", "platform_machine": arch,
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "platform_release": "", "platform_version": "", "extra": ""}
         for arch in ("x86_64", "aarch64")}


@dataclass(frozen=True)
class Pin:
    name: str          # canonical
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]
    line: str

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(env)


_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*$")


def read_lock(path: Path) -> list[Pin]:
    """Every requirement of the lock, its continuation lines joined; comments dropped. A line
    that is not `name==version [; marker]` followed by `--hash=sha256:...` options raises."""
    pins: list[Pin] = []
    logical: list[str] = []
    for raw in path.read_text().splitlines() + [""]:
        stripped = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            logical.append(stripped[:-1].strip())
            continue
        if stripped:
            logical.append(stripped)
        if not logical:
            continue
        head, *options = logical
        logical = []
        m = _PIN.match(head)
        if m is None:
            raise ValueError(f"{path.name}: not an exact pin: {head!r}")
        hashes = []
        for option in options:
            if not option.startswith("--hash=sha256:") or not re.fullmatch(r"[0-9a-f]{64}", option[14:]):
                raise ValueError(f"{path.name}: {head!r}: not a sha256 hash option: {option!r}")
            hashes.append(option[14:])
        pins.append(Pin(canonicalize_name(m["name"]), m["version"],
                        Marker(m["marker"]) if m["marker"] else None, tuple(hashes), head))
    return pins
