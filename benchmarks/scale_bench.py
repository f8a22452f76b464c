#!/usr/bin/env python3
"""Issue 19's figures at 100,000 prefixes, conntrack mode (or rules), for both shapes (run as root).

Shapes: `consecutive` (/30s four apart: adjacent, they merge into a few nft intervals) and
`distinct` (/30s eight apart: N intervals). `--return-path rules` runs the same figures in
rules mode: nra writes one `ip rule` per configured prefix and merges none, so both shapes
are N rules (the `intervals` column counts table TABLE's IPv4 rules there); a change is
timed to the new prefix's rule notification, a delete of half to the N/2-th rule deletion
notified. Per shape, each in a fresh namespace:

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
                 (waited for until nra has added it back; conntrack mode only)
  after MiB      the daemon's RSS once the sequence is over and the kernel settled again
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

--memory-profile runs each daemon under tracemalloc (PYTHONTRACEMALLOC, through a
sitecustomize of the run's) and prints, after its start and after the sequence, the top
holders of Python memory by line and by file, and its /proc/PID/smaps_rollup: to find what
holds the RSS, not to take the figures (tracemalloc's own bookkeeping doubles the heap).

--reuse-netns NAME keeps the daemon's namespace: the namespace NAME is used as it is when
it exists (programmed by an earlier run: its daemon's start is then a restart, which reads
the kernel's rules or nft table back), made and left in place when it does not (this run's
daemon programs it). Rules mode at 100,000 writes 100,000 rules on a first start, 350-600 s
(the kernel walks its rule list on each insert), so the before and after of a change are
taken as restarts of each checkout's daemon on one namespace programmed once; no ONESHOT
rows, one shape, and the namespace is never deleted: `ip netns del NAME` when done.

--groups 2: the node of several uplinks: two uplink groups, each a pool (the prefixes dealt
by address, so a prefix stays in its pool whatever else is removed) advertised to one of the
two peers (BGPPeer, IPAddressPool and BGPAdvertisement objects); the group maps then hold
every prefix as well, and a one-line change commits a group map's element in the same
transaction as the prefix set's.

--repo PATH runs another checkout's nra (a baseline) with this file's measurements, so the
before and after of one change can be taken in one run, alternated:

    .venv/bin/python benchmarks/scale_bench.py [--n 100000] [--shapes consecutive,distinct]
        [--rounds 5] [--repo /work/wt-baseline] [--groups 2]
"""

from __future__ import annotations

import argparse
import ipaddress
import errno
import os
import select
import re
import signal
import socket
import struct
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
from conntrack_bench import ElementListener, group4_elements, lb4_elements, lb4_set_of  # noqa: E402
from nra.kernel import nft_netlink as nl  # noqa: E402
from nra.kernel.socket import open_netlink  # noqa: E402
from testbed.netns import NetNS, add_peer_link, create_netns, list_netns, new_netns  # noqa: E402
from testbed.ports import free_port  # noqa: E402

PEERS = {"10.99.0.2": "02:00:00:00:00:02", "10.99.0.3": "02:00:00:00:00:03"}
STRIDE = {"consecutive": 4, "distinct": 8}
NEW_PREFIX = "198.18.0.0/30"
#: the IPv4 prefix sets and group maps (--groups: a change's element is in one or the other)
LB4_OR_GROUPS4 = re.compile(r"(lb4|groups4)(_\d+)?")
TABLE = 20  # nra's default TABLE_WEIGHT: rules mode's rules point at it
#: the return path measured (--return-path)
MODE = "conntrack"
#: uplink groups (--groups): 1, or a pool per peer
GROUPS = 1
#: tracemalloc's snapshots (--memory-profile): the directory of the run's sitecustomize
PROFILE_HOOK: Path | None = None

#: a sitecustomize for --memory-profile: SIGUSR2 writes a tracemalloc snapshot to
#: $NRA_BENCH_SNAPSHOT (then renamed to it + ".done")
SITECUSTOMIZE = """
import os, signal, tracemalloc
def _snapshot(signum, frame):
    path = os.environ["NRA_BENCH_SNAPSHOT"]
    import gc
    gc.collect()
    tracemalloc.take_snapshot().dump(path)
    os.replace(path, path + ".done")
if os.environ.get("NRA_BENCH_SNAPSHOT") and tracemalloc.is_tracing():
    signal.signal(signal.SIGUSR2, _snapshot)
"""

