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

--pairs P: the paired measurement (for a shared machine, where load drifts over seconds):
P pairs of a bare round and a with-round next to each other (their order alternating, so a
drift favours neither), the state switched between them by `--switch`: `dormant` (the
default; conntrack and the nft-* modes: the state installed once, its table's `dormant`
flag set for the bare rounds: the kernel then unhooks its chains, the bare node's data
path) or `reinstall` (`nra --oneshot` / `nra clean` around each with-round, as above).
The figure is then the median of the P pairs' ratios, with a 95% interval for that median
(order statistics, no assumed distribution) and the pairs' spread (min-max). The old
figure, median(with) / median(bare) of the same rounds, is printed beside it.

A mode `conntrack@CHECKOUT` (or `rules@...`) runs the nra of another checkout (e.g. a
worktree of the base commit) in the same sitting, so base and change alternate as rounds.

--cpu C: the generator pinned to CPU C (taskset). With veth, the node's forwarding and
the sink's receive run in the softirq of the sending CPU, so this pins the whole path.

Modes for finding the per-packet cost (tables loaded with `nft -f`, no nra):
- nft-empty: a table with an empty filter chain hooked at prerouting, priority mangle
  (the cost of one more base chain in the hook);
- nft-vmap: that chain holding nra's dispatch verdict map (ct mark & mask: examined
  accepts, others jump to empty chains) itself;
- nft-jump-vmap: the chain jumping to a chain holding it (nra's shape at 1698ee0);
- nft-cmp-jump-vmap: the hooked chain accepting the examined mark itself (a compare), then
  jumping to the verdict map;
- nft-jump-cmp-vmap: the jump, then that compare before the verdict map.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import resource
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


CPU: int | None = None  # --cpu
COST: list[float] = []  # CPU seconds per packet of each rate() measured, in order


def softirq_threads_seconds() -> float:
    """CPU time of the ksoftirqd threads (of CPU `--cpu`, else all), from their schedstat
    (ns, not tick-sampled): forwarding work the kernel moved off the generator's context."""
    total = 0
    for task in Path("/proc").glob("[0-9]*"):
        try:
            name = (task / "comm").read_text().strip()
            if name.startswith("ksoftirqd/") and (CPU is None or name == f"ksoftirqd/{CPU}"):
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
    return total / 1e9


def rate(nets: dict[str, NetNS], flood: Path, seconds: float) -> float:
    """Packets a second the sink received; records the packets' CPU cost in COST: the
    generator's own time (its sends, and the forwarding and receiving the kernel does in
    its context: without IRQ time accounting, softirq time is the interrupted task's
    runtime; getrusage's sum is scaled to that exact runtime) plus the ksoftirqd threads',
    per packet. Unlike the rate, that cost does not fall when another process takes a
    share of the CPU."""
    before = rx_packets(nets["sink"])
    own, threads = resource.getrusage(resource.RUSAGE_CHILDREN), softirq_threads_seconds()
    started = time.perf_counter()
    pin = ["taskset", "-c", str(CPU)] if CPU is not None else []
    nets["gen"].exec([*pin, str(flood), SINK, "9", str(seconds)], timeout=seconds + 30)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime) + softirq_threads_seconds() - threads
    time.sleep(0.05)
    packets = rx_packets(nets["sink"]) - before
    COST.append(cpu / max(packets, 1))
    return packets / took


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
    """nra's state for this mode, installed by `nra --oneshot` or removed by `nra clean`
    (`MODE@CHECKOUT`: the nra of another checkout, e.g. a base commit's, run from there)."""
    mode, _, checkout = mode.partition("@")
    argv = [sys.executable, "-m", "nra", "--return-path", mode, "--netns", node.name, "--static-file", str(config),
            "--health-address", "off", "--log-level", "warn", "--oneshot" if install else "--clean-and-exit"]
    subprocess.run(argv, check=True, cwd=checkout or REPO, timeout=600,
                   env={**os.environ, "PYTHONPATH": checkout or str(REPO)})


