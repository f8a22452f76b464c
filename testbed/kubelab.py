"""The lab made of the real parts: real kube-proxy and MetalLB in the lab's node namespace,
driven by the test cluster's real kube-apiserver (testbed/cluster.py).

What runs where:

- kube-apiserver and etcd: the root namespace, on loopback (testbed/cluster.py).
- a relay (testbed/nsrelay.py): listens on 127.0.0.1:RELAY_PORT inside the node namespace
  and forwards to the API server's port on the root namespace's loopback; kube-proxy and
  MetalLB reach the API server through it.
- kube-proxy (k8s.io/kubernetes, the same release as the API server), nftables or iptables
  mode, in the node namespace only, with flags that leave every global setting alone:
  `--conntrack-max-per-core=0` (no nf_conntrack_max, a global sysctl, and no hashsize, a
  module parameter), `--conntrack-tcp-timeout-*=0` (it does not set the per-namespace
  timeouts either), `--iptables-localhost-nodeports=false` (no route_localnet).
- MetalLB's controller and speaker (go.universe.tf/metallb), both in the node namespace,
  memberlist off (no --ml-labels). The controller assigns the Service's LB IPs from the
  IPAddressPools; the speaker runs in FRR mode (METALLB_BGP_TYPE=frr: its native BGP refuses
  IPv6 advertisements) and announces both through FRR to the routers' BIRD.
- FRR (Debian's zebra and bgpd) in the node namespace as the frr user, every file it uses
  (vty sockets, zserv socket, pid files, configurations, log) in a directory of its own, none
  in /etc/frr or /var/run/frr; and the lab's reloader (testbed/frr_reloader.py), which the
  speaker signals (SIGHUP, the pid in FRR_RELOADER_PID_FILE) after writing FRR_CONFIG_FILE,
  and which applies that file with FRR's frr-reload.py, as MetalLB's reloader container does.

Objects created in the API server: a Node with status addresses (kube-proxy waits for them),
a Service of type LoadBalancer per family (TCP and UDP on ECHO_PORT, externalTrafficPolicy
Cluster) with an EndpointSlice for the lab's pod, and MetalLB's IPAddressPools,
BGPPeers and BGPAdvertisements (which nra, in CRD mode, reads too).

Standard library only, like the rest of the test bed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import lab as topo
from testbed import cluster as _cluster
from testbed.cluster import Cluster, ClusterError, _go, _install, binaries, find_go, kubeconfig_text

METALLB_VERSION = "v0.15.2"
RELAY_PORT = 6443
NAMESPACE = "nralab"  # the Service's namespace
METALLB_NAMESPACE = "nralab-metallb"  # the lab's MetalLB and its objects (not metallb-system: others' tests use that)
SERVICES = {4: "echo4", 6: "echo6"}
KUBE_PROXY_MODES = ("nftables", "iptables")
FRR_DAEMONS = ("zebra", "bgpd")  # run in this order, stopped in the reverse
FRR_BIN = Path("/usr/lib/frr")
VTYSH = "/usr/bin/vtysh"
RELOADER = Path(__file__).with_name("frr_reloader.py")
# The global settings kube-proxy could write; the lab checks they are unchanged.
GLOBAL_SETTINGS = ("/proc/sys/net/netfilter/nf_conntrack_max", "/sys/module/nf_conntrack/parameters/hashsize")


class KubeLabError(ClusterError):
    pass


# -- build ------------------------------------------------------------------------------------------

def metallb_dir(version: str = METALLB_VERSION) -> Path:
    return _cluster.CACHE / f"metallb-{version}"  # read at call time: NRA_CLUSTER_CACHE, tests


def metallb_binaries() -> dict[str, Path]:
    d = metallb_dir()
    return {"metallb-controller": d / "controller", "metallb-speaker": d / "speaker"}


def metallb_crds() -> Path:
    """MetalLB's own CRDs, copied from the module at build time: ../shared lacks the L2 kinds
    (L2Advertisement, ServiceL2Status) that the speaker watches."""
    return metallb_dir() / "crds"


def build_metallb(version: str = METALLB_VERSION, log=print) -> None:
    dest = metallb_dir(version)
    wanted = [c for c in ("controller", "speaker") if not os.access(dest / c, os.X_OK)]
    if not wanted and (dest / "crds").is_dir():
        return
    go = find_go()
    with tempfile.TemporaryDirectory(prefix="nra-metallb-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module nra.invalid/metallb-build\n\ngo 1.26\n")
        _go(go, ["get", *(f"go.universe.tf/metallb/{c}@{version}" for c in ("controller", "speaker"))], work, log)
        for component in wanted:
            start = time.monotonic()
            _go(go, ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(work / component),
                     f"go.universe.tf/metallb/{component}"], work, log)
            _install(work / component, dest / component)
            log(f"cluster: built {dest / component} in {time.monotonic() - start:.0f} s")
        out = subprocess.run([go, "list", "-m", "-json", f"go.universe.tf/metallb@{version}"], cwd=work,
                             capture_output=True, text=True, check=True, env=dict(os.environ, GOFLAGS="-mod=mod")).stdout
        source = Path(json.loads(out)["Dir"]) / "config" / "crd" / "bases"
        part = dest / "crds.part"
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(source, part)
        part.chmod(0o755)  # the module cache is read-only
        for f in part.iterdir():
            f.chmod(0o644)
        shutil.rmtree(dest / "crds", ignore_errors=True)
        part.rename(dest / "crds")


# -- the objects ------------------------------------------------------------------------------------

def node_object(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}}}


def node_status(name: str) -> dict:
    return {"status": {"addresses": [{"type": "InternalIP", "address": topo.NODE4},
                                     {"type": "InternalIP", "address": topo.NODE6},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "the lab's node", "lastHeartbeatTime": None}]}}


def service_objects(node: str) -> list[dict]:
    """One single-stack Service of type LoadBalancer per family (TCP and UDP on ECHO_PORT,
    externalTrafficPolicy Cluster) and its EndpointSlice: the lab's pod, each from its own
    family's pool."""
    ports = [{"name": proto.lower(), "protocol": proto, "port": topo.ECHO_PORT, "targetPort": topo.ECHO_PORT}
             for proto in ("TCP", "UDP")]
    objs: list[dict] = []
    for family, pod in ((4, topo.POD4), (6, topo.POD6)):
        name = SERVICES[family]
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": NAMESPACE,
                                  "annotations": {"metallb.io/address-pool": f"lab{family}"}},
                     "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "SingleStack", "ipFamilies": [f"IPv{family}"],
                              "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": False,
                              "selector": {"app": name}, "ports": ports}})
        objs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "nra-lab"}},
            "addressType": f"IPv{family}",
            "endpoints": [{"addresses": [pod], "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": node}],
            "ports": [{"name": p["name"], "protocol": p["protocol"], "port": topo.ECHO_PORT} for p in ports]})
    return objs


