"""What each failover mechanism buys on this kernel, measured in throwaway namespaces (root).

One topology per run (every namespace named `<prefix>-<role>`, all removed at exit, also on
Ctrl-C or an exception):

    client (10.68.0.1, fd00:68::1 on lo) -- r1 (10.67.1.0/24) -- sw bridge 10.66.0.0/24,
          `------------------------------- r2 (10.67.2.0/24) --    fd00:66::/64
                                                                         |
                                       node .10 (forwards, like a Kubernetes node) -- pod
                                       (LB 10.69.0.10 / fd00:69::10 live in the pod: the
                                       node forwards the replies, as for a LoadBalancer Service)

The client's requests all go through r2, so what is measured is only the node's return path:
`ip rule from <pool> lookup 20` and table 20's default route via r1 + r2, as one of
  legacy     a multipath route (`nexthop via .. nexthop via ..`), what nra installs today
  group      a hash-threshold nexthop group (`ip nexthop`, `nhid`)
  resilient  a resilient nexthop group
  nra        legacy, programmed by this checkout's nra (.venv/bin/nra) from a static file
A "cut" takes r1's link to the switch down (the node's carrier stays up: only ARP/ND can tell)
and kills r1's BIRD. Optionally BIRD runs in the node and routers (BGP + BFD 100 ms x 3, each
router sends the node one route per family, installed in the node's table 100, proto bird).

    failover_mechanisms.py failover --scenario NAME [--runs N]   one scenario, JSON lines out
    failover_mechanisms.py all [--jobs J] [--runs N] [--only NAME ...] > results.jsonl
    failover_mechanisms.py flows          share of flows that change router (ip route get)
    failover_mechanisms.py packets        the same, checked with real packets
    failover_mechanisms.py report results.jsonl                          markdown tables

Only the standard library; only traffic between these namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
ROLES = ("sw", "node", "pod", "r1", "r2", "client")
ROUTERS = {"r1": 1, "r2": 2}
NODE = {4: "10.66.0.10", 6: "fd00:66::10"}
LB = {4: "10.69.0.10", 6: "fd00:69::10"}
POOL = {4: "10.69.0.0/28", 6: "fd00:69::/120"}
CLIENT = {4: "10.68.0.1", 6: "fd00:68::1"}
POD_LINK = {4: ("10.70.0.1", "10.70.0.2", 30), 6: ("fd00:70::1", "fd00:70::2", 64)}
ECHO_PORT = 7007
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # <linux/in.h>; not every Python exports it
TABLE, LEARNED_TABLE, RULE_PRIORITY = 20, 100, 100
AS_NODE, AS_ROUTERS = 64512, 64500


def seg(family: int, index: int) -> str:
    """Address `index` on the node's segment (routers 1, 2; extra nexthops 3, 4)."""
    return f"10.66.0.{index}" if family == 4 else f"fd00:66::{index}"


def learned(family: int, index: int) -> str:
    """The route router `index` sends the node."""
    return f"10.71.{index}.0/24" if family == 4 else f"fd00:71:{index}::/64"


# Neighbour timers of the node's peer link, set per link through netlink (`ip ntable change`,
# RTM_SETNEIGHTBL: NET_ADMIN only). None keeps the kernel's defaults.
TIMERS = {
    "kernel": None,  # base_reachable 30 s, delay_probe 5 s, retrans 1 s, 3 probes
    "lab": {"base_reachable": 2000, "delay_probe": 1000, "retrans": 250, "ucast_probes": 3, "mcast_probes": 3},
    "fast": {"base_reachable": 1000, "delay_probe": 200, "retrans": 200, "ucast_probes": 3, "mcast_probes": 3},
}


@dataclass(frozen=True)
class Scenario:
    path: str = "legacy"  # legacy | group | resilient | nra
    timers: str = "kernel"
    managed: bool = False  # peers' neighbour entries NTF_MANAGED
    traffic: bool = True  # 32 UDP flows per family through the return path
    bird: bool = True  # BGP + BFD node <-> routers, one learned route per router and family
    learned_liveness: bool = False  # emulated: r1 left out of table 20 when its learned route goes
    window: float = 0.0  # seconds measured after the cut (0: from the timers)
    nra_flags: tuple[str, ...] = ()  # path "nra": its options (learned-route liveness, managed, ...)
    cut: str = "link"  # "link": r1's link down and its BIRD killed; "daemon": only its BIRD killed

    @property
    def after(self) -> float:
        return self.window or {"kernel": 60.0, "lab": 10.0, "fast": 6.0}[self.timers]


