"""What N agents cost the real API server (issue 19): idle, one change fanned out, a restart.

Starts a private test cluster (testbed/cluster.py: etcd + kube-apiserver v1.37.2 on
loopback), creates N Nodes and the metallb.io objects a CRD-mode agent watches, then runs N
copies of nra's own CRDSource (its reflectors, its KubeHTTP, its SnapshotPublisher: the code
the daemon runs, not a reimplementation) in this one process, on one asyncio loop, each with
its own Node name and its own ApiClient (so its own connections, as N pods would have), under
the identity the chart gives nra (helm template, TokenRequest). Measured from the API server
process (/proc/<pid>/stat and /status) and its /metrics:

  idle      API server CPU over an idle window with the N agents watching, minus the same
            window after they left, per agent; RSS with them minus RSS before them, per agent
  change    one IPAddressPool edit (a prefix added): time from the write until each agent
            published a configuration holding it (p50/p99/max), API server CPU meanwhile
  restart   the API server stopped and started under the N agents: when each relist started,
            from the first (percentiles and a histogram: nra's backoff jitter spreads them),
            why watches restarted (nra's own counter), the new server's CPU and peak RSS until
            every agent is healthy, against a fresh server without agents at the same process
            age, and a change after it (every agent must see it)

For each mode, the server's etcd_requests_total and apiserver_storage_list_total say where
the lists were served from (etcd or the watch cache). Modes: `before` (lists without
resourceVersion: a consistent read, what nra did before) and `after` (resourceVersion=0),
in the same run, on the same server.

    .venv/bin/python benchmarks/api_cost_bench.py --agents 100,500
    .venv/bin/python benchmarks/api_cost_bench.py --agents 50 --idle 10 --modes after   # quick

Client-side: each agent holds 4 watch connections; the benchmark raises RLIMIT_NOFILE. It
uses loopback only. A shared machine's load shows in every figure: the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loguru import logger  # noqa: E402

from nra.observe import metrics as nra_metrics  # noqa: E402
from nra.sources.kube import CRDSource, api_client_factory  # noqa: E402
from nra.sources.kube import reflector as reflector_module  # noqa: E402
from nra.sources.kube.reflector import Backoff, Reflector, WatchTiming  # noqa: E402
from testbed.cluster import Cluster  # noqa: E402

NS = "metallb-system"
OUR_RESOURCES = ("bgppeers", "ipaddresspools", "bgpadvertisements", "nodes")
POOL = "bench-pool"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the API server process, from /proc --------------------------------------------------------------

def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the API server's /metrics -------------------------------------------------------------------------

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
FAMILIES = ("etcd_requests_total", "apiserver_storage_list_total", "apiserver_watch_cache_consistent_read_total",
            "apiserver_request_total", "apiserver_longrunning_requests")


def scrape(cluster: Cluster) -> dict[tuple[str, tuple], float]:
    status, doc = cluster.request("GET", "/metrics", timeout=30)
    out: dict[tuple[str, tuple], float] = {}
    if status != 200:
        return out
    for line in doc["message"].splitlines():
        m = _LINE.match(line)
        if not m or m.group(1) not in FAMILIES:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        if labels.get("resource") not in OUR_RESOURCES:
            continue
        out[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(3))
    return out


def summarise(before: dict, after: dict) -> dict[str, float]:
    """Deltas of the counters that say where the lists went, over our four resources."""
    sums: Counter[str] = Counter()
    for key, value in after.items():
        name, labels = key
        lab = dict(labels)
        delta = value - before.get(key, 0.0)
        if name == "etcd_requests_total":
            sums[f"etcd {lab.get('operation')}"] += delta
        elif name == "apiserver_storage_list_total":
            sums[f"lists served by {lab.get('storage')}"] += delta
        elif name == "apiserver_watch_cache_consistent_read_total":
            sums[f"consistent reads from cache (fallback={lab.get('fallback')})"] += delta
        elif name == "apiserver_request_total" and lab.get("verb") in ("LIST", "WATCH"):
            sums[f"{lab['verb']} requests code {lab.get('code')}"] += delta
    return {k: v for k, v in sorted(sums.items()) if v}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


# -- the objects ------------------------------------------------------------------------------------------

def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i:04d}", "labels": {"rack": f"r{i % 10}", "bench": "api-cost"}}}


def metallb_objects(prefixes: list[str]) -> list[dict]:
    peers = [{"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": f"rack-{r}", "namespace": NS},
              "spec": {"myASN": 64512, "peerASN": 64512, "peerAddress": f"10.77.{r}.1",
                       "nodeSelectors": [{"matchLabels": {"rack": f"r{r}"}}]}} for r in range(10)]
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": POOL, "namespace": NS},
            "spec": {"addresses": prefixes}}
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
           "metadata": {"name": "bench-adv", "namespace": NS}, "spec": {"ipAddressPools": [POOL]}}
    return [*peers, pool, adv]


def apply(cluster: Cluster, objects: list[dict]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}), timeout=300)


def add_prefix(cluster: Cluster, prefix: str) -> None:
    """One write: the pool with one more prefix (GET then PUT, so the moment is known)."""
    path = f"/apis/metallb.io/v1beta1/namespaces/{NS}/ipaddresspools/{POOL}"
    status, pool = cluster.request("GET", path)
    assert status == 200, pool
    pool["spec"]["addresses"].append(prefix)
    status, body = cluster.request("PUT", path, pool)
    assert status == 200, body


# -- the agents -------------------------------------------------------------------------------------------

#: every list any reflector made: (start, end, resource, ok)
LISTS: list[tuple[float, float, str, bool]] = []


def instrument_lists() -> None:
    """Time each Reflector.list (nra's own method, called as is)."""
    original = Reflector.list

    async def timed(self: Reflector) -> None:
        start = time.monotonic()
        try:
            await original(self)
        except BaseException:
            LISTS.append((start, time.monotonic(), self.resource.name, False))
            raise
        LISTS.append((start, time.monotonic(), self.resource.name, True))

    Reflector.list = timed  # type: ignore[method-assign]


class Agent:
    def __init__(self, i: int, kubeconfig: Path, timing: WatchTiming):
        self.node = f"node-{i:04d}"
        self.source = CRDSource(api_client_factory(str(kubeconfig)), NS, self.node, 100, timing, 0.1)
        self.published = 0
        self.seen: dict[str, float] = {}  # prefix -> when first published
        self.watch_for: set[str] = set()
        self.task: asyncio.Task | None = None

    def publish(self, result) -> None:
        self.published += 1
        now = time.monotonic()
        nets = {str(p) for p in result.intent.prefixes}
        for prefix in self.watch_for - self.seen.keys():
            if prefix in nets:
                self.seen[prefix] = now

    @property
    def healthy(self) -> bool:
        reflectors = self.source.reflectors
        return self.published > 0 and len(reflectors) == 4 and all(r.healthy for r in reflectors)


async def wait_until(predicate, timeout: float, what: str, step: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


def restart_reasons() -> Counter:
    out: Counter[str] = Counter()
    for metric in nra_metrics.WATCH_RESTARTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["reason"]] += sample.value
    return out


NEW_NEXT_DELAY = Backoff.next_delay


def main_next_delay(self: Backoff) -> float:
    """Backoff.next_delay as main had it (no spread on the first attempt), for `before`."""
    ceiling = min(self.maximum, self.minimum * (2 ** self.attempt))
    self.attempt += 1
    return self.rng.uniform(self.minimum, max(self.minimum, ceiling))


def set_mode(mode: str) -> WatchTiming:
    """`before`: nra as main had it (consistent lists, no jitter before a relist or on the
    first retry); `after`: this branch."""
    before = mode == "before"
    reflector_module.LIST_RESOURCE_VERSION = "" if before else "0"
    Backoff.next_delay = main_next_delay if before else NEW_NEXT_DELAY  # type: ignore[method-assign]
    return WatchTiming(relist_jitter_s=0.0) if before else WatchTiming()


WARM_PATHS = (f"/apis/metallb.io/v1beta2/namespaces/{NS}/bgppeers",
              f"/apis/metallb.io/v1beta1/namespaces/{NS}/ipaddresspools",
              f"/apis/metallb.io/v1beta1/namespaces/{NS}/bgpadvertisements", "/api/v1/nodes?limit=1")


class Sampler:
    """The API server's CPU and RSS every 0.2 s, by process age, across its restarts."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.series: dict[int, list[tuple[float, float, int]]] = {}  # pid -> [(age, cpu, rss KB)]

    async def run(self) -> None:
        while True:
            pid = self.cluster.info().get("apiserver_pid") or 0
            try:
                sample = (age_s(pid), cpu_s(pid), mem_kb(pid))
            except (OSError, IndexError, ValueError):
                pass
            else:
                self.series.setdefault(pid, []).append(sample)
            await asyncio.sleep(0.2)

    def cpu_at(self, pid: int, age: float) -> float:
        """CPU seconds of `pid` when it was `age` seconds old (the first sample at or after)."""
        for sample_age, cpu, _ in self.series.get(pid, []):
            if sample_age >= age:
                return cpu
        raise ValueError(f"no sample of {pid} at age {age:.1f} s (sampled up to "
                         f"{self.series.get(pid, [(0, 0, 0)])[-1][0]:.1f} s): raise --fresh")


def age_s(pid: int) -> float:
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / CLK_TCK


async def scenario(cluster: Cluster, sampler: Sampler, kubeconfig: Path, mode: str, n: int, args,
                   prefix_base: int) -> dict:
    timing = set_mode(mode)
    out: dict = {"mode": mode, "agents": n}
    # a fresh server, with no agent for --fresh seconds: the same start for every scenario and
    # the reference a restart under the agents is compared with, at the same process age
    await asyncio.to_thread(cluster.restart_apiserver)
    pid0 = pid = cluster.info()["apiserver_pid"]
    # a CRD's watch cache starts with the first request for it: start them before measuring
    for path in WARM_PATHS:
        await asyncio.to_thread(cluster.request, "GET", path)
    await asyncio.sleep(args.fresh)
    rss0 = mem_kb(pid)
    out["no agents: RSS MB"] = round(rss0 / 1024, 1)

    # start
    agents = [Agent(i, kubeconfig, timing) for i in range(n)]
    m0 = await asyncio.to_thread(scrape, cluster)
    c0, lists0 = cpu_s(pid), len(LISTS)
    for a in agents:
        a.task = asyncio.create_task(a.source.run(a.publish))
    try:
        took = await wait_until(lambda: all(a.healthy for a in agents), args.timeout, f"{n} agents synced")
        m1 = await asyncio.to_thread(scrape, cluster)
        out["start: all synced s"] = round(took, 2)
        out["start: API server CPU s"] = round(cpu_s(pid) - c0, 2)
        out["start: lists"] = len(LISTS) - lists0
        out["start: server counters"] = summarise(m0, m1)

        # idle
        await asyncio.sleep(args.settle)
        c0 = cpu_s(pid)
        await asyncio.sleep(args.idle)
        idle = cpu_s(pid) - c0
        rss = mem_kb(pid)
        out["idle: CPU s"] = round(idle, 3)
        out["idle: RSS MB"] = round(rss / 1024, 1)
        out["idle: RSS KB per agent"] = round((rss - rss0) / n, 1)

        # one change, fanned out
        lat_all: list[float] = []
        cpu_change: list[float] = []
        for r in range(args.changes):
            prefix = f"10.{200 + prefix_base}.{r}.0/24"
            for a in agents:
                a.watch_for.add(prefix)
            await asyncio.sleep(1.0)
            c0 = cpu_s(pid)
            await asyncio.to_thread(add_prefix, cluster, prefix)
            t_write = time.monotonic()
            await wait_until(lambda: all(prefix in a.seen for a in agents), 60, f"change {prefix} seen by all")
            lat_all += [a.seen[prefix] - t_write for a in agents]
            cpu_change.append(cpu_s(pid) - c0)
        out["change: p50/p99/max s"] = [round(pct(lat_all, q), 3) for q in (0.5, 0.99, 1.0)]
        out["change: API server CPU s (each)"] = [round(c, 3) for c in cpu_change]

        # restart under the agents
        reasons0 = restart_reasons()
        lists0 = len(LISTS)
        t_stop = time.monotonic()
        await asyncio.to_thread(cluster.stop_apiserver)
        t_down = time.monotonic()
        await asyncio.to_thread(cluster.start_apiserver)
        t_ready = time.monotonic()
        pid = cluster.info()["apiserver_pid"]
        took = await wait_until(lambda: all(a.healthy for a in agents), args.timeout, f"{n} agents healthy again")
        # let straggling relists finish (healthy can come before the last resource's list)
        await wait_until(lambda: not LISTS or time.monotonic() - LISTS[-1][1] > 2.0, 60, "lists to stop")
        age, cpu, hwm = age_s(pid), cpu_s(pid), mem_kb(pid, "VmHWM")
        m1 = await asyncio.to_thread(scrape, cluster)
        relists = [(s, good) for s, _e, _r, good in LISTS[lists0:]]
        ok = sorted(s for s, good in relists if good)
        first = ok[0] if ok else t_down
        out["restart: stopped in s / started (readyz) in s"] = [round(t_down - t_stop, 2), round(t_ready - t_down, 2)]
        out["restart: first relist after the stop s"] = round(first - t_down, 2)
        out["restart: all healthy after readyz s"] = round(took, 2)
        out["restart: relists (failed)"] = [len(relists), len(relists) - len(ok)]
        out["restart: relist starts after the first p10/p50/p90/max s"] = [round(pct([s - first for s in ok], q), 2)
                                                                           for q in (0.1, 0.5, 0.9, 1.0)]
        out["restart: relist starts per 0.25 s from the first"] = histogram([s - first for s in ok], 0.25)
        out["restart: watch restarts by reason (nra)"] = dict(restart_reasons() - reasons0)
        reference = sampler.cpu_at(pid0, age)
        out["restart: new API server CPU s at settled (age s)"] = [round(cpu, 2), round(age, 1)]
        out["restart: same age, no agents (CPU s)"] = round(reference, 2)
        out["restart: API server peak RSS MB, sampled (no agents: same age)"] = [
            round(max(r for a_, _c, r in sampler.series.get(pid, [(0, 0, hwm)])) / 1024, 1),
            round(max(r for a_, _c, r in sampler.series[pid0] if a_ <= age) / 1024, 1)]
        out["restart: API server VmHWM MB"] = round(hwm / 1024, 1)
        out["restart: server counters since its start"] = summarise({}, m1)
        # and the agents' view is whole again: a change after the restart reaches every one
        prefix = f"10.{200 + prefix_base}.100.0/24"
        for a in agents:
            a.watch_for.add(prefix)
        await asyncio.to_thread(add_prefix, cluster, prefix)
        t_write = time.monotonic()
        await wait_until(lambda: all(prefix in a.seen for a in agents), 60, "change after the restart seen by all")
        out["restart: change after it, max s"] = round(max(a.seen[prefix] for a in agents) - t_write, 3)
    finally:
        for a in agents:
            assert a.task is not None
            a.task.cancel()
        await asyncio.gather(*(a.task for a in agents if a.task), return_exceptions=True)
    # the same idle window without the agents, on the same (warm) server
    await asyncio.sleep(args.settle * 2)
    c0 = cpu_s(pid)
    await asyncio.sleep(args.idle)
    idle0 = cpu_s(pid) - c0
    out["idle without agents (after them): CPU s"] = round(idle0, 3)
    out["idle: CPU ms/min per agent"] = round((idle - idle0) / n / args.idle * 60 * 1000, 3)
    out["load average"] = loadavg()
    return out


def histogram(values: list[float], width: float) -> str:
    if not values:
        return ""
    counts = Counter(int(v // width) for v in values if v >= 0)
    early = sum(1 for v in values if v < 0)
    top = max(counts) if counts else 0
    cells = [str(counts.get(i, 0)) for i in range(top + 1)]
    return (f"(before ready: {early}) " if early else "") + " ".join(cells)


def print_result(res: dict) -> None:
    print(f"\n== {res['mode']}, {res['agents']} agents ==")
    for key, value in res.items():
        if key in ("mode", "agents"):
            continue
        if isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"      {k}: {v:g}" if isinstance(v, float) else f"      {k}: {v}")
        else:
            print(f"  {key}: {value}")


async def main_async(args) -> list[dict]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 1_048_576))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    instrument_lists()
    counts = [int(x) for x in args.agents.split(",")]
    with tempfile.TemporaryDirectory(prefix="nra-apicost-") as tmp:
        cluster = Cluster(Path(tmp) / "state")
        print(f"cluster up in {cluster.up(log=lambda m: print(m, file=sys.stderr)):.1f} s", flush=True)
        sampler = Sampler(cluster)
        sampling = asyncio.create_task(sampler.run())
        try:
            from tests.realcluster import chart_rbac, create_namespace, identity

            create_namespace(cluster, NS)
            kubeconfig = identity(cluster, chart_rbac(NS, "--set", "env.METALLB_USE_CRDS=1"),
                                  Path(tmp) / "nra.kubeconfig")
            apply(cluster, [node(i) for i in range(max(counts))])
            apply(cluster, metallb_objects(["10.190.0.0/24"]))
            results = []
            k = 0
            for n in counts:
                for mode in args.modes.split(","):
                    print(f"-- {mode}, {n} agents (load average {loadavg()})", file=sys.stderr, flush=True)
                    res = await scenario(cluster, sampler, kubeconfig, mode, n, args, k)
                    k += 1
                    print_result(res)
                    sys.stdout.flush()
                    results.append(res)
            return results
        finally:
            sampling.cancel()
            cluster.down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="100,500", help="comma-separated agent counts (default 100,500)")
    ap.add_argument("--modes", default="before,after", help="before (consistent lists, as main did), after (rv=0)")
    ap.add_argument("--idle", type=float, default=60.0, help="idle window, s")
    ap.add_argument("--settle", type=float, default=5.0, help="pause before each idle window, s")
    ap.add_argument("--fresh", type=float, default=30.0,
                    help="a fresh API server runs this long without agents first (the restart's reference), s")
    ap.add_argument("--changes", type=int, default=3, help="configuration changes fanned out")
    ap.add_argument("--timeout", type=float, default=300.0, help="for all agents to sync, s")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--log-level", default="ERROR", help="nra's log level in this process")
    args = ap.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
