"""The package layout's rules, read from the source: imports run one way (each package's
__init__ says what it may import), the planner knows no return path, and only the wiring
asks which return path is configured."""

from __future__ import annotations

import ast
import re
from pathlib import Path

NRA = Path(__file__).resolve().parents[2] / "nra"

#: package -> the nra packages it may import (besides itself and nra's own __init__)
MAY_IMPORT = {
    "config": set(),
    "kernel": {"config"},
    "settings": {"config", "kernel"},
    "plan": {"config", "kernel"},
    "observe": {"config", "settings", "plan"},
    "sources": {"config", "observe", "settings"},
    "daemon": {"config", "kernel", "plan", "observe", "sources", "settings"},
}
#: what of the kernel package the pure plan may use: its vocabulary, no I/O
KERNEL_VOCABULARY = {"nra.kernel.model", "nra.kernel.operations", "nra.kernel.nft_table", "nra.kernel.marks",
                     "nra.kernel.rule_set"}


def imports() -> dict[str, set[str]]:
    """module -> the nra modules it imports (anywhere in it, functions included)."""
    found: dict[str, set[str]] = {}
    for path in NRA.rglob("*.py"):
        module = ".".join(path.relative_to(NRA.parent).with_suffix("").parts).removesuffix(".__init__")
        names = found.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nra."):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("nra."))
    return found


def package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_imports_run_one_way():
    wrong = [(m, n) for m, names in imports().items() if package(m) in MAY_IMPORT
             for n in names if package(n) not in MAY_IMPORT[package(m)] | {package(m), "__version__"}]
    assert wrong == []


def test_the_plan_uses_only_the_kernels_vocabulary():
    wrong = [(m, n) for m, names in imports().items() if package(m) == "plan"
             for n in names if package(n) == "kernel" and n not in KERNEL_VOCABULARY]
    assert wrong == []


def test_return_paths_build_on_the_planner_which_knows_none_of_them():
    found = imports()
    assert not any(n.startswith("nra.plan.return_path") for n in found["nra.plan.planner"])
    for strategy in ("rules", "conntrack"):
        names = found[f"nra.plan.return_path.{strategy}"]
        assert {"nra.plan.planner", "nra.plan.return_path.base"} <= names
        assert not any(n.startswith(("nra.daemon", "nra.settings")) for n in names)


def test_only_the_wiring_asks_which_return_path():
    # (nra/settings checks the conntrack settings only when they apply: a setting's own check)
    askers = {str(p.relative_to(NRA.parent)) for p in NRA.rglob("*.py")
              if re.search(r"\.return_path\s*[!=]=", p.read_text())}
    assert askers - {"nra/settings/__init__.py"} == {"nra/daemon/wiring.py"}


def test_one_reconcile_goes_down_the_layers_and_never_climbs_back():
    """A call trace of one reconcile per return path (on the in-memory kernel): every call
    between the reconciler, the return path and the planner goes down that order."""
    import asyncio
    import sys

    from tests.unit import test_reconcile_loop as loop

    layer = {"nra.daemon.reconciler": 0, "nra.plan.return_path": 1, "nra.plan.planner": 2}

    def layer_of(frame) -> int | None:
        name = frame.f_globals.get("__name__", "")
        return next((v for k, v in layer.items() if name == k or name.startswith(k + ".")), None)

    climbs: set[tuple[str, str]] = set()
    seen: set[tuple[int, int]] = set()

    def profile(frame, event, _arg) -> None:
        if event != "call" or frame.f_back is None:
            return
        callee, caller = layer_of(frame), layer_of(frame.f_back)
        if callee is None or caller is None or callee == caller:
            return
        seen.add((caller, callee))
        if callee < caller:
            climbs.add((frame.f_back.f_globals["__name__"] + "." + frame.f_back.f_code.co_name,
                        frame.f_globals["__name__"] + "." + frame.f_code.co_name))

    for path in (loop.rules_path(), loop.conntrack_path()):
        kernel = loop.FakeKernel(20, path.reads, lladdrs=loop.MACS)
        reconciler = loop.Reconciler(kernel, loop.ReconcileConfig(path))
        sys.setprofile(profile)
        try:
            outcome = asyncio.run(reconciler.reconcile(loop.WANT, "trace", hooks=False))
        finally:
            sys.setprofile(None)
        assert outcome.ok
    assert climbs == set()
    assert {(0, 1), (1, 2)} <= seen  # (the trace saw the calls it judges)
