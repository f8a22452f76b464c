"""The BIRD lab, brought up once per module and always torn down, and nra run against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from testbed.lab import Lab

REPO = Path(__file__).resolve().parents[2]

# Figures measured by the tests, printed at the end of the run (pytest captures test output).
FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("nra lab figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def _missing_tools() -> list[str]:
    return [t for t in ("bird", "birdc", "nft", "ping", "ip", "iptables-nft-restore", "conntrack") if shutil.which(t) is None]


@contextmanager
def lab_up(name: str, lab_class: type = Lab, **options):
    """A lab of its own (namespaces nrae2e<pid><name>-*), up with its echo servers, always
    torn down. `lab_class`: testbed.lab.Lab, or another topology built on it."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    if missing := _missing_tools():
        pytest.fail(f"the lab needs {', '.join(missing)} (scripts/setup installs them)")
    # A short run dir: BIRD's control socket path must fit in a unix socket address.
    run_dir = Path(tempfile.mkdtemp(prefix="nrae2e-"))
    lab = lab_class(prefix=f"nrae2e{os.getpid()}{name}", run_dir=run_dir, **options)
    try:
        FIGURES[f"{name or 'lab'}: BGP sessions established after BIRD start"] = f"{lab.up():.2f} s"
        lab.start_echo()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lab():
    """The lab with plain routers (they forward any reply): what `rules` mode was built for."""
    with lab_up("", stateful_routers=False) as lab:
        yield lab


@contextmanager
def nra_daemon(lab: Lab, *extra: str, wait: bool = True):
    """The real nra daemon (the CLI, as a user runs it) programming the lab's node namespace."""
    nra_argv = [sys.executable, "-m", "nra", *lab.nra_argv()[1:], "--log-level", "debug", *extra]
    log = open(lab.run_dir / "nra.log", "a")
    proc = subprocess.Popen(nra_argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    (lab.run_dir / "nra.pid").write_text(str(proc.pid))
    try:
        if wait:
            lab.wait_table(present=True)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        (lab.run_dir / "nra.pid").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def nra(lab):
    with nra_daemon(lab) as proc:
        yield proc
