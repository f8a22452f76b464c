#!/usr/bin/env python3
"""Kubernetes-mode benchmark of the real nra daemon, in fresh network namespaces (run as root).

The API server stand-in of tests/kube/apiserver.py runs on 127.0.0.1 in a thread of this
process; the agent runs as a subprocess in the root namespace (so it reaches 127.0.0.1)
and programs a throwaway namespace through netlink (--netns). For each mode it measures:

  start   process start to all N rules in the kernel (polled every 50 ms)
  change  an object change on the stand-in (a prefix added to the IPAddressPool, or to the
          ConfigMap's `config` key), i.e. a MODIFIED event on the open watch, to the matching
          rule in the kernel, seen by a netlink listener in the namespace; median and p90
          over --rounds (add, measure, remove, wait for the removal, settle)
  idle    (CRD mode) the daemon's RSS and CPU seconds per minute over --idle-seconds once it
          has settled, while the stand-in sends watch bookmarks every --bookmark-seconds

Usage: .venv/bin/python benchmarks/kube_bench.py [--prefixes 100] [--rounds 20] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


from agent_bench import Namespace, RuleListener, prefixes  # noqa: E402

from tests.kube.apiserver import FakeApiServer  # noqa: E402

NRA = [sys.executable, "-m", "nra"]
NS = "metallb-system"
NODE = "bench-node"
TABLE = 20
ZONE = {"topology.kubernetes.io/zone": "zone-a"}
# Selected by this node's labels: the two on-link peers of the namespace's veth.
PEERS = {"peer-a": ("10.99.0.2", "zone-a"), "peer-b": ("10.99.0.3", "zone-a"), "peer-z": ("10.99.0.9", "zone-b")}
# issue 3's targets
TARGET_CHANGE_MEDIAN_MS = 200
TARGET_IDLE_RSS_MB = 80
EXTRA = "198.18.0.0/30"  # the prefix each round adds and removes


# -- MetalLB-like objects ------------------------------------------------------------------

def node_object() -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, **ZONE}}}


def crd_objects(nets: list[str]) -> list[dict]:
    peers = [{"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name, "namespace": NS},
              "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": address,
                       "nodeSelectors": [{"matchLabels": {"topology.kubernetes.io/zone": zone}}]}}
             for name, (address, zone) in PEERS.items()]
    advertisement = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
                     "metadata": {"name": "bench", "namespace": NS}, "spec": {"ipAddressPools": ["bench"]}}
    return [*peers, pool_object(nets), advertisement]


def pool_object(nets: list[str]) -> dict:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "bench", "namespace": NS}, "spec": {"addresses": list(nets)}}


def configmap_object(nets: list[str]) -> dict:
    config = {
        "peers": [{"peer-address": address, "peer-asn": 64513, "my-asn": 64512,
                   "node-selectors": [{"match-labels": {"topology.kubernetes.io/zone": zone}}]}
                  for address, zone in PEERS.values()],
        "address-pools": [{"name": "bench", "protocol": "bgp", "addresses": list(nets)}],
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": NS},
            "data": {"config": yaml.safe_dump(config)}}


# -- the stand-in, on its own event loop in a thread ------------------------------------------

class StandIn:
    def __init__(self, bookmark_interval_s: float):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="apiserver", daemon=True)
        self.thread.start()
        self.server = FakeApiServer(bookmark_interval_s=bookmark_interval_s)
        self.call(lambda: None)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def call(self, fn: Callable[[], object]) -> float:
        """Run fn on the server's loop; returns the perf_counter time just before it ran."""
        async def run() -> float:
            started = time.perf_counter()
            fn()
            return started

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- the kernel side -----------------------------------------------------------------------

# -- the agent -----------------------------------------------------------------------------

def agent_env(log_level: str) -> dict[str, str]:
    # The flags say everything; variables of the caller's shell must not change the mode.
    drop = {"ONESHOT", "CLEANANDEXIT", "METALLB_STATIC_FILE", "METALLB_USE_CRDS", "METALLB_CONFIGMAP_NAME",
            "KUBECONFIG", "NODE_NAME", "METALLB_NAMESPACE", "NRA_NETNS", "KUBERNETES_SERVICE_HOST"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LOG_LEVEL=log_level)
    return env


def agent_command(mode: str, kubeconfig: Path, netns: str) -> list[str]:
    return [*NRA, *(["--use-crds"] if mode == "crds" else []), "--node-name", NODE, "--kubeconfig", str(kubeconfig),
            "--namespace", NS, "--netns", netns, "--health-address", "off", "--max-reconcile-wait", "0"]


