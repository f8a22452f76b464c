"""The nra lab: network namespaces with BIRD 2 routers that show the return path on the wire.

Topology (every namespace is named `<prefix>-<role>`, so `down` removes exactly these):

                 client  (10.79.0.1, fd00:79::1 on lo; BIRD AS 64600, ECMP to r1 + r2)
                 /    \\
      10.78.1.0/24    10.78.2.0/24
               r1      r2        (BIRD AS 64500; LB routes from the node, client route from the
                 \\    /          client; stateful: a reply whose request they did not forward
                  \\  /           is dropped, and each flow is counted per router)
       sw: bridge 10.77.0.0/24, fd00:77::/64 ----- gw .254 (the node's default route: the wrong
                   |                                        way back; it has no route to the client)
                 node .10 (BIRD AS 64512 = MetalLB's speaker, BFD with r1/r2, installs the route
                   |        each router sends it; LB 10.80.0.10, fd00:80::10 on lo with
                   |        an echo server; LB 10.80.0.11, fd00:80::11 DNATed to the pod the way
                   |        kube-proxy does it, nftables or iptables-nft; nra programs this namespace)
             pod0 / \\ pod1
       pod 10.88.0.2      cpod 10.88.1.2   (a service's pod with its echo server; another pod,
       fd00:88::2         fd00:88:1::2      a client inside the cluster)

Standard library only, so `scripts/lab` runs with any python3; the e2e tests and the
benchmarks import it. Everything the lab writes (BIRD configs, sockets, logs, pid files, the
static MetalLB file) lives in one run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.netns import NetNS, NetnsError, add_veth, create_netns, list_netns, run

REPO = Path(__file__).resolve().parent.parent
TRAFFIC = Path(__file__).resolve().parent / "traffic.py"

DEFAULT_PREFIX = os.environ.get("NRA_LAB_PREFIX", "nralab")
DEFAULT_RUN_DIR = Path(os.environ.get("NRA_LAB_DIR", "/run/nralab"))

# -- addressing (all private: 10/8 and the fd00::/8 ULA range, only inside the lab) --------------
SEGMENT4, SEGMENT6 = "10.77.0", "fd00:77:"
NODE4, NODE6 = "10.77.0.10", "fd00:77::10"
GW4, GW6 = "10.77.0.254", "fd00:77::fe"
LB4, LB6 = "10.80.0.10", "fd00:80::10"  # on the node's lo: a listener bound to the LB IP
SVC4, SVC6 = "10.80.0.11", "fd00:80::11"  # a Service's LB IP, DNATed to the pod
POD4, POD6 = "10.88.0.2", "fd00:88::2"
CPOD4, CPOD6 = "10.88.1.2", "fd00:88:1::2"
POD_NETS4, POD_NETS6 = "10.88.0.0/16", "fd00:88::/32"
POOL4, POOL6 = "10.80.0.0/28", "fd00:80::/120"
CLIENT4, CLIENT6 = "10.79.0.1", "fd00:79::1"
CLIENT_NET4, CLIENT_NET6 = "10.79.0.0/24", "fd00:79::/64"
# Each router sends the node one route per family (10.81.<i>.0/24, fd00:81:<i>::/64), which
# the node's BIRD installs in its main table (proto bird): nra's learned-route liveness.
LEARNED_PROTO = "bird"
ECHO_PORT = 7007
AS_NODE, AS_ROUTERS, AS_CLIENT = 64512, 64500, 64600
ROUTERS = ("r1", "r2")
ROLES = ("sw", "node", "r1", "r2", "gw", "client", "pod", "cpod")
PODS = {"pod": (0, POD4, POD6), "cpod": (1, CPOD4, CPOD6)}  # role: (node link, v4, v6)
KUBE_PROXY_MODES = ("nftables", "iptables", "none")
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
    def learned4(self) -> str:  # the route it sends the node
        return f"10.81.{self.index}.0/24"

    @property
    def learned6(self) -> str:
        return f"fd00:81:{self.index}::/64"

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

# BFD on the node's segment, node and routers: a dead router's sessions drop in 3 x 100 ms.
BFD_MS, BFD_MULTIPLIER = 100, 3
_BFD = (f'protocol bfd {{ interface "eth0" {{ min rx interval {BFD_MS} ms; min tx interval {BFD_MS} ms; '
        f"idle tx interval 1 s; multiplier {BFD_MULTIPLIER}; }}; }}\n")

# Node neighbour timers: the return path leaves a dead router only once its neighbour entry
# is FAILED (fib_multipath_use_neigh). Kernel defaults make that 20-50 s; these ~2-4 s.
FAST_NEIGH = {"base_reachable_time_ms": 2000, "delay_first_probe_time": 1, "retrans_time_ms": 250,
              "ucast_solicit": 3, "mcast_solicit": 3}


# nra's options for each failover mechanism the lab compares (issue 10, docs/lab.md): routes
# learned from the routers, managed neighbours with nra's fast link timers, or neither.
FAILOVER_MODES = {
    "learned": ("--learned-route-protos", LEARNED_PROTO),
    "managed": ("--managed-neighbours", "1", "--peer-neigh-timers", "fast"),
    "none": (),
}
PEER_TIMERS_FAST_BASE_REACHABLE_MS = 1000  # what nra's PEER_NEIGH_TIMERS=fast sets


# -- BIRD configurations (pure) -----------------------------------------------------------------

def _bgp(name: str, local: str, local_as: int, neighbor: str, neighbor_as: int, family: str,
         imp: str, exp: str, bfd: bool = False) -> str:
    return (f"protocol bgp {name} {{\n  local {local} as {local_as};\n"
            f"  neighbor {neighbor} as {neighbor_as};\n{_BGP_TIMERS}\n" + ("  bfd on;\n" if bfd else "") +
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
    installs both into its kernel, passes the LB routes on to the client; sends the node its
    one route per family, over sessions with BFD."""
    return (_header(r.seg4, log) + _BFD + _kernel()
            + f"protocol static learned4 {{ ipv4; route {r.learned4} blackhole; }}\n"
            + f"protocol static learned6 {{ ipv6; route {r.learned6} blackhole; }}\n"
            + _bgp("node4", r.seg4, AS_ROUTERS, NODE4, AS_NODE, "ipv4", "all", 'where proto = "learned4"', bfd=True)
            + _bgp("node6", r.seg6, AS_ROUTERS, NODE6, AS_NODE, "ipv6", "all", 'where proto = "learned6"', bfd=True)
            + _bgp("client4", r.cl4, AS_ROUTERS, r.client4, AS_CLIENT, "ipv4", "all", "where source = RTS_BGP")
            + _bgp("client6", r.cl6, AS_ROUTERS, r.client6, AS_CLIENT, "ipv6", "all", "where source = RTS_BGP"))


