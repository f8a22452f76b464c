#!/usr/bin/env python3
"""nra under the real kube-apiserver's faults (issue 17): several rounds of each fault under
one running nra (CRD mode, the chart's identity), in a throwaway network namespace (run as root).

The cluster is a private one (testbed.cluster, the binaries of `scripts/cluster build`), the
RBAC objects are the chart's as `helm template` renders them, nra runs as a subprocess with
--netns, as in tests/kube/test_real_cluster.py (whose helpers this reuses). Faults:

  apiserver   the API server stopped (SIGTERM) and started again; the fault ends when its
              /readyz answers 200
  etcd        etcd stopped for --down seconds and started again; the fault ends when etcd's
              /health answers true (the API server's own recovery is part of what is measured)
  compaction  objects changed elsewhere, etcd compacted, then the API server restarted: the
              resumed watches get 410 Gone and nra lists again; ends as `apiserver`

Each round, right after the fault's end, a prefix is added to the IPAddressPool (kubectl apply,
retried until the server takes it) and the benchmark measures the time from the fault's end
until the matching rule is in the kernel (seen by a netlink listener in the namespace). It is
removed again before the next round. All along, table 20 is sampled every 50 ms: a sample
without the pool's rule ("table empty") or without one of the two live peers as a gateway
("peer dropped") is counted.

Usage: .venv/bin/python benchmarks/real_cluster_bench.py [--rounds 5] [--down 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_bench import RuleListener  # noqa: E402

from testbed.cluster import Cluster, missing_binaries  # noqa: E402
from testbed.netns import add_peer_link, new_netns  # noqa: E402
from tests.kube.test_real_cluster import (  # noqa: E402
    Nra, TableSampler, advertisement, configmap, node, peer, pool, wait_table)
from tests.realcluster import apply, chart_rbac, create_namespace, identity, unique  # noqa: E402

BASE = "198.51.100.16/29"
PEERS = {"r1": "10.99.0.2", "r2": "10.99.0.3"}
FAULTS = ("apiserver", "etcd", "compaction")


def extra_prefix(i: int) -> str:
    return f"198.18.0.{4 * i}/30"


def apply_until_taken(cluster: Cluster, obj: dict, timeout: float = 60) -> float:
    """Apply `obj`, retrying while the server refuses (etcd or its client still down);
    returns when it was taken (perf_counter)."""
    text = json.dumps(obj)
    deadline = time.perf_counter() + timeout
    while True:
        done = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text, check=False)
        if done.returncode == 0:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the server did not take the change within {timeout} s: {done.stderr}")
        time.sleep(0.05)


def fault(cluster: Cluster, kind: str, down: float) -> float:
    """Inflict the fault; returns its end (perf_counter)."""
    if kind == "etcd":
        cluster.stop_etcd()
        time.sleep(down)  # the outage itself, not a barrier
        cluster.start_etcd()  # returns once etcd answers /health
        return time.perf_counter()
    if kind == "compaction":
        other = create_namespace(cluster, unique("churn"))
        apply(cluster, *(configmap(other, f"n: {i}", name=f"c{i}") for i in range(20)))
        cluster.compact_etcd()
    cluster.restart_apiserver()  # returns once /readyz answers 200
    return time.perf_counter()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--down", type=float, default=2.0, help="seconds etcd stays stopped")
    ap.add_argument("--faults", default=",".join(FAULTS))
    args = ap.parse_args()
    if missing_binaries():
        print(f"binaries missing: {missing_binaries()}; run scripts/cluster build", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nra-realbench-"))
    cluster = Cluster(work / "state")
    print(f"cluster up in {cluster.up(log=lambda _m: None):.1f} s")
    ns_box = new_netns("nra-rbench")
    add_peer_link(ns_box, v6_cidr=None)
    results: dict[str, dict] = {}
    nra = sampler = listener = None
    try:
        ns_name, node_name = unique("mlb"), unique("node")
        kubeconfig = identity(cluster, chart_rbac(ns_name, "--set", "env.METALLB_USE_CRDS=1"), work / "nra.kubeconfig")
        apply(cluster, node(node_name, {}), *(peer(ns_name, n, a) for n, a in PEERS.items()),
              pool(ns_name, "lb", BASE), advertisement(ns_name))
        nra = Nra(kubeconfig, ns_box, ns_name, node_name, work / "nra.log", "--use-crds")
        want = ([BASE], set(PEERS.values()))
        wait_table(ns_box, want, nra)
        listener = RuleListener(ns_box.name)
        sampler = TableSampler(ns_box)
        sampler.start()
        i = 0
        for kind in args.faults.split(","):
            times, seen_before = [], len(sampler.seen)
            for _ in range(args.rounds):
                i += 1
                listener.drain()
                end = fault(cluster, kind, args.down)
                src = extra_prefix(i).split("/")[0]
                taken = apply_until_taken(cluster, pool(ns_name, "lb", BASE, extra_prefix(i)))
                seen = listener.wait("RTM_NEWRULE", src, time.perf_counter() + 60)
                if seen is None:
                    raise RuntimeError(f"{kind}: {extra_prefix(i)} not in the kernel 60 s after the change; "
                                       f"nra's log ends:\n{nra.daemon.log()[-3000:]}")
                times.append((seen - end, taken - end))
                apply_until_taken(cluster, pool(ns_name, "lb", BASE))
                wait_table(ns_box, want, nra, timeout=30)  # settled: the extra rule gone again
            samples = sampler.seen[seen_before:]
            empty = sum(1 for rules, _ in samples if BASE not in rules)
            dropped = sum(1 for _, gws in samples if not set(PEERS.values()) <= gws)
            applied = [t for t, _ in times]
            results[kind] = {"rounds": len(times), "median_s": statistics.median(applied), "p90_s": pct(applied, 0.9),
                             "max_s": max(applied), "server_took_change_median_s": statistics.median(t for _, t in times),
                             "samples": len(samples), "samples_table_empty": empty, "samples_peer_dropped": dropped}
        log = nra.daemon.log()
        results["nra_log"] = {"410 Gone": log.count("410 Gone"), "relisting": log.count("relisting"),
                              "Traceback": log.count("Traceback")}
    finally:
        if sampler:
            sampler.stop()
        if listener:
            listener.close()
        if nra:
            nra.stop()
        ns_box.delete()
        cluster.down()
    print(f"{'fault':<11} {'rounds':>6} {'median':>8} {'p90':>8} {'max':>8} {'server took':>12} "
          f"{'samples':>8} {'empty':>6} {'dropped':>8}")
    for kind in args.faults.split(","):
        r = results[kind]
        print(f"{kind:<11} {r['rounds']:>6} {r['median_s']:>7.2f}s {r['p90_s']:>7.2f}s {r['max_s']:>7.2f}s "
              f"{r['server_took_change_median_s']:>11.2f}s {r['samples']:>8} {r['samples_table_empty']:>6} "
              f"{r['samples_peer_dropped']:>8}")
    print("fault end -> change in the kernel (median, p90, max); 'server took': fault end -> kubectl apply "
          "accepted (median); empty/dropped: samples of table 20 (every 50 ms) without the pool's rule / "
          "without a live peer")
    print(f"nra's log: {results['nra_log']}")
    print(json.dumps(results))
    bad = any(results[k]["samples_table_empty"] or results[k]["samples_peer_dropped"] for k in args.faults.split(","))
    return 1 if bad or results["nra_log"]["Traceback"] else 0


if __name__ == "__main__":
    sys.exit(main())
