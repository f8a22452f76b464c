#!/usr/bin/env python3
"""Process-level benchmark of nra, in fresh network namespaces (run as root).

For N prefixes it measures:
  oneshot     wall time of `nra --oneshot` from process start to exit, everything programmed
  ip-batch    the same rules and route applied with `ip -batch` (the kernel's floor)
  steady      one reconcile with nothing to do (read both families + plan), in-process, median
  change      a file edit to the new rule in the kernel (netlink listener), daemon, median
and, once, the daemon's idle RSS and CPU over --idle-seconds.

Usage: .venv/bin/python benchmarks/agent_bench.py [--sizes 10,100,1000,10000] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pyroute2 import IPRoute  # noqa: E402
from pyroute2.netlink.rtnl import RTMGRP_IPV4_RULE  # noqa: E402

from nra.config.metallb import parse_static_document  # noqa: E402
from nra.daemon.wiring import routing_policy  # noqa: E402
from nra.kernel.adapter import KernelAdapter  # noqa: E402
from nra.plan.return_path.rules import desired_rules, plan  # noqa: E402
from nra.settings import load_settings  # noqa: E402
from testbed.netns import NetNS, add_peer_link, new_netns  # noqa: E402

NRA = [sys.executable, "-m", "nra"]
PEERS = ["10.99.0.2", "10.99.0.3"]
TABLE = 20
NEW_PREFIX = "198.18.0.0/30"  # the prefix a change adds


class Namespace(NetNS):
    """A fresh namespace with the peers' link (10.99.0.1/24 on eth0)."""

    def __init__(self) -> None:
        super().__init__(new_netns("nra-bench").name)
        add_peer_link(self, v6_cidr=None)

    def count_rules(self) -> int:
        return len(self.rules("-4", TABLE))

    def close(self) -> None:
        self.delete()


def prefixes(n: int, offset: int = 0) -> list[str]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [f"{ipaddress.IPv4Address(base + (i + offset) * 4)}/30" for i in range(n)]


def config_text(nets: list[str]) -> str:
    lines = ["peers:"] + [f"- peer-address: {p}" for p in PEERS]
    lines += ["address-pools:", "- name: bench", "  protocol: bgp", "  addresses:"]
    lines += [f"  - {net}" for net in nets]
    return "\n".join(lines) + "\n"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("ONESHOT", "CLEANANDEXIT", "METALLB_STATIC_FILE")}
    e.update(HEALTH_ADDRESS="off", LOG_LEVEL="warn")
    return e


def bench_oneshot(n: int, workdir: Path) -> float:
    ns = Namespace()
    try:
        cfg = workdir / f"oneshot-{n}.yaml"
        cfg.write_text(config_text(prefixes(n)))
        started = time.perf_counter()
        subprocess.run([*NRA, "--oneshot", "--static-file", str(cfg), "--netns", ns.name],
                       check=True, env=env(), cwd=REPO)
        took = time.perf_counter() - started
        assert ns.count_rules() == n, f"expected {n} rules, kernel has {ns.count_rules()}"
        return took
    finally:
        ns.close()


def bench_ip_batch(n: int, workdir: Path) -> float:
    ns = Namespace()
    try:
        batch = workdir / f"batch-{n}.txt"
        lines = [f"route replace default table 20 nexthop via {PEERS[0]} weight 100 nexthop via {PEERS[1]} weight 100"]
        lines += [f"rule add from {net} lookup 20 priority 20" for net in prefixes(n)]
        batch.write_text("\n".join(lines) + "\n")
        started = time.perf_counter()
        subprocess.run(["ip", "-n", ns.name, "-batch", str(batch)], check=True)
        took = time.perf_counter() - started
        assert ns.count_rules() == n
        return took
    finally:
        ns.close()


async def _steady(ns: Namespace, n: int, rounds: int) -> float:
    settings = load_settings(health_address="off")
    intent = parse_static_document(config_text(prefixes(n)), None, settings.peer_weight).intent
    times = []
    policy = routing_policy(settings)
    peers = [p.address for p in intent.peers]
    desired = desired_rules(intent, policy)  # kept by the reconciler while the intent is the same
    async with KernelAdapter(settings.table, netns=ns.name) as adapter:
        state = await adapter.read_state(peers)
        report = await adapter.apply(plan(intent, state, policy).operations)
        assert not report.failed, report.failed
        for _ in range(rounds):
            started = time.perf_counter()
            state = await adapter.read_state(peers)
            ops = plan(intent, state, policy, desired=desired).operations
            times.append(time.perf_counter() - started)
            assert not ops, f"steady state should be empty, got {len(ops)} ops"
    return statistics.median(times)


def bench_steady(n: int) -> float:
    ns = Namespace()
    try:
        return asyncio.run(_steady(ns, n, rounds=10 if n >= 10000 else 30))
    finally:
        ns.close()