SCENARIOS = {
    # 4. today: legacy multipath, the kernel alone / this checkout's nra
    "legacy-kernel": Scenario("legacy", "kernel"),
    "legacy-lab": Scenario("legacy", "lab"),
    "nra-kernel": Scenario("nra", "kernel"),
    "nra-fast": Scenario("nra", "fast"),
    # 1a. nexthop objects
    "group-kernel": Scenario("group", "kernel"),
    "group-lab": Scenario("group", "lab"),
    "resilient-lab": Scenario("resilient", "lab", window=15.0),
    # 2. managed neighbours and per-link timers, no routing daemon (only the kernel probes)
    "neigh-kernel-traffic": Scenario("group", "kernel", bird=False),
    "neigh-kernel-idle": Scenario("group", "kernel", traffic=False, bird=False),
    "managed-kernel-traffic": Scenario("group", "kernel", managed=True, bird=False),
    "managed-kernel-idle": Scenario("group", "kernel", managed=True, traffic=False, bird=False),
    "neigh-fast-traffic": Scenario("group", "fast", bird=False),
    "neigh-fast-idle": Scenario("group", "fast", traffic=False, bird=False),
    "managed-fast-traffic": Scenario("group", "fast", managed=True, bird=False),
    "managed-fast-idle": Scenario("group", "fast", managed=True, traffic=False, bird=False),
    # the same with the routing daemon running (its BGP and BFD packets also use the entries)
    "managed-fast-bgp": Scenario("group", "fast", managed=True),
    # 3. learned-route liveness (BFD), with the reaction emulated here (one route replace)
    "learned-kernel": Scenario("legacy", "kernel", learned_liveness=True, window=10.0),
    # ... and as nra does it (this checkout), the kernel's neighbour timers on the node
    "nra-learned-kernel": Scenario("nra", "kernel", window=10.0, nra_flags=("--learned-route-protos", "bird")),
    # r1's BGP daemon dies, its forwarding and ARP stay: left out with learned routes, kept without
    "nra-learned-daemon": Scenario("nra", "kernel", window=6.0, cut="daemon",
                                   nra_flags=("--learned-route-protos", "bird")),
    "nra-daemon": Scenario("nra", "kernel", window=6.0, cut="daemon"),
    # 2. by nra itself: its managed neighbours and link timers, no route learning
    "nra-managed-fast": Scenario("nra", "kernel", window=10.0,
                                 nra_flags=("--managed-neighbours", "1", "--peer-neigh-timers", "fast")),
}


class BenchError(RuntimeError):
    pass


def run(argv: list[str], check: bool = True, input: str | None = None, timeout: float = 30) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


# -- BIRD configurations ----------------------------------------------------------------------

BFD = ('protocol bfd { interface "eth0" { min rx interval 100 ms; min tx interval 100 ms; '
       "idle tx interval 1 s; multiplier 3; }; }\n")
BGP_TIMERS = "hold time 3; keepalive time 1; connect retry time 1; connect delay time 1; error wait time 1, 2;"


def _bgp(name: str, local: str, local_as: int, peer: str, peer_as: int, family: int, imp: str, exp: str) -> str:
    return (f"protocol bgp {name} {{ local {local} as {local_as}; neighbor {peer} as {peer_as}; "
            f"bfd on; {BGP_TIMERS}\n  ipv{family} {{ import {imp}; export {exp}; }}; }}\n")


def bird_conf(role: str, log: Path) -> str:
    head = f'router id {NODE[4] if role == "node" else seg(4, ROUTERS[role])};\nlog "{log}" all;\n'
    head += "protocol device { scan time 10; }\n" + BFD
    if role == "node":  # learns one route per router and family, installs them in table 100
        conf = head + "".join(
            f"protocol kernel k{f} {{ ipv{f} {{ import none; export where source = RTS_BGP; }}; "
            f"kernel table {LEARNED_TABLE}; }}\n" for f in (4, 6))
        for name, i in ROUTERS.items():
            conf += "".join(_bgp(f"{name}_{f}", NODE[f], AS_NODE, seg(f, i), AS_ROUTERS, f, "all", "none")
                            for f in (4, 6))
        return conf
    i = ROUTERS[role]
    conf = head + "".join(f"protocol static s{f} {{ ipv{f}; route {learned(f, i)} blackhole; }}\n" for f in (4, 6))
    return conf + "".join(_bgp(f"node{f}", seg(f, i), AS_ROUTERS, NODE[f], AS_NODE, f, "none", "all")
                          for f in (4, 6))


def nra_static_file() -> str:
    peers = "".join(f"- peer-address: {seg(f, i)}\n  peer-asn: {AS_ROUTERS}\n  my-asn: {AS_NODE}\n"
                    for i in ROUTERS.values() for f in (4, 6))
    return (f"peers:\n{peers}address-pools:\n- name: bench\n  protocol: bgp\n  addresses:\n"
            f"  - {POOL[4]}\n  - {POOL[6]}\n")


# -- the topology -----------------------------------------------------------------------------

