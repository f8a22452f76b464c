#!/usr/bin/env python3
"""Issue 19's figures at 100,000 prefixes, conntrack mode, for both shapes (run as root).

Shapes: `consecutive` (/30s four apart: adjacent, they merge into a few nft intervals) and
`distinct` (/30s eight apart: N intervals). Per shape, each in a fresh namespace:

  oneshot        `nra --oneshot` from process start to exit, everything programmed; peak RSS
  oneshot again  a second ONESHOT on the programmed namespace (nothing to do); peak RSS
  start          the daemon from process start to /readyz 200 (its first complete reconcile)
  steady RSS     the daemon's RSS a moment after that
  change         a line appended to the file until its element is in the kernel (median)
  delete half    every second prefix removed from the file until the kernel's transaction
                 (median of the delete; the prefixes are put back between rounds)
  sequence peak  the peak RSS (VmHWM, reset after start) over a sequence of edits and
                 /status and /metrics requests, against the steady RSS: the sequence is
                 --sequence rounds of (an edit, 4 x /status, 4 x /metrics, the edit undone);
                 with --foreign each round also has, once the edit is in the kernel,
                 someone else's rule added to nra's chain `classify` (waited for until nra
                 has removed it) and someone else's delete of the edit's IPv4 interval
                 (waited for until nra has added it back)
  restart        the daemon stopped and started again on the programmed namespace, to
                 /readyz 200 (its first reconcile reads nra's nft table back in full)

Bytecode: by default nra is compiled once per run, into a temporary bytecode cache
(PYTHONPYCACHEPREFIX) that every measured process reads: nra's modules by compileall, and
whatever else the agent imports by one warm-up ONESHOT and one warm-up daemon start on a
namespace of 10 prefixes, unmeasured. A node runs a prebuilt image whose .pyc exist, so this
is the honest figure. `--compile-each-run` gives each process no cache of the run: it uses
whatever .pyc the checkout's __pycache__ holds, and with PYTHONDONTWRITEBYTECODE set (as in
the test environment) compiles every other module it imports, in each process: how the
figures before this option were taken.

--repo PATH runs another checkout's nra (a baseline) with this file's measurements, so the
before and after of one change can be taken in one run, alternated:

    .venv/bin/python benchmarks/scale_bench.py [--n 100000] [--shapes consecutive,distinct]
        [--rounds 5] [--repo /work/wt-baseline]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_bench import machine  # noqa: E402
from conntrack_bench import ElementListener, lb4_elements, lb4_set_of  # noqa: E402
from nra.kernel import nft_netlink as nl  # noqa: E402
from testbed.netns import NetNS, add_peer_link, new_netns  # noqa: E402
from testbed.ports import free_port  # noqa: E402

PEERS = {"10.99.0.2": "02:00:00:00:00:02", "10.99.0.3": "02:00:00:00:00:03"}
STRIDE = {"consecutive": 4, "distinct": 8}
NEW_PREFIX = "198.18.0.0/30"


def prefixes(shape: str, n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [f"{ipaddress.IPv4Address(base + i * STRIDE[shape])}/30" for i in range(n)]


def config_text(nets: list[str]) -> str:
    lines = ["peers:"] + [f"- peer-address: {p}" for p in PEERS]
    lines += ["address-pools:", "- name: bench", "  protocol: bgp", "  addresses:"] + [f"  - {n}" for n in nets]
    return "\n".join(lines) + "\n"


def namespace() -> NetNS:
    ns = new_netns("nra-scale")
    add_peer_link(ns, v6_cidr=None)
    for address, lladdr in PEERS.items():
        ns.ip(f"neigh replace {address} lladdr {lladdr} dev eth0 nud permanent")
    return ns


def nra_env(repo: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("ONESHOT", "CLEANANDEXIT", "METALLB_STATIC_FILE", "PYTHONPATH")}
    e.update(PYTHONPATH=str(repo), HEALTH_ADDRESS="off", LOG_LEVEL="warn", RETURN_PATH="conntrack")
    if PYCACHE is not None:
        e["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    e.update(extra)
    return e


#: the run's bytecode cache (None: --compile-each-run)
PYCACHE: Path | None = None


def compile_once(repo: Path, cache: Path, workdir: Path) -> None:
    """nra and what it imports compiled into `cache` (see the module doc), unmeasured."""
    global PYCACHE
    PYCACHE = cache
    writing = {"PYTHONDONTWRITEBYTECODE": ""}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(repo / "nra")], check=True,
                   env={**os.environ, "PYTHONPYCACHEPREFIX": str(cache), **writing}, stdout=subprocess.DEVNULL)
    cfg = workdir / "warm-up.yaml"
    cfg.write_text(config_text(prefixes("distinct", 10)))
    ns = namespace()
    try:
        env = nra_env(repo, **writing)
        subprocess.run([sys.executable, "-m", "nra", "--oneshot", "--static-file", str(cfg), "--netns", ns.name],
                       env=env, cwd=repo, check=True)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "nra", "--static-file", str(cfg), "--netns", ns.name],
                                env={**env, "HEALTH_ADDRESS": f"127.0.0.1:{port}", "STATUS_ACCESS": "loopback"},
                                cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while http(port, "/readyz", 2)[0] != 200 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            http(port, "/status")
            http(port, "/metrics")
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        ns.delete()


def run_oneshot(repo: Path, ns: NetNS, cfg: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one ONESHOT process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nra", "--oneshot", "--static-file", str(cfg), "--netns", ns.name],
                            env=nra_env(repo), cwd=repo)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"ONESHOT exited {proc.returncode}")
    return took, usage.ru_maxrss / 1024


def http(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except OSError:
        return 0, b""


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def element_count(ns: NetNS) -> int:
    """Intervals in the IPv4 prefix sets (a merged shape has few)."""
    return lb4_elements(ns)


def write(cfg: Path, text: str) -> None:
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, cfg)


def timed_change(listener: ElementListener, cfg: Path, text: str, message: int) -> float:
    listener.drain()
    started = time.perf_counter()
    write(cfg, text)
    arrived = listener.wait(started + 60, message)
    if arrived is None:
        raise RuntimeError("a change did not reach the kernel within 60 s")
    return arrived - started


def settle(ns: NetNS, expect: int, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while element_count(ns) != expect:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the IPv4 prefix sets did not settle at {expect} intervals")
        time.sleep(0.1)


def start_daemon(repo: Path, ns: NetNS, cfg: Path, port: int, log) -> tuple[subprocess.Popen, float]:
    """The daemon, and its seconds from process start to /readyz 200."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "nra", "--static-file", str(cfg), "--netns", ns.name],
                            env=nra_env(repo, HEALTH_ADDRESS=f"127.0.0.1:{port}", STATUS_ACCESS="loopback"),
                            cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    while http(port, "/readyz", 2)[0] != 200:
        if proc.poll() is not None or time.monotonic() - started > 300:
            proc.kill()
            raise RuntimeError(f"daemon not ready; see {log.name}")
        time.sleep(0.02)
    return proc, time.monotonic() - started


