"""The nra lab: network namespaces with BIRD 2 routers that show the return path on the wire.

Topology (every namespace is named `<prefix>-<role>`, so `down` removes exactly these):

                 client  (10.79.0.1, fd00:79::1 on lo; BIRD AS 64600, ECMP to r1 + r2)
                 /    \\
      10.78.1.0/24    10.78.2.0/24
               r1      r2        (BIRD AS 64500; LB routes from the node, client route from the client)
                 \\    /
       sw: bridge 10.77.0.0/24, fd00:77::/64 ----- gw .254 (the node's default route: the wrong
                   |                                        way back; it has no route to the client)
                 node .10 (BIRD AS 64512 = MetalLB's speaker; LB 10.80.0.10, fd00:80::10 on lo;
                           echo server; nra programs this namespace)

Only the standard library is used, so `scripts/lab` runs with any python3, and the e2e tests
import this module. Everything the lab writes (BIRD configs, sockets, logs, pid files, the
static MetalLB file) lives in one run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PREFIX = os.environ.get("NRA_LAB_PREFIX", "nralab")
DEFAULT_RUN_DIR = Path(os.environ.get("NRA_LAB_DIR", "/run/nralab"))

# -- addressing (all private: 10/8 and the fd00::/8 ULA range, only inside the lab) --------------
SEGMENT4, SEGMENT6 = "10.77.0", "fd00:77:"
NODE4, NODE6 = "10.77.0.10", "fd00:77::10"
GW4, GW6 = "10.77.0.254", "fd00:77::fe"
LB4, LB6 = "10.80.0.10", "fd00:80::10"
POOL4, POOL6 = "10.80.0.0/28", "fd00:80::/120"
CLIENT4, CLIENT6 = "10.79.0.1", "fd00:79::1"
CLIENT_NET4, CLIENT_NET6 = "10.79.0.0/24", "fd00:79::/64"
ECHO_PORT = 7007
AS_NODE, AS_ROUTERS, AS_CLIENT = 64512, 64500, 64600
ROUTERS = ("r1", "r2")
ROLES = ("sw", "node", "r1", "r2", "gw", "client")
BIRD_ROLES = ("node", "r1", "r2", "client")


@dataclass(frozen=True)
class Router:
    name: str
    index: int

    @property
    def seg4(self) -> str:  # address on the node segment
        return f"10.77.0.{self.index}"

    @property
    def seg6(self) -> str:
        return f"fd00:77::{self.index}"

    @property
    def cl4(self) -> str:  # its end of its own link to the client
        return f"10.78.{self.index}.1"

    @property
    def cl6(self) -> str:
        return f"fd00:78:{self.index}::1"

    @property
    def client4(self) -> str:  # the client's end of that link
        return f"10.78.{self.index}.2"

    @property
    def client6(self) -> str:
        return f"fd00:78:{self.index}::2"


R = {name: Router(name, i) for i, name in enumerate(ROUTERS, start=1)}

# Short BGP timers so sessions come up and fail in seconds, not minutes.
_BGP_TIMERS = """\
  hold time 3; keepalive time 1; connect retry time 1; connect delay time 1;
  error wait time 1, 2; startup hold time 3;"""

# Node neighbour timers: the return path leaves a dead router only once its neighbour entry
# is FAILED (fib_multipath_use_neigh). Kernel defaults make that 20-50 s; these ~2-4 s.
FAST_NEIGH = {"base_reachable_time_ms": 2000, "delay_first_probe_time": 1, "retrans_time_ms": 250,
              "ucast_solicit": 3, "mcast_solicit": 3}


# -- BIRD configurations (pure) -----------------------------------------------------------------

def _bgp(name: str, local: str, local_as: int, neighbor: str, neighbor_as: int, family: str,
         imp: str, exp: str) -> str:
    return (f"protocol bgp {name} {{\n  local {local} as {local_as};\n"
            f"  neighbor {neighbor} as {neighbor_as};\n{_BGP_TIMERS}\n"
            f"  {family} {{ import {imp}; export {exp}; }};\n}}\n")


def _header(router_id: str, log: Path) -> str:
    return (f'router id {router_id};\nlog "{log}" all;\n'
            "protocol device { scan time 10; }\n")


def _kernel(extra_filter: str = "") -> str:
    exp = f"filter {{ if source != RTS_BGP then reject; {extra_filter} accept; }}"
    return (f"protocol kernel kernel4 {{ ipv4 {{ import none; export {exp}; }}; merge paths on; }}\n"
            f"protocol kernel kernel6 {{ ipv6 {{ import none; export {exp}; }}; merge paths on; }}\n")


def bird_conf_router(r: Router, log: Path) -> str:
    """A router: learns the LB routes from the node and the client's route from the client,
    installs both into its kernel, passes the LB routes on to the client, nothing to the node."""
    return (_header(r.seg4, log) + _kernel()
            + _bgp("node4", r.seg4, AS_ROUTERS, NODE4, AS_NODE, "ipv4", "all", "none")
            + _bgp("node6", r.seg6, AS_ROUTERS, NODE6, AS_NODE, "ipv6", "all", "none")
            + _bgp("client4", r.cl4, AS_ROUTERS, r.client4, AS_CLIENT, "ipv4", "all", "all")
            + _bgp("client6", r.cl6, AS_ROUTERS, r.client6, AS_CLIENT, "ipv6", "all", "all"))


def bird_conf_node(log: Path) -> str:
    """MetalLB's speaker stand-in: announces the LB /32 and /128, learns nothing."""
    conf = _header(NODE4, log)
    conf += f"protocol static lb4 {{ ipv4; route {LB4}/32 blackhole; }}\n"
    conf += f"protocol static lb6 {{ ipv6; route {LB6}/128 blackhole; }}\n"
    for r in R.values():
        conf += _bgp(f"{r.name}_4", NODE4, AS_NODE, r.seg4, AS_ROUTERS, "ipv4", "none", "all")
        conf += _bgp(f"{r.name}_6", NODE6, AS_NODE, r.seg6, AS_ROUTERS, "ipv6", "none", "all")
    return conf