@dataclass
class Topology:
    prefix: str
    run_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)  # more directories to remove at close

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def ip(self, role: str, args: str, check: bool = True) -> str:
        return run(["ip", "-n", self.ns(role), *args.split()], check=check)

    def sysctl(self, role: str, values: dict) -> None:
        run(["ip", "netns", "exec", self.ns(role), "sysctl", "-qw", *(f"{k}={v}" for k, v in values.items())])

    def spawn(self, name: str, role: str, argv: list[str], **kw) -> subprocess.Popen:
        log = open(self.run_dir / f"{name}.log", "w")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], stdout=kw.pop("stdout", log),
                                stderr=subprocess.STDOUT if "stderr" not in kw else kw.pop("stderr"), **kw)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)

    def __enter__(self) -> "Topology":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop what we started (by our own process handles), remove our namespaces; a
        Ctrl-C or SIGTERM arriving meanwhile waits until this is done."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for name in list(self.procs):
                self.stop(name)
            for name in self.made:
                run(["ip", "netns", "del", name], check=False)
            self.made.clear()
            for path in (self.run_dir, *self.dirs):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def build(self) -> None:
        for role in ROLES:
            run(["ip", "netns", "add", self.ns(role)])
            self.made.append(self.ns(role))
            self.ip(role, "link set dev lo up")
            self.sysctl(role, {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                               "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0,
                               "net.ipv6.conf.all.keep_addr_on_down": 1})
        self.ip("sw", "link add name br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
        self.ip("sw", "link set dev br0 up")
        for role, index in (("node", 10), *ROUTERS.items()):  # the segment: one bridge port each
            self.veth("sw", role, role, "eth0")
            self.ip("sw", f"link set dev {role} master br0")
            self.address(role, "eth0", f"{seg(4, index)}/24", f"{seg(6, index)}/64")
        self.address("client", "lo", f"{CLIENT[4]}/32", f"{CLIENT[6]}/128")
        for name, i in ROUTERS.items():  # each router's own link to the client
            self.veth(name, "cl", "client", name)
            self.address(name, "cl", f"10.67.{i}.1/24", f"fd00:67:{i}::1/64")
            self.address("client", name, f"10.67.{i}.2/24", f"fd00:67:{i}::2/64")
            self.sysctl(name, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
            for f, theirs in ((4, f"10.67.{i}.2"), (6, f"fd00:67:{i}::2")):
                self.ip(name, f"-{f} route add {CLIENT[f]} via {theirs}")
                self.ip(name, f"-{f} route add {POOL[f]} via {NODE[f]}")
        # Requests only through r2: the node's return path is the only thing under test.
        self.ip("client", f"route add {POOL[4]} via 10.67.2.1")
        self.ip("client", f"-6 route add {POOL[6]} via fd00:67:2::1")
        # The pod owns the LB addresses; the node forwards its replies.
        self.veth("node", "pod0", "pod", "eth0")
        self.address("pod", "lo", f"{LB[4]}/32", f"{LB[6]}/128")
        for f, (node_end, pod_end, plen) in POD_LINK.items():
            self.address("node", "pod0", f"{node_end}/{plen}")
            self.address("pod", "eth0", f"{pod_end}/{plen}")
            self.ip("pod", f"-{f} route add default via {node_end}")
            self.ip("node", f"-{f} route add {LB[f]} via {pod_end}")
        self.sysctl("node", {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1,
                             "net.ipv4.fib_multipath_use_neigh": 1, "net.ipv4.fib_multipath_hash_policy": 1,
                             "net.ipv6.fib_multipath_hash_policy": 1})

    def veth(self, role: str, name: str, peer_role: str, peer_name: str) -> None:
        """A veth pair from `role` (as `name`) to `peer_role` (as `peer_name`), both ends up."""
        self.ip(role, f"link add name {name} type veth peer name {peer_name} netns {self.ns(peer_role)}")
        self.ip(role, f"link set dev {name} up")
        self.ip(peer_role, f"link set dev {peer_name} up")

    def address(self, role: str, dev: str, *cidrs: str) -> None:
        for cidr in cidrs:  # no duplicate address detection: addresses are usable at once
            self.ip(role, f"addr add {cidr} dev {dev}" + (" nodad" if ":" in cidr else ""))

    # -- the return path --
    def set_timers(self, timers: dict | None) -> None:
        if timers:
            args = " ".join(f"{k} {v}" for k, v in timers.items())
            for table in ("arp_cache", "ndisc_cache"):
                self.ip("node", f"ntable change name {table} dev eth0 {args}")

    def make_managed(self) -> None:
        for i in ROUTERS.values():
            for f in (4, 6):
                self.ip("node", f"-{f} neigh replace {seg(f, i)} dev eth0 managed")

    def install_rules(self) -> None:
        for f in (4, 6):
            self.ip("node", f"-{f} rule add from {POOL[f]} lookup {TABLE} priority {RULE_PRIORITY}")

    def install_path(self, path: str, gateways=(1, 2), resilient: str = "buckets 128 idle_timer 3",
                     families=(4, 6)) -> None:
        """Table 20's default route via `gateways` (segment indexes), as `path` says."""
        for f in families:
            if path == "legacy":
                hops = " ".join(f"nexthop via {seg(f, i)} dev eth0" for i in gateways)
                self.ip("node", f"-{f} route replace default table {TABLE} {hops}")
                continue
            for i in gateways:  # members are made once: replacing one would touch its buckets
                if not self.ip("node", f"nexthop show id {f * 10 + i}", check=False).strip():
                    self.ip("node", f"nexthop add id {f * 10 + i} via {seg(f, i)} dev eth0")
            kind = f" type resilient {resilient}" if path == "resilient" else ""
            group = "/".join(str(f * 10 + i) for i in gateways)
            self.ip("node", f"nexthop replace id {f * 100} group {group}{kind}")
            self.ip("node", f"-{f} route replace default table {TABLE} nhid {f * 100}")

    def start_nra(self, *flags: str) -> None:
        exe = REPO / ".venv" / "bin" / "nra"
        if not exe.exists():
            raise BenchError(f"{exe} missing: run scripts/setup")
        static = self.run_dir / "metallb.yaml"
        static.write_text(nra_static_file())
        self.procs["nra"] = subprocess.Popen(
            [str(exe), "--netns", self.ns("node"), "--static-file", str(static), "--health-address", "off", *flags],
            stdout=open(self.run_dir / "nra.log", "w"), stderr=subprocess.STDOUT)
        wait_for(lambda: all(self.ip("node", f"-{f} route show table {TABLE}", check=False).strip() for f in (4, 6)),
                 15, "nra to program table 20")

    # -- daemons --
    def start_frr_node(self) -> None:
        """FRR's zebra and bgpd as the node's BGP daemon instead of BIRD: zebra installs what
        it learns in the main table through nexthop objects (`nhid`), proto bgp. Run as the
        frr user (FRR refuses root outside its vty group), sockets in the run directory."""
        # (its own directory under /tmp: the frr user cannot reach into a root-only run_dir)
        frr = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-frr-"))
        self.dirs.append(frr)
        neighbours = [(f, seg(f, i)) for i in ROUTERS.values() for f in (4, 6)]
        conf = [f"router bgp {AS_NODE}", f" bgp router-id {NODE[4]}", " no bgp ebgp-requires-policy",
                " no bgp default ipv4-unicast"]
        for _, address in neighbours:
            conf += [f" neighbor {address} remote-as {AS_ROUTERS}", f" neighbor {address} timers 1 3",
                     f" neighbor {address} timers connect 1"]
        for f in (4, 6):
            conf += [f" address-family ipv{f} unicast"]
            conf += [f"  neighbor {address} activate" for family, address in neighbours if family == f]
            conf += [" exit-address-family"]
        (frr / "bgpd.conf").write_text("\n".join(conf) + "\n")
        (frr / "zebra.conf").write_text("hostname node\n")
        (frr / "vtysh.conf").write_text("")
        run(["chown", "-R", "frr:frr", str(frr)])
        common = ["-N", self.prefix, "-u", "frr", "-g", "frr", "--vty_socket", str(frr), "-z", str(frr / "zserv.api"),
                  "-P", "0", "--log", "stdout"]
        self.spawn("zebra", "node", ["/usr/lib/frr/zebra", *common, "-f", str(frr / "zebra.conf"),
                                     "-i", str(frr / "zebra.pid")])
        wait_for(lambda: (frr / "zserv.api").exists(), 10, "zebra's socket")
        self.spawn("bgpd", "node", ["/usr/lib/frr/bgpd", *common, "-f", str(frr / "bgpd.conf"),
                                    "-i", str(frr / "bgpd.pid")])

    def start_birds(self, roles: tuple[str, ...] = ("node", *ROUTERS), node_table: int = LEARNED_TABLE) -> None:
        for role in roles:
            conf = self.run_dir / f"{role}.conf"
            conf.write_text(bird_conf(role, self.run_dir / f"bird-{role}.log"))
            self.spawn(f"bird-{role}", role, ["bird", "-f", "-c", str(conf), "-s", str(self.run_dir / f"{role}.ctl"),
                                              "-P", str(self.run_dir / f"{role}.pid")])

        def ready() -> bool:
            routes = {f: self.ip("node", f"-{f} route show table {node_table}", check=False) for f in (4, 6)}
            if not all(learned(f, i).split("/")[0] in routes[f] for f in (4, 6) for i in ROUTERS.values()):
                return False
            if "node" not in roles:  # (another daemon on the node: its routes are all there is to see)
                return True
            bfd = run(["birdc", "-s", str(self.run_dir / "node.ctl"), "show", "bfd", "sessions"], check=False)
            return bfd.count(" Up ") >= 4

        wait_for(ready, 30, "BGP sessions, BFD sessions and the learned routes")

    def start_echo(self) -> None:
        proc = self.spawn("echo", "pod", [sys.executable, str(HERE), "_echo"], stdout=subprocess.PIPE)
        if proc.stdout.readline().strip() != b"ready":
            raise BenchError("echo server did not start")

    def cut(self, router: str, how: str = "link") -> None:
        if how == "link":
            self.ip(router, "link set dev eth0 down")
        self.stop(f"bird-{router}", signal.SIGKILL)

    def out_of_table(self, router: str, since: float, timeout: float) -> dict[int, float | None]:
        """Per family, seconds from `since` until table 20 no longer goes via `router` (polled
        every 20 ms; None if it still does after `timeout`)."""
        out: dict[int, float | None] = {4: None, 6: None}
        while time.time() - since < timeout and None in out.values():
            for f in (4, 6):
                if out[f] is None and seg(f, ROUTERS[router]) + " " not in self.ip(
                        "node", f"-{f} route show table {TABLE}", check=False):
                    out[f] = time.time() - since
            time.sleep(0.02)
        return out


def wait_for(check, timeout: float, what: str, every: float = 0.05) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise BenchError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


# -- events in the node: neighbour states and learned routes -------------------------------

class Monitor:
    """`ip monitor neigh route` in the node, each line stamped when read; `on_line` may react."""

    def __init__(self, topo: Topology, on_line=None):
        self.lines: list[tuple[float, str]] = []
        self.on_line = on_line
        self.proc = topo.spawn("monitor", "node", ["ip", "monitor", "neigh", "route"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            stamp = time.time()
            self.lines.append((stamp, line.strip()))
            if self.on_line:
                self.on_line(stamp, line.strip())

    def first(self, since: float, match) -> float | None:
        for stamp, line in list(self.lines):
            if stamp >= since and match(line):
                return stamp - since
        return None


def neigh_failed(address: str):
    return lambda line: line.split()[:1] == [address] and "FAILED" in line.split()


def route_deleted(prefix: str):
    return lambda line: line.startswith(f"Deleted {prefix} ")


# -- the clients ------------------------------------------------------------------------------

def serve_echo() -> None:
    sel = selectors.DefaultSelector()
    for f, fam in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((LB[f], ECHO_PORT))
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            data, addr = key.fileobj.recvfrom(64)
            key.fileobj.sendto(data, addr)


def probe(family: int, flows: int, duration: float, interval: float, sport_base: int) -> dict:
    """UDP probes round-robin over `flows` sockets (source ports sport_base + i) to the echo
    server; each probe: [send time, flow, replied within 0.5 s, the client link it came back on
    (r1 / r2: which router carried the reply)]."""
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    level, opt = (socket.IPPROTO_IP, IP_PKTINFO) if family == 4 else \
        (socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO)
    names = {i: n for i, n in socket.if_nameindex()}
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(flows):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(level, opt, 1)
        s.bind((CLIENT[family], sport_base + i))
        s.connect((LB[family], ECHO_PORT))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    sent: list[list] = []
    start = time.monotonic()
    wall = time.time() - start
    seq = 0
    while True:
        now = time.monotonic()
        if now - start >= duration + 0.5:
            break
        if now - start < duration and now >= start + seq * interval:
            flow = seq % flows
            sent.append([wall + now, flow, False, None])
            try:
                socks[flow].send(seq.to_bytes(8, "big"))
            except OSError:
                pass  # counts as lost
            seq += 1
        wait = start + seq * interval - time.monotonic() if now - start < duration else 0.05
        for key, _ in sel.select(timeout=max(0.0, wait)):
            while True:
                try:
                    data, anc, _, _ = key.fileobj.recvmsg(64, 256)
                except OSError:
                    break
                n = int.from_bytes(data[:8], "big")
                if n < len(sent) and wall + time.monotonic() - sent[n][0] <= 0.5:
                    sent[n][2] = True
                    for _, _, payload in anc:  # in_pktinfo / in6_pktinfo: the ifindex
                        index = int.from_bytes(payload[:4] if family == 4 else payload[16:20], sys.byteorder)
                        sent[n][3] = names.get(index, str(index))
    return {"probes": sent}


def start_probe(topo: Topology, family: int, duration: float, flows: int = 32,
                interval: float = 0.005, sport_base: int = 20000) -> tuple[subprocess.Popen, Path]:
    out = topo.run_dir / f"probe{family}.json"
    proc = topo.spawn(f"probe{family}", "client",
                      [sys.executable, str(HERE), "_probe", "--family", str(family), "--flows", str(flows),
                       "--duration", str(duration), "--interval", str(interval), "--sport-base", str(sport_base),
                       "--out", str(out)])
    return proc, out


def finish_probe(proc: subprocess.Popen, out: Path, timeout: float) -> list:
    if proc.wait(timeout=timeout) != 0:
        log = out.parent / f"{out.stem}.log"
        raise BenchError(f"probe failed: {log.read_text()[-600:] if log.exists() else '(no log)'}")
    return json.loads(out.read_text())["probes"]


def outage_end(lost: list[float], gap: float = 0.5) -> float | None:
    """The last loss of the first burst (losses less than `gap` apart): after it only stray
    single losses may follow (a nexthop group counts a peer without neighbour entry as good,
    so each time the kernel drops a FAILED entry one reply goes to the dead router)."""
    end = None
    for t in sorted(lost):
        if end is not None and t - end > gap:
            break
        end = t
    return end


# -- one failover run -------------------------------------------------------------------------

def failover_run(sc: Scenario, prefix: str, run_dir: Path, before: float = 3.0) -> dict:
    with Topology(prefix, run_dir) as topo:
        topo.set_timers(TIMERS[sc.timers])
        if sc.managed:
            topo.make_managed()
        if sc.path == "nra":
            topo.start_nra(*sc.nra_flags)
        else:
            topo.install_rules()
            topo.install_path(sc.path)
        topo.start_echo()
        if sc.bird:
            topo.start_birds()
        else:  # the entries exist, as after any earlier exchange (a BGP session, a ping)
            for f in (4, 6):
                for i in ROUTERS.values():
                    run(["ip", "netns", "exec", topo.ns("node"), "ping", f"-{f}", "-c1", "-W1", seg(f, i)])
        left_out: dict[int, float] = {}

        def react(stamp: float, line: str) -> None:  # learned-route liveness, emulated
            for f in (4, 6):
                if f not in left_out and route_deleted(learned(f, 1))(line):
                    left_out[f] = stamp
                    other = seg(f, 2)
                    if sc.path == "legacy":
                        topo.ip("node", f"-{f} route replace default table {TABLE} via {other} dev eth0")
                    else:
                        topo.ip("node", f"nexthop replace id {f * 100} group {f * 10 + 2}")

        monitor = Monitor(topo, react if sc.learned_liveness else None)
        probes = {f: start_probe(topo, f, before + sc.after) for f in (4, 6)} if sc.traffic else {}
        time.sleep(before)
        cut = time.time()
        topo.cut("r1", sc.cut)
        result: dict = {"cut": cut}
        left = topo.out_of_table("r1", cut, sc.after) if sc.path == "nra" else {4: None, 6: None}
        if probes:
            for f, (proc, out) in probes.items():
                sent = finish_probe(proc, out, sc.after + 30)
                lost = [t for t, _, ok, _ in sent if not ok and t >= cut - 0.5]
                end = outage_end(lost)
                result[f"v{f}"] = {"last_lost_s": max(0.0, max(lost) - cut) if lost else 0.0,
                                   "outage_s": max(0.0, end - cut) if end else 0.0,
                                   "stray_lost": sum(1 for t in lost if end and t > end),
                                   "lost": len(lost),
                                   "lost_per_s": [sum(1 for t in lost if k <= t - cut < k + 1)
                                                  for k in range(int(sc.after))],
                                   "still_losing": bool(lost) and end - cut > sc.after - 1.0,
                                   "via_r1_before": sum(1 for t, _, ok, via in sent if ok and t < cut and via == "r1"),
                                   "via_r1_after_1s": sum(1 for t, _, ok, via in sent if ok and t > cut + 1
                                                          and via == "r1")}
        else:
            time.sleep(sc.after)
        for f in (4, 6):
            r = result.setdefault(f"v{f}", {})
            # r1's neighbour entry after the cut, to explain the figures (first 40 changes)
            r["r1_entry"] = [f"{stamp - cut:.2f} {line}" for stamp, line in monitor.lines
                             if stamp >= cut and line.removeprefix("Deleted ").split()[:1] == [seg(f, 1)]][:40]
            r["failed_s"] = monitor.first(cut, neigh_failed(seg(f, 1)))
            r["r1_out_of_table_s"] = left[f]
            r["withdrawn_s"] = monitor.first(cut, route_deleted(learned(f, 1))) if sc.bird else None
        return result


# -- flows that change router -----------------------------------------------------------------

def routers_of_flows(topo: Topology, family: int, flows: int, proto: str = "tcp", sport_base: int = 10000,
                     dport: int = 80) -> list[str]:
    """The router each forwarded reply flow (pod -> client) is sent to, by `ip route get`."""
    batch = "".join(f"route get {CLIENT[family]} from {LB[family]} iif pod0 ipproto {proto} "
                    f"sport {sport_base + n} dport {dport}\n" for n in range(flows))
    out = run(["ip", f"-{family}", "-n", topo.ns("node"), "-batch", "-"], input=batch)
    via = re.findall(r" via (\S+) ", out)
    if len(via) != flows:
        raise BenchError(f"route get: {len(via)} answers for {flows} flows: {out[:300]}")
    return via


def changed(a: list[str], b: list[str]) -> float:
    return sum(x != y for x, y in zip(a, b)) / len(a)


def flow_stability(prefix: str, run_dir: Path, flows: int = 1000, idle_timer: int = 3) -> list[dict]:
    """For 2 and 4 nexthops and each path kind: the share of flows that change router when
    the first nexthop leaves, when it comes back, and (resilient) once the buckets are idle."""
    rows = []
    with Topology(prefix, run_dir) as topo:
        topo.install_rules()
        for count in (2, 4):
            everyone = tuple(range(1, count + 1))
            for path in ("legacy", "group", "resilient"):
                for f in (4, 6):
                    topo.ip("node", f"-{f} route flush table {TABLE}", check=False)
                topo.ip("node", "nexthop flush", check=False)
                spec = f"buckets 128 idle_timer {idle_timer}"
                for f in (4, 6):
                    topo.install_path(path, everyone, spec, (f,))
                    s0 = routers_of_flows(topo, f, flows)
                    topo.install_path(path, everyone[1:], spec, (f,))
                    s1 = routers_of_flows(topo, f, flows)
                    topo.install_path(path, everyone, spec, (f,))
                    s2 = routers_of_flows(topo, f, flows)
                    row = {"nexthops": count, "path": path, "family": f, "flows": flows,
                           "moved_on_leave": changed(s0, s1),
                           "survivors_moved_on_leave": sum(a != b for a, b in zip(s0, s1) if a != seg(f, 1)) / flows,
                           "moved_on_return": changed(s1, s2), "back_where_before": 1 - changed(s0, s2),
                           "share_on_returned": s2.count(seg(f, 1)) / flows}
                    if path == "resilient":  # no lookups for a while: the buckets go idle
                        time.sleep(idle_timer + 2)
                        s3 = routers_of_flows(topo, f, flows)
                        row |= {"moved_after_idle": changed(s2, s3), "share_on_returned_after_idle":
                                s3.count(seg(f, 1)) / flows, "back_where_before_after_idle": 1 - changed(s0, s3)}
                    rows.append(row)
    return rows


def packets_check(prefix: str, run_dir: Path, flows: int = 32, phase: float = 4.0) -> list[dict]:
    """Real UDP flows under way while r1 leaves table 20's route and comes back: per flow, the
    router its replies came through in each phase (from the client's ingress link), and
    whether `ip route get` for the same ports predicted it."""
    rows = []
    for path in ("legacy", "group", "resilient"):
        with Topology(prefix, run_dir) as topo:
            topo.install_rules()
            topo.install_path(path, resilient="buckets 128 idle_timer 1")
            topo.start_echo()
            probes = {f: start_probe(topo, f, 3 * phase, flows=flows, interval=0.001, sport_base=30000)
                      for f in (4, 6)}
            t0 = time.time()
            predicted = {}
            time.sleep(phase / 2)
            predicted[0] = {f: routers_of_flows(topo, f, flows, "udp", 30000, ECHO_PORT) for f in (4, 6)}
            time.sleep(phase / 2)
            topo.install_path(path, (2,), "buckets 128 idle_timer 1")
            predicted[1] = {f: routers_of_flows(topo, f, flows, "udp", 30000, ECHO_PORT) for f in (4, 6)}
            time.sleep(phase)
            topo.install_path(path, (1, 2), "buckets 128 idle_timer 1")
            predicted[2] = {f: routers_of_flows(topo, f, flows, "udp", 30000, ECHO_PORT) for f in (4, 6)}
            for f, (proc, out) in probes.items():
                sent = finish_probe(proc, out, 3 * phase + 30)
                seen = []
                for k in range(3):  # the router of each flow in the second half of each phase
                    lo, hi = t0 + k * phase + phase / 2, t0 + (k + 1) * phase
                    by_flow: dict[int, set] = {}
                    for t, flow, ok, via in sent:
                        if ok and lo <= t < hi:
                            by_flow.setdefault(flow, set()).add(via)
                    seen.append([",".join(sorted(by_flow.get(n, {"-"}))) for n in range(flows)])
                name = {seg(f, 1): "r1", seg(f, 2): "r2"}
                agree = sum(seen[k][n] == name[predicted[k][f][n]] for k in range(3) for n in range(flows))
                rows.append({"path": path, "family": f, "flows": flows, "phases": seen,
                             "moved_on_leave": changed(seen[0], seen[1]), "moved_on_return": changed(seen[1], seen[2]),
                             "route_get_agrees": f"{agree}/{3 * flows}"})
    return rows


# -- runner and report ------------------------------------------------------------------------

def _terminate(signum, frame):  # SIGTERM ends us like Ctrl-C: the `finally`s clean up
    raise KeyboardInterrupt


def unique_prefix(tag: str) -> str:
    return f"fomb{os.getpid()}{tag}"


def scratch(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"fomb-{tag}-"))


def run_all(names: list[str], runs: int, jobs: int) -> int:
    """Each (scenario, run) in its own process and topology, `jobs` at a time; JSON lines out."""
    queue = [(name, k) for k in range(runs) for name in names]
    active: list[tuple[subprocess.Popen, str, int]] = []
    failed = 0
    try:
        while queue or active:
            while queue and len(active) < jobs:
                name, k = queue.pop(0)
                proc = subprocess.Popen([sys.executable, str(HERE), "failover", "--scenario", name, "--runs", "1",
                                         "--tag", f"j{k}{len(queue)}"], stdout=subprocess.PIPE, text=True)
                active.append((proc, name, k))
            time.sleep(0.2)
            for item in list(active):
                proc, name, k = item
                if proc.poll() is None:
                    continue
                active.remove(item)
                out = proc.stdout.read()
                if proc.returncode:
                    failed += 1
                    print(f"{name} run {k} failed (exit {proc.returncode})", file=sys.stderr)
                sys.stdout.write(out)
                sys.stdout.flush()
    finally:
        for proc, _, _ in active:
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in active:
            proc.wait()
    return 1 if failed else 0


def _span(values: list, window: float) -> str:
    if not values:
        return "-"
    shown = [f"> {window:.0f} s" if v is None else f"{v:.2f}" for v in values]
    if all(v is not None for v in values):
        lo, hi = min(values), max(values)
        return f"{lo:.2f} – {hi:.2f} s" if len(values) > 1 else f"{lo:.2f} s"
    return ", ".join(shown)


def report(path: Path) -> str:
    """Markdown: one row per scenario and family, min – max over its runs."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    by: dict[str, list] = {}
    for row in rows:
        by.setdefault(row["scenario"], []).append(row)
    out = ["| scenario | return path | node timers | managed | traffic | BGP+BFD | runs | family | cut → FAILED "
           "| cut → learned route gone | cut → end of outage | cut → last lost reply (stray losses) |",
           "|" + "---|" * 12]
    for name in [n for n in SCENARIOS if n in by]:
        runs = by[name]
        sc = Scenario(**runs[0]["config"])
        for f in (4, 6):
            rs = [r[f"v{f}"] for r in runs]
            never = [x.get("still_losing") for x in rs]
            outage = [None if n else x.get("outage_s") for x, n in zip(rs, never)] if sc.traffic else []
            last = [None if n else x.get("last_lost_s") for x, n in zip(rs, never)] if sc.traffic else []
            stray = f" ({'/'.join(str(x.get('stray_lost', 0)) for x in rs)})" if sc.traffic else ""
            out.append(f"| {name} | {sc.path} | {sc.timers} | {'yes' if sc.managed else 'no'} | "
                       f"{'32 UDP flows' if sc.traffic else 'none'} | {'yes' if sc.bird else 'no'} | {len(runs)} | "
                       f"IPv{f} | {_span([x['failed_s'] for x in rs], sc.after)} | "
                       f"{_span([x['withdrawn_s'] for x in rs], sc.after) if sc.bird else '-'} | "
                       f"{_span(outage, sc.after)} | {_span(last, sc.after)}{stray} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["failover", "all", "flows", "packets", "report", "_echo", "_probe"])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--tag", default="")
    parser.add_argument("--family", type=int, choices=[4, 6])
    parser.add_argument("--flows", type=int, default=32)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--sport-base", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "_echo":
        serve_echo()
        return 0
    if args.command == "_probe":
        args.out.write_text(json.dumps(probe(args.family, args.flows, args.duration, args.interval, args.sport_base)))
        return 0
    if args.command == "report":
        print(report(args.file))
        return 0
    if os.geteuid() != 0:
        print("failover_mechanisms.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "all":
            return run_all(args.only or list(SCENARIOS), args.runs, args.jobs)
        if args.command == "failover":
            sc = SCENARIOS[args.scenario]
            for k in range(args.runs):
                tag = f"{args.tag}{k}"
                result = failover_run(sc, unique_prefix(tag), scratch(tag))
                print(json.dumps({"scenario": args.scenario, "config": asdict(sc), "kernel": os.uname().release,
                                  **result}), flush=True)
            return 0
        rows = (flow_stability if args.command == "flows" else packets_check)(unique_prefix("f"), scratch("f"))
        for row in rows:
            print(json.dumps(row), flush=True)
        return 0
    except BenchError as exc:
        print(f"failover_mechanisms.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("failover_mechanisms.py: interrupted; namespaces removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
