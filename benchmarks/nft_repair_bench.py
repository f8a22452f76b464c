#!/usr/bin/env python3
"""Someone else changes nra's nft table at N prefixes (100,000 intervals: the prefixes do not
merge): how long until nra has repaired it, in a throwaway namespace (root). From the moment
the other transaction is committed to nra's repair acknowledged: the notification,
nra.kernel.nft's following of it, the read, the diff and the repair (what one reconcile
after such an event does). The changes (--cases):

- element: one prefix element deleted (an nf_tables batch of another socket);
- rule: `add rule inet nra in_lb4_0 accept`; flush: `flush chain inet nra classify`;
  chain: `add chain inet nra extra<i>`; dormant: `add table inet nra { flags dormant; }`;
  table: `delete table inet nra`; flushset: `flush chain inet nra classify; flush set inet nra
  lb4` (these through another libnftables context, its own thread).

`followed`: the change taken from the notifications themselves (nra now: for a rule, a chain
or the table, since issue 20's object-by-object repair); `listed`: the table read again in
full to find it (forced here by forget(); through libnftables' listing before nra read it
with its own dumps). The table case rebuilds the whole table
either way (its time is the rebuild's). The clock starts when the other's call returns, or
when nra began to take its notification in if that was earlier.

    .venv/bin/python benchmarks/nft_repair_bench.py [--sizes 10000,100000] [--rounds 5] [--cases ...]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nra.kernel import nft_netlink as nl  # noqa: E402
from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.libnft import Nft  # noqa: E402
from nra.kernel.marks import parse_mark_field  # noqa: E402
from nra.kernel.nft import NftState  # noqa: E402
from nra.kernel.socket import NetlinkSocket  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

FIELD = parse_mark_field("0x2/0x3e")
BASE = int(ipaddress.IPv4Address("100.64.0.0"))


def prefixes(n: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(f"{ipaddress.IPv4Address(BASE + i * 8)}/30") for i in range(n)]


DRIFTS = {
    "rule": "add rule inet nra in_lb4_0 accept",
    "flush": "flush chain inet nra classify",
    "chain": "add chain inet nra extra{i}",
    "dormant": "add table inet nra {{ flags dormant; }}",
    "table": "delete table inet nra",
    # (the chain looking 100.64.0.0-100.64.0.255 up, and its set: nft_table.SHARDS)
    "flushset": f"flush chain inet nra {nft.shard_chain(4, 0)}; flush set inet nra {nft.SHARD_SETS[4][0]}",
}
CASES = ("element", *DRIFTS)


def expected(case: str, change: nft.NftChange, low: int) -> bool:
    """The repair is of the object touched alone (the table case: a rebuild)."""
    if case == "element":
        return change.add_prefixes[4] == ((low, low + 3),)
    if case == "table":
        return change.rebuild
    if case == "flushset":
        return change.rewrite == (nft.shard_chain(4, 0),) and len(change.add_prefixes[4]) > 1
    if any(change.add_prefixes.values()) or change.rebuild:
        return False
    return {"rule": bool(change.drop_rules) or change.rewrite == ("in_lb4_0",), "flush": change.rewrite == ("classify",),
            "chain": len(change.drop) == 1, "dormant": change.table_flags == 0}[case]


async def repair_times(ns_name: str, n: int, rounds: int, listed: bool, case: str) -> list[float]:
    want = nft.desired_table(prefixes(n), ["eth0"], {("eth0", "02:00:00:00:00:01"): 1}, FIELD)
    owner = NftState(ns_name)
    other = NetlinkSocket(ns_name, protocol=nl.NETLINK_NETFILTER)  # someone else (another thread)
    other_lib = Nft(ns_name) if case in DRIFTS else None
    reasons: asyncio.Queue[str] = asyncio.Queue()

    async def watch() -> None:
        async for reason in owner.changes():
            reasons.put_nowait(reason)

    follow = owner._follow
    followed_at: list[float] = []

    def timed_follow(tx):  # (when nra began to take the other's transaction in)
        followed_at.append(time.perf_counter())
        return follow(tx)

    owner._follow = timed_follow
    task = asyncio.create_task(watch())
    try:
        current = await owner.read()
        await owner.apply(nft.diff(want, current), want, FIELD, current)
        await asyncio.sleep(0.3)
        await owner.read()
        times = []
        for i in range(rounds):
            low = BASE + (i * 997 % n) * 8
            followed_at.clear()
            if other_lib is not None:
                await asyncio.to_thread(other_lib.cmd, DRIFTS[case].format(i=i))
            else:
                ops = nl.prefix_ops({}, {4: [(low, low + 3)]}, {4: nft.prefix_set(4, (low, low + 3))})
                await asyncio.to_thread(other.transaction, lambda seq: nl.batch(nft.TABLE, ops, seq), "someone else")
            t0 = time.perf_counter()
            reason = await reasons.get()
            # the notification can be taken in before the other's call returns: from then
            t0 = min([t0, *followed_at])
            if listed:
                owner.forget()
            current = await owner.read()
            change = nft.diff(want, current)
            assert expected(case, change, low), (case, reason, change.describe())
            await owner.apply(change, want, FIELD, current)
            times.append(time.perf_counter() - t0)
            while not reasons.empty():  # (one transaction can be reported once only)
                reasons.get_nowait()
        return times
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        other.close()
        if other_lib is not None:
            other_lib.close()
        owner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'N':>7} {'case':>8} {'followed_ms':>12} {'listed_ms':>10}   (median of {args.rounds}, listed: of "
          f"{max(1, args.rounds // 2)}; from the other transaction committed to nra's repair acknowledged)")
    for n in (int(s) for s in args.sizes.split(",")):
        for case in args.cases.split(","):
            ns = new_netns("nra-nftrepair")
            try:
                followed = asyncio.run(repair_times(ns.name, n, args.rounds, False, case))
                listed = asyncio.run(repair_times(ns.name, n, max(1, args.rounds // 2), True, case))
            finally:
                ns.delete()
            print(f"{n:>7} {case:>8} {statistics.median(followed) * 1000:>12.1f} "
                  f"{statistics.median(listed) * 1000:>10.1f}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
