"""The wheel the Dockerfile builds installs into a clean virtualenv and runs.

Same steps as the Dockerfile's build stage (pip wheel --no-deps, venv, install the
wheel, run the `nra` entry point), from outside the checkout so nothing is imported
from the source tree. The dependencies come from the project's venv through a .pth
file: installing them again would only re-test pip and take ~25 s.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.helpers import TWO_PEERS_V4_V6, clean_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the nra wheel; returns its bin/ directory."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stderr
    wheel, = (root / "dist").glob("nra-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    target = venv / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(target), "install", "--no-deps",
                           "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    purelib = subprocess.run([str(target), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The project venv's site-packages, for the dependencies only (nra itself is an
    # editable install there, which this .pth does not bring in).
    (Path(purelib) / "zz_project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def run_installed(bin_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # cwd outside the checkout: `import nra` must find the installed wheel, not ./nra
    return subprocess.run([str(bin_dir / "nra"), *args], cwd="/", env=env or clean_env(),
                          capture_output=True, text=True, timeout=60)


def test_wheel_holds_every_module(installed):
    where = subprocess.run(
        [str(installed / "python"), "-c",
         "import nra, nra.observe.server, nra.daemon.agent, nra.sources.kube, nra.sources.static_file; print(nra.__file__)"],
        cwd="/", capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(installed.parent)), where.stdout


def test_entry_point_runs(installed):
    from nra import __version__

    help_ = run_installed(installed, "--help")
    assert help_.returncode == 0 and "TABLE_WEIGHT" in help_.stdout
    version = run_installed(installed, "--version")
    assert version.returncode == 0 and __version__ in version.stdout + version.stderr


def test_installed_agent_programs_a_namespace(installed, node_ns, tmp_path):
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    done = run_installed(installed, "--oneshot", "--static-file", str(config), "--netns", node_ns.name)
    assert done.returncode == 0, done.stderr
    route = " ".join(node_ns.routes("-4"))
    assert "10.99.0.2" in route and "10.99.0.3" in route
    assert any("198.51.100.0/26" in rule for rule in node_ns.rules("-4"))
