#!/usr/bin/env python3
"""Data-plane cost of nra's state: forwarding rate of a node namespace with it, against the
same namespace without it (run as root; traffic only between its own namespaces).

    gen (10.200.1.2) --eth0-- node --eth1-- sink (10.200.2.2)

64-byte UDP datagrams (16 flows, `udpflood.c`, compiled here with cc) from gen to sink:
traffic the node forwards that is not LoadBalancer traffic, arriving on the link of its BGP
peers (10.200.1.10 and .11, with neighbour entries) as on a one-NIC node. Connection
tracking is on in both cases, as on every kube-proxy node. For each N and each mode the
node is measured bare, then with nra's state for N prefixes, alternating `--rounds` times;
the figure is median(with) / median(bare) of the packets per second the sink received.

- rules: nra's `rules` state (N `from <prefix> lookup 20` rules, table 20's route);
- conntrack: nra's `conntrack` state (the nft table with N prefixes, a table per router,
  three rules per family);
each installed by `nra --oneshot` and removed by `nra clean` between the measurements.

    .venv/bin/python benchmarks/fwd_bench.py [--sizes 1000,10000,100000] [--rounds 3] [--seconds 2]
        [--groups G] [--shapes distinct,consecutive]

--shapes: `distinct` (the default: /30s eight apart, never adjacent: N nft intervals) and/or
`consecutive` (/30s four apart: adjacent, they merge into a few intervals), as scale_bench.

--groups G: G uplink groups of two routers each (G pools, the prefixes dealt round-robin,
each BGPAdvertisement naming its pair of BGPPeers), so conntrack mode adds its group maps
and 2G router tables, as on a node with several uplinks.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testbed.netns import NetNS, add_veth, new_netns  # noqa: E402

PEERS = {"10.200.1.10": "02:00:00:00:0a:0a", "10.200.1.11": "02:00:00:00:0b:0b"}
GROUPS = 1  # --groups
STRIDE = {"distinct": 8, "consecutive": 4}
SHAPE = "distinct"  # --shapes, the one being measured


def peers() -> dict[str, str]:
    """The routers: a pair per uplink group, on the node's link (neighbour entries made)."""
    if GROUPS == 1:
        return PEERS
    return {f"10.200.1.{10 + i}": f"02:00:00:00:0a:{i:02x}" for i in range(2 * GROUPS)}
SINK = "10.200.2.2"
CONNTRACK_ON = "table inet ctrack { chain forward { type filter hook forward priority 0; policy accept; ct state invalid drop; }; }\n"


def prefixes(n: int) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    stride = STRIDE[SHAPE]  # 8: never adjacent; 4: adjacent, merged by nra into few intervals
    return [ipaddress.ip_network(f"{ipaddress.IPv4Address(base + i * stride)}/30") for i in range(n)]


def build() -> dict[str, NetNS]:
    gen, node, sink = new_netns("nra-fwd-gen"), new_netns("nra-fwd-node"), new_netns("nra-fwd-sink")
    add_veth(gen, "eth0", node, "eth0")
    add_veth(node, "eth1", sink, "eth0")
    gen.ip("addr add 10.200.1.2/24 dev eth0")
    gen.ip("route add default via 10.200.1.1")
    node.ip("addr add 10.200.1.1/24 dev eth0")
    node.ip("addr add 10.200.2.1/24 dev eth1")
    sink.ip("addr add 10.200.2.2/24 dev eth0")
    sink.ip("route add default via 10.200.2.1")
    node.sysctl(**{"net.ipv4.ip_forward": 1})
    for address, lladdr in peers().items():
        node.ip(f"neigh replace {address} lladdr {lladdr} dev eth0 nud permanent")
    node.nft(CONNTRACK_ON)
    # the sink drops what it gets without answering (no ICMP port unreachable back)
    sink.nft("table inet sink { chain input { type filter hook input priority 0; policy drop; }; }\n")
    return {"gen": gen, "node": node, "sink": sink}


def rx_packets(ns: NetNS) -> int:
    stats = json.loads(ns.ip("-s -j link show dev eth0"))[0]["stats64"]["rx"]
    return stats["packets"]


