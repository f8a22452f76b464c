#!/usr/bin/env python3
"""The kernel's part of a one-line change: one interval added to (then deleted from) an
interval set holding N intervals, through nra's own nf_tables batch (run as root; a
throwaway namespace per size).

The set is filled with N /30s eight apart (distinct: N intervals), optionally dealt over
SHARDS sets by the address's bits 8-11 (a /24 block's sets, as nra's prefix sets since the
shards); then, `--rounds` times, a /30 outside them is added and deleted, each in its own
transaction, timed from the send to the kernel's ack (the commit included). `--gap S`
waits S seconds before each add: the kernel (6.18) walks an interval set for garbage at
most once a second in the commit, besides rebuilding the set's lookup array on every commit
that changed it, so changes a second or more apart (the daemon's) pay both.

`--group-maps 1,16`: a node of several uplink groups, whose interval verdict maps (nra's
group maps) hold every interval as well: the same N intervals in maps (`goto` one of two
chains, alternately: two groups), dealt over that many maps as the sets are (1: one map,
as nra's groups4 before its shards; 16: by block, as groups4_<i> since), and each change
adds (deletes) the interval in its set and its map in one transaction, as nra's batch does.

    .venv/bin/python benchmarks/nft_commit_bench.py [--sizes 1000,10000,50000,100000]
        [--shards 1,16] [--rounds 9] [--gap 1.2] [--group-maps 1,16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_bench import machine  # noqa: E402
from nra.kernel import nft_netlink as nl  # noqa: E402
from nra.kernel.socket import NetlinkSocket  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

BASE = 0x64400000  # 100.64.0.0
NEW = 0xC6120000  # 198.18.0.0: above every other interval


def _map_ops(name: str, intervals: list[tuple[int, int]], delete: bool) -> list[nl.ElementOp]:
    """Interval map elements, each `goto g<i>` (two groups, alternately), as nra writes its group maps."""
    elements = [e for low, high in intervals
                for e in nl.interval_goto_elements(low, high, 32, None if delete else f"g{(low >> 3) & 1}")]
    return [nl.ElementOp(name, tuple(elements) if delete else (nl.interval_floor(4), *elements), delete)]


def measure(n: int, shards: int, rounds: int, gap: float, maps: int = 0) -> tuple[list[float], list[float]]:
    ns = new_netns("nra-commit")
    try:
        names = [f"s{i}" for i in range(shards)]
        map_names = [f"m{i}" for i in range(maps)]
        ns.nft("add table inet t\nadd chain inet t g0\nadd chain inet t g1\n"
               + "".join(f"add set inet t {s} {{ type ipv4_addr; flags interval; }}\n" for s in names)
               + "".join(f"add map inet t {m} {{ type ipv4_addr : verdict; flags interval; }}\n" for m in map_names))
        sock = NetlinkSocket(ns.name, timeout_s=60, protocol=nl.NETLINK_NETFILTER)
        per: dict[str, list[tuple[int, int]]] = {s: [] for s in names + map_names}
        for i in range(n):
            low = BASE + i * 8
            per[names[(low >> 8) % shards]].append((low, low + 3))
            if maps:
                per[map_names[(low >> 8) % maps]].append((low, low + 3))
        for name, intervals in per.items():
            for start in range(0, len(intervals), 20_000):
                ops = (_map_ops(name, intervals[start:start + 20_000], False) if name in map_names
                       else nl.prefix_ops({4: intervals[start:start + 20_000]}, {}, {4: name}))
                sock.transaction(lambda seq: nl.batch("t", ops, seq), "fill")
        target = names[(NEW >> 8) % shards]
        target_map = map_names[(NEW >> 8) % maps] if maps else None
        adds, deletes = [], []
        for r in range(rounds):
            time.sleep(gap)
            low = NEW + r * 8
            for delete, times in ((False, adds), (True, deletes)):
                ops = nl.prefix_ops({} if delete else {4: [(low, low + 3)]}, {4: [(low, low + 3)]} if delete else {},
                                    {4: target})
                if target_map is not None:
                    ops += _map_ops(target_map, [(low, low + 3)], delete)
                started = time.perf_counter()
                sock.transaction(lambda seq: nl.batch("t", ops, seq), "one interval")
                times.append(time.perf_counter() - started)
        sock.close()
        return adds, deletes
    finally:
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000,100000")
    parser.add_argument("--shards", default="1,16")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--gap", type=float, default=1.2, help="seconds before each add (0: back to back)")
    parser.add_argument("--group-maps", default="",
                        help="also interval verdict maps of the same intervals, dealt over this many (e.g. 1,16)")
    args = parser.parse_args()
    map_counts = [int(m) for m in args.group_maps.split(",") if m] or [0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"nft commit benchmark: {machine()}; load average {load}; gap {args.gap:g} s; median of {args.rounds}")
    print(f"{'N':>7} {'sets':>4} {'per set':>7} {'maps':>4} {'add ms':>7} {'(min)':>6} {'delete ms':>9} {'(min)':>6}")
    for n in map(int, args.sizes.split(",")):
        for shards in map(int, args.shards.split(",")):
            for maps in map_counts:
                adds, deletes = measure(n, shards, args.rounds, args.gap, maps)
                print(f"{n:>7} {shards:>4} {-(-n // shards):>7} {maps:>4} {statistics.median(adds) * 1000:>7.2f} "
                      f"{min(adds) * 1000:>6.2f} {statistics.median(deletes) * 1000:>9.2f} {min(deletes) * 1000:>6.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
