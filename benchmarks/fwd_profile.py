#!/usr/bin/env python3
"""Where a forwarded packet's CPU goes in nftables: fwd_bench's namespaces and traffic, the
generator pinned to one CPU and that CPU sampled by `perf record` (software clock) while it
sends, for each mode in turn, round after round (run as root; needs perf).

    .venv/bin/python benchmarks/fwd_profile.py [--modes bare,nft-empty,...,conntrack]
        [--size 100000] [--rounds 5] [--seconds 3] [--cpu 1]

For each mode: the share of the samples of the generator and ksoftirqd (the sending, the
node's forwarding and the sink's receive all run there) that fall in nf_tables' functions
(nf_hook_slow, nft_*), median over the rounds with its spread; the mode's share less the
bare node's is its per-packet cost, as a share of the bare node's forwarding work.
Modes: `bare` (the node with conntrack on), `conntrack` (nra's state for --size prefixes,
by `nra --oneshot`; `conntrack@CHECKOUT`: another checkout's nra, e.g. the base commit's, in
the same rounds) and fwd_bench's nft-* tables (see its docstring). A share is stable where
the packet rate is not: another process taking the CPU takes samples of its own, not ours.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fwd_bench  # noqa: E402

NFT = re.compile(r"(nft_|__nft|nf_hook_slow|nf_tables)")


def nft_share(data: Path, cpu: int) -> tuple[float, dict[str, float]]:
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--comm", f"udpflood,ksoftirqd/{cpu}",
                          "--sort", "sym", "--stdio", "-g", "none", "--percentage", "relative", "--percent-limit", "0"],
                         capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and parts[1] == "[k]" and NFT.match(parts[2]):
            symbols[parts[2]] = float(parts[0][:-1])
    return sum(symbols.values()), symbols


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="bare,nft-empty,nft-vmap,nft-jump-vmap,nft-cmp-jump-vmap,conntrack")
    parser.add_argument("--size", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu", type=int, default=1)
    args = parser.parse_args()
    fwd_bench.CPU = args.cpu
    modes = args.modes.split(",")
    shares: dict[str, list[float]] = {m: [] for m in modes}
    costs: dict[str, list[float]] = {m: [] for m in modes}
    symbols: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    with tempfile.TemporaryDirectory(prefix="nra-fwdprof-") as tmp:
        work = Path(tmp)
        flood = work / "udpflood"
        subprocess.run(["cc", "-O2", "-o", str(flood), str(Path(__file__).with_name("udpflood.c"))], check=True)
        config = work / "pools.yaml"
        config.write_text(fwd_bench.config_text(args.size))
        nets = fwd_bench.build()
        node = nets["node"]
        try:
            for r in range(args.rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:  # (a drift favours no mode)
                    node.exec(["conntrack", "-F"], check=False)
                    if mode != "bare":
                        fwd_bench.install(node, mode, config, True)
                    try:
                        fwd_bench.rate(nets, flood, 0.5)  # the flows' first packets (classified)
                        data = work / "perf.data"
                        perf = subprocess.Popen(["perf", "record", "-q", "-C", str(args.cpu), "-F", "2999",
                                                 "-o", str(data), "--", "sleep", str(args.seconds)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        fwd_bench.rate(nets, flood, args.seconds)
                        perf.wait()
                        share, found = nft_share(data, args.cpu)
                    finally:
                        if mode != "bare":
                            fwd_bench.install(node, mode, config, False)
                    shares[mode].append(share)
                    costs[mode].append(fwd_bench.COST[-1] * 1e9)
                    for name, value in found.items():
                        symbols[mode].setdefault(name, []).append(value)
                print(f"round {r + 1}: load {os.getloadavg()[0]:.1f}: "
                      + " ".join(f"{m} {shares[m][-1]:.2f}%" for m in modes), flush=True)
        finally:
            for ns in nets.values():
                ns.delete()
    base = statistics.median(shares["bare"]) if "bare" in shares else 0.0
    bare_ns = statistics.median(costs["bare"]) if "bare" in costs else 0.0
    print(f"\n{'mode':>18} {'nft share':>9} {'spread':>13} {'less bare':>9} {'~ns/pkt':>7} {'cpu ns/pkt':>10}  top symbols")
    for m in modes:
        share = statistics.median(shares[m])
        top = sorted(((statistics.median(v), k) for k, v in symbols[m].items()), reverse=True)[:5]
        print(f"{m:>18} {share:>8.2f}% {f'{min(shares[m]):.2f}-{max(shares[m]):.2f}%':>13} {share - base:>8.2f}% "
              f"{(share - base) / 100 * bare_ns:>7.0f} {statistics.median(costs[m]):>10.0f}  "
              + " ".join(f"{k}={v:.2f}" for v, k in top), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