def metallb_objects() -> list[dict]:
    """A pool per family, the routers' addresses of that family as BGPPeers, and a
    BGPAdvertisement of each pool to the peers of its family (MetalLB's speaker in FRR mode
    announces both families; its native mode refuses any IPv6 advertisement)."""
    meta = lambda name: {"name": name, "namespace": METALLB_NAMESPACE}  # noqa: E731
    objs: list[dict] = []
    for family, pool in ((4, topo.POOL4), (6, topo.POOL6)):
        objs.append({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta(f"lab{family}"),
                     "spec": {"addresses": [pool], "avoidBuggyIPs": True, "autoAssign": False}})
        peers = [f"{r.name}-v{family}" for r in topo.R.values()]
        for r in topo.R.values():
            objs.append({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": meta(f"{r.name}-v{family}"),
                         "spec": {"myASN": topo.AS_NODE, "peerASN": topo.AS_ROUTERS,
                                  "peerAddress": r.seg4 if family == 4 else r.seg6,
                                  "holdTime": "3s", "keepaliveTime": "1s", "connectTime": "1s"}})  # the routers' timers
        objs.append({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": meta(f"lab{family}"),
                     "spec": {"ipAddressPools": [f"lab{family}"], "peers": peers}})
    return objs


# -- the routers' BIRD in this lab; FRR on the node ----------------------------------------------------

def router_conf(r: topo.Router, log: Path) -> str:
    """The lab's router without BFD towards the node (MetalLB's speaker configures none)."""
    return topo.bird_conf_router(r, log).replace("  bfd on;\n", "")