def synthetic_table(mode: str) -> str:
    """The nft-* modes' table (see the docstring): nra's hooked chain and dispatch verdict map
    (mark field 0xff00, examined 0x0100) without nra."""
    vmap = ("ct mark & 0x0000ff00 vmap { 0x00000000 : jump c0, 0x00000100 : accept, "
            "0x00000200 : jump c1, 0x00000300 : jump c2 }")
    examined = "ct mark & 0x0000ff00 == 0x00000100 accept"
    base, dispatch = {"nft-empty": ("", vmap), "nft-vmap": (vmap, vmap), "nft-jump-vmap": ("jump dispatch_in", vmap),
                      "nft-cmp-jump-vmap": (f"{examined}; jump dispatch_in", vmap),
                      "nft-jump-cmp-vmap": ("jump dispatch_in", f"{examined}; {vmap}")}[mode]
    # (c0, the unmarked connections' chain, gives the examined mark, as classify does)
    return ("table inet nrabench {\n chain c0 { ct mark set ct mark & 0xffff00ff | 0x00000100; }\n"
            " chain c1 { }\n chain c2 { }\n"
            f" chain dispatch_in {{ {dispatch}; }}\n"
            f" chain prerouting {{ type filter hook prerouting priority mangle; policy accept; {base}; }}\n}}\n")


def install(node: NetNS, mode: str, config: Path, on: bool) -> None:
    if mode.startswith("nft-"):
        node.nft(synthetic_table(mode) if on else "delete table inet nrabench\n")
    else:
        nra_state(node, mode, config, on)


def dormant(node: NetNS, mode: str, asleep: bool) -> None:
    """The installed table's hooks off (the bare node) or on again."""
    table = "nrabench" if mode.startswith("nft-") else "nra"  # (conntrack@CHECKOUT too)
    # (nft 1.0.6 sends flags 0 with a plain `add table`: that wakes it)
    node.nft(f"add table inet {table} {{ flags dormant; }}\n" if asleep else f"add table inet {table}\n")