def bird_conf_node(log: Path) -> str:
    """MetalLB's speaker stand-in: announces the LB /32 and /128 over sessions with BFD, and
    installs the routes the routers send it in the main table (proto bird), as FRR-K8s does
    with `toReceive`: they go when a router's session drops."""
    conf = _header(NODE4, log) + _BFD
    conf += f"protocol static lb4 {{ ipv4; route {LB4}/32 blackhole; route {SVC4}/32 blackhole; }}\n"
    conf += f"protocol static lb6 {{ ipv6; route {LB6}/128 blackhole; route {SVC6}/128 blackhole; }}\n"
    conf += "".join(f"protocol kernel kernel{f} {{ ipv{f} {{ import none; export where source = RTS_BGP; }}; }}\n"
                    for f in (4, 6))
    for r in R.values():
        conf += _bgp(f"{r.name}_4", NODE4, AS_NODE, r.seg4, AS_ROUTERS, "ipv4", "all", "where source = RTS_STATIC",
                     bfd=True)
        conf += _bgp(f"{r.name}_6", NODE6, AS_NODE, r.seg6, AS_ROUTERS, "ipv6", "all", "where source = RTS_STATIC",
                     bfd=True)
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


# What the routers and the gateway record: reply packets (LB pool -> client) arriving, and
# packets to or from the pods or the Service's LB IP (none should reach them from inside the
# cluster). Routers also record, per flow, the client ports whose requests (client -> LB) and
# replies (LB -> client) they forwarded, after their connection-state firewall.
NFT_COUNTERS = f"""\
table inet nralab {{
  counter replies4 {{ }}
  counter replies6 {{ }}
  counter internal4 {{ }}
  counter internal6 {{ }}
  chain pre {{
    type filter hook prerouting priority 0; policy accept;
    ip saddr {POOL4} ip daddr {CLIENT_NET4} counter name replies4
    ip6 saddr {POOL6} ip6 daddr {CLIENT_NET6} counter name replies6
    ip saddr {{ {POD_NETS4}, {SVC4} }} counter name internal4
    ip daddr {{ {POD_NETS4}, {SVC4} }} counter name internal4
    ip6 saddr {{ {POD_NETS6}, {SVC6} }} counter name internal6
    ip6 daddr {{ {POD_NETS6}, {SVC6} }} counter name internal6
  }}
}}
"""


