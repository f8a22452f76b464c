#!/usr/bin/env python3
"""The daemon's memory at N prefixes, and what a sequence of edits, foreign changes and
/status and /metrics requests does to its peak (issue 19: RSS <= 60 MB idle at 1,000
prefixes, <= 120 MB at 100,000, the peak of any such sequence <= 1.2 x the steady RSS).

Each case (mode:N:shape; shape consecutive: /32s one apart, which merge into one interval;
distinct: /32s two apart, N intervals or rules) runs the daemon as the chart does (static
file, health listener on 127.0.0.1, defaults otherwise) in a throwaway namespace with two
on-link peers, once from each --repos checkout (a before/after in one run). Measured:

  start_s    process start to /readyz 200 (its first complete reconcile), fresh namespace
  restart_s  the same after a restart (SIGTERM, then a new process: nra's nft table is
             still there and read back in full; conntrack mode)
  start_peak VmHWM of the restarted process once ready
  steady     VmRSS 5 s after ready (the peak is then reset: /proc/PID/clear_refs 5)
  seq_peak   the highest VmHWM of the sequence's steps (each step's peak is measured
             apart, listed after the row), and seq_peak / steady
  end        VmRSS after the sequence

The sequence, --rounds times: a prefix appended to the file (waited for in the kernel),
GET /status and /metrics, a middle prefix replaced by another (waited for), GET /status
and /metrics; in conntrack mode also a foreign rule added to nra's chain `classify`
(the table is read back in full and the chain written again) and a foreign delete of one of
nra's lb4 intervals (followed from its notification and added back), each waited for; then
the appended prefix removed (waited for) and /status, /metrics again.

    .venv/bin/python benchmarks/memory_bench.py [--cases conntrack:1000:distinct,...]
        [--repos main=/work/main,after=.] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from conntrack_bench import ElementListener  # noqa: E402
from nra.kernel import nft_netlink as nl  # noqa: E402
from testbed.netns import add_peer_link, new_netns  # noqa: E402
from testbed.ports import free_port  # noqa: E402
from tests.agent.helpers import http_status as get  # noqa: E402

PEERS = ("10.99.0.2", "10.99.0.3")
NEW_PREFIX, REPLACEMENT = "198.18.0.0/30", "198.18.1.0/30"
WAIT_S = 60.0


def nets(n: int, shape: str) -> list[str]:
    base = int(ipaddress.ip_address("100.64.0.0"))
    step = 2 if shape == "distinct" else 1
    return [f"{ipaddress.ip_address(base + step * i)}/32" for i in range(n)]


def config(prefixes: list[str]) -> str:
    return ("peers:\n" + "".join(f"- peer-address: {p}\n" for p in PEERS)
            + "address-pools:\n- name: big\n  protocol: bgp\n  addresses:\n"
            + "".join(f"  - {p}\n" for p in prefixes))


def status_field(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Agent:
    def __init__(self, repo: Path, ns, mode: str, cfg: Path, log: Path):
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(repo), "HEALTH_ADDRESS": f"127.0.0.1:{self.port}",
               "RETURN_PATH": mode, "METALLB_STATIC_FILE": str(cfg), "NRA_NETNS": ns.name}
        self.started = time.monotonic()
        self.log = open(log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "nra"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=repo)

    def ready(self, deadline_s: float = 600) -> float:
        while time.monotonic() - self.started < deadline_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nra exited with {self.proc.returncode}")
            if get(self.port, "/readyz", 3) == 200:
                return time.monotonic() - self.started
            time.sleep(0.05)
        raise RuntimeError("not ready in time")

    def requests(self) -> None:
        for path in ("/status", "/metrics"):
            code = get(self.port, path, 30)
            if code != 200:
                raise RuntimeError(f"GET {path}: {code}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def edit(listener: ElementListener, cfg: Path, text: str, delete: bool = False) -> None:
    listener.drain()
    write(cfg, text)
    if listener.wait(time.perf_counter() + WAIT_S, nl.NFT_MSG_DELSETELEM if delete else nl.NFT_MSG_NEWSETELEM) is None:
        raise RuntimeError("the edit did not reach the kernel")


def until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"not in time: {what}")


def run_case(repo: Path, mode: str, n: int, shape: str, rounds: int) -> dict:
    ns = new_netns("nra-membench")
    try:
        add_peer_link(ns)
        with tempfile.TemporaryDirectory() as tmp:
            cfg, log = Path(tmp) / "metallb.yaml", Path(tmp) / "nra.log"
            base = nets(n, shape)
            write(cfg, config(base))
            agent = Agent(repo, ns, mode, cfg, log)
            row = {"start_s": agent.ready()}
            if mode == "conntrack":  # a restart: the table is there, read back in full
                agent.stop()
                agent = Agent(repo, ns, mode, cfg, log)
                row["restart_s"] = agent.ready()
            row["start_peak"] = status_field(agent.proc.pid, "VmHWM")
            time.sleep(5)
            pid = agent.proc.pid
            row["steady"] = status_field(pid, "VmRSS")
            listener = ElementListener(ns.name)
            steps: dict[str, float] = {}  # step -> the highest peak it reached, MB

            def step(name: str, work) -> None:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
                work()
                steps[name] = max(steps.get(name, 0.0), status_field(pid, "VmHWM"))

            def rules_until(text: str, present: bool) -> None:
                until(lambda: (text in ns.ip("rule show")) == present, f"rule {text} {'in' if present else 'out'}")

            try:
                middle = len(base) // 2
                more = base + [NEW_PREFIX]
                replaced = more[:middle] + [REPLACEMENT] + more[middle + 1:]
                for _ in range(rounds):
                    if mode == "conntrack":
                        step("append", lambda: edit(listener, cfg, config(more)))
                    else:
                        step("append", lambda: (write(cfg, config(more)), rules_until("198.18.0.0/30", True)))
                    step("requests", agent.requests)
                    if mode == "conntrack":
                        step("replace", lambda: edit(listener, cfg, config(replaced)))
                    else:
                        step("replace", lambda: (write(cfg, config(replaced)), rules_until("198.18.1.0/30", True)))
                    step("requests", agent.requests)
                    if mode == "conntrack":
                        def foreign_rule() -> None:
                            ns.nft("add rule inet nra classify counter accept")
                            until(lambda: "counter" not in ns.exec(["nft", "list", "chain", "inet", "nra",
                                                                    "classify"]).stdout, "the foreign rule removed")

                        def foreign_delete() -> None:
                            listener.drain()
                            ns.nft(f"delete element inet nra lb4 {{ {REPLACEMENT} }}")  # (an interval of its own)
                            if listener.wait(time.perf_counter() + WAIT_S) is None:
                                raise RuntimeError("the deleted element was not added back")
                        step("foreign_rule", foreign_rule)
                        step("foreign_delete", foreign_delete)
                        step("requests", agent.requests)
                    if mode == "conntrack":
                        step("remove", lambda: edit(listener, cfg, config(base), delete=True))
                    else:
                        step("remove", lambda: (write(cfg, config(base)), rules_until("198.18.1.0/30", False)))
                    step("requests", agent.requests)
            finally:
                listener.close()
            row["steps"] = steps
            row["seq_peak"] = max(steps.values())
            row["end"] = status_field(pid, "VmRSS")
            agent.stop()
            return row
    finally:
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="conntrack:1000:distinct,conntrack:100000:consecutive,"
                                           "conntrack:100000:distinct")
    parser.add_argument("--repos", default=f"after={REPO}", help="name=path,... (e.g. main=/work/main,after=.)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    repos = [(name, Path(path).resolve()) for name, path in (r.split("=", 1) for r in args.repos.split(","))]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start: {load}")
    print(f"{'mode':>9} {'N':>7} {'shape':>11} {'repo':>6} {'start_s':>7} {'restart_s':>9} {'start_peak':>10} "
          f"{'steady':>7} {'seq_peak':>8} {'ratio':>6} {'end':>6}   (MB)")
    for case in args.cases.split(","):
        mode, n, shape = case.split(":")
        for name, repo in repos:
            r = run_case(repo, mode, int(n), shape, args.rounds)
            restart = f"{r['restart_s']:.2f}" if "restart_s" in r else "-"
            print(f"{mode:>9} {int(n):>7} {shape:>11} {name:>6} {r['start_s']:>7.2f} {restart:>9} "
                  f"{r['start_peak']:>10.1f} {r['steady']:>7.1f} {r['seq_peak']:>8.1f} "
                  f"{r['seq_peak'] / r['steady']:>6.2f} {r['end']:>6.1f}   "
                  + " ".join(f"{k} {v:.0f}" for k, v in r["steps"].items()), flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