#: a sitecustomize for --malloc-stats (nothing imported that nra does not): SIGUSR2 writes
#: sys._debugmallocstats() to $NRA_BENCH_MALLOCSTATS (then renamed to it + ".done")
MALLOC_SITECUSTOMIZE = """
import os, signal, sys
def _mallocstats(signum, frame):
    path = os.environ["NRA_BENCH_MALLOCSTATS"]
    saved = os.dup(2)
    try:
        with open(path, "w") as out:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    os.replace(path, path + ".done")
if os.environ.get("NRA_BENCH_MALLOCSTATS"):
    signal.signal(signal.SIGUSR2, _mallocstats)
"""
#: --malloc-stats: the directory of the run's sitecustomize (pymalloc's arenas by SIGUSR2)
MALLOC_HOOK: Path | None = None


def prefixes(shape: str, n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [f"{ipaddress.IPv4Address(base + i * STRIDE[shape])}/30" for i in range(n)]


def config_text(nets: list[str]) -> str:
    if GROUPS > 1:
        return groups_config_text(nets)
    lines = ["peers:"] + [f"- peer-address: {p}" for p in PEERS]
    lines += ["address-pools:", "- name: bench", "  protocol: bgp", "  addresses:"] + [f"  - {n}" for n in nets]
    return "\n".join(lines) + "\n"


def groups_config_text(nets: list[str]) -> str:
    """GROUPS pools, each advertised to its own peer (PEERS: GROUPS of them at most); a
    prefix's pool is its address's bits 3 and up modulo GROUPS (distinct: alternate /30s)."""
    docs = []
    for i, address in enumerate(list(PEERS)[:GROUPS]):
        docs.append(f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: r{i}, namespace: m}}\n"
                    f"spec: {{myASN: 64512, peerASN: 64500, peerAddress: {address}}}\n")
    pools: list[list[str]] = [[] for _ in range(GROUPS)]
    for net in nets:
        pools[(int(ipaddress.IPv4Address(net.split("/")[0])) >> 3) % GROUPS].append(net)
    for g, members in enumerate(pools):
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool{g}, namespace: m}}\n"
                    f"spec:\n  addresses:\n" + "".join(f"  - {n}\n" for n in members))
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: adv{g}, namespace: m}}\n"
                    f"spec: {{ipAddressPools: [pool{g}], peers: [r{g}]}}\n")
    return "---\n".join(docs)


def namespace(name: str | None = None) -> NetNS:
    """A fresh namespace with the peer link and the peers' entries; with `name`, that
    namespace as it is when it exists (--reuse-netns), else made under that name."""
    if name is not None:
        if name in list_netns():
            return NetNS(name)
        ns = create_netns(name)
    else:
        ns = new_netns("nra-scale")
    add_peer_link(ns, v6_cidr=None)
    for address, lladdr in PEERS.items():
        ns.ip(f"neigh replace {address} lladdr {lladdr} dev eth0 nud permanent")
    return ns


def nra_env(repo: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("ONESHOT", "CLEANANDEXIT", "METALLB_STATIC_FILE", "PYTHONPATH")}
    e.update(PYTHONPATH=str(repo), HEALTH_ADDRESS="off", LOG_LEVEL="warn", RETURN_PATH=MODE)
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
    """Intervals in the IPv4 prefix sets (a merged shape has few), and with uplink groups in
    their maps too (a group's prefixes are in its map alone: in both before 2026-12-06); in
    rules mode, table TABLE's IPv4 rules."""
    if MODE == "rules":
        return len(ns.rules("-4", TABLE))
    return lb4_elements(ns) + (group4_elements(ns) if GROUPS > 1 else 0)


def write(cfg: Path, text: str) -> None:
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, cfg)