class RuleListener:
    """IPv4 rule events of table TABLE in one namespace.

    pyroute2 opens the socket in the namespace (forking a helper) and binds it to the rule
    group; we then read the socket ourselves and let pyroute2 only parse. Its own get()
    reads every pending datagram into an internal queue but returns one, so a select() on
    the fd afterwards can miss events already queued.
    """

    def __init__(self, netns: str):
        self.ipr = IPRoute(netns=netns)
        self.ipr.bind(groups=RTMGRP_IPV4_RULE)
        self.sock = socket.socket(fileno=os.dup(self.ipr.fileno()))
        self.sock.setblocking(False)
        self.marshal = self.ipr.asyncore.marshal

    def _messages(self):
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: events dropped while nobody read (the initial burst)
                if exc.errno != errno.ENOBUFS:
                    raise
                continue
            yield from self.marshal.parse(data)

    def wait(self, event: str, src: str, deadline: float) -> float | None:
        """perf_counter time at which `event` for a rule from `src` arrived, or None."""
        while (left := deadline - time.perf_counter()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            for msg in self._messages():
                if (msg.get("event") == event and msg.get_attr("FRA_SRC") == src
                        and (msg.get_attr("FRA_TABLE") or msg["table"]) == TABLE):
                    return time.perf_counter()
        return None

    def drain(self) -> None:
        for _ in self._messages():
            pass

    def close(self) -> None:
        self.sock.close()
        self.ipr.close()


def start_daemon(ns: NetNS, cfg: Path, log: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([*NRA, "--static-file", str(cfg), "--netns", ns.name, "--max-reconcile-wait", "0", *extra],
                            env=env(), cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc


def stop_daemon(proc: subprocess.Popen, ns: NetNS) -> None:
    proc.terminate()
    proc.wait(10)
    ns.delete()


def measure_changes(ns: NetNS, workdir: Path, nets: list[str], config: Callable[[list[str]], str],
                    programmed: Callable[[], bool], listen: Callable[[], object], rounds: int,
                    *extra: str) -> float:
    """A daemon on `nets` (extra: its flags); then `rounds` times: the file gets NEW_PREFIX
    (timed until `listen()`'s wait(deadline) sees it in the kernel), and loses it again
    (until `programmed()`). Median seconds."""
    cfg = workdir / f"change-{len(nets)}.yaml"
    cfg.write_text(config(nets))
    proc = start_daemon(ns, cfg, workdir / f"daemon-{len(nets)}.log", *extra)
    try:
        deadline = time.monotonic() + 60
        while not programmed():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"daemon did not program {len(nets)} prefixes; see {workdir}/daemon-{len(nets)}.log")
            time.sleep(0.05)
        time.sleep(0.5)
        listener = listen()
        times = []
        for _ in range(rounds):
            # alternate: add NEW_PREFIX (measured), then remove it again (not measured)
            tmp = cfg.with_suffix(".tmp")
            tmp.write_text(config(nets + [NEW_PREFIX]))
            listener.drain()
            started = time.perf_counter()
            os.replace(tmp, cfg)
            arrived = listener.wait(started + 30)
            if arrived is None:
                raise RuntimeError("change did not reach the kernel within 30 s")
            times.append(arrived - started)
            tmp.write_text(config(nets))
            os.replace(tmp, cfg)
            deadline = time.monotonic() + 30
            while not programmed() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
        listener.close()
        return statistics.median(times)
    finally:
        stop_daemon(proc, ns)


def bench_change(n: int, workdir: Path, rounds: int = 15) -> float:
    ns = Namespace()

    def listen() -> RuleListener:
        listener = RuleListener(ns.name)
        listener.wait = lambda deadline: RuleListener.wait(listener, "RTM_NEWRULE", NEW_PREFIX.split("/")[0], deadline)
        return listener

    return measure_changes(ns, workdir, prefixes(n), config_text, lambda: ns.count_rules() == n, listen, rounds)


def bench_idle(n: int, seconds: float, workdir: Path) -> tuple[float, float]:
    ns = Namespace()
    cfg = workdir / "idle.yaml"
    cfg.write_text(config_text(prefixes(n)))
    proc = start_daemon(ns, cfg, workdir / "idle.log")
    try:
        while ns.count_rules() != n:
            time.sleep(0.05)
        time.sleep(2)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before = cpu()
        time.sleep(seconds)
        used = cpu() - before
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        return rss_kb / 1024, used * 60 / seconds
    finally:
        stop_daemon(proc, ns)


def parser_with_sizes(doc: str, sizes: str) -> argparse.ArgumentParser:
    """The command line of a benchmark: its docstring as help, and --sizes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=sizes)
    return parser


def machine() -> str:
    return f"kernel {os.uname().release}, {os.cpu_count()} cores, python {sys.version.split()[0]}"


def main() -> int:
    parser = parser_with_sizes(__doc__, "10,100,1000,10000")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--idle-prefixes", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"nra benchmark: {machine()}")
    print(f"{'N':>6} {'oneshot s':>10} {'ip-batch s':>11} {'ratio':>6} {'steady ms':>10} {'change ms':>10}")
    with tempfile.TemporaryDirectory(prefix="nra-bench-") as tmp:
        workdir = Path(tmp)
        for n in sizes:
            oneshot = bench_oneshot(n, workdir)
            floor = bench_ip_batch(n, workdir)
            steady = bench_steady(n)
            change = bench_change(n, workdir)
            print(f"{n:>6} {oneshot:>10.3f} {floor:>11.3f} {oneshot / floor:>6.2f} {steady * 1000:>10.1f} "
                  f"{change * 1000:>10.1f}", flush=True)
        if args.idle_seconds > 0:
            rss, cpu_per_min = bench_idle(args.idle_prefixes, args.idle_seconds, workdir)
            print(f"idle daemon ({args.idle_prefixes} prefixes, {args.idle_seconds:.0f} s): "
                  f"RSS {rss:.1f} MB, CPU {cpu_per_min:.3f} s/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