def rate(nets: dict[str, NetNS], flood: Path, seconds: float) -> float:
    before = rx_packets(nets["sink"])
    started = time.perf_counter()
    nets["gen"].exec([str(flood), SINK, "9", str(seconds)], timeout=seconds + 30)
    took = time.perf_counter() - started
    time.sleep(0.05)
    return (rx_packets(nets["sink"]) - before) / took


def config_text(n: int) -> str:
    if GROUPS > 1:
        nets = [str(p) for p in prefixes(n)]
        docs = [f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: r{i}, namespace: m}}\n"
                f"spec: {{myASN: 64512, peerASN: 64500, peerAddress: {address}}}\n" for i, address in enumerate(peers())]
        for g in range(GROUPS):
            docs.append(f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool{g}, namespace: m}}\n"
                        "spec:\n  addresses:\n" + "".join(f"  - {p}\n" for p in nets[g::GROUPS]))
            docs.append(f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: adv{g}, namespace: m}}\n"
                        f"spec: {{ipAddressPools: [pool{g}], peers: [r{2 * g}, r{2 * g + 1}]}}\n")
        return "---\n".join(docs)
    lines = ["peers:"] + [f"- peer-address: {p}" for p in PEERS]
    lines += ["address-pools:", "- name: bench", "  protocol: bgp", "  addresses:"]
    return "\n".join(lines + [f"  - {p}" for p in prefixes(n)]) + "\n"


def nra_state(node: NetNS, mode: str, config: Path, install: bool) -> None:
    """nra's state for this mode, installed by `nra --oneshot` or removed by `nra clean`."""
    argv = [sys.executable, "-m", "nra", "--return-path", mode, "--netns", node.name, "--static-file", str(config),
            "--health-address", "off", "--log-level", "warn", "--oneshot" if install else "--clean-and-exit"]
    subprocess.run(argv, check=True, cwd=REPO, timeout=600)


def measure(nets: dict[str, NetNS], flood: Path, n: int, mode: str, rounds: int, seconds: float,
            workdir: Path) -> tuple[list, list]:
    config = workdir / f"pools-{n}.yaml"
    config.write_text(config_text(n))
    bare, loaded = [], []
    for _ in range(rounds):
        bare.append(rate(nets, flood, seconds))
        nra_state(nets["node"], mode, config, True)
        loaded.append(rate(nets, flood, seconds))
        nra_state(nets["node"], mode, config, False)
    return bare, loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--modes", default="rules,conntrack")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rules-max", type=int, default=10000,
                        help="largest N for rules mode (inserting 100,000 rules takes the kernel many minutes)")
    parser.add_argument("--groups", type=int, default=1, help="uplink groups of two routers each")
    parser.add_argument("--shapes", default="distinct", help="distinct and/or consecutive prefixes (comma-separated)")
    args = parser.parse_args()
    global GROUPS, SHAPE
    GROUPS = args.groups
    with tempfile.TemporaryDirectory(prefix="nra-fwd-") as tmp:
        flood = Path(tmp) / "udpflood"
        subprocess.run(["cc", "-O2", "-o", str(flood), str(Path(__file__).with_name("udpflood.c"))], check=True)
        nets = build()
        try:
            print(f"{GROUPS} uplink group(s), {len(peers())} routers")
            print(f"{'shape':>11} {'mode':>10} {'N':>7} {'bare kpps':>10} {'with kpps':>10} {'ratio':>6}   rounds (bare/with kpps)")
            for SHAPE, n, mode in ((shape, int(size), mode) for shape in args.shapes.split(",")
                                   for size in args.sizes.split(",") for mode in args.modes.split(",")):
                if mode == "rules" and n > args.rules_max:
                    print(f"{SHAPE:>11} {mode:>10} {n:>7}   (skipped: above --rules-max {args.rules_max})", flush=True)
                    continue
                bare, loaded = measure(nets, flood, n, mode, args.rounds, args.seconds, Path(tmp))
                b, w = statistics.median(bare), statistics.median(loaded)
                pairs = " ".join(f"{x / 1000:.0f}/{y / 1000:.0f}" for x, y in zip(bare, loaded))
                print(f"{SHAPE:>11} {mode:>10} {n:>7} {b / 1000:>10.0f} {w / 1000:>10.0f} {w / b:>6.2f}   {pairs}", flush=True)
        finally:
            for ns in nets.values():
                ns.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
