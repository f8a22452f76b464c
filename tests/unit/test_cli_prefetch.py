"""What the CLI does before the run, once it has the settings: it starts the read of nra's
nft table (nra.kernel.nft.prefetch) before the daemon's modules are imported, in conntrack
mode, for a run or a ONESHOT, never for `plan` or a clean (the read itself, and that a
prefetched read is taken only at its generation, are tested against the kernel in
tests/kernel/test_nft_read.py); and a one-off run (ONESHOT, plan, clean) runs without the
cyclic collector, the daemon with it."""

from __future__ import annotations

import gc

import pytest

import nra.cli
import nra.daemon.modes
import nra.kernel.nft


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """What main() called, in order: the prefetch (with its namespace) and modes.run (stubbed:
    nothing is read or written)."""
    seen: list = []
    for name in ("ONESHOT", "CLEANANDEXIT", "RETURN_PATH", "NRA_NETNS", "METALLB_STATIC_FILE", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(nra.kernel.nft, "prefetch", lambda netns: seen.append(("prefetch", netns)))

    async def run(settings, command="run", output="text"):
        seen.append(("run", command))
        collecting.append(gc.isenabled())
        return 0

    collecting: list[bool] = []
    monkeypatch.setattr(nra.daemon.modes, "run", run)
    config = tmp_path / "config.yaml"
    config.write_text("peers: []\naddress-pools: []\n")
    seen.append(str(config))
    try:
        yield seen, collecting
    finally:
        gc.enable()  # (main() of a one-off run disabled it: the rest of the tests collect)


def main(calls, *argv: str) -> list:
    seen, _ = calls
    assert nra.cli.main([*argv, "--static-file", seen.pop(0)]) == 0
    return seen


@pytest.mark.parametrize("argv", [["--oneshot"], []])
def test_conntrack_mode_starts_the_read_before_the_run(calls, argv):
    assert main(calls, *argv, "--return-path", "conntrack") == [("prefetch", None), ("run", "run")]


@pytest.mark.parametrize("argv,command", [
    (["--return-path", "rules", "--oneshot"], "run"),  # rules mode reads no nft table
    (["plan", "--return-path", "conntrack"], "plan"),  # plan: modes.run reads what it needs
    (["--dry-run", "--return-path", "conntrack"], "plan"),
    (["clean", "--return-path", "conntrack"], "clean"),  # a clean reads only what it removes
])
def test_no_read_is_started_for_the_rest(calls, argv, command):
    assert main(calls, *argv) == [("run", command)]


@pytest.mark.parametrize("argv,collects", [
    (["--oneshot"], False), (["plan"], False), (["--dry-run"], False), (["clean"], False), ([], True),
])
def test_a_one_off_run_runs_without_the_cyclic_collector(calls, argv, collects):
    assert gc.isenabled()
    main(calls, *argv, "--return-path", "conntrack")
    assert calls[1] == [collects]
