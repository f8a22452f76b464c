"""A real Kubernetes API server for the tests: etcd and kube-apiserver on loopback.

`scripts/cluster build|up|status|down` (see docs/cluster.md). The binaries are built from the
Go module proxy, never copied into the project: `k8s.io/kubernetes` (kube-apiserver, kubectl)
and `go.etcd.io/etcd/server/v3` (etcd), each in a throwaway module in a temporary directory,
into a cache outside the repository keyed by version (CACHE/<component>-<version>/), so a
machine builds them once and CI reuses them.

`up` generates a CA and serving certificates (openssl), an admin token (--token-auth-file),
service account signing keys (TokenRequest works without a controller-manager), starts etcd
and kube-apiserver with RBAC on free loopback ports, installs the MetalLB and FRR-K8s CRDs
from ../shared and writes an admin kubeconfig. Everything `up` writes lives in one state
directory; `down` stops the processes it started (by pid) and removes it.

Standard library only, like the rest of the test bed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import free_port

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NRA_SHARED", REPO.parent / "shared"))
if not SHARED.is_dir() and Path("/work/shared").is_dir():  # a worktree beside the main checkout
    SHARED = Path("/work/shared")

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.17"
CACHE = Path(os.environ.get("NRA_CLUSTER_CACHE", "/var/cache/nra-cluster"))
DEFAULT_STATE = Path(os.environ.get("NRA_CLUSTER_DIR", "/run/nra-cluster"))
GO_CANDIDATES = ("go", "/usr/local/go/bin/go", "/usr/lib/go/bin/go")
# The CRD directories installed by `up` (relative to ../shared).
CRD_DIRS = ("metallb/crds", "frr-k8s/crds")


class ClusterError(RuntimeError):
    """The cluster cannot be built, started or reached; the message says what and why."""


# -- build ------------------------------------------------------------------------------------------

def kubernetes_dir(version: str = KUBERNETES_VERSION) -> Path:
    return CACHE / f"kubernetes-{version}"


def etcd_dir(version: str = ETCD_VERSION) -> Path:
    return CACHE / f"etcd-{version}"


def binaries() -> dict[str, Path]:
    """Where the cached binaries are (whether or not they are built yet)."""
    k8s = kubernetes_dir()
    return {
        "etcd": etcd_dir() / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kubectl": k8s / "kubectl",
        "kube-proxy": k8s / "kube-proxy",  # the lab's (testbed/kubelab.py)
        **_lab_binaries(),
    }


def _lab_binaries() -> dict[str, Path]:
    from testbed.kubelab import metallb_binaries  # the lab's MetalLB, built with the rest

    return metallb_binaries()


def missing_binaries() -> list[str]:
    return [name for name, path in binaries().items() if not os.access(path, os.X_OK)]


def find_go() -> str:
    for candidate in GO_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    raise ClusterError(
        "cannot build the test cluster: no `go` toolchain (looked for "
        + ", ".join(GO_CANDIDATES) + "); install Go >= 1.26 with access to the module proxy "
        f"or put prebuilt binaries in {CACHE}"
    )


def _go(go: str, args: list[str], cwd: Path, log) -> None:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GOWORK="off")
    log(f"cluster: go {' '.join(args)}")
    proc = subprocess.run(["nice", "-n", "19", go, *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"go {' '.join(args)} failed in {cwd}:\n{proc.stdout[-4000:]}")


def _staging_modules(go: str, version: str, workdir: Path, log) -> list[str]:
    """The k8s.io modules k8s.io/kubernetes requires at v0.0.0 (its staging/ tree)."""
    _go(go, ["mod", "download", f"k8s.io/kubernetes@{version}"], workdir, log)
    out = subprocess.run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                         cwd=workdir, capture_output=True, text=True, check=True).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    staging = []
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("k8s.io/") and parts[1] == "v0.0.0":
            staging.append(parts[0])
    if not staging:
        raise ClusterError(f"k8s.io/kubernetes@{version}: no staging modules in its go.mod")
    return sorted(set(staging))


def _install(built: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copy2(built, part)
    part.chmod(0o755)
    part.rename(dest)


def build_kubernetes(version: str = KUBERNETES_VERSION, log=print) -> None:
    dest = kubernetes_dir(version)
    wanted = [c for c in ("kube-apiserver", "kubectl", "kube-proxy") if not os.access(dest / c, os.X_OK)]
    if not wanted:
        return
    go = find_go()
    published = "v0." + version.split(".", 1)[1]  # v1.37.2 -> v0.37.2
    with tempfile.TemporaryDirectory(prefix="nra-k8s-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module nra.invalid/cluster-build\n\ngo 1.26\n")
        staging = _staging_modules(go, version, work, log)
        replace = "".join(f"\t{m} => {m} {published}\n" for m in staging)
        (work / "go.mod").write_text(
            "module nra.invalid/cluster-build\n\ngo 1.26\n\n"
            f"require k8s.io/kubernetes {version}\n\nreplace (\n{replace})\n"
        )
        major, minor = version.lstrip("v").split(".")[:2]
        ldflags = " ".join(
            f"-X {pkg}.{key}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in (("gitVersion", version), ("gitMajor", major),
                               ("gitMinor", minor), ("gitTreeState", "clean"))
        )
        for component in wanted:
            _go(go, ["get", f"k8s.io/kubernetes/cmd/{component}@{version}"], work, log)
        for component in wanted:
            start = time.monotonic()
            _go(go, ["build", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o",
                     str(work / component), f"k8s.io/kubernetes/cmd/{component}"], work, log)
            _install(work / component, dest / component)
            log(f"cluster: built {dest / component} in {time.monotonic() - start:.0f} s")


ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def build_etcd(version: str = ETCD_VERSION, log=print) -> None:
    dest = etcd_dir(version) / "etcd"
    if os.access(dest, os.X_OK):
        return
    go = find_go()
    with tempfile.TemporaryDirectory(prefix="nra-etcd-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(
            f"module nra.invalid/etcd-build\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 {version}\n"
        )
        (work / "main.go").write_text(ETCD_MAIN)
        start = time.monotonic()
        _go(go, ["mod", "tidy"], work, log)
        _go(go, ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(work / "etcd"), "."], work, log)
        _install(work / "etcd", dest)
        log(f"cluster: built {dest} in {time.monotonic() - start:.0f} s")


def build(log=print) -> dict[str, Path]:
    """Build what is missing from the cache; return where the binaries are."""
    if missing_binaries():
        import fcntl

        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".build.lock", "w") as lock:
            # two checkouts set up at once: the second waits and then finds the binaries
            fcntl.flock(lock, fcntl.LOCK_EX)
            build_etcd(log=log)
            build_kubernetes(log=log)
            from testbed.kubelab import build_metallb

            build_metallb(log=log)
    missing = missing_binaries()
    if missing:
        raise ClusterError(f"build finished but {', '.join(missing)} missing from {CACHE}")
    return binaries()


# -- run --------------------------------------------------------------------------------------------

ADMIN_USER = "nra-admin"
# Dual-stack: the lab (testbed/kubelab.py) has an IPv6 Service beside its IPv4 one.
SERVICE_CIDR = "10.96.0.0/16,fd00:96::/112"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)}: {proc.stderr.strip()}")


def make_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate for 127.0.0.1 and the in-cluster names,
    and the service account signing key pair."""
    if shutil.which("openssl") is None:
        raise ClusterError("openssl is needed to generate the test cluster's certificates (apt-get install openssl)")
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=nra-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    (pki / "serving.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "apiserver.key", "-out", "apiserver.csr", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", "serving.ext", "-out", "apiserver.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(server: str, ca_file: Path, token: str, user: str) -> str:
    import base64

    ca = base64.b64encode(ca_file.read_bytes()).decode()
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [{"name": "nra-test", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "nra-test", "user": user}}],
    }, indent=1) + "\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pid: int, timeout: float = 15.0) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass  # not our child: poll
        if not _alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@dataclass