def router_flows_nft(pool4: str, pool6: str, client4: str = CLIENT4, client6: str = CLIENT6) -> str:
    """A router's flow sets (client ports of the requests it forwarded to the pools, and of the
    replies it forwarded back) and its `state` chain, for these pools."""
    return f"""\
table inet nralab {{
  counter dropped4 {{ }}
  counter dropped6 {{ }}
  set requests4 {{ type inet_service; flags dynamic; size 65536; }}
  set replies4 {{ type inet_service; flags dynamic; size 65536; }}
  set requests6 {{ type inet_service; flags dynamic; size 65536; }}
  set replies6 {{ type inet_service; flags dynamic; size 65536; }}
  chain state {{
  }}
  chain forward_flows {{
    type filter hook forward priority 0; policy accept;
    jump state
    iifname "cl" ip saddr {client4} ip daddr {pool4} meta l4proto {{ tcp, udp }} add @requests4 {{ th sport }}
    iifname "eth0" ip saddr {pool4} ip daddr {client4} meta l4proto {{ tcp, udp }} add @replies4 {{ th dport }}
    iifname "cl" ip6 saddr {client6} ip6 daddr {pool6} meta l4proto {{ tcp, udp }} add @requests6 {{ th sport }}
    iifname "eth0" ip6 saddr {pool6} ip6 daddr {client6} meta l4proto {{ tcp, udp }} add @replies6 {{ th dport }}
  }}
}}
"""


NFT_ROUTER_FLOWS = router_flows_nft(POOL4, POOL6)

# A stateful firewall, as the routers this project exists for: a packet conntrack cannot
# place (a SYN-ACK whose SYN went through the other router) and a new connection from the
# node's side (a UDP reply whose request it did not see) are dropped.
NFT_ROUTER_STATEFUL = """\
add rule inet nralab state meta nfproto ipv4 ct state invalid counter name dropped4 drop
add rule inet nralab state meta nfproto ipv6 ct state invalid counter name dropped6 drop
add rule inet nralab state iifname "eth0" meta nfproto ipv4 ct state new counter name dropped4 drop
add rule inet nralab state iifname "eth0" meta nfproto ipv6 ct state new counter name dropped6 drop
"""


