#!/usr/bin/env python3
"""A large first start under the chart's probes: the agent as the chart runs it (daemon,
JSON logs, health listener), on a static file of N prefixes, in a throwaway namespace with
on-link peers. The chart's probes are replayed against it: the startup probe (every 2 s
until /healthz answers), then the liveness probe (every 10 s, 3 s timeout, 3 failures
restart the pod). Reported: time to listen and to ready, liveness failures (and whether the
kubelet would have restarted it), peak RSS against the chart's 192Mi limit, INFO lines.

    .venv/bin/python benchmarks/startup_bench.py --cases rules:40000,conntrack:100000
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from testbed.netns import add_peer_link, new_netns  # noqa: E402
from tests.agent.helpers import http_status as get  # noqa: E402
from testbed.ports import free_port  # noqa: E402

LIMIT_MIB = 192  # the chart's memory limit
LIVENESS_PERIOD_S, LIVENESS_TIMEOUT_S, LIVENESS_FAILURES = 10, 3, 3
STARTUP_PERIOD_S, STARTUP_FAILURES = 2, 60


def config(n: int) -> str:
    """N /32s two apart (no two adjacent: N rules, N intervals)."""
    base = int(ipaddress.ip_address("100.64.0.0"))
    prefixes = "\n".join(f"  - {ipaddress.ip_address(base + 2 * i)}/32" for i in range(n))
    return ("peers:\n- peer-address: 10.99.0.2\n- peer-address: 10.99.0.3\naddress-pools:\n"
            f"- name: big\n  protocol: bgp\n  addresses:\n{prefixes}\n")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(mode: str, n: int, deadline_s: float) -> dict:
    ns = new_netns("nra-startbench")
    try:
        add_peer_link(ns)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "metallb.yaml"
            path.write_text(config(n))
            port = free_port()
            env = {**os.environ, "LOG_FORMAT": "json", "HEALTH_ADDRESS": f"127.0.0.1:{port}",
                   "RETURN_PATH": mode, "METALLB_STATIC_FILE": str(path), "NRA_NETNS": ns.name,
                   "MAX_RECONCILE_WAIT": "0"}
            log = open(Path(tmp) / "nra.log", "w")
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "nra"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=REPO)
            listening = ready = None
            failures = consecutive = worst = 0
            next_liveness = None
            while time.monotonic() - started < deadline_s and proc.poll() is None:
                now = time.monotonic() - started
                if listening is None:
                    if get(port, "/healthz", LIVENESS_TIMEOUT_S) == 200:
                        listening, next_liveness = now, now + LIVENESS_PERIOD_S
                    elif now > STARTUP_PERIOD_S * STARTUP_FAILURES:
                        break  # the startup probe would have restarted it
                    time.sleep(STARTUP_PERIOD_S)
                    continue
                if ready is None and get(port, "/readyz", LIVENESS_TIMEOUT_S) == 200:
                    ready = now
                if now >= next_liveness:
                    next_liveness += LIVENESS_PERIOD_S
                    if get(port, "/healthz", LIVENESS_TIMEOUT_S) == 200:
                        consecutive = 0
                    else:
                        failures += 1
                        consecutive += 1
                        worst = max(worst, consecutive)
                if ready is not None and now > ready + LIVENESS_PERIOD_S:
                    break  # one liveness probe after ready
                time.sleep(0.2)
            rss = peak_rss_mib(proc.pid) if proc.poll() is None else float("nan")
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
            lines = [json.loads(line) for line in (Path(tmp) / "nra.log").read_text().splitlines() if line.startswith("{")]
        info = [line for line in lines if line["level"] == "info"]
        return {"mode": mode, "N": n, "listening_s": listening, "ready_s": ready, "liveness_failures": failures,
                "restarted": worst >= LIVENESS_FAILURES or listening is None, "peak_rss_mib": round(rss, 1),
                "under_limit": rss < LIMIT_MIB, "info_lines": len(info),
                "progress_lines": sum(1 for line in info if line["msg"].startswith("applying "))}
    finally:
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="rules:40000,conntrack:100000")
    parser.add_argument("--deadline", type=float, default=600)
    args = parser.parse_args()
    print(f"{'mode':>9} {'N':>7} {'listen s':>8} {'ready s':>8} {'live fails':>10} {'restart':>7} "
          f"{'peak RSS MiB':>12} {'INFO lines':>10} {'progress':>8}")
    for case in args.cases.split(","):
        mode, n = case.split(":")
        r = run_case(mode, int(n), args.deadline)
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"{r['mode']:>9} {r['N']:>7} {fmt(r['listening_s']):>8} {fmt(r['ready_s']):>8} "
              f"{r['liveness_failures']:>10} {str(r['restarted']):>7} {r['peak_rss_mib']:>12} "
              f"{r['info_lines']:>10} {r['progress_lines']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
