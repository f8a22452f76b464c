#!/usr/bin/env python3
"""Reading nra's nft table back in full (what nra does at start, on a resync and after
someone else's change of its chains, rules or sets), before and after in one run (root).

For each shape of N prefixes, consecutive (they merge into a few intervals), distinct (N
intervals) and grouped (distinct, dealt to two uplink groups: the group maps hold N intervals
too), the table is written once in a throwaway namespace; then a fresh process of
each source tree (`--before`, a git revision, default main: libnftables' JSON listing; and
this checkout: nra's own nf_tables dumps) reads it `--rounds` times. Reported per process:
the median read time, its RSS before the first read, the peak (VmHWM) and the RSS after.

    .venv/bin/python benchmarks/nft_read_bench.py [--sizes 1000,100000] [--before main]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.marks import parse_mark_field  # noqa: E402
from nra.kernel.nft import NftState  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

FIELD = parse_mark_field("0x2/0x3e")
ROUTERS = {("eth0", "02:00:00:00:00:01"): 1, ("eth0", "02:00:00:00:00:02"): 2}

#: the reading process: argv: netns, rounds; prints one JSON line
CHILD = r"""
import gc, json, resource, statistics, sys, time
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
from nra.kernel.nft import NftState
from nra.kernel import nft_table as nft
owner = NftState(sys.argv[1])
owner.generation()
gc.collect()
before = rss("VmRSS")
times = []
for _ in range(int(sys.argv[2])):
    owner.forget()
    t0 = time.perf_counter()
    table = owner.read_blocking()
    times.append(time.perf_counter() - t0)
    del table
    gc.collect()
print(json.dumps({"read_s": statistics.median(times), "rss_before": before, "peak": rss("VmHWM"),
                  "rss_after": rss("VmRSS"), "intervals": sum(len(v) for v in owner.read_blocking().prefixes.values())}))
"""


def shape(n: int, distinct: bool) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    step = 2 if distinct else 1  # /32s two apart never merge; one apart merge into one interval
    return [ipaddress.IPv4Network((base + i * step, 32)) for i in range(n)]


def tree_of(revision: str, into: Path) -> Path:
    """The source of `revision` (its nra package), unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "nra"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def read_in_child(tree: Path, netns: str, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD, netns, str(rounds)], env=env, cwd=str(tree),
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--before", default="main", help="git revision to compare with (empty: none)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{'N':>7} {'shape':>11} {'tree':>8} {'intervals':>9} {'read_s':>8} {'rss_MB':>7} {'peak_MB':>8} "
          f"{'+peak':>7} {'after_MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("after", REPO)]
        if args.before:
            trees.insert(0, (args.before, tree_of(args.before, Path(tmp))))
        for n in (int(s) for s in args.sizes.split(",")):
            for kind in ("consecutive", "distinct", "grouped"):
                distinct = kind != "consecutive"
                ns = new_netns("nra-nftread")
                try:
                    prefixes = shape(n, distinct)
                    # grouped: the distinct prefixes dealt to two uplink groups (the group maps hold them all)
                    groups = {1: prefixes[::2], 2: prefixes[1::2]} if kind == "grouped" else None
                    want = nft.desired_table(prefixes, ["eth0"], ROUTERS, FIELD, groups=groups)
                    owner = NftState(ns.name)
                    try:
                        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
                        owner.forget()
                        assert owner.read_blocking() == want, "the table reads back as written"
                    finally:
                        owner.close()
                    del want, owner
                    for name, tree in trees:
                        r = read_in_child(tree, ns.name, args.rounds)
                        print(f"{n:>7} {kind:>11} {name:>8} {r['intervals']:>9} "
                              f"{r['read_s']:>8.3f} {r['rss_before']:>7.1f} {r['peak']:>8.1f} "
                              f"{r['peak'] - r['rss_before']:>+7.1f} {r['rss_after']:>8.1f}", flush=True)
                finally:
                    ns.delete()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("read_s: median of the full reads (NftState.read_blocking after forget()); rss_MB: the reading "
          "process before its first read; peak_MB: its VmHWM; after_MB: its RSS after the reads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
