"""requirements.lock pins exactly nra's runtime dependencies, each file by hash; .venv holds it.

scripts/lock writes the lock from pyproject.toml; the image (Dockerfile) and scripts/setup
install it with `pip --require-hashes`. These tests fail when pyproject.toml's dependencies
and the lock drift apart (a dependency added, removed or re-ranged without `scripts/lock`),
when a line is not an exact, hashed pin, or when the virtualenv the tests run in is not the
lock's. The dependency closure is walked through the installed distributions' own metadata
(Requires-Dist), for Linux on both image architectures.
"""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ship.lockfile import BUILD_LOCK, LINUX, REPO, RUNTIME_LOCK, Pin, read_lock

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def applicable(pins: list[Pin], env: dict[str, str]) -> dict[str, Pin]:
    return {p.name: p for p in pins if p.applies(env)}


def closure(roots: list[Requirement], env: dict[str, str]) -> set[str]:
    """The names of every distribution that roots need in env, through the installed metadata."""
    seen: set[str] = set()
    todo = [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            sub = Requirement(line)
            # a requirement of the distribution itself, or of one of the extras asked for
            wanted = [""] + sorted(extras)
            if any(sub.marker is None or sub.marker.evaluate({**env, "extra": e}) for e in wanted):
                todo.append((Requirement(str(sub).split(";")[0]), ""))
    return {k.split("[")[0] for k in seen}


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_line_is_an_exact_pin_with_hashes(lock: Path) -> None:
    pins = read_lock(lock)   # raises on a line that is not name==version plus sha256 hashes
    assert pins
    for pin in pins:
        assert pin.hashes, f"{lock.name}: {pin.line} has no --hash"
    assert len({p.name for p in pins}) == len(pins), f"{lock.name}: a package pinned twice"


@pytest.mark.parametrize(("lock", "requirements"), [
    (RUNTIME_LOCK, PYPROJECT["project"]["dependencies"]),
    (BUILD_LOCK, PYPROJECT["build-system"]["requires"]),
], ids=["runtime", "build"])
def test_every_declared_requirement_is_pinned_within_its_range(lock: Path, requirements: list[str]) -> None:
    for env in LINUX.values():
        pins = applicable(read_lock(lock), env)
        for line in requirements:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock.name} has no pin for {line!r} (pyproject.toml): run scripts/lock"
            assert req.specifier.contains(pins[name].version, prereleases=True), (
                f"{lock.name} pins {name}=={pins[name].version}, outside pyproject.toml's {line!r}: run scripts/lock")


@pytest.mark.parametrize("arch", sorted(LINUX))
def test_the_lock_is_exactly_the_dependency_closure(arch: str) -> None:
    env = LINUX[arch]
    pins = applicable(read_lock(RUNTIME_LOCK), env)
    needed = closure([Requirement(r) for r in PYPROJECT["project"]["dependencies"]], env)
    assert needed - pins.keys() == set(), f"needed but not locked (run scripts/lock): {sorted(needed - pins.keys())}"
    assert pins.keys() - needed == set(), f"locked but not needed (run scripts/lock): {sorted(pins.keys() - needed)}"


def test_the_virtualenv_holds_the_locked_versions() -> None:
    """scripts/setup installed the lock (this is the venv CI runs in): same versions, no other
    version of a locked package."""
    pins = applicable(read_lock(RUNTIME_LOCK), LINUX[platform.machine()])
    wrong = {name: (pin.version, metadata.version(name)) for name, pin in pins.items()
             if metadata.version(name) != pin.version}
    assert wrong == {}, f"locked vs installed (run scripts/setup): {wrong}"
