"""The release, amd64 only: `scripts/release` builds the image without a registry, writes it
as OCI archives with its manifest list, packages the chart, and `nra` runs in the image.

`NRA_ARCHES=amd64 scripts/release` (arm64 under QEMU is left to the release itself: minutes
of emulation) runs `scripts/build-image --arch amd64`, which makes a Debian bookworm base with
debootstrap, cached under NRA_IMAGE_CACHE (default /var/cache/nra-image), checks its packages
against image/base-amd64.lock, imports it, builds the Dockerfile on it with buildah (pip
installs requirements.lock with --require-hashes) and checks the result (`nra --help`,
`nra --version`, no gcc, `ip` present). Then these tests run nra in the image itself with no
network, compare the image's virtualenv with the lock, and read the artefacts back.

Cost: the first run on a machine debootstraps the base (a few minutes, Debian's mirror) and
downloads the locked wheels; later runs reuse the cached base tarball, the imported base and
the image's layers (buildah --layers: the dependency layer while the lock is unchanged), and
rebuild only what changed. scripts/setup installs buildah, podman and debootstrap; the suite
runs as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import yaml

import pytest

from tests.ship.lockfile import LINUX, RUNTIME_LOCK, read_lock

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "charts" / "nra" / "values.yaml").read_text())
REPO_NAME = f"{VALUES['image']['registry']}/{VALUES['image']['repository']}"
VERSION = yaml.safe_load((REPO / "charts" / "nra" / "Chart.yaml").read_text())["appVersion"]
IMAGE = f"{REPO_NAME}:{VERSION}-amd64"


def in_image(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv in IMAGE with no network: podman run, or buildah run if podman cannot start it."""
    probe = subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", "/bin/true", IMAGE],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        return subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", argv[0], IMAGE,
                               *argv[1:]], capture_output=True, text=True, timeout=120)
    ctr = subprocess.run(["buildah", "from", "--pull=never", IMAGE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    try:
        return subprocess.run(["unshare", "--net", "buildah", "run", "--isolation", "chroot", ctr, "--", *argv],
                              capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([str(REPO / "scripts" / "release")], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "NRA_ARCHES": "amd64", "NRA_RELEASE_DIR": str(out)})
    (out / "release.out").write_text(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def built(dist: Path) -> str:
    return (dist / "build-amd64.log").read_text()


def test_build_script_checks(built: str) -> None:
    assert "base packages match base-amd64.lock" in built
    assert "usage: nra" in built
    assert "machine: x86_64" in built
    assert "gcc: absent" in built
    assert "ip utility, iproute2" in built
    assert f"{IMAGE}: linux/amd64 " in built and " bytes (" in built


def test_nra_runs_in_image(built: str) -> None:
    help_ = in_image("nra", "--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: nra")
    version = in_image("nra", "--version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout + version.stderr


def test_image_config(built: str) -> None:
    out = subprocess.run(["buildah", "inspect", "--format",
                          "{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}} {{.OCIv1.Config.User}} "
                          "{{.OCIv1.Architecture}}", IMAGE],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[nra]", "[run]", "0", "amd64"]


def test_image_venv_is_the_lock(built: str) -> None:
    """The agent's virtualenv holds exactly the lock's packages at the lock's versions, plus nra
    and nothing else (pip and setuptools removed)."""
    listing = in_image("/opt/nra/bin/python", "-c",
                       "import importlib.metadata as m, json; "
                       "print(json.dumps(sorted((d.metadata['Name'], d.version) for d in m.distributions())))")
    assert listing.returncode == 0, listing.stderr
    from packaging.utils import canonicalize_name
    installed = {canonicalize_name(name): version for name, version in json.loads(listing.stdout)}
    locked = {p.name: p.version for p in read_lock(RUNTIME_LOCK) if p.applies(LINUX["x86_64"])}
    assert installed == {**locked, "nra": "0.1.0"}


def oci_json(tar: tarfile.TarFile, digest: str) -> dict:
    return json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))


def test_release_artefacts(dist: Path) -> None:
    """The OCI archives hold the image and the index naming it, the chart package is the chart
    with the image the release built, and SHA256SUMS matches the files; the release's own
    summary names each file with its size and sha256 and ran `nra --version` in the image."""
    printed = (dist / "release.out").read_text()
    sums = dict(reversed(line.split()) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f"nra-{VERSION}-linux-amd64.oci.tar", f"nra-{VERSION}.oci.tar", f"nra-{VERSION}.tgz"}
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest, name
        assert f"{dist / name}  " in printed and f"sha256:{digest}" in printed, printed
    assert f"linux/amd64: nra {VERSION}, machine x86_64 (native)" in printed, printed

    with tarfile.open(dist / f"nra-{VERSION}-linux-amd64.oci.tar") as tar:
        (single,) = json.load(tar.extractfile("index.json"))["manifests"]
        config = oci_json(tar, oci_json(tar, single["digest"])["config"]["digest"])
    assert single["annotations"]["org.opencontainers.image.ref.name"] == f"{VERSION}-amd64"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert (config["config"]["Entrypoint"], config["config"]["Cmd"]) == (["nra"], ["run"])
    with tarfile.open(dist / f"nra-{VERSION}.oci.tar") as tar:
        (top,) = json.load(tar.extractfile("index.json"))["manifests"]
        index = oci_json(tar, top["digest"])
        (entry,) = index["manifests"]
        oci_json(tar, entry["digest"])   # the image itself is in the archive
    assert top["annotations"]["org.opencontainers.image.ref.name"] == VERSION
    assert index["mediaType"] in ("application/vnd.oci.image.index.v1+json",
                                  "application/vnd.docker.distribution.manifest.list.v2+json")
    assert entry["platform"]["architecture"] == "amd64" and entry["platform"]["os"] == "linux"
    assert f"image index {top['digest']}" in printed

    with tarfile.open(dist / f"nra-{VERSION}.tgz") as tar:
        chart = yaml.safe_load(tar.extractfile("nra/Chart.yaml"))
        values = yaml.safe_load(tar.extractfile("nra/values.yaml"))
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    assert f"{values['image']['registry']}/{values['image']['repository']}:{chart['appVersion']}" == IMAGE[:-len("-amd64")]


def test_one_image_name_everywhere() -> None:
    """The chart's default image is the one the release builds and the one deploy/ names."""
    for kustomization in (REPO / "deploy").rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text()).get("images", []):
            assert entry["name"] == REPO_NAME, kustomization
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"released images ({REPO_NAME}," in dockerfile


def fake_repo_and_cache(tmp_path: Path, status: str, lock: str) -> tuple[Path, Path]:
    """A copy of scripts/build-image beside a lock, and a cache holding a base tarball that is
    only a dpkg database: enough for the pin check, which runs before anything is built."""
    repo, cache, root = tmp_path / "repo", tmp_path / "cache", tmp_path / "root"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "build-image").write_bytes((REPO / "scripts" / "build-image").read_bytes())
    (repo / "scripts" / "build-image").chmod(0o755)
    (repo / "image").mkdir()
    (repo / "image" / "base-amd64.lock").write_text(lock)
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text(status)
    cache.mkdir()
    tarball = cache / "nra-base-bookworm-amd64-v3.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
    (cache / (tarball.name + ".sha256")).write_text(
        f"{hashlib.sha256(tarball.read_bytes()).hexdigest()}  {tarball.name}\n")
    return repo, cache


STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u14

Package: python3.11
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u7

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def run_build_image(repo: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / "scripts" / "build-image"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NRA_IMAGE_CACHE": str(cache),
                                            "NRA_IMAGE": "localhost/nra:never-built"})


