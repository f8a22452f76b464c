"""scripts/setup --run (what scripts/try uses) installs only what running nra needs and
leaves the host's services alone; the test toolchain is the full setup's. Run against a
copy of the scripts with recording stand-ins for apt-get and systemctl on PATH, and a PATH
on which the tools are missing, so every branch that installs is taken."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'


def run_setup(tmp_path: Path, *args: str) -> list[str]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup", repo / "scripts" / "setup")
    (repo / "scripts" / "cluster").write_text(RECORDER)  # the test cluster's build: recorded
    (repo / "scripts" / "cluster").chmod(0o755)
    (repo / "pyproject.toml").write_text("")
    # a virtualenv that is already set up (stamps newer than pyproject.toml): no pip runs
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv_bin / "python").chmod(0o755)
    for level in ("run", "test"):
        (repo / ".venv" / f".nra-installed-{level}").touch()
    for helm in ("helm3", "helm4"):
        (repo / ".venv" / helm).mkdir()
        (repo / ".venv" / helm / "helm").write_text("#!/bin/sh\n")
        (repo / ".venv" / helm / "helm").chmod(0o755)
    (repo / ".venv" / "prometheus-operator-models" / "cloudcoil" / "models" / "prometheus_operator").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "systemctl"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "ldconfig").write_text("#!/bin/sh\necho '	libnftables.so.1 (libc6,x86-64) => /x'\n")
    (bin_dir / "ldconfig").chmod(0o755)
    for tool in ("bash", "sh", "grep", "dirname", "basename", "python3", "mktemp", "rm", "cat", "touch", "echo"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    calls = tmp_path / "calls"
    calls.touch()
    done = subprocess.run(["bash", str(repo / "scripts" / "setup"), *args], capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "CALLS": str(calls)}, timeout=60)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def test_setup_for_running_installs_only_what_nra_needs_and_touches_no_service(tmp_path):
    calls = run_setup(tmp_path, "--run")
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    packages = set(installs[0].split()[5:])
    assert "iproute2" in packages and packages <= {"iproute2", "libnftables1", "python3-venv"}, calls
    assert not [c for c in calls if c.startswith("systemctl")], calls
    assert "cluster build" not in calls, calls  # running nra needs no Kubernetes build


def test_full_setup_installs_the_toolchain_and_stops_only_what_it_started(tmp_path):
    calls = run_setup(tmp_path)
    (install,) = [c for c in calls if c.startswith("apt-get install")]
    assert "cluster build" in calls, calls  # the real-cluster tests' binaries, built or reused
    for package in ("iproute2", "bird2", "nftables", "iptables", "kubernetes-client", "prometheus", "openssl",
                    # the image: tests/ship/test_image.py and scripts/release (arm64 under QEMU)
                    "buildah", "podman", "debootstrap", "qemu-user-static", "binfmt-support"):
        assert package in install.split(), install
    assert [c for c in calls if c.startswith("systemctl")] == ["systemctl disable --now bird",
                                                               "systemctl disable --now prometheus"]