def wait_rules(ns: Namespace, n: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ns.count_rules() != n:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not program {n} rules (exit {proc.poll()}); log:\n{log.read_text()}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Result:
    def __init__(self, mode: str, n: int):
        self.mode, self.n = mode, n
        self.latencies: list[float] = []
        self.rss_start = self.rss_end = self.cpu_per_min = None
        self.watches_during_idle = 0
        self.command = ""
        self.startup = 0.0


def run_mode(mode: str, n: int, standin: StandIn, workdir: Path, rounds: int, idle_s: float,
             settle_s: float, log_level: str, log_dir: Path | None) -> Result:
    server = standin.server
    nets = prefixes(n)
    with_extra = nets + [EXTRA]
    if mode == "crds":
        def put(networks: list[str]) -> Callable[[], None]:
            return lambda: server.put(pool_object(networks))
        standin.call(lambda: server.put(node_object(), *crd_objects(nets)))
    else:
        def put(networks: list[str]) -> Callable[[], None]:
            return lambda: server.put(configmap_object(networks))
        standin.call(lambda: server.put(node_object(), configmap_object(nets)))
    kubeconfig = server.write_kubeconfig(workdir / "kubeconfig")
    ns = Namespace()
    listener = RuleListener(ns.name)
    log = (log_dir or workdir) / f"agent-{mode}-{n}.log"
    result = Result(mode, n)
    command = agent_command(mode, kubeconfig, ns.name)
    result.command = " ".join(shlex.quote(a) for a in command)
    launched = time.perf_counter()
    proc = subprocess.Popen(command, env=agent_env(log_level), cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_rules(ns, n, proc, log)
        result.startup = time.perf_counter() - launched
        time.sleep(settle_s)
        src = EXTRA.split("/")[0]
        for _ in range(rounds):
            listener.drain()
            started = standin.call(put(with_extra))
            seen = listener.wait("RTM_NEWRULE", src, started + 5)
            if seen is None:
                raise RuntimeError(f"{mode}: the new rule did not reach the kernel within 5 s; log:\n{log.read_text()}")
            result.latencies.append(seen - started)
            removed_from = standin.call(put(nets))
            if listener.wait("RTM_DELRULE", src, removed_from + 5) is None:
                raise RuntimeError(f"{mode}: the rule was not removed within 5 s; log:\n{log.read_text()}")
            time.sleep(settle_s)  # let the agent's own netlink-triggered reconcile finish
        if mode == "crds" and idle_s > 0:
            time.sleep(2)
            watches_before = server.count("watch")
            result.rss_start = rss_mb(proc.pid)
            before = cpu_seconds(proc.pid)
            time.sleep(idle_s)
            result.cpu_per_min = (cpu_seconds(proc.pid) - before) * 60 / idle_s
            result.rss_end = rss_mb(proc.pid)
            result.watches_during_idle = server.count("watch") - watches_before
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited ({proc.returncode}); log:\n{log.read_text()}")
        if ns.count_rules() != n:
            raise RuntimeError(f"{mode}: the kernel ended with {ns.count_rules()} rules, expected {n}")
        return result
    finally:
        proc.terminate()
        proc.wait(10)
        listener.close()
        ns.close()
        # the next mode starts from an empty stand-in
        def clear() -> None:
            for plural, objects in server.objects.items():
                for (namespace, name), obj in list(objects.items()):
                    server.delete(obj["kind"], name, namespace)
        standin.call(clear)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=100, help="prefixes in the pool (default 100)")
    parser.add_argument("--rounds", type=int, default=20, help="changes measured per mode (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=60, help="idle measurement in CRD mode, 0 = skip")
    parser.add_argument("--bookmark-seconds", type=float, default=60,
                        help="the stand-in's bookmark interval on open watches (a real API server: about 60)")
    parser.add_argument("--settle-seconds", type=float, default=0.3, help="pause after each removal")
    parser.add_argument("--modes", default="crds,configmap")
    parser.add_argument("--log-dir", type=Path, help="keep the agents' logs here (default: a temporary directory)")
    parser.add_argument("--agent-log-level", default="warn", help="the agent's LOG_LEVEL (its log is shown on failure)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("kube_bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    print(f"nra kube benchmark: kernel {os.uname().release}, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    standin = StandIn(args.bookmark_seconds)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="nra-kube-bench-") as tmp:
            for mode in args.modes.split(","):
                results.append(run_mode(mode, args.prefixes, standin, Path(tmp), args.rounds, args.idle_seconds,
                                        args.settle_seconds, args.agent_log_level, args.log_dir))
                print(f"agent ({mode}): {results[-1].command}", flush=True)
    finally:
        standin.close()
    print(f"\n{'mode':<10} {'N':>5} {'start s':>8} {'rounds':>6} {'change median ms':>17} {'p90 ms':>7} {'max ms':>7}")
    for r in results:
        ms = [t * 1000 for t in r.latencies]
        print(f"{r.mode:<10} {r.n:>5} {r.startup:>8.2f} {len(ms):>6} {statistics.median(ms):>17.1f} {percentile(ms, 0.9):>7.1f} "
              f"{max(ms):>7.1f}")
    verdicts = [f"change median < {TARGET_CHANGE_MEDIAN_MS} ms ({r.mode}): "
                f"{'met' if statistics.median(r.latencies) * 1000 < TARGET_CHANGE_MEDIAN_MS else 'MISSED'}"
                for r in results]
    verdicts += [f"idle RSS < {TARGET_IDLE_RSS_MB} MB ({r.mode}): {'met' if r.rss_end < TARGET_IDLE_RSS_MB else 'MISSED'}"
                 for r in results if r.rss_end is not None]
    for r in results:
        if r.cpu_per_min is not None:
            print(f"\nidle daemon ({r.mode}, {r.n} prefixes, {args.idle_seconds:.0f} s, bookmarks every "
                  f"{args.bookmark_seconds:g} s): RSS {r.rss_start:.1f} -> {r.rss_end:.1f} MB, "
                  f"CPU {r.cpu_per_min:.3f} s/min, {r.watches_during_idle} new watch request(s)")
    print("\ntargets: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
