#!/usr/bin/env python3
"""What nra costs while nothing changes: CPU seconds a minute, wake-ups and RSS, per source.

For each source (a static file; a ConfigMap and metallb.io CRDs from the API server stand-in
of tests/kube/apiserver.py, on 127.0.0.1 in a thread of this process, sending watch
bookmarks every --bookmark-seconds as kube-apiserver does about once a minute) the daemon
runs with the defaults a DaemonSet has (MAX_RECONCILE_WAIT 60 s, the health listener on,
here on 127.0.0.1) and N prefixes (default 1,000), in rules mode by default, programming a
fresh network namespace (--netns). Once every rule is in the kernel and a settle time has
passed, it is left alone for --seconds and measured:

  cpu     user+system CPU seconds of the process, scaled to a minute (/proc/PID/stat)
  wakes   context switches of all its threads, scaled to a minute (voluntary + involuntary,
          /proc/PID/task/*/status): every wake-up of a thread, whatever woke it
  rss     VmRSS at the end, MB

    .venv/bin/python benchmarks/idle_bench.py [--prefixes 1000] [--seconds 60]
        [--sources static,configmap,crds] [--return-path rules|conntrack] [--repo PATH]

--repo runs the agent from another checkout (a before/after in one run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_bench import PEERS, Namespace, config_text, prefixes  # noqa: E402
from kube_bench import NODE, NS, StandIn, configmap_object, crd_objects, node_object  # noqa: E402
from testbed.ports import free_port  # noqa: E402

#: issue 19's target
TARGET_CPU_S_PER_MIN = 0.05
SETTLE_S = 5.0


def agent_env() -> dict[str, str]:
    # the flags say everything: variables of the caller's shell must not change the mode
    drop = {"ONESHOT", "CLEANANDEXIT", "METALLB_STATIC_FILE", "METALLB_USE_CRDS", "METALLB_CONFIGMAP_NAME",
            "KUBECONFIG", "NODE_NAME", "METALLB_NAMESPACE", "NRA_NETNS", "KUBERNETES_SERVICE_HOST",
            "MAX_RECONCILE_WAIT", "HEALTH_ADDRESS", "RETURN_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LOG_LEVEL="warn")
    return env


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> dict[str, int]:
    """Context switches per thread ("main", or its name and id; Python names few threads):
    who wakes."""
    by_name: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else f"{(task / 'comm').read_text().strip()}:{task.name}"
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    by_name[name] = by_name.get(name, 0) + int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return by_name


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ready(port: int) -> bool:
    """/readyz answers 200 once the first reconcile is complete (the measure in conntrack
    mode, where the rules are a constant few and the prefixes are set elements)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run_one(source: str, n: int, seconds: float, return_path: str, repo: Path, work: Path,
            standin: StandIn | None, silent_peers: bool = False) -> dict[str, float]:
    ns = Namespace()
    if not silent_peers:  # routers that answer: their entries valid, as a live router's are
        mac = ns.exec(["cat", "/sys/class/net/eth0p/address"]).stdout.strip()
        for peer in PEERS:
            ns.ip(f"neigh replace {peer} lladdr {mac} dev eth0 nud permanent")
    nets = prefixes(n)
    objects: list[dict] = []
    port = free_port()
    command = [sys.executable, "-m", "nra", "--netns", ns.name, "--return-path", return_path,
               "--health-address", f"127.0.0.1:{port}"]
    if source == "static":
        cfg = work / "config" / "idle.yaml"  # (a directory of its own: the log's writes are not its events)
        cfg.parent.mkdir(exist_ok=True)
        cfg.write_text(config_text(nets))
        command += ["--static-file", str(cfg)]
    else:
        assert standin is not None
        objects = [node_object(), *(crd_objects(nets) if source == "crds" else [configmap_object(nets)])]
        standin.call(lambda: standin.server.put(*objects))
        kubeconfig = standin.server.write_kubeconfig(work / "kubeconfig")
        command += ["--node-name", NODE, "--kubeconfig", str(kubeconfig), "--namespace", NS,
                    *(["--use-crds"] if source == "crds" else [])]
    log = work / f"{source}.log"
    proc = subprocess.Popen(command, cwd=repo, env=agent_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        # rules mode: every prefix's rule in the kernel; conntrack mode: the first reconcile
        # complete (its rules are a constant few, never n)
        while not (ns.count_rules() == n if return_path == "rules" else ready(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{source}: {n} prefixes never programmed (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.1)
        time.sleep(SETTLE_S)
        cpu0, wakes0, t0 = cpu_seconds(proc.pid), switches(proc.pid), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        wakes1 = switches(proc.pid)
        per_thread = {name: (count - wakes0.get(name, 0)) * 60 / elapsed for name, count in wakes1.items()}
        return {"cpu": (cpu_seconds(proc.pid) - cpu0) * 60 / elapsed,
                "wakes": sum(per_thread.values()), "rss": rss_mb(proc.pid),
                "threads": {name: n for name, n in per_thread.items() if n >= 0.5}}
    finally:
        proc.terminate()
        proc.wait(10)
        ns.delete()
        if standin is not None:
            for obj in objects:
                standin.call(lambda obj=obj: standin.server.delete(obj["kind"], obj["metadata"]["name"],
                                                                     obj["metadata"].get("namespace", "")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sources", default="static,configmap,crds")
    parser.add_argument("--return-path", default="rules", choices=("rules", "conntrack"))
    parser.add_argument("--bookmark-seconds", type=float, default=60.0)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--silent-peers", action="store_true",
                        help="no answer from the peers (nra re-resolves each every 5 s: the wake-ups of a dead router)")
    args = parser.parse_args()
    sources = args.sources.split(",")
    standin = StandIn(args.bookmark_seconds) if set(sources) & {"configmap", "crds"} else None
    print(f"idle: {args.prefixes} prefixes, {args.return_path} mode, default timer, {args.seconds:.0f} s each, "
          f"peers {'silent' if args.silent_peers else 'answering'}, agent from {args.repo}")
    print(f"{'source':<10} {'cpu s/min':>10} {'wakes/min':>10} {'rss MB':>8}")
    failed = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for source in sources:
                result = run_one(source, args.prefixes, args.seconds, args.return_path, args.repo, Path(tmp),
                                 standin, args.silent_peers)
                verdict = "ok" if result["cpu"] <= TARGET_CPU_S_PER_MIN else f"over {TARGET_CPU_S_PER_MIN}"
                failed |= verdict != "ok"
                threads = ", ".join(f"{name} {n:.0f}" for name, n in
                                    sorted(result["threads"].items(), key=lambda kv: -kv[1]))
                print(f"{source:<10} {result['cpu']:>10.3f} {result['wakes']:>10.0f} {result['rss']:>8.1f}  {verdict}"
                      f"  (wakes/min by thread: {threads or 'none'})", flush=True)
    finally:
        if standin is not None:
            standin.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
