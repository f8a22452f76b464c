"""Kernel-side cost of reconciling N prefixes, in a throwaway network namespace (run as root).

For each N: a full apply from empty (read + plan + apply), a steady reconcile (read + plan,
nothing to do), CLEANANDEXIT, and the same N rules through `ip -batch` as the kernel's floor.

    .venv/bin/python benchmarks/bench.py [N ...]
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nra.config.intent import Intent, Peer
from nra.kernel.adapter import KernelAdapter
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import desired_rules, plan
from testbed.netns import add_peer_link, new_netns, sh

POLICY = RoutingPolicy(table=20, priority=20, fwmark=None, fwmask=None,
                       destinations=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
BASE = ipaddress.ip_address("100.64.0.0")


def new_namespace() -> str:
    """A namespace with the peers' link (10.99.0.1/24 on eth0)."""
    ns = new_netns("nra-bench")
    add_peer_link(ns, v6_cidr=None)
    return ns.name


def prefixes(n: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(f"{BASE + i}/32") for i in range(n)]


async def measure_agent(n: int) -> dict[str, float]:
    ns = new_namespace()
    try:
        want = Intent(frozenset({Peer(ipaddress.ip_address("10.99.0.2"), 10),
                                 Peer(ipaddress.ip_address("10.99.0.3"), 20)}), frozenset(prefixes(n)))
        async with KernelAdapter(POLICY.table, netns=ns) as adapter:
            t0 = time.perf_counter()
            state = await adapter.read_state(p.address for p in want.peers)
            desired = desired_rules(want, POLICY)  # the reconciler keeps these while the intent holds
            the_plan = plan(want, state, POLICY, desired=desired)
            t1 = time.perf_counter()
            report = await adapter.apply(the_plan.operations)
            t2 = time.perf_counter()
            assert not report.failed, report.failed[:3]
            assert len(report.applied) == n + 1
            t3 = time.perf_counter()
            state = await adapter.read_state(p.address for p in want.peers)
            t4 = time.perf_counter()
            steady = plan(want, state, POLICY, desired=desired)
            t5 = time.perf_counter()
            assert steady.operations == () and len(state.rules) == n
            state = await adapter.read_state(())
            removed = len((await adapter.apply(plan(Intent(), state, POLICY).operations)).applied)
            t6 = time.perf_counter()
            assert removed == n + 1
        return {"full": t2 - t0, "apply": t2 - t1, "read": t4 - t3, "plan": t5 - t4,
                "steady": t5 - t3, "clean": t6 - t5}
    finally:
        sh(f"ip netns del {ns}", check=False)


def measure_ip_batch(n: int) -> dict[str, float]:
    ns = new_namespace()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as add, \
                tempfile.NamedTemporaryFile("w", suffix=".batch") as delete:
            for p in prefixes(n):
                add.write(f"rule add from {p} lookup 20 priority 20\n")
                delete.write(f"rule del from {p} lookup 20 priority 20\n")
            add.flush()
            delete.flush()
            t0 = time.perf_counter()
            sh(f"ip -n {ns} -batch {add.name}")
            t1 = time.perf_counter()
            sh(f"ip -n {ns} rule show > /dev/null")
            t2 = time.perf_counter()
            sh(f"ip -n {ns} -batch {delete.name}")
            t3 = time.perf_counter()
        return {"ip_add": t1 - t0, "ip_show": t2 - t1, "ip_del": t3 - t2}
    finally:
        sh(f"ip netns del {ns}", check=False)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("run as root (creates network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(a) for a in argv] or [10, 100, 1000, 10000]
    cols = ["full", "apply", "steady", "read", "plan", "clean", "ip_add", "ip_show", "ip_del"]
    print(f"{'N':>6} " + " ".join(f"{c + ' s':>9}" for c in cols))
    for n in sizes:
        row = asyncio.run(measure_agent(n)) | measure_ip_batch(n)
        print(f"{n:>6} " + " ".join(f"{row[c]:>9.3f}" for c in cols), flush=True)
    print("full = read+plan+apply from empty; steady = read+plan with nothing to do; "
          "clean = CLEANANDEXIT; ip_* = the same rules through `ip -batch` (kernel floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