class RealLab(topo.Lab):
    """The lab's namespaces, BIRD on the routers and the client; the node's BGP is FRR's,
    configured by MetalLB's speaker (KubeParts.start_frr)."""

    # nra's source: the test cluster, CRD mode (set by whoever starts the parts)
    nra_source: tuple[str, ...] = ()

    def nra_argv(self) -> list[str]:
        exe = os.environ.get("NRA_BIN") or str(topo.REPO / ".venv" / "bin" / "nra")
        return [exe, "--netns", self.ns("node"), *self.nra_source, "--health-address", "off"]

    def start_bird(self, role: str) -> None:
        if role == "node":
            return  # FRR's, started with the speaker
        if role not in topo.ROUTERS:
            return super().start_bird(role)
        conf, ctl, pid = self.bird_paths(role)
        conf.write_text(router_conf(topo.R[role], self.run_dir / f"{role}.log"))
        self.exec(role, ["bird", "-c", str(conf), "-s", str(ctl), "-P", str(pid)])

    def up(self) -> float:
        """Namespaces, BIRD on the routers and the client; waits for the client's sessions.
        The routers' sessions to the node wait for FRR and the speaker."""
        if self.existing():
            raise topo.LabError(f"lab namespaces {self.prefix}-* already exist; run `down` first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
            started = time.monotonic()
            for role in topo.BIRD_ROLES:
                self.start_bird(role)
            self.wait_sessions(roles=("client",))
            return time.monotonic() - started
        except BaseException:
            self.down()
            raise

    def routes_to(self, family: int, address: str) -> str:
        return self.ip("client", f"-{family} route show {address}", check=False)

    def wait_announced(self, family: int, address: str, timeout: float = 60) -> float:
        """Until the client routes `address` over both routers (learned over BGP); seconds."""
        start = time.monotonic()
        while not all(f"dev {r} " in self.routes_to(family, address) + " " for r in topo.ROUTERS):
            if time.monotonic() - start > timeout:
                raise KubeLabError(f"{address} not announced to the client through both routers after {timeout} s: "
                                   f"{self.routes_to(family, address)!r}; r1 sessions {self.sessions('r1')}")
            time.sleep(0.1)
        return time.monotonic() - start


# -- running the parts ------------------------------------------------------------------------------

def host_frr_state() -> dict[str, tuple]:
    """The host's FRR configuration directory: each entry's size and modification time."""
    root = Path("/etc/frr")
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in (root, *sorted(root.glob("*"))) if p.exists()}


def _global_settings() -> dict[str, str]:
    out = {}
    for path in GLOBAL_SETTINGS:
        try:
            out[path] = Path(path).read_text().strip()
        except OSError as exc:
            out[path] = f"unreadable: {exc.strerror}"
    return out