class RuleListener:
    """Rules mode's counterpart of ElementListener: IPv4 rule notifications of table TABLE
    in one namespace, read by their headers alone (a delete of 50,000 is 50,000 of them)."""

    RTM_NEWRULE, RTM_DELRULE = 32, 33

    def __init__(self, netns: str, deleted: int):
        self.sock = open_netlink(netns, 1 << (8 - 1), rcvbuf=256 << 20)  # RTNLGRP_IPV4_RULE
        self.sock.setblocking(False)
        self.deleted = deleted  # how many deletions make a delete (half of N)

    def _types(self):
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                raise RuntimeError("rule notifications dropped (ENOBUFS): the figure would be wrong") from None
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                # struct fib_rule_hdr after the 16-byte header: family, dst_len, src_len, tos, table
                if length >= 21 and data[offset + 20] == TABLE:
                    yield kind
                offset += (length + 3) & ~3 or len(data)

    def drain(self) -> None:
        for _ in self._types():
            pass

    def wait(self, deadline: float, message: int = nl.NFT_MSG_NEWSETELEM) -> float | None:
        """When the added rule came (or, message=NFT_MSG_DELSETELEM, the `deleted`-th rule went)."""
        kind, needed = ((self.RTM_DELRULE, self.deleted) if message == nl.NFT_MSG_DELSETELEM
                        else (self.RTM_NEWRULE, 1))
        seen = 0
        while (left := deadline - time.perf_counter()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            seen += sum(1 for k in self._types() if k == kind)
            if seen >= needed:
                return time.perf_counter()
        return None

    def close(self) -> None:
        self.sock.close()


def smaps_rollup(pid: int) -> str:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    keep = ("Rss", "Pss_Anon", "Pss_File", "Anonymous", "Private_Dirty", "Shared_Clean")
    return ", ".join(" ".join(line.split()[:2]) + " kB" for line in lines if line.startswith(keep))


def _signalled(proc: subprocess.Popen, path: Path, timeout: float, failure: str) -> Path:
    """SIGUSR2 to the daemon (the run's sitecustomize writes `path`, then renames it to
    `path`.done); that file once there."""
    done = Path(str(path) + ".done")
    done.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(failure)
        time.sleep(0.05)
    return done


def memory_profile(proc: subprocess.Popen, snapshot: Path, when: str, top: int = 25) -> None:
    """The daemon's tracemalloc snapshot taken now (SIGUSR2 to the run's sitecustomize),
    its top holders by line and by file, and its smaps_rollup, printed."""
    import tracemalloc
    done = _signalled(proc, snapshot, 120, "no tracemalloc snapshot from the daemon")
    snap = tracemalloc.Snapshot.load(str(done))
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(s.size for s in snap.statistics("filename"))
    print(f"--- memory {when}: pid {proc.pid}: VmRSS {proc_kib(proc.pid, 'VmRSS') / 1024:.1f} MiB; "
          f"tracemalloc {total / 2**20:.1f} MiB; smaps_rollup {smaps_rollup(proc.pid)}", flush=True)
    for kind in ("filename", "lineno"):
        for stat in snap.statistics(kind)[:top]:
            frame = stat.traceback[0]
            where = f"{frame.filename}:{frame.lineno}" if kind == "lineno" else frame.filename
            print(f"  {stat.size / 2**20:8.2f} MiB {stat.count:>9} blocks  {where}", flush=True)


def malloc_stats(proc: subprocess.Popen) -> str:
    """pymalloc's arenas in the daemon now (sys._debugmallocstats, by SIGUSR2 to the run's
    sitecustomize): in use, their high-water mark, and the free bytes inside them."""
    assert MALLOC_HOOK is not None
    done = _signalled(proc, MALLOC_HOOK / "stats", 60, "no malloc statistics from the daemon")
    found: dict[str, int] = {}
    for line in done.read_text().splitlines():
        name, _, value = line.rpartition("=")
        name = " ".join(name.lstrip("# ").split())
        if name and value.strip().replace(",", "").isdigit():
            found.setdefault(name, int(value.strip().replace(",", "")))
    unused = next((v for k, v in found.items() if k.endswith("unused pools * 16384 bytes")), 0)
    return (f"arenas {found.get('arenas allocated current', '?')} (high-water "
            f"{found.get('arenas highwater mark', '?')}), in use {found.get('bytes in allocated blocks', 0) / 2**20:.1f}"
            f" MiB, free {(found.get('bytes in available blocks', 0) + unused) / 2**20:.1f} MiB")


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
    env = nra_env(repo, HEALTH_ADDRESS=f"127.0.0.1:{port}", STATUS_ACCESS="loopback")
    if PROFILE_HOOK is not None:
        env.update(PYTHONPATH=f"{repo}{os.pathsep}{PROFILE_HOOK}", PYTHONTRACEMALLOC="1",
                   NRA_BENCH_SNAPSHOT=str(PROFILE_HOOK / "snapshot"))
    elif MALLOC_HOOK is not None:
        env.update(PYTHONPATH=f"{repo}{os.pathsep}{MALLOC_HOOK}", NRA_BENCH_MALLOCSTATS=str(MALLOC_HOOK / "stats"))
    proc = subprocess.Popen([sys.executable, "-m", "nra", "--static-file", str(cfg), "--netns", ns.name],
                            env=env, cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    while http(port, "/readyz", 2)[0] != 200:
        # (rules mode at 100,000: the kernel inserts each rule after walking the list, minutes)
        if proc.poll() is not None or time.monotonic() - started > (1800 if MODE == "rules" else 300):
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
                foreign: bool = False, changes_only: bool = False, oneshot: bool = True,
                reuse: str | None = None) -> dict:
    nets = prefixes(shape, n)
    text = config_text(nets)
    cfg = workdir / f"{shape}.yaml"
    cfg.write_text(text)
    result: dict = {"shape": shape, "N": n}

    if not changes_only and oneshot and reuse is None:
        ns = namespace()
        try:
            result["oneshot_s"], result["oneshot_mib"] = run_oneshot(repo, ns, cfg)
            result["intervals"] = element_count(ns)
            result["again_s"], result["again_mib"] = run_oneshot(repo, ns, cfg)
        finally:
            ns.delete()

    if reuse is not None:
        result["reused"] = reuse in list_netns()
    ns = namespace(reuse)
    port = free_port()
    log = open(workdir / f"daemon-{shape}.log", "w")
    proc = None
    try:
        proc, result["start_s"] = start_daemon(repo, ns, cfg, port, log)
        time.sleep(2)
        result["steady_mib"] = proc_kib(proc.pid, "VmRSS") / 1024
        result["start_peak_mib"] = proc_kib(proc.pid, "VmHWM") / 1024
        if MALLOC_HOOK is not None:
            result["malloc_start"] = malloc_stats(proc)
        if PROFILE_HOOK is not None:
            memory_profile(proc, PROFILE_HOOK / "snapshot", f"after start ({MODE}, {shape})")
        full = result.setdefault("intervals", element_count(ns))
        if GROUPS > 1:
            result["group_intervals"] = group4_elements(ns)
            if not result["group_intervals"]:
                raise RuntimeError("--groups: the group maps are empty (no uplink groups made)")
        listener = (RuleListener(ns.name, n - len(nets[::2])) if MODE == "rules" else
                    ElementListener(ns.name, LB4_OR_GROUPS4 if GROUPS > 1 else None))
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
            # (--rounds 0: none; rules mode at 100,000 deletes and adds back 50,000 rules a round)
            result["change_ms"] = statistics.median(changes) * 1000 if changes else float("nan")
            result["changes_ms"] = [c * 1000 for c in changes]  # (each round: the first can differ)
            result["delete_half_s"] = statistics.median(deletes) if deletes else float("nan")
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
                if foreign and MODE == "conntrack":
                    foreign_changes(ns, listener)
                write(cfg, text)
                settle(ns, full)
            result["sequence_steady_mib"] = before
            result["sequence_peak_mib"] = proc_kib(proc.pid, "VmHWM") / 1024
            time.sleep(2)
            result["after_mib"] = proc_kib(proc.pid, "VmRSS") / 1024
            if MALLOC_HOOK is not None:
                result["malloc_after"] = malloc_stats(proc)
            if PROFILE_HOOK is not None:
                memory_profile(proc, PROFILE_HOOK / "snapshot", f"after the sequence ({MODE}, {shape})")
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
        if reuse is None:
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
    parser.add_argument("--return-path", choices=("conntrack", "rules"), default="conntrack",
                        help="the return path measured (rules: one ip rule per prefix, see the doc)")
    parser.add_argument("--memory-profile", action="store_true",
                        help="tracemalloc's top holders and smaps_rollup after start and after the sequence")
    parser.add_argument("--malloc-stats", action="store_true",
                        help="the RSS to a tenth of a MiB, the start's peak, and pymalloc's arenas after "
                             "start and after the sequence")
    parser.add_argument("--no-oneshot", action="store_true",
                        help="no ONESHOT runs (rules mode at 100,000: each writes 100,000 rules, minutes)")
    parser.add_argument("--reuse-netns", metavar="NAME",
                        help="the daemon's namespace NAME: used as it is if it exists, else made and kept "
                             "(restarts on one programmed namespace; see the doc)")
    parser.add_argument("--groups", type=int, default=1, choices=range(1, len(PEERS) + 1),
                        help="uplink groups: a pool per peer (see the doc)")
    parser.add_argument("--changes-only", action="store_true",
                        help="only the start, change and delete-half figures (no oneshot, sequence or restart)")
    args = parser.parse_args()
    global MODE, PROFILE_HOOK, GROUPS, MALLOC_HOOK
    MODE, GROUPS = args.return_path, args.groups
    repo = args.repo.resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    bytecode = "compiled in each process" if args.compile_each_run else "precompiled once (a run's bytecode cache)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"nra scale benchmark: {machine()}; load average {load}; nra of {repo} at {commit}; {bytecode}; "
          f"{MODE} mode; {GROUPS} uplink group(s)")
    if args.changes_only:
        print(f"{'shape':>11} {'N':>7} {'intervals':>9} {'start s':>7} {'steady MiB':>10} {'change ms':>9} "
              f"{'del half s':>10}")
    else:
        print(f"{'shape':>11} {'N':>7} {'intervals':>9} {'oneshot s':>9} {'MiB':>6} {'again s':>7} {'MiB':>6} "
              f"{'start s':>7} {'steady MiB':>10} {'change ms':>9} {'del half s':>10} {'seq peak/steady':>15} "
              f"{'after MiB':>9} {'restart s':>9}")
    with tempfile.TemporaryDirectory(prefix="nra-scale-") as tmp:
        if args.memory_profile:
            PROFILE_HOOK = Path(tmp) / "hook"
            PROFILE_HOOK.mkdir()
            (PROFILE_HOOK / "sitecustomize.py").write_text(SITECUSTOMIZE)
        elif args.malloc_stats:
            MALLOC_HOOK = Path(tmp) / "hook"
            MALLOC_HOOK.mkdir()
            (MALLOC_HOOK / "sitecustomize.py").write_text(MALLOC_SITECUSTOMIZE)
        if not args.compile_each_run:
            compile_once(repo, Path(tmp) / "pycache", Path(tmp))
        rounds_ms = []
        for shape in args.shapes.split(","):
            r = bench_shape(repo, shape, args.n, args.rounds, args.sequence, Path(tmp), args.foreign,
                            args.changes_only, not args.no_oneshot, args.reuse_netns)
            if "reused" in r:
                print(f"namespace {args.reuse_netns}: " + ("reused, the start is a restart" if r["reused"]
                                                           else "made and programmed by this start, kept"))
            rounds_ms.append(f"{shape} " + " ".join(f"{c:.0f}" for c in r.get("changes_ms", []))
                             + (f" ({r['group_intervals']} IPv4 group map elements)" if "group_intervals" in r else ""))
            if args.no_oneshot or args.reuse_netns:
                r.update(oneshot_s=float("nan"), oneshot_mib=float("nan"), again_s=float("nan"),
                         again_mib=float("nan"))
            if args.changes_only:
                print(f"{shape:>11} {r['N']:>7} {r['intervals']:>9} {r['start_s']:>7.2f} {r['steady_mib']:>10.0f} "
                      f"{r['change_ms']:>9.0f} {r['delete_half_s']:>10.2f}", flush=True)
                continue
            ratio = r["sequence_peak_mib"] / r["sequence_steady_mib"]
            print(f"{shape:>11} {r['N']:>7} {r['intervals']:>9} {r['oneshot_s']:>9.2f} {r['oneshot_mib']:>6.0f} "
                  f"{r['again_s']:>7.2f} {r['again_mib']:>6.0f} {r['start_s']:>7.2f} {r['steady_mib']:>10.0f} "
                  f"{r['change_ms']:>9.0f} {r['delete_half_s']:>10.2f} "
                  f"{r['sequence_peak_mib']:>6.0f}/{r['sequence_steady_mib']:.0f} ({ratio:.2f}) "
                  f"{r['after_mib']:>9.0f} {r['restart_s']:>9.2f}", flush=True)
            if args.malloc_stats:
                print(f"{shape:>11}: steady {r['steady_mib']:.1f} MiB, the start's peak (VmHWM) "
                      f"{r['start_peak_mib']:.1f}, after the sequence {r['after_mib']:.1f}; after start: "
                      f"{r.get('malloc_start', '-')}; after the sequence: {r.get('malloc_after', '-')}", flush=True)
    print("one-line changes, ms, in the order taken: " + "; ".join(rounds_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
