#!/usr/bin/env python3
"""The agent under HTTP load: do polling, idle and malformed clients slow its changes?

A daemon in conntrack mode with N prefixes (default 100,000) in a fresh namespace, its
health listener on 127.0.0.1 (loopback only: nothing leaves the machine). First ten
configuration changes on the idle agent (each: a file edit until the new prefix's nft set
element is in the kernel); then the same ten while
  - 64 clients poll /status and /metrics in turn, each on one keep-alive connection;
  - 20,000 idle connections are opened (2,000 a second) and held, sending nothing (four
    processes of 5,000: `ulimit -n` is per process);
  - a burst of 2,000 malformed requests is sent (one per connection) at the start of each
    change;
  - a probe asks /healthz every 0.5 s with a 1 s timeout, as the kubelet does.
Printed: each change's time idle and loaded, the verdict (every loaded change within 2x the
idle median), the probe's answers, whether the agent is still running, its log lines and
bytes during the load, its open descriptors at most, and per change where the time went:
each of the agent's threads' time on a core and waiting in the run queue
(/proc/<pid>/task/<tid>/schedstat), the clients' CPU and the machine's.

    .venv/bin/python benchmarks/http_load_bench.py [--prefixes 100000] [--repo PATH] [--clients MODE]

--repo runs the agent from another checkout (e.g. /work/main, for a before/after).

--clients says how the load's client processes run beside the agent on this machine:
  confined (default)  SCHED_IDLE and pinned to the last CPU: they run only on CPU time the
                      agent (and everything else) leaves;
  nice19              nice 19 on every CPU (they still take a share: a nice-19 task gets
                      about 1.5% of a core against a nice-0 one, and any idle core);
  shared              the agent's priority, every CPU (the benchmark's first form).
On a node, these clients are other machines: the 20,000 connections, the pollers and the
malformed requests come over the network and cost the node's CPU only what the agent's own
thread does with them. Here they are processes on the same two cores, and handling 20,000
sockets costs them more CPU than it costs the agent; at equal priority they take the cores
from the reconciler, which then waits in the run queue (measured: 100-1,200 ms a change) and
the benchmark measures the load generator, not nra. The criterion is about nra: a change
must not wait for nra's own HTTP handling. Confining the clients keeps their CPU out of the
agent's way and keeps all of the agent's own cost in: the server's thread, the GIL it shares,
the kernel's work for every connection (accept, close, TCP in softirq) stay as they are.
The /healthz probe (the kubelet's stand-in, a node process) always runs at normal priority.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from conntrack_bench import lb4_elements  # noqa: E402
from testbed.ports import free_port  # noqa: E402

CHANGES = 10
POLLERS = 64
IDLE_PROCESSES, IDLE_EACH = 4, 5000
IDLE_OPEN_PER_S = 2000
MALFORMED = 2000
PROBE_EVERY_S, PROBE_TIMEOUT_S = 0.5, 1.0
NEW_PREFIX = "198.18.0.0/30"
#: a change not in the kernel after this long counts as never (and ends the changes)
CHANGE_LIMIT_S = 120.0


# -- the load: each role runs as a process of its own -----------------------------------------

async def _poller(port: int, stop_at: float, counts: dict[str, int]) -> None:
    paths = [b"/status", b"/metrics"]
    reader = writer = None
    turn = 0
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET " + paths[turn % 2] + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
            turn += 1
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            code = head.split(b" ", 2)[1].decode()
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is None:  # chunked (a streamed answer): not asked for here
                raise ConnectionError("no content-length")
            await reader.readexactly(length)
            counts[code] = counts.get(code, 0) + 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                ConnectionError, IndexError):
            counts["error"] = counts.get("error", 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.1)


def role_pollers(port: int, seconds: float) -> None:
    counts: dict[str, int] = {}

    async def run() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_poller(port, stop_at, counts) for _ in range(POLLERS)))

    try:
        asyncio.run(run())
    except KeyboardInterrupt:  # (the benchmark stops its loaders with SIGINT)
        pass
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)


def role_idle(port: int, seconds: float) -> None:
    """Open IDLE_EACH connections (paced: IDLE_OPEN_PER_S in all) and hold them, sending
    nothing; count those the server closes."""
    import selectors

    sel = selectors.DefaultSelector()
    opened = closed = 0
    try:
        for _ in range(IDLE_EACH):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sel.register(sock, selectors.EVENT_READ)
            opened += 1
            time.sleep(IDLE_PROCESSES / IDLE_OPEN_PER_S)
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            for key, _ in sel.select(0.5):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server (evicted, timed out)
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    closed += 1
    except KeyboardInterrupt:
        pass
    print(f"opened={opened} closed_by_the_server={closed} still_open={len(sel.get_map())}", flush=True)


def role_malformed(port: int, seconds: float) -> None:
    """MALFORMED requests, one per connection, 32 at a time, for at most `seconds`."""
    answered = sent = 0

    async def one() -> None:
        nonlocal answered, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /status HTTP/1.1\r\nHost: bench\r\nthis is not a header\r\n\r\n")
            sent += 1
            if (await reader.read(100)).split(b" ", 2)[1:2] == [b"400"]:
                answered += 1
        finally:
            writer.close()

    async def worker(stop_at: float, jobs: list[int]) -> None:
        while jobs and time.monotonic() < stop_at:
            jobs.pop()
            try:
                await asyncio.wait_for(one(), 10)
            except (OSError, asyncio.TimeoutError, IndexError):
                pass

    async def run() -> None:
        jobs = list(range(MALFORMED))
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(worker(stop_at, jobs) for _ in range(32)))

    started = time.monotonic()
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    print(f"sent={sent} answered_400={answered} in {time.monotonic() - started:.1f} s", flush=True)


def role_probe(port: int, seconds: float) -> None:
    import urllib.error
    import urllib.request

    codes: dict[str, int] = {}
    slowest = 0.0
    stop_at = time.monotonic() + seconds
    try:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=PROBE_TIMEOUT_S) as resp:
                    code = str(resp.status)
            except urllib.error.HTTPError as exc:
                code = str(exc.code)
            except OSError as exc:  # (timed out, or closed: which, for the summary)
                code = "no-answer"
                why = type(getattr(exc, "reason", None) or exc).__name__
                codes[why] = codes.get(why, 0) + 1
            took = time.monotonic() - started
            slowest = max(slowest, took)
            codes[code] = codes.get(code, 0) + 1
            time.sleep(max(0.0, PROBE_EVERY_S - took))
    except KeyboardInterrupt:  # (stopped by the benchmark, maybe in the middle of a request)
        pass
    print(" ".join(f"{k}={v}" for k, v in sorted(codes.items())) + f" slowest={slowest * 1000:.0f}ms", flush=True)


ROLES = {"pollers": role_pollers, "idle": role_idle, "malformed": role_malformed, "probe": role_probe}


# -- the agent and the changes ----------------------------------------------------------------

def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# -- where each change's time went: /proc/<pid>/task/<tid>/schedstat -------------------------

def _task_times(pid: int) -> dict[int, tuple[str, int, int]]:
    """Each thread of `pid`: (name, ns on a core, ns waiting in the run queue)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = f.read().split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(run), int(wait))
    return out


