"""A node with three uplinks, each on its own link to its own pair of stateful routers (BIRD),
for the uplink groups of issue 16 (docs/uplinks.md).

              client (10.79.0.1, fd00:79::1 on lo; BIRD; ECMP over each pool's pair)
       /     |      |      |      |      \\
      r1    r2     r3     r4     r5     r6        (each its own link to the client)
        \\  /          \\  /          \\  /
   up1 10.77.1.0/24  up2 10.77.2.0/24  up3 10.77.3.0/24   (a bridge each; up3 floods every frame)
         eth1            eth2             eth3
                        node (BIRD: pool A to r1 r2, pool B to r3 r4, pool C to r5 r6;
                              an echo server on each pool's LB IP; default route via r3)

- r1 and r3 share one MAC on two uplinks: two routers.
- r5 and r6 share one MAC on up3 (a VRRP/MLAG-style virtual MAC): the bridge floods, as a
  bond to an MLAG pair delivers a frame to either; the one that forwarded the request has
  its state and forwards the reply, the other drops it.
- Every router is stateful (a reply whose request it did not forward is dropped) and records
  per flow the client ports of the requests and replies it forwarded.

Standard library only, like testbed/lab.py, whose BIRD and nft pieces it uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import lab as base
from testbed.netns import create_netns, list_netns, run

CLIENT4, CLIENT6 = base.CLIENT4, base.CLIENT6
AS_NODE, AS_ROUTERS, AS_CLIENT = base.AS_NODE, base.AS_ROUTERS, base.AS_CLIENT
POOLS = {"a": 1, "b": 2, "c": 3}  # pool -> its uplink
SHARED_MAC = "02:00:00:00:01:01"  # r1 and r3: one MAC on two uplinks
VIRTUAL_MAC = "00:00:5e:00:01:03"  # r5 and r6: one MAC on one uplink (VRRP's range)
ECHO_PORT = base.ECHO_PORT


def pool4(pool: str) -> str:
    return f"10.80.{POOLS[pool]}.0/28"


def pool6(pool: str) -> str:
    return f"fd00:80:{POOLS[pool]}::/120"


def lb(pool: str, family: int) -> str:
    return f"10.80.{POOLS[pool]}.10" if family == 4 else f"fd00:80:{POOLS[pool]}::10"


@dataclass(frozen=True)
class Router:
    name: str
    index: int  # 1..6

    @property
    def uplink(self) -> int:
        return (self.index + 1) // 2

    @property
    def seg4(self) -> str:
        return f"10.77.{self.uplink}.{(self.index - 1) % 2 + 1}"

    @property
    def seg6(self) -> str:
        return f"fd00:77:{self.uplink}::{(self.index - 1) % 2 + 1}"

    @property
    def node4(self) -> str:  # the node's address on its uplink
        return f"10.77.{self.uplink}.10"

    @property
    def node6(self) -> str:
        return f"fd00:77:{self.uplink}::10"

    @property
    def cl4(self) -> str:
        return f"10.78.{self.index}.1"

    @property
    def cl6(self) -> str:
        return f"fd00:78:{self.index}::1"

    @property
    def client4(self) -> str:
        return f"10.78.{self.index}.2"

    @property
    def client6(self) -> str:
        return f"fd00:78:{self.index}::2"

    @property
    def pool(self) -> str:
        return next(p for p, u in POOLS.items() if u == self.uplink)

    @property
    def mac(self) -> str | None:
        return {1: SHARED_MAC, 3: SHARED_MAC, 5: VIRTUAL_MAC, 6: VIRTUAL_MAC}.get(self.index)


R = {f"r{i}": Router(f"r{i}", i) for i in range(1, 7)}
ROUTERS = tuple(R)
ROLES = ("node", "client", "up1", "up2", "up3", *ROUTERS)
BIRD_ROLES = ("node", "client", *ROUTERS)


def bird_conf_node(log: Path) -> str:
    conf = base._header("10.77.1.10", log)
    for pool in POOLS:
        conf += (f"protocol static {pool}4 {{ ipv4; route {lb(pool, 4)}/32 blackhole; }}\n"
                 f"protocol static {pool}6 {{ ipv6; route {lb(pool, 6)}/128 blackhole; }}\n")
    for r in R.values():
        conf += base._bgp(f"{r.name}_4", r.node4, AS_NODE, r.seg4, AS_ROUTERS, "ipv4", "none",
                          f'where proto = "{r.pool}4"')
        conf += base._bgp(f"{r.name}_6", r.node6, AS_NODE, r.seg6, AS_ROUTERS, "ipv6", "none",
                          f'where proto = "{r.pool}6"')
    return conf


def bird_conf_router(r: Router, log: Path) -> str:
    return (base._header(r.seg4, log) + base._kernel()
            + base._bgp("node4", r.seg4, AS_ROUTERS, r.node4, AS_NODE, "ipv4", "all", "none")
            + base._bgp("node6", r.seg6, AS_ROUTERS, r.node6, AS_NODE, "ipv6", "all", "none")
            + base._bgp("client4", r.cl4, AS_ROUTERS, r.client4, AS_CLIENT, "ipv4", "all", "where source = RTS_BGP")
            + base._bgp("client6", r.cl6, AS_ROUTERS, r.client6, AS_CLIENT, "ipv6", "all", "where source = RTS_BGP"))


def bird_conf_client(log: Path) -> str:
    conf = base.bird_conf_client(log)
    # (the base client peers with the base lab's two routers: peer with these six instead)
    conf = conf[:conf.index("protocol bgp")]
    for r in R.values():
        conf += base._bgp(f"{r.name}_4", r.client4, AS_CLIENT, r.cl4, AS_ROUTERS, "ipv4", "all", 'where proto = "me4"')
        conf += base._bgp(f"{r.name}_6", r.client6, AS_CLIENT, r.cl6, AS_ROUTERS, "ipv6", "all", 'where proto = "me6"')
    return conf


def metallb_objects() -> str:
    """The node's MetalLB configuration as objects: a BGPPeer per router and family, a pool per
    uplink, each advertised to its uplink's peers only (BGPAdvertisement.spec.peers)."""
    docs = []
    for r in R.values():
        for family, address in ((4, r.seg4), (6, r.seg6)):
            docs.append(f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {r.name}v{family}, "
                        f"namespace: metallb-system}}\nspec: {{myASN: {AS_NODE}, peerASN: {AS_ROUTERS}, "
                        f"peerAddress: {address}}}\n")
    for pool, uplink in POOLS.items():
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool-{pool}, "
                    f"namespace: metallb-system}}\nspec: {{addresses: [{pool4(pool)}, {pool6(pool)}]}}\n")
        peers = ", ".join(f"{r.name}v{f}" for r in R.values() if r.uplink == uplink for f in (4, 6))
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: adv-{pool}, "
                    f"namespace: metallb-system}}\nspec: {{ipAddressPools: [pool-{pool}], peers: [{peers}]}}\n")
    return "---\n".join(docs)