def kube_proxy_nftables() -> str:
    """The Service's LB IP DNATed to the pod as kube-proxy's nftables mode writes it (a table
    per family, the `service-ips` verdict map, external -> service -> endpoint chains,
    masquerading by mark 0x4000), TCP and UDP, externalTrafficPolicy Cluster."""
    out = []
    for fam, svc, pod, pods in (("ip", SVC4, POD4, POD_NETS4), ("ip6", SVC6, f"[{POD6}]", POD_NETS6)):
        endpoint = pod.strip("[]")
        tag_ep = endpoint.replace(":", ".")  # chain names cannot hold ':'
        chains = []
        for proto in ("tcp", "udp"):
            tag = f"lab/echo/{proto}/echo"
            chains.append(f"""
  chain external-{tag} {{
    jump mark-for-masquerade
    goto service-{tag}
  }}
  chain service-{tag} {{
    {fam} daddr {svc} {proto} dport {ECHO_PORT} {fam} saddr != {pods} jump mark-for-masquerade
    numgen random mod 1 vmap {{ 0 : goto endpoint-{tag}__{tag_ep}/{ECHO_PORT} }}
  }}
  chain endpoint-{tag}__{tag_ep}/{ECHO_PORT} {{
    {fam} saddr {endpoint} jump mark-for-masquerade
    meta l4proto {proto} dnat to {pod}:{ECHO_PORT}
  }}""")
        elements = ", ".join(f"{svc} . {proto} . {ECHO_PORT} : goto external-lab/echo/{proto}/echo"
                             for proto in ("tcp", "udp"))
        out.append(f"""table {fam} kube-proxy {{
  comment "rules for kube-proxy"
  map service-ips {{
    type {'ipv4_addr' if fam == 'ip' else 'ipv6_addr'} . inet_proto . inet_service : verdict
    elements = {{ {elements} }}
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    jump masquerading
  }}
  chain mark-for-masquerade {{
    meta mark set meta mark | 0x00004000
  }}
  chain masquerading {{
    meta mark & 0x00004000 == 0x00000000 return
    meta mark set meta mark ^ 0x00004000
    masquerade fully-random
  }}
  chain services {{
    {fam} daddr . meta l4proto . th dport vmap @service-ips
  }}{''.join(chains)}
}}
""")
    return "".join(out)


def kube_proxy_iptables(family: int) -> str:
    """The same as kube-proxy's iptables mode writes it (iptables-restore input for the nat
    table: KUBE-SERVICES -> KUBE-EXT -> KUBE-SVC -> KUBE-SEP, KUBE-MARK-MASQ 0x4000)."""
    svc, pod = (SVC4, POD4) if family == 4 else (SVC6, POD6)
    plen = 32 if family == 4 else 128
    dest = f"{pod}:{ECHO_PORT}" if family == 4 else f"[{pod}]:{ECHO_PORT}"
    lines = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    for proto in ("tcp", "udp"):
        lines += [f":KUBE-EXT-LABECHO{proto.upper()} - [0:0]", f":KUBE-SVC-LABECHO{proto.upper()} - [0:0]",
                  f":KUBE-SEP-LABECHO{proto.upper()} - [0:0]"]
    lines += [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    ]
    for proto in ("tcp", "udp"):
        tag = f"LABECHO{proto.upper()}"
        lines += [
            f'-A KUBE-SERVICES -d {svc}/{plen} -p {proto} -m comment --comment "lab/echo:{proto} loadbalancer IP" '
            f"-m {proto} --dport {ECHO_PORT} -j KUBE-EXT-{tag}",
            f"-A KUBE-EXT-{tag} -j KUBE-MARK-MASQ",
            f"-A KUBE-EXT-{tag} -j KUBE-SVC-{tag}",
            f'-A KUBE-SVC-{tag} -m comment --comment "lab/echo:{proto} -> {dest}" -j KUBE-SEP-{tag}',
            f"-A KUBE-SEP-{tag} -s {pod}/{plen} -j KUBE-MARK-MASQ",
            f"-A KUBE-SEP-{tag} -p {proto} -m {proto} -j DNAT --to-destination {dest}",
        ]
    return "\n".join(lines + ["COMMIT", ""])


def parse_bfd_sessions(text: str) -> dict[str, str]:
    """`birdc show bfd sessions` -> {neighbour address: state ('Up', 'Down', 'Init', ...)}."""
    sessions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "eth0":
            sessions[parts[0]] = parts[2]
    return sessions


def parse_bird_protocols(text: str) -> dict[str, str]:
    """`birdc show protocols` -> {name: state info}, BGP sessions only ('Established', ...)."""
    sessions = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "BGP":
            sessions[parts[0]] = " ".join(parts[5:])
    return sessions


# -- running things -----------------------------------------------------------------------------

