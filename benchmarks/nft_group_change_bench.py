#!/usr/bin/env python3
"""The kernel's part of a one-line change with uplink groups, on nra's whole conntrack table:
one /30 added to (then deleted from) a group map beside N distinct prefixes in two groups,
against the same /30 added to the prefix sets of a table of one group (no group maps), each
through NftState.apply_blocking (nra's own batch), timed from the send to the kernel's ack
(run as root; a throwaway namespace per table).

A group map's element is a verdict (`goto group_<i>`): adding one makes the kernel validate
the table, walking every element of each verdict map a rule looks up (nf_tables'
nft_lookup_validate), where a prefix set's element costs its set's commit alone. This says
what that walk costs at N (docs/performance.md, "Two uplink groups: a group's prefixes in
its map alone").

    .venv/bin/python benchmarks/nft_group_change_bench.py [--n 100000] [--rounds 15] [--repeat 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from agent_bench import machine  # noqa: E402
from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.marks import MarkField  # noqa: E402
from nra.kernel.nft import NftState  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

FIELD = MarkField(0x2, 0x3E)
ROUTERS = {("eth0", "02:00:00:00:00:02"): 1, ("eth0", "02:00:00:00:00:03"): 2}
NEW = ipaddress.ip_network("198.18.0.0/30")


def tables(n: int) -> dict[str, tuple[nft.NftTable, nft.NftTable]]:
    """Each shape's table and the same with NEW added (to group 3, or to the prefix sets)."""
    base = int(ipaddress.ip_address("100.64.0.0"))
    nets = [ipaddress.ip_network((base + i * 8, 30)) for i in range(n)]  # distinct: n intervals
    groups = {3: nets[0::2], 4: nets[1::2]}
    two = nft.desired_table(nets, ["eth0"], ROUTERS, FIELD, groups=groups)
    one = nft.desired_table(nets, ["eth0"], ROUTERS, FIELD)
    return {
        "two groups, a group map's element": (two, nft.desired_table(nets + [NEW], ["eth0"], ROUTERS, FIELD,
                                                                     groups={3: groups[3] + [NEW], 4: groups[4]})),
        "one group, a prefix set's element": (one, nft.desired_table(nets + [NEW], ["eth0"], ROUTERS, FIELD)),
    }


def measure(table: nft.NftTable, plus: nft.NftTable, rounds: int) -> tuple[float, list[float], list[float]]:
    """The table's first write (s), then each add and delete of NEW (s)."""
    ns = new_netns("nra-gcb")
    owner = NftState(ns.name)
    try:
        started = time.perf_counter()
        owner.apply_blocking(nft.diff(table, None), table, FIELD, None)
        build = time.perf_counter() - started
        adds, deletes = [], []
        for _ in range(rounds):
            for into, before, record in ((plus, table, adds), (table, plus, deletes)):
                change = nft.diff(into, before)
                assert change and not change.rebuild, change.describe()
                started = time.perf_counter()
                owner.apply_blocking(change, into, FIELD, before)
                record.append(time.perf_counter() - started)
        return build, adds, deletes
    finally:
        owner.close()
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=2, help="each shape this many times, alternated")
    args = parser.parse_args()
    print(f"nft group change benchmark: {machine()}; N={args.n} distinct, {args.rounds} adds and deletes each")
    shapes = tables(args.n)
    print(f"{'':36} {'first write s':>13} {'add ms (median)':>15} {'delete ms':>9}")
    for _ in range(args.repeat):
        for label, (table, plus) in shapes.items():
            build, adds, deletes = measure(table, plus, args.rounds)
            print(f"{label:36} {build:13.2f} {statistics.median(adds) * 1000:15.1f} "
                  f"{statistics.median(deletes) * 1000:9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
