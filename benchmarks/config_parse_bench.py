#!/usr/bin/env python3
"""A configuration's first read at 100,000 prefixes, as a ONESHOT (or a daemon's start) reads it.

Each measurement is a fresh Python process (nothing remembered from an earlier read) that
reads scale_bench's static file (one pool of N /30s, `consecutive` or `distinct`) the way
the static file source does (a YamlReloader, a PoolEntries) and times:

  yaml ms      the YAML text to documents (nra.config.yaml_reload.YamlReloader.load)
  entries ms   the pool's address entries to networks (nra.config.prefixes.parse_address_entries)
  parse ms     the whole text to the intent (nra.config.metallb.parse_static_document)
  peak MiB     the peak RSS of the process of the first two (the text, its documents and the
               pool's networks are all alive at the end)
  held MiB     what a daemon holds (tracemalloc, in a third process) after reading the file
               at start, and after a full re-parse (the file with the pool renamed: no
               patch), through the static source's YamlReloader and PoolEntries

The first two are of one process, the third of another; the collector is paused, as nra
pauses it while it parses a configuration. Each is the process's CPU time (the machine is
shared; nothing measured waits), the whole parse's wall time beside it. --repo runs another checkout's nra
(a baseline), alternated with this one's, round by round; each column is the median of
--rounds.

    .venv/bin/python benchmarks/config_parse_bench.py [--n 100000] [--shapes distinct]
        [--rounds 5] [--repo /work/wt-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import gc, ipaddress, json, resource, sys, time
from nra.config import metallb, prefixes
from nra.config.yaml_reload import YamlReloader
assert metallb.__file__.startswith(sys.argv[1]), metallb.__file__
n, stride, part = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = int(ipaddress.IPv4Address("100.64.0.0"))
nets = [f"{ipaddress.IPv4Address(base + i * stride)}/30" for i in range(n)]
text = "\n".join(["peers:", "- peer-address: 10.99.0.2", "- peer-address: 10.99.0.3", "address-pools:",
                  "- name: bench", "  protocol: bgp", "  addresses:"] + [f"  - {x}" for x in nets]) + "\n"
del nets
gc.collect()
gc.disable()  # as nra parses a configuration (metallb.gc_paused)
out = {}
clock = time.process_time  # CPU time: the machine is shared, and nothing here waits
if part == "parts":
    started = clock()
    docs = YamlReloader().load(text)
    loaded = clock()
    parsed, errors = prefixes.parse_address_entries(docs[0]["address-pools"][0]["addresses"])
    done = clock()
    assert len(parsed) == n and not errors
    out = {"yaml_ms": (loaded - started) * 1000, "entries_ms": (done - loaded) * 1000,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
elif part == "held":
    import tracemalloc
    renamed = text.replace("- name: bench", "- name: bench2")
    gc.enable()
    tracemalloc.start()
    reloader = YamlReloader()
    entries = metallb.PoolEntries(reloader)
    held = []
    for one in (text, renamed):
        result = metallb.parse_static_document(one, "node", 100, reloader.load, entries)
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0] / 2**20)
    assert reloader.patched == 0
    out = {"held_start_mib": held[0], "held_reparse_mib": held[1]}
else:
    reloader = YamlReloader()
    started, wall = clock(), time.perf_counter()
    result = metallb.parse_static_document(text, "node", 100, reloader.load, metallb.PoolEntries(reloader))
    out = {"parse_ms": (clock() - started) * 1000, "parse_wall_ms": (time.perf_counter() - wall) * 1000}
print(json.dumps(out))
"""

STRIDE = {"consecutive": 4, "distinct": 8}


def measure(repo: Path, n: int, shape: str) -> dict:
    figures: dict = {}
    for part in ("parts", "whole", "held"):
        env = {**os.environ, "PYTHONPATH": str(repo)}
        out = subprocess.run([sys.executable, "-c", CHILD, str(repo), str(n), str(STRIDE[shape]), part],
                             env=env, cwd=repo, check=True, capture_output=True, text=True).stdout
        figures.update(json.loads(out))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--shapes", default="distinct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repo", type=Path, help="another checkout, measured alternately with this one")
    args = parser.parse_args()
    repos = [REPO] + ([args.repo.resolve()] if args.repo else [])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"config parse benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cores; load average {load}")
    print(f"{'tree':>40} {'shape':>11} {'N':>7} {'yaml ms':>8} {'entries ms':>10} {'parse ms':>8} {'wall ms':>8} {'peak MiB':>8} {'held MiB start/re-parse':>23}")
    for shape in args.shapes.split(","):
        runs: dict[Path, list[dict]] = {repo: [] for repo in repos}
        for _ in range(args.rounds):
            for repo in repos:
                runs[repo].append(measure(repo, args.n, shape))
        for repo in repos:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
            med = {k: statistics.median(r[k] for r in runs[repo])
                   for k in ("yaml_ms", "entries_ms", "parse_ms", "parse_wall_ms", "peak_mib", "held_start_mib",
                             "held_reparse_mib")}
            print(f"{f'{repo} {commit}':>40} {shape:>11} {args.n:>7} {med['yaml_ms']:>8.0f} "
                  f"{med['entries_ms']:>10.0f} {med['parse_ms']:>8.0f} {med['parse_wall_ms']:>8.0f} {med['peak_mib']:>8.1f} "
                  f"{med['held_start_mib']:>13.1f}/{med['held_reparse_mib']:.1f}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