class LabError(NetnsError):
    pass


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
        if not _alive(pid):
            break
        time.sleep(0.02)
    path.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    """Still running: a zombie has exited (its sockets are closed) and is only waiting for
    its parent, which for a daemonised BIRD can take a second or more."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass
class Lab:
    prefix: str = DEFAULT_PREFIX
    run_dir: Path = DEFAULT_RUN_DIR
    fast_neigh: bool = True
    # IP forwarding on the node, as on every Kubernetes node. It matters for failover: IPv6
    # multipath then does not even skip FAILED nexthops (see docs/lab.md).
    node_forwarding: bool = True
    # How the node DNATs the Service's LB IP to the pod: kube-proxy's nftables mode, its
    # iptables mode (iptables-nft), or not at all.
    kube_proxy: str = "nftables"
    # Routers drop replies whose request they did not forward (set_stateful_routers()).
    stateful_routers: bool = True
    figures: dict[str, float] = field(default_factory=dict)
    # The node's eth0 neighbour timers once built (FAST_NEIGH, or what the kernel gave it):
    # reset_node_neighbours() puts them back after nra's PEER_NEIGH_TIMERS changed them.
    node_neigh: dict[str, int] = field(default_factory=dict)
    #: the routers whose flows, drops and conntrack tables the helpers below read
    ROUTER_ROLES = ROUTERS

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def netns(self, role: str) -> NetNS:
        return NetNS(self.ns(role))

    # -- small helpers --
    def ip(self, role: str, args: str, check: bool = True) -> str:
        return self.netns(role).ip(args, check=check)

    def exec(self, role: str, argv: list[str], check: bool = True, timeout: float = 20, **kw):
        try:
            return self.netns(role).exec(argv, check=check, timeout=timeout, **kw)
        except NetnsError as exc:
            raise LabError(str(exc)) from None

    def sysctl(self, role: str, **values) -> None:
        self.netns(role).sysctl(**values)

    def nft(self, role: str, script: str) -> None:
        proc = self.netns(role).nft(script, check=False)
        if proc.returncode:
            raise LabError(f"nft in {self.ns(role)}: {proc.stderr.strip()}")

    def existing(self) -> list[str]:
        return [n for n in list_netns() if n in {self.ns(r) for r in ROLES}]

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
            create_netns(self.ns(role))
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
            self.nft(role, NFT_COUNTERS)
        for role in ROUTERS:
            self.nft(role, NFT_ROUTER_FLOWS)
            # conntrack (loaded by the rules above) must not pick up connections mid-stream
            self.sysctl(role, **{"net.netfilter.nf_conntrack_tcp_loose": 0})
        self.set_stateful_routers(self.stateful_routers)
        self._build_pods()
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
        self.node_neigh = self.neigh_timers()
        self.set_kube_proxy(self.kube_proxy)

    def _build_pods(self) -> None:
        """The pods: one veth each from the node (the node's end .1 / ::1), default route via it."""
        node = self.netns("node")
        for role, (index, a4, a6) in PODS.items():
            pod = self.netns(role)
            add_veth(node, f"pod{index}", pod, "eth0")
            node.ip(f"addr add 10.88.{index}.1/24 dev pod{index}")
            node.ip(f"-6 addr add fd00:88:{index}::1/64 dev pod{index} nodad")
            pod.ip(f"addr add {a4}/24 dev eth0")
            pod.ip(f"-6 addr add {a6}/64 dev eth0 nodad")
            pod.ip(f"route add default via 10.88.{index}.1")
            pod.ip(f"-6 route add default via fd00:88:{index}::1")

    def set_kube_proxy(self, mode: str) -> None:
        """DNAT the Service's LB IP to the pod as kube-proxy's `mode` does (replacing the other)."""
        if mode not in KUBE_PROXY_MODES:
            raise LabError(f"kube-proxy mode {mode!r}: expected one of {', '.join(KUBE_PROXY_MODES)}")
        self.exec("node", ["nft", "delete table ip kube-proxy"], check=False)
        self.exec("node", ["nft", "delete table ip6 kube-proxy"], check=False)
        for tool in ("iptables-nft", "ip6tables-nft"):
            if shutil.which(tool):
                for flag in ("-F", "-X"):
                    self.exec("node", [tool, "-t", "nat", flag], check=False)
        if mode == "nftables":
            self.nft("node", kube_proxy_nftables())
        elif mode == "iptables":
            for family, tool in ((4, "iptables-nft-restore"), (6, "ip6tables-nft-restore")):
                self.exec("node", [tool, "--noflush"], input=kube_proxy_iptables(family))
        self.kube_proxy = mode

    def set_stateful_routers(self, stateful: bool) -> None:
        """Routers that drop replies whose request they did not forward, or plain ones."""
        for role in ROUTERS:
            self.nft(role, "flush chain inet nralab state\n" + (NFT_ROUTER_STATEFUL if stateful else ""))
        self.stateful_routers = stateful

    def neigh_timers(self, role: str = "node") -> dict[str, int]:
        """The neighbour timers of `role`'s eth0, both families, by sysctl name."""
        keys = [f"net.{fam}.neigh.eth0.{k}" for fam in ("ipv4", "ipv6") for k in FAST_NEIGH]
        values = self.exec(role, ["sysctl", "-n", *keys]).stdout.split()
        return {k: int(v) for k, v in zip(keys, values, strict=True)}

    def reset_node_neighbours(self) -> None:
        """The node's eth0 as built: its neighbour timers back (nra's PEER_NEIGH_TIMERS stay
        when it stops) and its neighbour entries flushed (so are MANAGED_NEIGHBOURS' marks)."""
        self.sysctl("node", **self.node_neigh)
        for fam in ("-4", "-6"):
            self.ip("node", f"{fam} neigh flush dev eth0", check=False)

    def silence_node_bgp(self) -> None:
        """The node as fresh from a reboot: nothing has sent a packet to its routers yet. The
        Service's LB routes are pinned on the routers and the client (the traffic still comes
        in), the routers' sessions to the node disabled and the node's BIRD stopped (no BGP
        or BFD packet either way), the node's neighbour entries and every conntrack entry
        flushed. For the rest of the lab's life: the module's lab must be its own."""
        for r in R.values():
            self.ip(r.name, f"route replace {SVC4}/32 via {NODE4} metric 1")
            self.ip(r.name, f"-6 route replace {SVC6}/128 via {NODE6} metric 1")
        for fam, svc, src, hop in (("-4", f"{SVC4}/32", CLIENT4, "cl4"), ("-6", f"{SVC6}/128", CLIENT6, "cl6")):
            hops = " ".join(f"nexthop via {getattr(r, hop)} dev {r.name}" for r in R.values())
            self.ip("client", f"{fam} route replace {svc} metric 1 src {src} {hops}")
        for r in ROUTERS:
            for protocol in ("node4", "node6"):
                self.birdc(r, f"disable {protocol}")
        self.kill_bird("node")
        deadline = time.monotonic() + 10
        while self.bird_running("node"):
            if time.monotonic() > deadline:
                raise LabError("the node's BIRD did not stop")
            time.sleep(0.05)
        self.reset_node_neighbours()
        self.flush_conntrack()

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

    def wait_routes(self, timeout: float = 10, routers=ROUTERS) -> None:
        """Until the client has the LB routes over both routers, the routers the client's, the
        node the routes `routers` send it, and the node's BFD sessions with them are up."""
        deadline = time.monotonic() + timeout
        while not (self.client_paths_ready() and self.learned_ready(routers) and self.bfd_ready(routers)):
            if time.monotonic() > deadline:
                raise LabError(f"not ready after {timeout} s: client ECMP {self.client_paths_ready()}, "
                               f"node's learned routes {self.learned_routes()}, BFD {self.bfd_sessions()}")
            time.sleep(0.05)

    def learned_routes(self) -> dict[int, str]:
        """The routes the node's BIRD installed from what the routers sent it, per family."""
        return {f: self.ip("node", f"-{f} route show proto {LEARNED_PROTO}", check=False).strip() for f in (4, 6)}

    def learned_ready(self, routers=ROUTERS) -> bool:
        routes = self.learned_routes()
        return all(f"{R[r].learned4} via {R[r].seg4} " in routes[4] + " "
                   and f"{R[r].learned6} via {R[r].seg6} " in routes[6] + " " for r in routers)

    def bfd_sessions(self, role: str = "node") -> dict[str, str]:
        return parse_bfd_sessions(self.birdc(role, "show bfd sessions"))

    def bfd_ready(self, routers=ROUTERS) -> bool:
        sessions = self.bfd_sessions()
        return all(sessions.get(addr) == "Up" for r in routers for addr in (R[r].seg4, R[r].seg6))

    def client_paths_ready(self, routers=ROUTERS) -> bool:
        for fam, lb in (("-4", LB4), ("-6", LB6)):
            out = self.ip("client", f"{fam} route show {lb}", check=False)
            if not all(f"dev {r} " in out + " " for r in routers):
                return False
        return True

    def down(self) -> list[str]:
        """Stop what the lab started (by pid file), remove its namespaces and run dir."""
        _kill_pidfile(self.run_dir / "nra.pid")
        for role in ("node", "pod"):
            _kill_pidfile(self.run_dir / f"echo-{role}.pid")
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
        """Echo servers (TCP and UDP, port ECHO_PORT): on the node's LB IPs (a listener bound
        to the LB IP) and on the pod's addresses (the Service's backend)."""
        for role, addresses in (("node", (LB4, LB6)), ("pod", (POD4, POD6))):
            pidfile, logfile = self.run_dir / f"echo-{role}.pid", self.run_dir / f"echo-{role}.log"
            if pidfile.exists():
                continue
            with open(logfile, "w") as log:
                proc = subprocess.Popen([*self.netns(role).exec_prefix(), sys.executable, str(TRAFFIC), "echo",
                                         *addresses, "--port", str(ECHO_PORT)], stdout=log, stderr=subprocess.STDOUT)
            pidfile.write_text(str(proc.pid))
            deadline = time.monotonic() + 5
            while "listening" not in logfile.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LabError(f"echo server in {role} failed: {logfile.read_text()}")
                time.sleep(0.02)

    def restart_echo(self) -> None:
        """Fresh echo servers: half-open connections left by failed clients go with the old
        listeners (a client reusing such a port would otherwise meet them again)."""
        for role in ("node", "pod"):
            _kill_pidfile(self.run_dir / f"echo-{role}.pid")
        self.start_echo()

    def traffic(self, role: str, command: str, target: str, *args: str, timeout: float = 60) -> dict:
        """Run testbed/traffic.py `command` (tcp, udp) against `target` in `role`'s namespace;
        returns its JSON."""
        proc = self.exec(role, [sys.executable, str(TRAFFIC), command, target, "--port", str(ECHO_PORT), *args],
                         check=False, timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"{command} from {role} to {target} failed: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        if "ports" in result:
            result["ports"] = {int(port): ok for port, ok in result["ports"].items()}
        return result

    def tcp(self, family: int, flows: int = 8, timeout: float = 1.0, target: str | None = None,
            role: str = "client", hold: float = 0.0) -> dict:
        """`flows` TCP connections from `role` (default the client) to `target` (default the
        LB IP of the node's own listener): {"ok", "failed", "errors", "ports": {port: ok}}."""
        target = target or (LB4 if family == 4 else LB6)
        return self.traffic(role, "tcp", target, "--flows", str(flows), "--timeout", str(timeout),
                            "--hold", str(hold), timeout=60 + hold + flows * timeout)

    def ping(self, family: int, count: int = 3, target: str | None = None, role: str = "client") -> bool:
        target = target or (LB4 if family == 4 else LB6)
        proc = self.exec(role, ["ping", f"-{family}", "-c", str(count), "-i", "0.05", "-W", "1",
                                target], check=False)
        return proc.returncode == 0

    def _nft_json(self, role: str, *what: str) -> list[dict]:
        return json.loads(self.exec(role, ["nft", "-j", "list", *what]).stdout)["nftables"]

    def counters(self, name: str = "replies") -> dict[str, dict[int, int]]:
        """Packets counted by the routers' and the gateway's counter `name` (replies: LB pool ->
        client arriving there; internal: to or from the pods or the Service's LB IP)."""
        result = {}
        for role in (*ROUTERS, "gw"):
            got = {c["counter"]["name"]: c["counter"]["packets"] for c in self._nft_json(role, "counters")
                   if "counter" in c}
            result[role] = {4: got.get(f"{name}4", 0), 6: got.get(f"{name}6", 0)}
        return result

    def dropped(self) -> dict[str, dict[int, int]]:
        """Packets each router's connection-state firewall dropped, per family."""
        result = {}
        for role in self.ROUTER_ROLES:
            got = {c["counter"]["name"]: c["counter"]["packets"] for c in self._nft_json(role, "counters")
                   if "counter" in c}
            result[role] = {4: got.get("dropped4", 0), 6: got.get("dropped6", 0)}
        return result

    def flows(self, family: int) -> dict[str, dict[str, set[int]]]:
        """Per router, the client ports of the flows whose requests / replies it forwarded."""
        result = {}
        for role in self.ROUTER_ROLES:
            result[role] = {}
            for kind in ("requests", "replies"):
                listing = self._nft_json(role, "set", "inet", "nralab", f"{kind}{family}")
                elems = next(x["set"].get("elem", []) for x in listing if "set" in x)
                result[role][kind] = {e if isinstance(e, int) else e["elem"]["val"] for e in elems}
        return result

    def flush_conntrack(self, roles=None) -> None:
        """Forget every tracked connection in these namespaces (`conntrack -F`; default: the
        node and the routers)."""
        for role in roles or ("node", *self.ROUTER_ROLES):
            self.exec(role, ["conntrack", "-F"], check=False)

    def clear_flows(self) -> None:
        for role in self.ROUTER_ROLES:
            for family in (4, 6):
                for kind in ("requests", "replies"):
                    self.exec(role, ["nft", "flush", "set", "inet", "nralab", f"{kind}{family}"])

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
                               before: float = 1.0, after: float = 8.0, target: str | None = None) -> dict:
        """Probe with many UDP flows (to `target`, default the node's LB IP); cut `router`'s
        link to the node segment and kill its BIRD; return the probe summary with `outage_s`:
        from the cut to the last lost reply."""
        target = target or (LB4 if family == 4 else LB6)
        log = self.run_dir / "probe.json"
        with open(log, "w") as out:
            probe = subprocess.Popen(
                [*self.netns("client").exec_prefix(), sys.executable, str(TRAFFIC), "udp", target,
                 "--port", str(ECHO_PORT), "--flows", str(flows), "--duration", str(before + after)],
                stdout=out, stderr=subprocess.PIPE, text=True)
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

    def settle_peer_timers(self, base_reachable_ms: int = PEER_TIMERS_FAST_BASE_REACHABLE_MS,
                           timeout: float = 10) -> None:
        """Once nra has set its timers on the node's eth0, restart the neighbour entries under
        them. An entry keeps the reachable time it was armed with (up to 45 s of the kernel's
        30 s base), so right after nra starts the new timers would not show yet; flushing
        stands for a node where nra has run longer than that."""
        key = "base_reachable_time_ms"
        deadline = time.monotonic() + timeout
        while any(v != base_reachable_ms for k, v in self.neigh_timers().items() if k.endswith(key)):
            if time.monotonic() > deadline:
                raise LabError(f"the node's eth0 {key} is not {base_reachable_ms} after {timeout} s")
            time.sleep(0.05)
        for fam in ("-4", "-6"):
            self.ip("node", f"{fam} neigh flush dev eth0")
        self.wait_routes(timeout=timeout)

    def router_failover(self, family: int, after: float, router: str = "r1", flows: int = 32) -> dict:
        """measure_router_failure() from a route via both routers, then the router restored
        and back in the route ("back_s": from its BGP sessions up)."""
        self.wait_nexthops(family, ROUTERS, timeout=15)
        try:
            result = self.measure_router_failure(router, family=family, flows=flows, before=1.0, after=after)
            result["table_after"] = self.table_routes(family)
        finally:
            self.restore_router(router)
        result["back_s"] = self.wait_nexthops(family, ROUTERS, timeout=15)
        # replies still lost within a probe's reply timeout of the end: the outage outlasted it
        result["still_losing"] = result["outage_s"] >= after - 0.5
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