def bird_conf_client(log: Path) -> str:
    """The client's edge: announces its address, installs the LB routes with ECMP over both
    routers, sourcing from its loopback address so replies can come back through either."""
    conf = _header(CLIENT4, log)
    conf += f"protocol static me4 {{ ipv4; route {CLIENT4}/32 blackhole; }}\n"
    conf += f"protocol static me6 {{ ipv6; route {CLIENT6}/128 blackhole; }}\n"
    conf += ("protocol kernel kernel4 { ipv4 { import none; export filter { if source != RTS_BGP "
             f"then reject; krt_prefsrc = {CLIENT4}; accept; }}; }}; merge paths on; }}\n")
    conf += ("protocol kernel kernel6 { ipv6 { import none; export filter { if source != RTS_BGP "
             f"then reject; krt_prefsrc = {CLIENT6}; accept; }}; }}; merge paths on; }}\n")
    for r in R.values():
        conf += _bgp(f"{r.name}_4", r.client4, AS_CLIENT, r.cl4, AS_ROUTERS, "ipv4", "all",
                     'where proto = "me4"')
        conf += _bgp(f"{r.name}_6", r.client6, AS_CLIENT, r.cl6, AS_ROUTERS, "ipv6", "all",
                     'where proto = "me6"')
    return conf


def metallb_config() -> str:
    """The lab as MetalLB's legacy ConfigMap `config` document, for nra's --static-file."""
    peers = "".join(f"- peer-address: {addr}\n  peer-asn: {AS_ROUTERS}\n  my-asn: {AS_NODE}\n"
                    for r in R.values() for addr in (r.seg4, r.seg6))
    return (f"# nra lab: the two routers are the node's BGP peers\npeers:\n{peers}"
            f"address-pools:\n- name: lab\n  protocol: bgp\n  addresses:\n  - {POOL4}\n  - {POOL6}\n")