def _machine_busy() -> tuple[int, int]:
    """(busy, all) jiffies of every CPU together, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # (guest time is counted in user already)
    return total - idle, total


class Sched:
    """Snapshots of the agent's threads, the clients' processes and the machine, taken at a
    change's edit and at its arrival; `between` says where that change's time went."""

    def __init__(self, agent_pid: int, clients) -> None:
        self.agent_pid = agent_pid
        self.clients = clients  # () -> the client processes' pids now
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.sums: dict[str, list[float]] = {}

    def snapshot(self) -> tuple:
        clients = {pid: _task_times(pid) for pid in self.clients()}
        return _task_times(self.agent_pid), clients, _machine_busy()

    def _label(self, tid: int, name: str, main_name: str) -> str:
        if tid == self.agent_pid:
            return "loop"  # the daemon's event loop: sources, worker, reconciler
        return name if name != main_name else "other threads"  # (unnamed threads carry the process' name)

    def between(self, before: tuple, after: tuple) -> str:
        agent0, clients0, busy0 = before
        agent1, clients1, busy1 = after
        main_name = agent1.get(self.agent_pid, ("", 0, 0))[0]
        per: dict[str, list[float]] = {}
        for tid, (name, run, wait) in agent1.items():
            _, run0, wait0 = agent0.get(tid, (name, 0, 0))
            row = per.setdefault(self._label(tid, name, main_name), [0.0, 0.0])
            row[0] += (run - run0) / 1e6
            row[1] += (wait - wait0) / 1e6
        client_run = client_wait = 0.0
        for pid, tasks in clients1.items():
            for tid, (_, run, wait) in tasks.items():
                _, run0, wait0 = clients0.get(pid, {}).get(tid, ("", 0, 0))
                client_run += (run - run0) / 1e6
                client_wait += (wait - wait0) / 1e6
        busy = (busy1[0] - busy0[0]) * self.tick_ms
        total = (busy1[1] - busy0[1]) * self.tick_ms
        order = ["loop", "nra-http"] + sorted(k for k in per if k not in ("loop", "nra-http"))
        parts = [f"{k} run {per[k][0]:.0f} wait {per[k][1]:.0f}" for k in order if k in per]
        parts.append(f"clients run {client_run:.0f} wait {client_wait:.0f}")
        parts.append(f"cores busy {busy:.0f} of {total:.0f}")
        for k in order:
            if k in per:
                s = self.sums.setdefault(k, [0.0, 0.0])
                s[0] += per[k][0]
                s[1] += per[k][1]
        s = self.sums.setdefault("clients", [0.0, 0.0])
        s[0] += client_run
        s[1] += client_wait
        return "; ".join(parts)

    def summed(self) -> str:
        return "; ".join(f"{k} run {v[0]:.0f} wait {v[1]:.0f}" for k, v in self.sums.items())


def change_times(ns, cfg: Path, nets: list[str], proc: subprocess.Popen, fds: list[int],
                 before_each=None, walls: list[tuple[float, float]] | None = None,
                 sched: Sched | None = None, where: list[str] | None = None) -> list[float]:
    """CHANGES edits adding NEW_PREFIX, each timed until its nft element is in the kernel,
    each followed by its removal (not timed). `walls` gets each change's (edit, arrival) as
    wall-clock times, for breakdown(); `where` gets each change's schedstat summary (sched)."""
    import conntrack_bench as ct

    from nra.kernel import nft_netlink as nl

    listener = ct.ElementListener(ns.name)
    times = []
    try:
        for _ in range(CHANGES):
            if before_each is not None:
                before_each()
            tmp = cfg.with_suffix(".tmp")
            tmp.write_text(ct.config_text(nets + [NEW_PREFIX]))
            listener.drain()
            first = sched.snapshot() if sched is not None else None
            started, wall = time.perf_counter(), time.time()
            os.replace(tmp, cfg)
            arrived = listener.wait(started + CHANGE_LIMIT_S)
            if sched is not None and where is not None:
                where.append(sched.between(first, sched.snapshot()))
            if arrived is None:  # the agent cannot keep up: say so, make no more changes
                times.append(float("inf"))
                break
            times.append(arrived - started)
            if walls is not None:
                walls.append((wall, wall + arrived - started))
            fds.append(open_fds(proc.pid))
            tmp.write_text(ct.config_text(nets))
            listener.drain()
            os.replace(tmp, cfg)
            if listener.wait(time.perf_counter() + CHANGE_LIMIT_S, nl.NFT_MSG_DELSETELEM) is None:
                times.append(float("inf"))
                break
            fds.append(open_fds(proc.pid))
            time.sleep(0.3)
    finally:
        listener.close()
    return times