class UplinksLab(base.Lab):
    """The base lab's helpers (BIRD control, traffic, flows, conntrack) over this topology."""

    ROUTER_ROLES = ROUTERS

    def existing(self) -> list[str]:
        return [n for n in list_netns() if n in {self.ns(r) for r in ROLES}]

    def up(self) -> float:
        if self.existing():
            raise base.LabError(f"lab namespaces {self.prefix}-* already exist; run `down` first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
            started = time.monotonic()
            for role in BIRD_ROLES:
                self.start_bird(role)
            self.wait_sessions(BIRD_ROLES)
            self.wait_client_paths()
            (self.run_dir / "metallb.yaml").write_text(metallb_objects())
            return time.monotonic() - started
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        for role in ROLES:
            create_netns(self.ns(role))
            self.sysctl(role, **{"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                                 "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0})
        for uplink in (1, 2, 3):
            sw = f"up{uplink}"
            # up3 floods every frame (no learning): both routers behind the virtual MAC get it
            self.ip(sw, "link add name br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
                    + (" ageing_time 0" if uplink == 3 else ""))
            self.ip(sw, "link set dev br0 up")
            members = [("node", f"eth{uplink}", f"10.77.{uplink}.10", f"fd00:77:{uplink}::10", None)]
            members += [(r.name, "eth0", r.seg4, r.seg6, r.mac) for r in R.values() if r.uplink == uplink]
            for role, dev, a4, a6, mac in members:
                self.ip(sw, f"link add name {role} type veth peer name {dev} netns {self.ns(role)}")
                self.ip(sw, f"link set dev {role} master br0")
                self.ip(sw, f"link set dev {role} up")
                if mac:
                    self.ip(role, f"link set dev {dev} address {mac}")
                self.ip(role, f"addr add {a4}/24 dev {dev}")
                self.ip(role, f"-6 addr add {a6}/64 dev {dev} nodad")
                self.ip(role, f"link set dev {dev} up")
        for r in R.values():
            self.ip(r.name, f"link add name cl type veth peer name {r.name} netns {self.ns('client')}")
            self.ip(r.name, f"addr add {r.cl4}/24 dev cl")
            self.ip(r.name, f"-6 addr add {r.cl6}/64 dev cl nodad")
            self.ip(r.name, "link set dev cl up")
            self.ip("client", f"addr add {r.client4}/24 dev {r.name}")
            self.ip("client", f"-6 addr add {r.client6}/64 dev {r.name} nodad")
            self.ip("client", f"link set dev {r.name} up")
            self.sysctl(r.name, **{"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
            self.nft(r.name, base.router_flows_nft("10.80.0.0/16", "fd00:80::/32"))
            self.sysctl(r.name, **{"net.netfilter.nf_conntrack_tcp_loose": 0})
            self.nft(r.name, "flush chain inet nralab state\n" + base.NFT_ROUTER_STATEFUL)
        self.ip("client", f"addr add {CLIENT4}/32 dev lo")
        self.ip("client", f"-6 addr add {CLIENT6}/128 dev lo")
        self.sysctl("client", **{"net.ipv4.fib_multipath_hash_policy": 1, "net.ipv6.fib_multipath_hash_policy": 1})
        for pool in POOLS:
            self.ip("node", f"addr add {lb(pool, 4)}/32 dev lo")
            self.ip("node", f"-6 addr add {lb(pool, 6)}/128 dev lo")
        # the wrong way back for pools A and C, and half of B's: r3
        self.ip("node", f"route replace default via {R['r3'].seg4}")
        self.ip("node", f"-6 route replace default via {R['r3'].seg6}")
        self.sysctl("node", **{"net.ipv4.fib_multipath_use_neigh": 1, "net.ipv4.fib_multipath_hash_policy": 1,
                               "net.ipv6.fib_multipath_hash_policy": 1, "net.ipv4.ip_forward": 1,
                               "net.ipv6.conf.all.forwarding": 1})

    def start_bird(self, role: str) -> None:
        conf, ctl, pid = self.bird_paths(role)
        log = self.run_dir / f"{role}.log"
        conf.write_text(bird_conf_node(log) if role == "node" else
                        bird_conf_client(log) if role == "client" else bird_conf_router(R[role], log))
        self.exec(role, ["bird", "-c", str(conf), "-s", str(ctl), "-P", str(pid)])

    def wait_client_paths(self, timeout: float = 15) -> None:
        """Until the client reaches each pool's LB IP over both routers of its pair."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [(pool, f) for pool in POOLS for f in (4, 6)
                       if not all(f"dev {r.name} " in self.ip("client", f"-{f} route show {lb(pool, f)}", check=False)
                                  + " " for r in R.values() if r.pool == pool)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise base.LabError(f"client paths missing after {timeout} s: {missing}")
            time.sleep(0.05)

    def down(self) -> list[str]:
        base._kill_pidfile(self.run_dir / "nra.pid")
        base._kill_pidfile(self.run_dir / "echo-node.pid")
        for role in BIRD_ROLES:
            self.kill_bird(role)
        removed = self.existing()
        for name in removed:
            run(["ip", "netns", "del", name], check=False)
        if self.run_dir.is_dir():
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return removed

    def start_echo(self) -> None:
        pidfile, logfile = self.run_dir / "echo-node.pid", self.run_dir / "echo-node.log"
        with open(logfile, "w") as log:
            proc = subprocess.Popen([*self.netns("node").exec_prefix(), sys.executable, str(base.TRAFFIC), "echo",
                                     *(lb(p, f) for p in POOLS for f in (4, 6)), "--port", str(ECHO_PORT)],
                                    stdout=log, stderr=subprocess.STDOUT)
        pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 5
        while "listening" not in logfile.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise base.LabError(f"echo server failed: {logfile.read_text()}")
            time.sleep(0.02)
