"""`scripts/lab`: bring the nra lab up or down, show its state, run the demo (root).

The lab itself (topology, BIRD configurations, kube-proxy's DNAT, the stateful routers) is
`testbed.lab`, which the e2e tests and the benchmarks import too. See docs/lab.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.lab import (  # noqa: E402
    BIRD_ROLES,
    DEFAULT_PREFIX,
    DEFAULT_RUN_DIR,
    FAILOVER_MODES,
    KUBE_PROXY_MODES,
    LB4,
    LB6,
    SVC4,
    SVC6,
    Lab,
    LabError,
    run,
)

# -- the demo ---------------------------------------------------------------------------------------

def _say(text: str) -> None:
    print(text, flush=True)


def demo(lab: Lab) -> int:
    if not lab.is_up():
        _say(f"== bringing the lab up ({lab.prefix}-*)")
        took = lab.up()
        _say(f"   all BGP sessions (IPv4 + IPv6, node<->r1/r2, r1/r2<->client) established in {took:.2f} s")
    lab.start_echo()
    lab.stop_nra()
    run([*lab.nra_argv(), "--return-path", "conntrack", "--clean-and-exit"], check=False, timeout=30)
    try:
        return _demo(lab)
    finally:
        lab.stop_nra()


def _demo(lab: Lab) -> int:
    failures: list[str] = []

    def traffic(title: str, flows: int = 4, expect_ok: bool = True, families=(4, 6)) -> None:
        before = lab.counters()
        res = {f: lab.tcp(f, flows) for f in (4, 6)}
        pings = {f: lab.ping(f, count=1 if not expect_ok else 3) for f in (4, 6)}
        after = lab.counters()
        _say(f"== {title}")
        for f in (4, 6):
            d = {role: after[role][f] - before[role][f] for role in after}
            _say(f"   IPv{f}: TCP {res[f]['ok']}/{flows} connections echoed, ping {'ok' if pings[f] else 'FAILED'}; "
                 f"reply packets seen at r1 {d['r1']}, r2 {d['r2']}, gateway {d['gw']}")
            if f in families and (res[f]["ok"] == flows and pings[f]) != expect_ok:
                failures.append(f"{title}: IPv{f}")

    def service(title: str, oneshot: str | None) -> None:
        """32 connections per family to the pod behind kube-proxy's DNAT and to the LB-bound
        listener; per flow, did its replies cross the router its requests did."""
        if oneshot:
            run([*lab.nra_argv(), oneshot], check=False, timeout=60)
        _say(f"== {title}: 32 TCP connections per family")
        for f in (4, 6):
            for what, target in (("pod (kube-proxy DNAT)", SVC4 if f == 4 else SVC6),
                                 ("LB-bound listener", LB4 if f == 4 else LB6)):
                lab.clear_flows()
                res = lab.tcp(f, 32, target=target)
                seen = lab.flows(f)
                ports = set(res["ports"])
                same = sum(len(seen[r]["requests"] & seen[r]["replies"] & ports) for r in ("r1", "r2"))
                _say(f"   IPv{f} {what}: {res['ok']}/32 work; {same} flows' replies through their request's router")

    traffic("without nra: replies follow the node's default route to the gateway, which drops them",
            flows=2, expect_ok=False)
    service(f"nra --return-path rules (ONESHOT), {'stateful' if lab.stateful_routers else 'plain'} routers",
            "--oneshot")
    run([*lab.nra_argv(), "--clean-and-exit"], check=False, timeout=30)
    lab.flush_conntrack()
    lab.restart_echo()  # (half-open connections of the failed clients go with the old listeners)
    _say(f"== starting nra: {' '.join(lab.nra_argv())} --return-path conntrack")
    lab.start_nra("--return-path", "conntrack")
    took = lab.wait_table(present=True)
    _say(f"   programmed {took:.2f} s after start (includes Python's start-up):")
    for f in (4, 6):
        for line in lab.ip("node", f"-{f} rule show").splitlines():
            if "fwmark" in line:
                _say(f"     {line.strip()}")
        _say("     " + lab.table_routes(f).replace("\n", "\n     "))
    traffic("with nra: replies go back through the routers", flows=8)
    service("nra --return-path conntrack", None)
    for f in (4, 6):
        before = lab.counters()
        spread = lab.tcp(f, 64)
        after = lab.counters()
        _say(f"== ECMP IPv{f}: 64 TCP flows, {spread['ok']} echoed; reply packets via r1 "
             f"{after['r1'][f] - before['r1'][f]}, via r2 {after['r2'][f] - before['r2'][f]}")
    try:
        flap = lab.measure_link_flap()
        _say(f"== node link flapped: the kernel dropped table 20; nra restored it {flap * 1000:.0f} ms after link up")
    except LabError as exc:
        _say(f"== node link flapped: NOT restored: {exc}")
        failures.append("link flap")
    lab.wait_sessions()
    for f in (4, 6):
        _say(f"== r1 dies (its node link cut, its BIRD killed) under 32 IPv{f} UDP flows, 100 probes/s")
        res = lab.measure_router_failure("r1", family=f)
        still = res["outage_s"] > res["window_s"] - 1.0
        _say(f"   {res['replied']}/{res['sent']} probes answered; last lost reply {res['outage_s']:.2f} s "
             f"after the cut ({res['lost_after_cut']} lost)"
             + ("; STILL LOSING replies when the probe ended" if still else ""))
        if still:
            failures.append(f"IPv{f} failover")
        _say("   table 20 now: " + lab.table_routes(f).replace("\n", " "))
        traffic(f"after r1's death: IPv{f} flows through r2", families=(f,))
        _say("   restoring r1")
        lab.restore_router("r1")
        try:
            took = lab.wait_nexthops(f, timeout=10)
            _say(f"   r1 answers again: back in table 20 {took:.2f} s after its BGP sessions")
        except LabError as exc:
            _say(f"   r1 NOT back in table 20: {exc}")
            failures.append(f"IPv{f} r1 back")
    _say("== figures: " + ", ".join(f"{k} {v:.2f}" for k, v in lab.figures.items()))
    _say("   (nra stopped; the lab is still up: `scripts/lab status`, `scripts/lab down`)")
    if failures:
        _say("== FAILED: " + "; ".join(failures))
    return 1 if failures else 0


# -- failover figures (issue 10) -------------------------------------------------------------------

FAILOVER_WINDOW_S = {"learned": 4.0, "managed": 8.0, "none": 60.0}  # seconds measured after each cut


def failover(lab: Lab, modes: list[str], runs: int, window: float | None) -> int:
    """r1 cut and its BIRD killed under 32 UDP flows, `runs` times per family and mode, on a lab
    of its own with the kernel's neighbour timers on the node and plain routers; prints each
    run and the min-max per mode and family (docs/lab.md)."""
    if lab.existing():
        raise LabError(f"lab namespaces {lab.prefix}-* exist: `failover` builds its own lab; run `down` first")
    lab.fast_neigh, lab.stateful_routers = False, False
    _say(f"== bringing the lab up ({lab.prefix}-*): kernel neighbour timers on the node, plain routers")
    lab.up()
    figures: dict[tuple[str, int], list[tuple[float, bool]]] = {}
    try:
        lab.start_echo()
        for mode in modes:
            after = window or FAILOVER_WINDOW_S[mode]
            run([*lab.nra_argv(), "--clean-and-exit"], check=False, timeout=30)
            flags = FAILOVER_MODES[mode]
            _say(f"== {mode}: {' '.join(lab.nra_argv())} {' '.join(flags)}")
            lab.start_nra(*flags)
            try:
                lab.wait_table(present=True)
                if mode == "managed":
                    lab.settle_peer_timers()
                for n in range(1, runs + 1):
                    for family in (4, 6):
                        res = lab.router_failover(family, after)
                        figures.setdefault((mode, family), []).append((after, res["still_losing"]) if
                                                                      res["still_losing"] else (res["outage_s"], False))
                        text = _outage_text(*figures[(mode, family)][-1])
                        _say(f"   run {n} IPv{family}: last lost reply {text} after the cut "
                             f"({res['lost_after_cut']} of {res['sent']} probes lost); r1 back in table 20 "
                             f"{res['back_s']:.2f} s after its sessions, BFD and routes")
            finally:
                lab.stop_nra()
                lab.reset_node_neighbours()
    finally:
        lab.down()
    _say("== cut -> last lost reply, min - max over the runs")
    for (mode, family), outages in figures.items():
        ended = sorted(s for s, still in outages if not still)
        parts = [f"{ended[0]:.2f} - {ended[-1]:.2f} s"] if ended else []
        parts += [f"> {s:g} s" for s, still in outages if still]
        _say(f"   {mode:8} IPv{family}: {', '.join(parts)}  (runs: {', '.join(_outage_text(*o) for o in outages)})")
    return 0


def _outage_text(seconds: float, still_losing: bool) -> str:
    return f"> {seconds:g} s (still losing)" if still_losing else f"{seconds:.2f} s"


def status(lab: Lab) -> int:
    names = lab.existing()
    if not names:
        _say(f"lab {lab.prefix}: down")
        return 1
    _say(f"lab {lab.prefix}: namespaces {', '.join(names)}; run dir {lab.run_dir}")
    for role in BIRD_ROLES:
        sessions = lab.sessions(role)
        _say(f"  {role:6} BGP: " + (", ".join(f"{k} {v}" for k, v in sessions.items()) or "BIRD not answering"))
    for f in (4, 6):
        _say(f"  node IPv{f} rules -> table 20: "
             + ("; ".join(l.strip() for l in lab.ip("node", f"-{f} rule show table 20").splitlines()) or "none"))
        _say(f"  node IPv{f} table 20: " + (lab.table_routes(f).replace("\n", " ") or "empty"))
        _say(f"  client IPv{f} route to LB: "
             + lab.ip("client", f"-{f} route show {LB4 if f == 4 else LB6}").replace("\n", " "))
    _say(f"  replies seen (packets): {lab.counters()}")
    return 0 if lab.is_up() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "demo", "failover"])
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--kernel-neigh-timers", action="store_true",
                        help="keep the kernel's default neighbour timers on the node (slow failover)")
    parser.add_argument("--no-node-forwarding", action="store_true",
                        help="leave IP forwarding off on the node (on by default, as on Kubernetes nodes)")
    parser.add_argument("--kube-proxy", choices=KUBE_PROXY_MODES, default="nftables",
                        help="how the node DNATs the Service's LB IP to the pod (default: nftables)")
    parser.add_argument("--stateless-routers", action="store_true",
                        help="routers forward replies whose request they did not see (stateful by default)")
    parser.add_argument("--mode", action="append", choices=list(FAILOVER_MODES),
                        help="failover: nra with route learning, managed neighbours + fast timers, or neither "
                             "(repeatable; default all three)")
    parser.add_argument("--runs", type=int, default=3, help="failover: runs per mode and family (default 3)")
    parser.add_argument("--window", type=float, help="failover: seconds measured after each cut "
                        f"(default per mode: {', '.join(f'{k} {v:g}' for k, v in FAILOVER_WINDOW_S.items())})")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    lab = Lab(args.prefix, args.run_dir, fast_neigh=not args.kernel_neigh_timers,
              node_forwarding=not args.no_node_forwarding, kube_proxy=args.kube_proxy,
              stateful_routers=not args.stateless_routers)
    try:
        if args.command == "up":
            took = lab.up()
            lab.start_echo()
            _say(f"lab {lab.prefix} up: BGP sessions established in {took:.2f} s; "
                 f"MetalLB config for nra: {lab.run_dir / 'metallb.yaml'}")
            _say(f"run nra: {' '.join(lab.nra_argv())}")
            return 0
        if args.command == "down":
            removed = lab.down()
            _say(f"lab {lab.prefix} down: removed {', '.join(removed) or 'nothing'}")
            return 0
        if args.command == "status":
            return status(lab)
        if args.command == "failover":
            return failover(lab, args.mode or list(FAILOVER_MODES), args.runs, args.window)
        return demo(lab)
    except LabError as exc:
        print(f"scripts/lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