def test_a_base_that_differs_from_its_lock_is_refused(tmp_path: Path) -> None:
    lock = "# header\nlibc6 2.36-9+deb12u13 amd64\npython3.11 3.11.2-6+deb12u7 amd64\n"
    repo, cache = fake_repo_and_cache(tmp_path, STATUS, lock)
    done = run_build_image(repo, cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the amd64 base differs from" in done.stderr
    assert "< libc6 2.36-9+deb12u13 amd64" in done.stderr and "> libc6 2.36-9+deb12u14 amd64" in done.stderr
    assert "python3.11" not in done.stderr and "gone" not in done.stderr   # only the difference; removed packages are not in the base
    assert "buildah bud" not in done.stdout


def test_a_cached_base_whose_bytes_changed_is_refused(tmp_path: Path) -> None:
    lock = "libc6 2.36-9+deb12u14 amd64\npython3.11 3.11.2-6+deb12u7 amd64\n"
    repo, cache = fake_repo_and_cache(tmp_path, STATUS, lock)
    with open(cache / "nra-base-bookworm-amd64-v3.tar", "ab") as tarball:
        tarball.write(b"\0" * 512)
    done = run_build_image(repo, cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not match its recorded sha256" in done.stderr
    assert "buildah bud" not in done.stdout


def test_an_unknown_architecture_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([str(REPO / "scripts" / "build-image"), "--arch", "mips"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "--arch 'mips' is not supported (amd64 or arm64)" in done.stderr