NFT_COUNTERS = f"""\
table inet nralab {{
  counter replies4 {{ }}
  counter replies6 {{ }}
  chain pre {{
    type filter hook prerouting priority 0; policy accept;
    ip saddr {POOL4} ip daddr {CLIENT_NET4} counter name replies4
    ip6 saddr {POOL6} ip6 daddr {CLIENT_NET6} counter name replies6
  }}
}}
"""


def parse_bird_protocols(text: str) -> dict[str, str]:
    """`birdc show protocols` -> {name: state info}, BGP sessions only ('Established', ...)."""
    sessions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "BGP":
            sessions[parts[0]] = " ".join(parts[5:])
    return sessions


# -- running things -----------------------------------------------------------------------------

class LabError(RuntimeError):
    pass


def run(argv: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _kill_pidfile(path: Path, sig: int = signal.SIGTERM) -> bool:
    """Signal the process whose id we wrote (or BIRD wrote) into `path`; only ours."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    path.unlink(missing_ok=True)
    return True


@dataclass
class Lab:
    prefix: str = DEFAULT_PREFIX
    run_dir: Path = DEFAULT_RUN_DIR
    fast_neigh: bool = True
    # IP forwarding on the node, as on every Kubernetes node. It matters for failover: IPv6
    # multipath then does not even skip FAILED nexthops (see docs/lab.md).
    node_forwarding: bool = True
    figures: dict[str, float] = field(default_factory=dict)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    # -- small helpers --
    def ip(self, role: str, args: str, check: bool = True) -> str:
        return run(["ip", "-n", self.ns(role), *args.split()], check=check).stdout

    def exec(self, role: str, argv: list[str], check: bool = True, timeout: float = 20):
        return run(["ip", "netns", "exec", self.ns(role), *argv], check=check, timeout=timeout)

    def sysctl(self, role: str, **values) -> None:
        args = [f"{k.replace('__', '/')}={v}" for k, v in values.items()]
        self.exec(role, ["sysctl", "-qw", *args])

    def existing(self) -> list[str]:
        out = run(["ip", "netns", "list"]).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n in {self.ns(r) for r in ROLES}]

    def is_up(self) -> bool:
        return len(self.existing()) == len(ROLES)

    # -- up / down --
    def up(self) -> float:
        """Build the topology, start the BIRDs, wait for every BGP session; returns the time
        from starting BIRD to all sessions Established (also in self.figures)."""
        if self.existing():
            raise LabError(f"lab namespaces {self.prefix}-* already exist; run `down` first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
            started = time.monotonic()
            for role in BIRD_ROLES:
                self.start_bird(role)
            self.wait_sessions()
            self.wait_routes()
            took = time.monotonic() - started
            self.figures["sessions_established_s"] = took
            (self.run_dir / "metallb.yaml").write_text(metallb_config())
            return took
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        for role in ROLES:
            run(["ip", "netns", "add", self.ns(role)])
            self.ip(role, "link set dev lo up")
            self.sysctl(role, **{"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                                 "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0,
                                 # Like a node's NetworkManager would, keep addresses over a link flap.
                                 "net.ipv6.conf.all.keep_addr_on_down": 1})
        # The shared segment: a bridge in its own namespace, one port per member.
        self.ip("sw", "link add name br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
        self.ip("sw", "link set dev br0 up")
        members = {"node": (NODE4, NODE6), "gw": (GW4, GW6),
                   **{r.name: (r.seg4, r.seg6) for r in R.values()}}
        for role, (a4, a6) in members.items():
            self.ip("sw", f"link add name {role} type veth peer name eth0 netns {self.ns(role)}")
            self.ip("sw", f"link set dev {role} master br0")
            self.ip("sw", f"link set dev {role} up")
            self.ip(role, f"addr add {a4}/24 dev eth0")
            self.ip(role, f"-6 addr add {a6}/64 dev eth0 nodad")
            self.ip(role, "link set dev eth0 up")
        # Routers and the client: one point-to-point link per router.
        for r in R.values():
            self.ip(r.name, f"link add name cl type veth peer name {r.name} netns {self.ns('client')}")
            self.ip(r.name, f"addr add {r.cl4}/24 dev cl")
            self.ip(r.name, f"-6 addr add {r.cl6}/64 dev cl nodad")
            self.ip(r.name, "link set dev cl up")
            self.ip("client", f"addr add {r.client4}/24 dev {r.name}")
            self.ip("client", f"-6 addr add {r.client6}/64 dev {r.name} nodad")
            self.ip("client", f"link set dev {r.name} up")
        self.ip("client", f"addr add {CLIENT4}/32 dev lo")
        self.ip("client", f"-6 addr add {CLIENT6}/128 dev lo")
        self.sysctl("client", **{"net.ipv4.fib_multipath_hash_policy": 1,
                                 "net.ipv6.fib_multipath_hash_policy": 1})
        for role in (*ROUTERS, "gw"):
            self.sysctl(role, **{"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
            proc = subprocess.run(["ip", "netns", "exec", self.ns(role), "nft", "-f", "-"],
                                  input=NFT_COUNTERS, capture_output=True, text=True)
            if proc.returncode:
                raise LabError(f"nft in {self.ns(role)}: {proc.stderr.strip()}")
        # The node: LB addresses on lo, the gateway as its default route (the wrong way back).
        self.ip("node", f"addr add {LB4}/32 dev lo")
        self.ip("node", f"-6 addr add {LB6}/128 dev lo")
        self.add_node_default_routes()
        node = {"net.ipv4.fib_multipath_use_neigh": 1, "net.ipv4.fib_multipath_hash_policy": 1,
                "net.ipv6.fib_multipath_hash_policy": 1,
                "net.ipv4.ip_forward": int(self.node_forwarding),
                "net.ipv6.conf.all.forwarding": int(self.node_forwarding)}
        if self.fast_neigh:
            for fam in ("ipv4", "ipv6"):
                node.update({f"net.{fam}.neigh.eth0.{k}": v for k, v in FAST_NEIGH.items()})
        self.sysctl("node", **node)

    def add_node_default_routes(self) -> None:
        """The node's default route via the gateway; `replace` so it is safe to repeat (a link
        flap takes it away, and a node's network manager would put it back)."""
        self.ip("node", f"route replace default via {GW4}")
        self.ip("node", f"-6 route replace default via {GW6}")

    def bird_paths(self, role: str) -> tuple[Path, Path, Path]:
        d = self.run_dir
        return d / f"{role}.conf", d / f"{role}.ctl", d / f"{role}.pid"

    def start_bird(self, role: str) -> None:
        conf, ctl, pid = self.bird_paths(role)
        log = self.run_dir / f"{role}.log"
        text = (bird_conf_node(log) if role == "node" else
                bird_conf_client(log) if role == "client" else bird_conf_router(R[role], log))
        conf.write_text(text)
        self.exec(role, ["bird", "-c", str(conf), "-s", str(ctl), "-P", str(pid)])

    def bird_running(self, role: str) -> bool:
        try:
            os.kill(int(self.bird_paths(role)[2].read_text().split()[0]), 0)
            return True
        except (OSError, ValueError, IndexError):
            return False

    def kill_bird(self, role: str, sig: int = signal.SIGTERM) -> bool:
        return _kill_pidfile(self.bird_paths(role)[2], sig)

    def birdc(self, role: str, command: str) -> str:
        ctl = self.bird_paths(role)[1]
        return run(["birdc", "-s", str(ctl), *command.split()], check=False, timeout=5).stdout

    def sessions(self, role: str) -> dict[str, str]:
        return parse_bird_protocols(self.birdc(role, "show protocols"))

    def wait_sessions(self, roles=BIRD_ROLES, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            down = {f"{role}/{name}": state for role in roles
                    for name, state in (self.sessions(role) or {"(no answer)": "-"}).items()
                    if not state.startswith("Established")}
            if not down:
                return
            if time.monotonic() > deadline:
                raise LabError(f"BGP sessions not established after {timeout} s: {down}")
            time.sleep(0.05)

    def wait_routes(self, timeout: float = 10) -> None:
        """Until the client has the LB routes over both routers, and the routers the client's."""
        deadline = time.monotonic() + timeout
        while not self.client_paths_ready():
            if time.monotonic() > deadline:
                raise LabError("the client did not get ECMP routes to the LB addresses")
            time.sleep(0.05)

    def client_paths_ready(self, routers=ROUTERS) -> bool:
        for fam, lb in (("-4", LB4), ("-6", LB6)):
            out = self.ip("client", f"{fam} route show {lb}", check=False)
            if not all(f"dev {r} " in out + " " for r in routers):
                return False
        return True

    def down(self) -> list[str]:
        """Stop what the lab started (by pid file), remove its namespaces and run dir."""
        _kill_pidfile(self.run_dir / "nra.pid")
        _kill_pidfile(self.run_dir / "echo.pid")
        for role in BIRD_ROLES:
            self.kill_bird(role)
        removed = self.existing()
        for name in removed:
            run(["ip", "netns", "del", name], check=False)
        if self.run_dir.is_dir():
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return removed

    # -- the application: an echo server on the LB addresses, clients that use it --
    def start_echo(self) -> None:
        pidfile = self.run_dir / "echo.pid"
        if pidfile.exists():
            return
        log = open(self.run_dir / "echo.log", "w")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns("node"), sys.executable, __file__,
                                 "_echo"], stdout=log, stderr=subprocess.STDOUT)
        pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 5
        while "listening" not in (self.run_dir / "echo.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"echo server failed: {(self.run_dir / 'echo.log').read_text()}")
            time.sleep(0.02)

    def client(self, *args: str, timeout: float = 60) -> dict:
        """Run a client probe (`_tcp`, `_udp`) in the client namespace; returns its JSON."""
        proc = self.exec("client", [sys.executable, __file__, *args], check=False, timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"client {' '.join(args)} failed: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def ping(self, family: int, count: int = 3) -> bool:
        target = LB4 if family == 4 else LB6
        proc = self.exec("client", ["ping", f"-{family}", "-c", str(count), "-i", "0.05", "-W", "1",
                                    target], check=False)
        return proc.returncode == 0

    def counters(self) -> dict[str, dict[int, int]]:
        """Reply packets (LB pool -> client) seen arriving at each router and the gateway."""
        result = {}
        for role in (*ROUTERS, "gw"):
            out = self.exec(role, ["nft", "-j", "list", "counters"]).stdout
            got = {c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(out)["nftables"]
                   if "counter" in c}
            result[role] = {4: got.get("replies4", 0), 6: got.get("replies6", 0)}
        return result

    # -- nra --
    def nra_argv(self) -> list[str]:
        exe = os.environ.get("NRA_BIN") or str(REPO / ".venv" / "bin" / "nra")
        return [exe, "--netns", self.ns("node"), "--static-file", str(self.run_dir / "metallb.yaml"),
                "--health-address", "off"]

    def start_nra(self, *extra: str) -> subprocess.Popen:
        log = open(self.run_dir / "nra.log", "a")
        proc = subprocess.Popen([*self.nra_argv(), *extra], stdout=log, stderr=subprocess.STDOUT)
        (self.run_dir / "nra.pid").write_text(str(proc.pid))
        return proc

    def stop_nra(self) -> None:
        _kill_pidfile(self.run_dir / "nra.pid")

    def table_routes(self, family: int, table: int = 20) -> str:
        return self.ip("node", f"-{family} route show table {table}", check=False).strip()

    def wait_table(self, present: bool = True, timeout: float = 15, table: int = 20) -> float:
        """Wait until the managed table has (or lacks) its route in both families; seconds taken."""
        start = time.monotonic()
        while True:
            ok = all(bool(self.table_routes(f, table)) == present for f in (4, 6))
            if ok:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"table {table} {'still empty' if present else 'not empty'} "
                               f"after {timeout} s; nra log: {self.run_dir / 'nra.log'}")
            time.sleep(0.005)

    def wait_nexthops(self, family: int, routers=ROUTERS, timeout: float = 10, table: int = 20) -> float:
        """Until the managed route of `family` has exactly these routers as nexthops; seconds."""
        want = {R[r].seg4 if family == 4 else R[r].seg6 for r in routers}
        start = time.monotonic()
        while True:
            words = self.table_routes(family, table).split()
            if {words[i + 1] for i, w in enumerate(words) if w == "via"} == want:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise LabError(f"IPv{family} table {table} is not via {sorted(want)} after {timeout} s: "
                               f"{self.table_routes(family, table)!r}")
            time.sleep(0.02)

    # -- measurements --
    def measure_link_flap(self, timeout: float = 15) -> float:
        """Flap the node's link to its peers; seconds from link up to table 20 back (v4 + v6)."""
        self.ip("node", "link set dev eth0 down")
        self.wait_table(present=False, timeout=5)
        self.ip("node", "link set dev eth0 up")
        try:
            took = self.wait_table(present=True, timeout=timeout)
        finally:
            self.add_node_default_routes()
        self.figures["restore_after_link_flap_s"] = took
        return took

    def measure_router_failure(self, router: str = "r1", family: int = 4, flows: int = 32,
                               before: float = 1.0, after: float = 8.0) -> dict:
        """Probe with many UDP flows; cut `router`'s link to the node segment and kill its BIRD;
        return the probe summary with `outage_s`: from the cut to the last lost reply."""
        log = self.run_dir / "probe.json"
        probe = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, __file__, "_udp",
             "--family", str(family), "--flows", str(flows), "--duration", str(before + after)],
            stdout=open(log, "w"), stderr=subprocess.PIPE, text=True)
        time.sleep(before)
        cut = time.time()
        self.cut_router(router)
        _, err = probe.communicate(timeout=before + after + 30)
        if probe.returncode:
            raise LabError(f"probe failed: {err.strip()}")
        result = json.loads(log.read_text())
        lost_after = [t for t, ok in result.pop("probes") if not ok and t >= cut - 0.5]
        result["outage_s"] = (max(lost_after) - cut) if lost_after else 0.0
        result["lost_after_cut"] = len(lost_after)
        result["window_s"] = after
        self.figures[f"failover_v{family}_s"] = result["outage_s"]
        return result

    def cut_router(self, router: str) -> None:
        self.ip(router, "link set dev eth0 down")
        self.kill_bird(router, signal.SIGKILL)

    def restore_router(self, router: str) -> None:
        self.ip(router, "link set dev eth0 up")
        if not self.bird_running(router):
            self.start_bird(router)
        self.wait_sessions(roles=(router,))
        self.wait_routes()


