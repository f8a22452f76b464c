#!/usr/bin/env python3
"""Someone else changes nra's nft table while the real daemon runs it (conntrack mode, N
prefixes that do not merge: N intervals), in a throwaway namespace (root): how long until the
daemon has repaired it. The change is made with the `nft` binary; the clock runs from its
return to the daemon's log line of the reconcile that repaired it (and that line's own
figure: the reconcile, from its trigger to its last change acknowledged).

Cases: rule (`add rule inet nra in_lb4_0 accept`), flush (`flush chain inet nra classify`), chain
(`add chain inet nra extra<i>`), dormant (`add table inet nra { flags dormant; }`), element
(`delete element inet nra lb4 { <one prefix> }`).

    .venv/bin/python benchmarks/nft_repair_daemon_bench.py [--prefixes 100000] [--rounds 5]
        [--before PATH]   # also run the agent of another checkout (a before/after in one run)
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testbed.netns import add_veth, new_netns  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from conntrack_bench import lb4_set_of  # noqa: E402

BASE = int(ipaddress.IPv4Address("100.64.0.0"))
DONE = re.compile(r"reconcile \((\w+)\) done in ([\d.]+) ms")
CASES = {
    "rule": "add rule inet nra in_lb4_0 accept",
    "flush": "flush chain inet nra classify",
    "chain": "add chain inet nra extra{i}",
    "dormant": "add table inet nra {{ flags dormant; }}",
    "element": "delete element inet nra {lb4} {{ {prefix} }}",  # (its set: lb4_<i>, or lb4 before the shards)
}


def config(n: int) -> str:
    lines = ["peers:", "- peer-address: 10.60.0.2", "address-pools:", "- name: many", "  protocol: bgp", "  addresses:"]
    lines += [f"  - {ipaddress.IPv4Address(BASE + i * 8)}/30" for i in range(n)]
    return "\n".join(lines) + "\n"


def done_lines(log: Path) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(2))) for m in DONE.finditer(log.read_text())]


def wait_lines(log: Path, count: int, timeout: float) -> float:
    """Poll the log until it holds `count` reconcile lines; the time that was seen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(done_lines(log)) >= count:
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"no reconcile line {count} in {log} within {timeout} s")


def run(repo: Path, n: int, rounds: int, cases: list[str], work: Path) -> dict[str, tuple[float, float]]:
    node, router = new_netns("nra-rdb-node"), new_netns("nra-rdb-rtr")
    proc = None
    try:
        add_veth(node, "eth0", router, "eth0")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        router.ip("addr add 10.60.0.2/24 dev eth0")
        router.ip("link set dev eth0 address 02:00:00:00:00:01")
        node.ip("neigh replace 10.60.0.2 lladdr 02:00:00:00:00:01 dev eth0 nud permanent")
        path = work / "metallb.yaml"
        path.write_text(config(n))
        log = work / f"nra-{os.getpid()}-{repo.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RETURN_PATH", "NRA_", "METALLB_"))}
        env.update(RETURN_PATH="conntrack", HEALTH_ADDRESS="off", PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen([sys.executable, "-m", "nra", "--netns", node.name, "--static-file", str(path)],
                                cwd=repo, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        wait_lines(log, 1, 120)
        time.sleep(1.0)  # (the first reconcile's own notifications, a resync after the watch started)
        results = {}
        for case in cases:
            wall, own = [], []
            for i in range(rounds):
                before = len(done_lines(log))
                prefix = f"{ipaddress.IPv4Address(BASE + (i * 997 % n) * 8)}/30"
                lb4 = lb4_set_of(node, prefix) if case == "element" else ""
                node.exec(["nft", CASES[case].format(i=i, prefix=prefix, lb4=lb4)], timeout=60)
                t0 = time.perf_counter()
                seen = wait_lines(log, before + 1, 60)
                wall.append(seen - t0)
                own.append(done_lines(log)[before][1])
                time.sleep(0.3)
                # (a second reconcile for one change would be waste: counted into the next case)
            results[case] = (statistics.median(wall) * 1000, statistics.median(own))
        return results
    finally:
        if proc is not None:  # (its table goes with the namespace)
            proc.kill()
            proc.wait(10)
        node.delete()
        router.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    cases = args.cases.split(",")
    repos = [("this", REPO)] + ([("before", args.before)] if args.before else [])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.prefixes} prefixes, "
          f"median of {args.rounds}")
    print(f"{'agent':>7} {'case':>8} {'to_log_ms':>10} {'reconcile_ms':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, repo in repos:
            for case, (wall, own) in run(repo, args.prefixes, args.rounds, cases, Path(tmp)).items():
                print(f"{name:>7} {case:>8} {wall:>10.1f} {own:>13.1f}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