def foreign_changes(ns: NetNS, listener: ElementListener) -> None:
    """Someone else's rule in nra's chain `classify`, then someone else's delete of
    NEW_PREFIX's interval (an interval of its own in both shapes), each waited for until
    nra has repaired it."""
    ns.nft("add rule inet nra classify counter accept")
    deadline = time.monotonic() + 60
    while "counter" in ns.exec(["nft", "list", "chain", "inet", "nra", "classify"]).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("someone else's rule was not removed within 60 s")
        time.sleep(0.05)
    listener.drain()
    ns.nft(f"delete element inet nra {lb4_set_of(ns, NEW_PREFIX)} {{ {NEW_PREFIX} }}")
    if listener.wait(time.perf_counter() + 60) is None:
        raise RuntimeError("the interval someone else deleted was not added back within 60 s")


def bench_shape(repo: Path, shape: str, n: int, rounds: int, sequence: int, workdir: Path,
                foreign: bool = False, changes_only: bool = False) -> dict:
    nets = prefixes(shape, n)
    text = config_text(nets)
    cfg = workdir / f"{shape}.yaml"
    cfg.write_text(text)
    result: dict = {"shape": shape, "N": n}

    if not changes_only:
        ns = namespace()
        try:
            result["oneshot_s"], result["oneshot_mib"] = run_oneshot(repo, ns, cfg)
            result["intervals"] = element_count(ns)
            result["again_s"], result["again_mib"] = run_oneshot(repo, ns, cfg)
        finally:
            ns.delete()

    ns = namespace()
    port = free_port()
    log = open(workdir / f"daemon-{shape}.log", "w")
    proc = None
    try:
        proc, result["start_s"] = start_daemon(repo, ns, cfg, port, log)
        time.sleep(2)
        result["steady_mib"] = proc_kib(proc.pid, "VmRSS") / 1024
        full = result.setdefault("intervals", element_count(ns))
        listener = ElementListener(ns.name)
        try:
            changes, deletes = [], []
            half = config_text(nets[::2])
            added = config_text(nets + [NEW_PREFIX])
            for _ in range(rounds):
                changes.append(timed_change(listener, cfg, added, nl.NFT_MSG_NEWSETELEM))
                write(cfg, text)
                settle(ns, full)
            for _ in range(rounds):
                deletes.append(timed_change(listener, cfg, half, nl.NFT_MSG_DELSETELEM))
                write(cfg, text)
                settle(ns, full)
            result["change_ms"] = statistics.median(changes) * 1000
            result["delete_half_s"] = statistics.median(deletes)
            if changes_only:
                return result
            before = proc_kib(proc.pid, "VmRSS") / 1024
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            for _ in range(sequence):
                if foreign:
                    timed_change(listener, cfg, added, nl.NFT_MSG_NEWSETELEM)
                else:
                    write(cfg, added)
                for _ in range(4):
                    http(port, "/status")
                    http(port, "/metrics")
                if foreign:
                    foreign_changes(ns, listener)
                write(cfg, text)
                settle(ns, full)
            result["sequence_steady_mib"] = before
            result["sequence_peak_mib"] = proc_kib(proc.pid, "VmHWM") / 1024
        finally:
            listener.close()
        proc.terminate()
        proc.wait(30)
        proc, result["restart_s"] = start_daemon(repo, ns, cfg, port, log)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        log.close()
        ns.delete()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--shapes", default="consecutive,distinct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequence", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose nra runs")
    parser.add_argument("--foreign", action="store_true",
                        help="someone else's rule and element delete in each round of the sequence")
    parser.add_argument("--compile-each-run", action="store_true",
                        help="no bytecode cache: each measured process compiles what it imports (see the doc)")
    parser.add_argument("--changes-only", action="store_true",
                        help="only the start, change and delete-half figures (no oneshot, sequence or restart)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    bytecode = "compiled in each process" if args.compile_each_run else "precompiled once (a run's bytecode cache)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"nra scale benchmark: {machine()}; load average {load}; nra of {repo} at {commit}; {bytecode}")
    if args.changes_only:
        print(f"{'shape':>11} {'N':>7} {'intervals':>9} {'start s':>7} {'steady MiB':>10} {'change ms':>9} "
              f"{'del half s':>10}")
    else:
        print(f"{'shape':>11} {'N':>7} {'intervals':>9} {'oneshot s':>9} {'MiB':>6} {'again s':>7} {'MiB':>6} "
              f"{'start s':>7} {'steady MiB':>10} {'change ms':>9} {'del half s':>10} {'seq peak/steady':>15} "
              f"{'restart s':>9}")
    with tempfile.TemporaryDirectory(prefix="nra-scale-") as tmp:
        if not args.compile_each_run:
            compile_once(repo, Path(tmp) / "pycache", Path(tmp))
        for shape in args.shapes.split(","):
            r = bench_shape(repo, shape, args.n, args.rounds, args.sequence, Path(tmp), args.foreign,
                            args.changes_only)
            if args.changes_only:
                print(f"{shape:>11} {r['N']:>7} {r['intervals']:>9} {r['start_s']:>7.2f} {r['steady_mib']:>10.0f} "
                      f"{r['change_ms']:>9.0f} {r['delete_half_s']:>10.2f}", flush=True)
                continue
            ratio = r["sequence_peak_mib"] / r["sequence_steady_mib"]
            print(f"{shape:>11} {r['N']:>7} {r['intervals']:>9} {r['oneshot_s']:>9.2f} {r['oneshot_mib']:>6.0f} "
                  f"{r['again_s']:>7.2f} {r['again_mib']:>6.0f} {r['start_s']:>7.2f} {r['steady_mib']:>10.0f} "
                  f"{r['change_ms']:>9.0f} {r['delete_half_s']:>10.2f} "
                  f"{r['sequence_peak_mib']:>6.0f}/{r['sequence_steady_mib']:.0f} ({ratio:.2f}) "
                  f"{r['restart_s']:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