# -- the echo server (node namespace) and the clients (client namespace) ------------------------

def serve_echo() -> None:
    import asyncio

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def tcp(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        for addr in (LB4, LB6):
            await asyncio.start_server(tcp, addr, ECHO_PORT)
            await loop.create_datagram_endpoint(Udp, local_addr=(addr, ECHO_PORT))
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def tcp_flows(family: int, flows: int, timeout: float) -> dict:
    """Open `flows` TCP connections (each its own source port) and echo a line on each."""
    target = LB4 if family == 4 else LB6
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    ok = failed = 0
    errors: dict[str, int] = {}
    for i in range(flows):
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect((target, ECHO_PORT))
                msg = f"flow {i}\n".encode()
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    got += chunk
                if got != msg:
                    raise OSError("echo mismatch")
            ok += 1
        except OSError as exc:
            failed += 1
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    return {"ok": ok, "failed": failed, "errors": errors}


def udp_probe(family: int, flows: int, duration: float, interval: float = 0.01,
              reply_timeout: float = 0.5) -> dict:
    """Round-robin UDP probes over `flows` sockets (source ports) every `interval` seconds;
    each probe is (wall-clock send time, replied within reply_timeout)."""
    target = LB4 if family == 4 else LB6
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(flows):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((target, ECHO_PORT))
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    sent: dict[int, float] = {}
    replied: set[int] = set()
    seq = 0
    start = time.monotonic()
    wall0 = time.time()
    next_send = start
    while True:
        now = time.monotonic()
        if now - start < duration and now >= next_send:
            try:
                socks[seq % flows].send(seq.to_bytes(8, "big"))
            except OSError:
                pass  # e.g. no route for a moment: counts as lost
            sent[seq] = wall0 + (now - start)
            seq += 1
            next_send += interval
        elif now - start >= duration + reply_timeout:
            break
        for key, _ in sel.select(timeout=max(0.0, min(interval, next_send - time.monotonic()))):
            try:
                while True:
                    data = key.fileobj.recv(64)
                    n = int.from_bytes(data[:8], "big")
                    if n in sent and time.time() - sent[n] <= reply_timeout:
                        replied.add(n)
            except (BlockingIOError, ConnectionRefusedError, OSError):
                pass
    probes = [(t, n in replied) for n, t in sorted(sent.items())]
    return {"sent": len(probes), "replied": len(replied), "probes": probes}


# -- the demo ---------------------------------------------------------------------------------------

def _say(text: str) -> None:
    print(text, flush=True)


def demo(lab: Lab) -> int:
    if not lab.is_up():
        _say(f"== bringing the lab up ({lab.prefix}-*)")
        took = lab.up()
        _say(f"   all BGP sessions (IPv4 + IPv6, node<->r1/r2, r1/r2<->client) established in {took:.2f} s")
    lab.start_echo()
    lab.stop_nra()
    run([*lab.nra_argv(), "--clean-and-exit"], check=False, timeout=30)
    try:
        return _demo(lab)
    finally:
        lab.stop_nra()


def _demo(lab: Lab) -> int:
    failures: list[str] = []

    def traffic(title: str, flows: int = 4, expect_ok: bool = True, families=(4, 6)) -> None:
        before = lab.counters()
        res = {f: lab.client("_tcp", "--family", str(f), "--flows", str(flows), "--timeout", "1") for f in (4, 6)}
        pings = {f: lab.ping(f, count=1 if not expect_ok else 3) for f in (4, 6)}
        after = lab.counters()
        _say(f"== {title}")
        for f in (4, 6):
            d = {role: after[role][f] - before[role][f] for role in after}
            _say(f"   IPv{f}: TCP {res[f]['ok']}/{flows} connections echoed, ping {'ok' if pings[f] else 'FAILED'}; "
                 f"reply packets seen at r1 {d['r1']}, r2 {d['r2']}, gateway {d['gw']}")
            if f in families and (res[f]["ok"] == flows and pings[f]) != expect_ok:
                failures.append(f"{title}: IPv{f}")

    traffic("without nra: replies follow the node's default route to the gateway, which drops them",
            flows=2, expect_ok=False)
    _say(f"== starting nra: {' '.join(lab.nra_argv())}")
    lab.start_nra()
    took = lab.wait_table(present=True)
    _say(f"   table 20 programmed {took:.2f} s after start (includes Python's start-up):")
    for f in (4, 6):
        for line in lab.ip("node", f"-{f} rule show table 20").splitlines():
            _say(f"     {line.strip()}")
        _say("     " + lab.table_routes(f).replace("\n", "\n     "))
    traffic("with nra: replies go back through the routers", flows=8)
    for f in (4, 6):
        before = lab.counters()
        spread = lab.client("_tcp", "--family", str(f), "--flows", "64", "--timeout", "1")
        after = lab.counters()
        _say(f"== ECMP IPv{f}: 64 TCP flows, {spread['ok']} echoed; reply packets via r1 "
             f"{after['r1'][f] - before['r1'][f]}, via r2 {after['r2'][f] - before['r2'][f]}")
    try:
        flap = lab.measure_link_flap()
        _say(f"== node link flapped: the kernel dropped table 20; nra restored it {flap * 1000:.0f} ms after link up")
    except LabError as exc:
        _say(f"== node link flapped: NOT restored: {exc}")
        failures.append("link flap")
    lab.wait_sessions()
    for f in (4, 6):
        _say(f"== r1 dies (its node link cut, its BIRD killed) under 32 IPv{f} UDP flows, 100 probes/s")
        res = lab.measure_router_failure("r1", family=f)
        still = res["outage_s"] > res["window_s"] - 1.0
        _say(f"   {res['replied']}/{res['sent']} probes answered; last lost reply {res['outage_s']:.2f} s "
             f"after the cut ({res['lost_after_cut']} lost)"
             + ("; STILL LOSING replies when the probe ended" if still else ""))
        if still:
            failures.append(f"IPv{f} failover")
        _say("   table 20 now: " + lab.table_routes(f).replace("\n", " "))
        traffic(f"after r1's death: IPv{f} flows through r2", families=(f,))
        _say("   restoring r1")
        lab.restore_router("r1")
        try:
            took = lab.wait_nexthops(f, timeout=10)
            _say(f"   r1 answers again: back in table 20 {took:.2f} s after its BGP sessions")
        except LabError as exc:
            _say(f"   r1 NOT back in table 20: {exc}")
            failures.append(f"IPv{f} r1 back")
    _say("== figures: " + ", ".join(f"{k} {v:.2f}" for k, v in lab.figures.items()))
    _say("   (nra stopped; the lab is still up: `scripts/lab status`, `scripts/lab down`)")
    if failures:
        _say("== FAILED: " + "; ".join(failures))
    return 1 if failures else 0


def status(lab: Lab) -> int:
    names = lab.existing()
    if not names:
        _say(f"lab {lab.prefix}: down")
        return 1
    _say(f"lab {lab.prefix}: namespaces {', '.join(names)}; run dir {lab.run_dir}")
    for role in BIRD_ROLES:
        sessions = lab.sessions(role)
        _say(f"  {role:6} BGP: " + (", ".join(f"{k} {v}" for k, v in sessions.items()) or "BIRD not answering"))
    for f in (4, 6):
        _say(f"  node IPv{f} rules -> table 20: "
             + ("; ".join(l.strip() for l in lab.ip("node", f"-{f} rule show table 20").splitlines()) or "none"))
        _say(f"  node IPv{f} table 20: " + (lab.table_routes(f).replace("\n", " ") or "empty"))
        _say(f"  client IPv{f} route to LB: "
             + lab.ip("client", f"-{f} route show {LB4 if f == 4 else LB6}").replace("\n", " "))
    _say(f"  replies seen (packets): {lab.counters()}")
    return 0 if lab.is_up() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "demo", "_echo", "_tcp", "_udp"])
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--kernel-neigh-timers", action="store_true",
                        help="keep the kernel's default neighbour timers on the node (slow failover)")
    parser.add_argument("--no-node-forwarding", action="store_true",
                        help="leave IP forwarding off on the node (on by default, as on Kubernetes nodes)")
    parser.add_argument("--family", type=int, default=4, choices=[4, 6])
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "_echo":
        serve_echo()
        return 0
    if args.command == "_tcp":
        print(json.dumps(tcp_flows(args.family, args.flows, args.timeout)))
        return 0
    if args.command == "_udp":
        print(json.dumps(udp_probe(args.family, args.flows, args.duration)))
        return 0
    if os.geteuid() != 0:
        print("scripts/lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    lab = Lab(args.prefix, args.run_dir, fast_neigh=not args.kernel_neigh_timers,
              node_forwarding=not args.no_node_forwarding)
    try:
        if args.command == "up":
            took = lab.up()
            lab.start_echo()
            _say(f"lab {lab.prefix} up: BGP sessions established in {took:.2f} s; "
                 f"MetalLB config for nra: {lab.run_dir / 'metallb.yaml'}")
            _say(f"run nra: {' '.join(lab.nra_argv())}")
            return 0
        if args.command == "down":
            removed = lab.down()
            _say(f"lab {lab.prefix} down: removed {', '.join(removed) or 'nothing'}")
            return 0
        if args.command == "status":
            return status(lab)
        return demo(lab)
    except LabError as exc:
        print(f"scripts/lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