def breakdown(log: Path, walls: list[tuple[float, float]]) -> str:
    """Where each change's time went, from the agent's log (LOG_LEVEL=verbose): the edit
    until the configuration was loaded ("desired state changed"), until its reconcile
    started, until the element was in the kernel; ms."""
    import datetime

    stamped = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            at = datetime.datetime.strptime(line[:28], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        except ValueError:
            continue
        stamped.append((at, line[28:]))
    parts = []
    for edit, arrival in walls:
        loaded = next((at for at, text in stamped if at >= edit - 0.001 and "desired state changed" in text), None)
        started = next((at for at, text in stamped if loaded is not None and at >= loaded
                        and "reconcile started" in text), None)
        if loaded is None or started is None or started > arrival + 0.001:
            parts.append("?")
            continue
        parts.append(f"{(loaded - edit) * 1000:.0f}+{(started - loaded) * 1000:.0f}+{(arrival - started) * 1000:.0f}")
    return " ".join(parts)


#: how the clients run beside the agent (--clients; see the module's docstring)
CLIENTS = "confined"
CLIENT_MODES = ("confined", "nice19", "shared")


def confine() -> None:
    """This process at SCHED_IDLE (it runs only when no other task wants the CPU) and on the
    last CPU only."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def spawn(role: str, port: int, seconds: float, out: Path) -> subprocess.Popen:
    setup = None
    if role != "probe":  # (the probe is the kubelet's stand-in: a node process at normal priority)
        setup = {"confined": confine, "nice19": lambda: os.nice(19), "shared": None}[CLIENTS]
    return subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(port), "--seconds", str(seconds)],
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, preexec_fn=setup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose agent runs (default: this one)")
    parser.add_argument("--role", choices=sorted(ROLES))
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--log-level", default="info", help="the agent's LOG_LEVEL (verbose: each reconcile's start)")
    parser.add_argument("--clients", choices=CLIENT_MODES, default="confined",
                        help="how the load's clients run: confined (SCHED_IDLE, last CPU: on a node they are "
                             "other machines), nice19, or shared (the agent's priority, every CPU)")
    parser.add_argument("--keep", type=Path, help="keep the agent's log and the loaders' output in this directory")
    args = parser.parse_args()
    if args.role:
        # stopped with SIGINT, which a shell's background job inherits as ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ROLES[args.role](args.port, args.seconds)
        return 0

    import agent_bench
    import conntrack_bench as ct

    global CLIENTS
    CLIENTS = args.clients
    print(f"nra HTTP load benchmark: {agent_bench.machine()}; agent from {args.repo}; "
          f"{args.prefixes:,} prefixes, conntrack mode; clients {CLIENTS}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    nets = ct.prefixes(args.prefixes)
    ns = ct.namespace()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nra-httpbench-") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        cfg = work / "metallb.yaml"
        cfg.write_text(ct.config_text(nets))
        log_path = work / "agent.log"
        env = {**agent_bench.env(), "HEALTH_ADDRESS": f"127.0.0.1:{port}", "LOG_LEVEL": args.log_level}
        proc = subprocess.Popen([*agent_bench.NRA, "--static-file", str(cfg), "--netns", ns.name,
                                 "--max-reconcile-wait", "0", "--return-path", "conntrack"],
                                env=env, cwd=args.repo, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        loaders: list[subprocess.Popen] = []
        try:
            deadline = time.monotonic() + 600
            while "reconcile (config" not in log_path.read_text():  # (listing 100,000 elements is slow)
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the agent did not program {len(nets)} prefixes:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            listed = lb4_elements(ns)
            if listed != len(nets):
                raise RuntimeError(f"the agent programmed {listed} of {len(nets)} prefixes")
            time.sleep(1.0)
            fds: list[int] = []
            idle_walls: list[tuple[float, float]] = []
            bursts: list[subprocess.Popen] = []
            sched = Sched(proc.pid, lambda: [p.pid for p in loaders + bursts if p.poll() is None])
            idle_where: list[str] = []
            idle = change_times(ns, cfg, nets, proc, fds, walls=idle_walls, sched=sched, where=idle_where)
            idle_fds = max(fds)
            print(f"idle:   changes ms {' '.join(f'{t * 1000:.0f}' for t in idle)}; median "
                  f"{statistics.median(idle) * 1000:.0f}, max {max(idle) * 1000:.0f}; open fds {idle_fds}", flush=True)
            if args.log_level == "verbose":
                print(f"idle:   loaded+queued+reconciled ms {breakdown(log_path, idle_walls)}", flush=True)
            print(f"idle:   summed over the changes, ms: {sched.summed()}", flush=True)
            sched.sums.clear()

            seconds = 600.0
            log_before = log_path.stat().st_size, len(log_path.read_text().splitlines())
            loaders += [spawn("pollers", port, seconds, work / "pollers.out"),
                        *(spawn("idle", port, seconds, work / f"idle{i}.out") for i in range(IDLE_PROCESSES)),
                        spawn("probe", port, seconds, work / "probe.out")]
            time.sleep(12.0)  # the idle connections opened, the pollers polling

            def burst() -> None:
                bursts.append(spawn("malformed", port, 30, work / f"malformed{len(bursts)}.out"))
                time.sleep(0.2)

            fds = []
            started = time.monotonic()
            loaded_walls: list[tuple[float, float]] = []
            loaded_where: list[str] = []
            loaded = change_times(ns, cfg, nets, proc, fds, before_each=burst, walls=loaded_walls,
                                  sched=sched, where=loaded_where)
            took = time.monotonic() - started
            alive = proc.poll() is None
            for p in bursts:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.terminate()
                    p.wait(10)
            for p in loaders:
                p.send_signal(signal.SIGINT)
            for p in loaders:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:  # (its summary is lost: said as missing below)
                    p.kill()
                    p.wait()
            log_after = log_path.stat().st_size, len(log_path.read_text().splitlines())
            limit = 2 * statistics.median(idle)
            print(f"loaded: changes ms {' '.join(f'{t * 1000:.0f}' for t in loaded)}; median "
                  f"{statistics.median(loaded) * 1000:.0f}, max {max(loaded) * 1000:.0f}; open fds at most {max(fds, default=0)}")
            if args.log_level == "verbose":
                print(f"loaded: loaded+queued+reconciled ms {breakdown(log_path, loaded_walls)}")
            print(f"loaded: summed over the changes, ms: {sched.summed()}")
            print(f"verdict: {'PASS' if len(loaded) == CHANGES and max(loaded) <= limit else 'FAIL'}: every loaded "
                  f"change within 2x the idle median ({limit * 1000:.0f} ms): {sum(t <= limit for t in loaded)} of "
                  f"{CHANGES}" + ("" if all(t < float("inf") for t in loaded) else
                                  f" (inf: not in the kernel after {CHANGE_LIMIT_S:g} s; no more changes made)"))
            print(f"agent still running after the load: {'yes' if alive else 'NO (exit ' + str(proc.poll()) + ')'}")
            print(f"agent log during the load ({took:.0f} s): {log_after[1] - log_before[1]} lines, "
                  f"{log_after[0] - log_before[0]:,} bytes")
            print(f"/healthz probe (every {PROBE_EVERY_S} s, timeout {PROBE_TIMEOUT_S} s): "
                  f"{(work / 'probe.out').read_text().strip()}")
            print(f"pollers (64, /status and /metrics): {(work / 'pollers.out').read_text().strip()}")
            for i in range(IDLE_PROCESSES):
                print(f"idle clients {i}: {(work / f'idle{i}.out').read_text().strip()}")
            for i in range(len(bursts)):
                print(f"malformed burst {i}: {(work / f'malformed{i}.out').read_text().strip() or '(stopped)'}")
            tracebacks = log_path.read_text().count("Traceback")
            print(f"tracebacks in the agent's log: {tracebacks}")
            print("where each change's time went (ms; run: on a core, wait: in the run queue; "
                  "/proc/<pid>/task/<tid>/schedstat):")
            for phase, times, rows in (("idle", idle, idle_where), ("loaded", loaded, loaded_where)):
                for i, (t, row) in enumerate(zip(times, rows)):
                    print(f"  {phase} {i + 1}: {t * 1000:.0f} ms: {row}")
        finally:
            for p in loaders:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            ns.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