@dataclass
class KubeParts:
    """kube-proxy, MetalLB and the relay in `lab`'s node namespace, against `cluster`."""

    lab: topo.Lab
    cluster: Cluster
    node_name: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    kube_proxy_mode: str | None = None
    settings_before: dict[str, str] = field(default_factory=dict)
    frr_dir: Path | None = None  # FRR's own directory (the frr user's), set by start_frr
    frr_pids: dict[str, int] = field(default_factory=dict)  # every FRR process started, by name
    frr_etc_before: dict[str, tuple] = field(default_factory=dict)  # host_frr_state() before start_frr

    @property
    def dir(self) -> Path:
        return self.lab.run_dir

    @property
    def crd_source(self) -> tuple[str, ...]:
        """nra's options to read MetalLB's objects from the test cluster (admin identity)."""
        return ("--kubeconfig", str(self.cluster.kubeconfig), "--use-crds", "--namespace", METALLB_NAMESPACE,
                "--node-name", self.node_name)

    @property
    def inner_kubeconfig(self) -> Path:
        return self.dir / "inner.kubeconfig"

    def start(self) -> None:
        missing = [n for n in ("kube-proxy", "metallb-controller", "metallb-speaker")
                   if not os.access(binaries()[n], os.X_OK)]
        if missing:
            raise KubeLabError(f"{', '.join(missing)} not built (run scripts/cluster build; scripts/setup does it)")
        self.settings_before = _global_settings()
        port = self.cluster.info()["apiserver_port"]
        self._spawn("relay", [sys.executable, str(Path(__file__).with_name("nsrelay.py")), self.lab.ns("node"),
                             str(RELAY_PORT), str(port)], in_node=False, ready="listening")
        self.inner_kubeconfig.write_text(kubeconfig_text(f"https://127.0.0.1:{RELAY_PORT}", self.cluster.pki / "ca.crt",
                                                         self.cluster.admin_token, "nra-admin"))
        self.inner_kubeconfig.chmod(0o600)
        crds = metallb_crds()
        for kind in ("l2advertisements", "servicel2statuses"):
            self.cluster.kubectl("apply", "--server-side", "-f", str(crds / f"metallb.io_{kind}.yaml"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": METALLB_NAMESPACE}},
                   node_object(self.node_name))
        # kube-proxy waits for the Node's addresses after its caches sync; only the status
        # subresource takes them
        self.cluster.kubectl("patch", "node", self.node_name, "--subresource=status", "--type=merge",
                             "-p", json.dumps(node_status(self.node_name)))
        self.apply(*service_objects(self.node_name))

    def apply(self, *objects: dict) -> None:
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                             input="\n---\n".join(json.dumps(o) for o in objects))

    def _spawn(self, name: str, argv: list[str], in_node: bool = True, ready: str | None = None,
               env: dict | None = None, until=None) -> subprocess.Popen:
        """Start `name`, logging to <run dir>/<name>.log; with `ready`, until its log says so;
        with `until` (a callable), until it returns true."""
        log = open(self.dir / f"{name}.log", "ab")
        prefix = self.lab.netns("node").exec_prefix() if in_node else []
        proc = subprocess.Popen([*prefix, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **(env or {})))
        log.close()
        self.procs[name] = proc
        if ready or until:
            deadline = time.monotonic() + 10
            while not (until() if until else ready in self.log(name)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise KubeLabError(f"{name} did not start: {self.log(name)[-2000:]}")
                time.sleep(0.02)
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    # -- kube-proxy --
    def start_kube_proxy(self, mode: str) -> None:
        if mode not in KUBE_PROXY_MODES:
            raise KubeLabError(f"kube-proxy mode {mode!r}: expected one of {', '.join(KUBE_PROXY_MODES)}")
        self.stop_kube_proxy()
        self._spawn("kube-proxy", [
            str(binaries()["kube-proxy"]), f"--kubeconfig={self.inner_kubeconfig}", f"--proxy-mode={mode}",
            f"--hostname-override={self.node_name}", f"--cluster-cidr={topo.POD_NETS4},{topo.POD_NETS6}",
            # leave every global (and per-namespace conntrack) setting alone
            "--conntrack-max-per-core=0", "--conntrack-min=0",
            "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
            "--iptables-localhost-nodeports=false",
            "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
            "--v=2"])
        self.kube_proxy_mode = mode

    def stop_kube_proxy(self) -> None:
        """Stop kube-proxy and remove what it wrote (its own --cleanup, in the node namespace)."""
        if self.kube_proxy_mode is None:
            return
        self._stop("kube-proxy")
        proc = subprocess.run([*self.lab.netns("node").exec_prefix(), str(binaries()["kube-proxy"]), "--cleanup",
                               f"--proxy-mode={self.kube_proxy_mode}"], capture_output=True, text=True, timeout=60)
        with open(self.dir / "kube-proxy.log", "a") as log:
            log.write(f"--- kube-proxy --cleanup: rc {proc.returncode}\n{proc.stdout}{proc.stderr}")
        self.kube_proxy_mode = None

    def kube_proxy_rules(self) -> str:
        """What kube-proxy wrote in the node namespace, in the mode it runs in."""
        if self.kube_proxy_mode == "nftables":
            return "".join(self.lab.exec("node", ["nft", "list", "table", fam, "kube-proxy"], check=False).stdout
                           for fam in ("ip", "ip6"))
        return "".join(self.lab.exec("node", [tool, "-t", "nat"], check=False).stdout
                       for tool in ("iptables-save", "ip6tables-save"))

    def wait_kube_proxy(self, addresses: list[str], timeout: float = 60) -> float:
        """Until kube-proxy's rules name each of `addresses` (the LB IPs); seconds."""
        start = time.monotonic()
        def named(address: str, rules: str) -> bool:
            return re.search(rf"(?<![\w:.]){re.escape(address)}(?![\w:])", rules) is not None

        while not all(named(a, self.kube_proxy_rules()) for a in addresses):
            proc = self.procs.get("kube-proxy")
            if proc is None or proc.poll() is not None or time.monotonic() - start > timeout:
                raise KubeLabError(f"kube-proxy ({self.kube_proxy_mode}) has no rules for {addresses} after "
                                   f"{time.monotonic() - start:.0f} s; its log ends:\n{self.log('kube-proxy')[-3000:]}")
            time.sleep(0.1)
        return time.monotonic() - start

    # -- FRR, for MetalLB's speaker in FRR mode --
    @property
    def speaker_conf(self) -> Path:
        """Where the speaker writes its FRR configuration (FRR_CONFIG_FILE)."""
        return self.dir / "speaker-frr.conf"

    def start_frr(self) -> None:
        """zebra and bgpd in the node namespace, then the reloader the speaker signals.

        The daemons run as the frr user (they refuse root outside FRR's vty group), so their
        directory is one of their own under /tmp (the run directory is root's alone). No
        `-N` pathspace: with one, FRR makes /var/run/frr/<name> whatever the paths given;
        every path is given instead (vty sockets, zserv socket, pid and configuration files),
        and `-P 0` leaves the vty TCP ports closed."""
        missing = [str(p) for p in (*(FRR_BIN / d for d in FRR_DAEMONS), FRR_BIN / "frr-reload.py", Path(VTYSH))
                   if not p.exists()]
        if missing or subprocess.run(["id", "frr"], capture_output=True).returncode != 0:
            raise KubeLabError(f"FRR for MetalLB's speaker in FRR mode: missing {', '.join(missing) or 'the frr user'} "
                               "(Debian's frr and frr-pythontools packages; scripts/setup installs them)")
        self.frr_etc_before = host_frr_state()
        frr = self.frr_dir = Path(tempfile.mkdtemp(prefix="nrafrr-"))
        (frr / "zebra.conf").write_text(f"hostname {self.node_name}\n")
        (frr / "bgpd.conf").write_text("")
        (frr / "vtysh.conf").write_text("service integrated-vtysh-config\n")
        subprocess.run(["chown", "-R", "frr:frr", str(frr)], check=True)
        common = ["-u", "frr", "-g", "frr", "--vty_socket", str(frr), "-z", str(frr / "zserv.api"), "-P", "0",
                  "--log", "stdout"]
        for daemon in FRR_DAEMONS:
            proc = self._spawn(daemon, [str(FRR_BIN / daemon), *common, "-f", str(frr / f"{daemon}.conf"),
                                        "-i", str(frr / f"{daemon}.pid")],
                               until=lambda d=daemon: (frr / f"{d}.vty").exists())
            self.frr_pids[daemon] = proc.pid
        proc = self._spawn("frr-reloader", [sys.executable, str(RELOADER), str(self.dir / "frr-reloader.pid"),
                                            str(self.speaker_conf), str(frr)], ready="ready")
        self.frr_pids["frr-reloader"] = proc.pid

    def vtysh(self, command: str) -> str:
        """A vtysh command to the lab's FRR (its sockets and its vtysh.conf, not /etc/frr's)."""
        if self.frr_dir is None:
            raise KubeLabError("FRR is not running (start_frr)")
        proc = subprocess.run([VTYSH, "--vty_socket", str(self.frr_dir), "--config_dir", str(self.frr_dir),
                               "-c", command], capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            raise KubeLabError(f"vtysh -c {command!r}: rc {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def frr_reloads(self) -> list[str]:
        """The reloader's outcomes so far ('success' or 'failure'), oldest first."""
        try:
            return [line.split()[1] for line in (self.frr_dir / "status").read_text().splitlines()]
        except (OSError, TypeError):
            return []

    def frr_paths(self) -> set[Path]:
        """Every file the running FRR processes hold open and every unix socket they listen on
        (their paths: where FRR keeps its state)."""
        paths: set[Path] = set()
        for pid in self.frr_pids.values():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
                    paths.add(Path(target.removesuffix(" (deleted)")))
        listening = self.lab.exec("node", ["ss", "-xlpnH"]).stdout
        for line in listening.splitlines():
            if any(f"pid={pid}," in line for pid in self.frr_pids.values()):
                paths.update(Path(f) for f in line.split() if f.startswith("/"))
        return paths

    def frr_scratch(self) -> list[Path]:
        """libfrr's per-process directory of each daemon started (/var/tmp/frr/<daemon>.<pid>,
        a path libfrr fixes, for its crash logs; removed when the daemon exits)."""
        return [Path(f"/var/tmp/frr/{name}.{pid}") for name, pid in self.frr_pids.items() if name in FRR_DAEMONS]

    def frr_alive(self) -> list[str]:
        """The FRR processes this lab started that still run."""
        alive = []
        for name, pid in self.frr_pids.items():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    continue  # exited, not yet reaped
            except OSError:
                continue
            alive.append(f"{name} (pid {pid})")
        return alive

    # -- MetalLB --
    def start_metallb(self) -> None:
        self.start_frr()
        # The speaker reads its own Pod (owner of the status objects it writes): the Pod object
        # of a DaemonSet's pod on this node, never run (no kubelet), with a ServiceAccount of its
        # own (no controller-manager makes `default`).
        pod = f"speaker-{self.node_name}"
        self.apply(*metallb_objects(),
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "speaker", "namespace": METALLB_NAMESPACE}},
                   {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": METALLB_NAMESPACE,
                                                                  "labels": {"app": "metallb", "component": "speaker"}},
                    "spec": {"nodeName": self.node_name, "serviceAccountName": "speaker",
                             "automountServiceAccountToken": False, "hostNetwork": True,
                             "containers": [{"name": "speaker", "image": "quay.io/metallb/speaker:" + METALLB_VERSION}]}})
        env = {"METALLB_NAMESPACE": METALLB_NAMESPACE, "METALLB_NODE_NAME": self.node_name,
               "KUBECONFIG": str(self.inner_kubeconfig)}
        mlb = metallb_binaries()
        self._spawn("metallb-controller", [str(mlb["metallb-controller"]), f"--kubeconfig={self.inner_kubeconfig}",
                                           "--webhook-mode=disabled", "--disable-cert-rotation", "--port=7473",
                                           "--log-level=info"], env=env)
        # FRR mode: the speaker writes FRR_CONFIG_FILE and signals the pid in FRR_RELOADER_PID_FILE
        # (start_frr first). (It also polls /etc/frr_reloader/.status, a path it fixes; absent
        # here, which it ignores: the lab's reloader keeps its outcomes in <FRR dir>/status.)
        self._spawn("metallb-speaker", [str(mlb["metallb-speaker"]), f"--kubeconfig={self.inner_kubeconfig}",
                                        f"--node-name={self.node_name}", f"--pod-name={pod}", "--port=7472", "--host=127.0.0.1",
                                        "--log-level=info"],
                    env=dict(env, METALLB_BGP_TYPE="frr", FRR_CONFIG_FILE=str(self.speaker_conf),
                             FRR_RELOADER_PID_FILE=str(self.dir / "frr-reloader.pid")))

    def lb_ips(self) -> list[str]:
        out = self.cluster.kubectl("get", "service", "-n", NAMESPACE, *SERVICES.values(), "-o", "json").stdout
        return [i["ip"] for svc in json.loads(out)["items"]
                for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])]

    def wait_lb_ips(self, timeout: float = 60) -> dict[int, str]:
        """Until MetalLB's controller gave each Service its LB IP; {4: ip, 6: ip}."""
        start = time.monotonic()
        while True:
            ips = self.lb_ips()
            by_family = {6 if ":" in ip else 4: ip for ip in ips}
            if set(by_family) == {4, 6}:
                return by_family
            if time.monotonic() - start > timeout:
                raise KubeLabError(f"the Services have LB IPs {ips} after {timeout} s; the controller's log ends:\n"
                                   f"{self.log('metallb-controller')[-3000:]}")
            time.sleep(0.1)

    def check_globals_untouched(self) -> None:
        after = _global_settings()
        if after != self.settings_before:
            raise KubeLabError(f"global settings changed while the lab ran: {self.settings_before} -> {after}")

    def stop(self) -> None:
        """Stop what was started (by pid) and delete the objects created."""
        self.stop_kube_proxy()
        for name in reversed(list(self.procs)):  # the speaker before FRR, zebra last
            self._stop(name)
        if self.frr_dir is not None:
            shutil.rmtree(self.frr_dir, ignore_errors=True)
        # (no controller-manager: a deleted namespace would stay Terminating; its objects go one by one)
        for args in (("delete", "service,endpointslice", "-n", NAMESPACE, "--all"),
                     ("delete", "node", self.node_name),
                     *(("delete", o["kind"].lower(), "-n", METALLB_NAMESPACE, o["metadata"]["name"])
                       for o in metallb_objects())):
            self.cluster.kubectl(*args, "--ignore-not-found", check=False)
        self.cluster.kubectl("delete", "pod", "-n", METALLB_NAMESPACE, f"speaker-{self.node_name}", "--force",
                             "--grace-period=0", "--ignore-not-found", check=False)
