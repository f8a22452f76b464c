"""The CLI starts the read of nra's nft table (nra.kernel.nft.prefetch) as soon as the
settings are known, before the daemon's modules are imported: in conntrack mode, for a run
or a ONESHOT; never for `plan` or a clean. (The read itself, and that a prefetched read is
taken only at its generation, are tested against the kernel in tests/kernel/test_nft_read.py.)"""

from __future__ import annotations

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
        return 0

    monkeypatch.setattr(nra.daemon.modes, "run", run)
    config = tmp_path / "config.yaml"
    config.write_text("peers: []\naddress-pools: []\n")
    seen.append(str(config))
    return seen


def main(calls, *argv: str) -> list:
    assert nra.cli.main([*argv, "--static-file", calls.pop(0)]) == 0
    return calls


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
