#!/usr/bin/env python3
"""Issue 19's second ONESHOT (nothing to do) alone, this checkout against another, alternated (root).

Per shape (scale_bench's: one pool of N /30s, `consecutive` or `distinct`), in one throwaway
namespace: a first ONESHOT programs it (unmeasured), then each round runs a second ONESHOT
of each tree in turn and reports its wall time, its CPU time (user + system of the process,
from wait4: on a shared machine the wall time is the load's as much as nra's) and its peak
RSS; then the medians. Each tree is compiled once into a bytecode cache of its own, as
scale_bench does (a node runs an image whose .pyc exist).

    .venv/bin/python benchmarks/oneshot_again_bench.py --repo /work/wt-baseline [--shapes distinct]
        [--n 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import scale_bench as sb  # noqa: E402


def oneshot(repo: Path, cache: Path, ns, cfg: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one ONESHOT of `repo`."""
    sb.PYCACHE = cache
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nra", "--oneshot", "--static-file", str(cfg), "--netns", ns.name],
                            env=sb.nra_env(repo), cwd=repo)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"ONESHOT of {repo} exited {os.waitstatus_to_exitcode(status)}")
    return took, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="the other checkout (a baseline)")
    parser.add_argument("--shapes", default="distinct,consecutive")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # (the namespace is deleted on the way out)
    repos = [REPO, args.repo.resolve()]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"second ONESHOT: {sb.machine()}; load average {load}")
    with tempfile.TemporaryDirectory(prefix="nra-again-") as tmp:
        caches = {}
        for i, repo in enumerate(repos):
            sb.compile_once(repo, Path(tmp) / f"pycache-{i}", Path(tmp))
            caches[repo] = sb.PYCACHE
        for shape in args.shapes.split(","):
            cfg = Path(tmp) / f"{shape}.yaml"
            cfg.write_text(sb.config_text(sb.prefixes(shape, args.n)))
            ns = sb.namespace()
            runs: dict[Path, list[tuple[float, float, float]]] = {repo: [] for repo in repos}
            try:
                oneshot(repos[0], caches[repos[0]], ns, cfg)  # programs it
                for _ in range(args.rounds):
                    for repo in repos:
                        runs[repo].append(oneshot(repo, caches[repo], ns, cfg))
            finally:
                ns.delete()
            for repo in repos:
                commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
                wall, cpu, rss = ([r[k] for r in runs[repo]] for k in range(3))
                print(f"{shape:>11} {args.n:>7} {f'{repo} {commit}':>36}  wall median {statistics.median(wall):.2f} s "
                      f"(min {min(wall):.2f})  CPU median {statistics.median(cpu):.2f} s (min {min(cpu):.2f})  "
                      f"peak RSS {min(rss):.0f}-{max(rss):.0f} MiB", flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