class Cluster:
    """One etcd and one kube-apiserver, everything they write under `state`."""

    state: Path = DEFAULT_STATE

    # -- where things are --
    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin identity (system:masters)."""
        return self.state / "admin.kubeconfig"

    @property
    def info_file(self) -> Path:
        return self.state / "cluster.json"

    def info(self) -> dict:
        try:
            return json.loads(self.info_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **changes) -> None:
        info = {**self.info(), **changes}
        part = self.info_file.with_suffix(".part")
        part.write_text(json.dumps(info, indent=1) + "\n")
        part.rename(self.info_file)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.info()['apiserver_port']}"

    @property
    def admin_token(self) -> str:
        return self.info()["admin_token"]

    def is_up(self) -> bool:
        info = self.info()
        return bool(info) and all(_alive(info.get(f"{c}_pid", 0) or 0) for c in ("etcd", "apiserver"))

    # -- the processes --
    def _spawn(self, name: str, argv: list[str]) -> int:
        log = open(self.state / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.state)
        log.close()
        return proc.pid

    def start_etcd(self) -> None:
        info = self.info()
        port, peer = info["etcd_port"], info["etcd_peer_port"]
        pid = self._spawn("etcd", [
            str(binaries()["etcd"]), "--name", "nra-test", "--data-dir", str(self.state / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{port}",
            "--advertise-client-urls", f"http://127.0.0.1:{port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"nra-test=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", "",
            "--unsafe-no-fsync",  # test data: fsync only costs the shared disk
            "--log-level", "warn",
        ])
        self._save(etcd_pid=pid)
        self._wait(lambda: self._etcd_healthy(port), 30, "etcd", pid)

    def stop_etcd(self) -> None:
        _stop(self.info().get("etcd_pid", 0) or 0)

    def _etcd_healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def start_apiserver(self) -> None:
        info, pki = self.info(), self.pki
        pid = self._spawn("kube-apiserver", [
            str(binaries()["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{info['etcd_port']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={info['apiserver_port']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.state / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            # Pods are never created here (no controller-manager, no kubelet), so admission
            # only meets DaemonSets, CronJobs and the like: the defaults accept them.
            "--endpoint-reconciler-type=none",
            # stop at once under open watches (else it waits for them until the kill)
            "--shutdown-watch-termination-grace-period=1s",
            # A compacted watch must answer 410 soon after an etcd compaction (tests).
            "--etcd-compaction-interval=0",
            "-v=1",
        ])
        self._save(apiserver_pid=pid)
        self._wait(self._apiserver_ready, 90, "kube-apiserver", pid)

    def stop_apiserver(self) -> None:
        _stop(self.info().get("apiserver_pid", 0) or 0)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki / "ca.crt"))

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None,
                timeout: float = 10) -> tuple[int, dict]:
        """One API request as admin (or `token`); returns (status, JSON body); a body that is
        not a JSON object comes back as {"message": text}."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            doc = json.loads(raw)
        except ValueError:  # /readyz and friends answer text
            doc = None
        return status, doc if isinstance(doc, dict) else {"message": raw.decode("utf-8", "replace")}

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz", timeout=2)
        except (OSError, ValueError, KeyError):
            return False
        return status == 200

    def _wait(self, ready, timeout: float, what: str, pid: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not _alive(pid):
                raise ClusterError(f"{what} exited at start; the end of {self.state / (what + '.log')}:\n"
                                   + self._log_tail(what))
            time.sleep(0.1)
        raise ClusterError(f"{what} not ready within {timeout:g} s; the end of its log:\n" + self._log_tail(what))

    def _log_tail(self, what: str, lines: int = 25) -> str:
        try:
            return "\n".join((self.state / f"{what}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- whole cluster --
    def up(self, log=print) -> float:
        """Start etcd and kube-apiserver, install the CRDs; returns the seconds it took.
        Raises ClusterError (the binaries missing and not buildable, a component that
        does not start) after stopping whatever it had started."""
        missing = missing_binaries()
        if missing:
            log(f"cluster: {', '.join(missing)} not in {CACHE}; building "
                "(once per machine; ~11 min cold on 2 cores)")
            build(log=log)
        if self.is_up():
            raise ClusterError(f"a test cluster is already up in {self.state} ({self.server}); "
                               "`scripts/cluster down` first")
        started = time.monotonic()
        self.down()
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        try:
            make_pki(self.pki)
            token = os.urandom(24).hex()
            (self.state / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
            self._save(etcd_port=free_port(), etcd_peer_port=free_port(), apiserver_port=free_port(),
                       admin_token=token, kubernetes=KUBERNETES_VERSION, etcd=ETCD_VERSION)
            self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki / "ca.crt", token, ADMIN_USER))
            self.kubeconfig.chmod(0o600)
            self.start_etcd()
            self.start_apiserver()
            self.install_crds()
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def down(self) -> None:
        """Stop what `up` started (by the pids it saved) and remove the state directory."""
        self.stop_apiserver()
        self.stop_etcd()
        if self.state.exists():
            shutil.rmtree(self.state)

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(binaries()["kubectl"]), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def install_crds(self) -> None:
        dirs = [SHARED / d for d in CRD_DIRS]
        absent = [str(d) for d in dirs if not d.is_dir()]
        if absent:
            raise ClusterError(f"the CRDs to install are not there: {', '.join(absent)} (../shared, see NRA_SHARED)")
        for d in dirs:
            self.kubectl("apply", "--server-side", "-f", str(d))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (a resumed watch from before
        then gets 410 Gone); returns that revision."""
        port = self.info()["etcd_port"]

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        import base64

        key = base64.b64encode(b"/").decode()
        revision = int(post("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A token for a ServiceAccount by the TokenRequest API (no controller needed)."""
        status, body = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                     "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise ClusterError(f"TokenRequest for {namespace}/{name}: {status} {body.get('message', body)}")
        return body["status"]["token"]

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        path.write_text(kubeconfig_text(self.server, self.pki / "ca.crt", token, user))
        path.chmod(0o600)
        return path


# -- scripts/cluster --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "up", "status", "down"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_STATE,
                        help=f"state directory (default {DEFAULT_STATE}, or NRA_CLUSTER_DIR)")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    try:
        if args.command == "build":
            started = time.monotonic()
            paths = build()
            for name, path in paths.items():
                print(f"{name}: {path}")
            print(f"cluster: binaries ready in {time.monotonic() - started:.0f} s (cache {CACHE})")
        elif args.command == "up":
            took = cluster.up()
            print(f"cluster: kube-apiserver {KUBERNETES_VERSION} at {cluster.server}, etcd {ETCD_VERSION}, "
                  f"up in {took:.1f} s (state {args.dir}; `scripts/cluster down` stops it)", file=sys.stderr)
            print(f"KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "status":
            if not cluster.is_up():
                print(f"cluster: not up ({args.dir})")
                missing = missing_binaries()
                if missing:
                    print(f"cluster: not built: {', '.join(missing)} missing from {CACHE}")
                return 1
            info = cluster.info()
            print(f"cluster: up at {cluster.server} (kube-apiserver pid {info['apiserver_pid']}, "
                  f"etcd pid {info['etcd_pid']} on 127.0.0.1:{info['etcd_port']})")
            print(f"KUBECONFIG={cluster.kubeconfig}")
        else:
            cluster.down()
            print(f"cluster: down ({args.dir} removed)")
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0