def measure_pairs(nets: dict[str, NetNS], flood: Path, n: int, mode: str, pairs: int, seconds: float,
                  workdir: Path, switch: str) -> tuple[list, list]:
    """`pairs` (bare, with) rounds next to each other, bare first in even pairs, second in odd."""
    config = workdir / f"pools-{n}.yaml"
    config.write_text(config_text(n))
    node = nets["node"]
    # (the flows' connections start afresh: a mark another mode gave them would take them
    # down another path)
    node.exec(["conntrack", "-F"], check=False)
    toggle = switch == "dormant" and not mode.startswith("rules")
    if toggle:
        install(node, mode, config, True)
        dormant(node, mode, True)
    bare, loaded = [], []

    def one(with_state: bool) -> float:
        if toggle:
            dormant(node, mode, not with_state)
        elif with_state:
            install(node, mode, config, True)
        try:
            return rate(nets, flood, seconds)
        finally:
            if not toggle and with_state:
                install(node, mode, config, False)

    try:
        for i in range(pairs):
            if i % 2 == 0:
                bare.append(one(False))
                loaded.append(one(True))
            else:
                loaded.append(one(True))
                bare.append(one(False))
    finally:
        if toggle:
            install(node, mode, config, False)
    return bare, loaded


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics (j, n+1-j) with
    P(Binomial(n, 1/2) < j) <= (1 - level) / 2 (the widest, min-max, when n is too small)."""
    ordered, n = sorted(values), len(values)
    tail, j = 0.0, 0
    while j < n // 2:
        tail += math.comb(n, j) / 2 ** n
        if tail > (1 - level) / 2:
            break
        j += 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def measure(nets: dict[str, NetNS], flood: Path, n: int, mode: str, rounds: int, seconds: float,
            workdir: Path) -> tuple[list, list]:
    config = workdir / f"pools-{n}.yaml"
    config.write_text(config_text(n))
    bare, loaded = [], []
    for _ in range(rounds):
        bare.append(rate(nets, flood, seconds))
        install(nets["node"], mode, config, True)
        loaded.append(rate(nets, flood, seconds))
        install(nets["node"], mode, config, False)
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
    parser.add_argument("--pairs", type=int, default=0, help="the paired measurement: this many (bare, with) pairs "
                        "(instead of --rounds)")
    parser.add_argument("--switch", choices=("dormant", "reinstall"), default="dormant",
                        help="how --pairs switches the state off and on")
    parser.add_argument("--cpu", type=int, default=None, help="pin the generator (and so the path) to this CPU")
    args = parser.parse_args()
    global GROUPS, SHAPE, CPU
    GROUPS, CPU = args.groups, args.cpu
    with tempfile.TemporaryDirectory(prefix="nra-fwd-") as tmp:
        flood = Path(tmp) / "udpflood"
        subprocess.run(["cc", "-O2", "-o", str(flood), str(Path(__file__).with_name("udpflood.c"))], check=True)
        nets = build()
        try:
            print(f"{GROUPS} uplink group(s), {len(peers())} routers"
                  + (f"; {args.pairs} pairs, switched by {args.switch}" if args.pairs else "")
                  + (f"; generator on CPU {CPU}" if CPU is not None else ""))
            if args.pairs:
                print(f"{'shape':>11} {'mode':>13} {'N':>7} {'of':>4} {'ratio':>6} {'95% interval':>12} "
                      f"{'spread':>11} {'bare':>6} {'with':>6} {'old':>5}  load   pairs (bare/with kpps)")
            else:
                print(f"{'shape':>11} {'mode':>10} {'N':>7} {'bare kpps':>10} {'with kpps':>10} {'ratio':>6}   rounds (bare/with kpps)")
            for SHAPE, n, mode in ((shape, int(size), mode) for shape in args.shapes.split(",")
                                   for size in args.sizes.split(",") for mode in args.modes.split(",")):
                if mode.startswith("rules") and n > args.rules_max:
                    print(f"{SHAPE:>11} {mode:>10} {n:>7}   (skipped: above --rules-max {args.rules_max})", flush=True)
                    continue
                if args.pairs:
                    COST.clear()
                    bare, loaded = measure_pairs(nets, flood, n, mode, args.pairs, args.seconds, Path(tmp), args.switch)
                    b, w = statistics.median(bare), statistics.median(loaded)
                    ratios = [y / x for x, y in zip(bare, loaded)]
                    # the rounds ran bare, with / with, bare alternately: COST in that order
                    costs = [(COST[2 * i], COST[2 * i + 1]) if i % 2 == 0 else (COST[2 * i + 1], COST[2 * i])
                             for i in range(args.pairs)]
                    cost_ratios = [x / y for x, y in costs]  # bare cost / with cost: as a rate ratio
                    pairs = " ".join(f"{x / 1000:.0f}/{y / 1000:.0f}" for x, y in zip(bare, loaded))
                    for what, values in (("rate", ratios), ("cpu", cost_ratios)):
                        low, high = median_interval(values)
                        print(f"{SHAPE:>11} {mode:>13} {n:>7} {what:>4} {statistics.median(values):>6.3f} "
                              f"{low:>5.3f}-{high:<5.3f} {min(values):>5.3f}-{max(values):<5.3f}", end="")
                        if what == "rate":
                            print(f" {b / 1000:>6.0f} {w / 1000:>6.0f} {w / b:>5.3f} {os.getloadavg()[0]:>5.1f}   {pairs}")
                        else:
                            bare_ns = statistics.median(c[0] for c in costs) * 1e9
                            with_ns = statistics.median(c[1] for c in costs) * 1e9
                            print(f"   ns/packet bare {bare_ns:.0f} with {with_ns:.0f} (+{with_ns - bare_ns:.0f})", flush=True)
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
