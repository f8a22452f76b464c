#!/usr/bin/env python3
"""Someone else deletes one prefix element from nra's nft table at N prefixes: how long until
nra has it back, in a throwaway namespace (root). From the moment the other transaction is
committed to nra's repair acknowledged: the notification, nra.kernel.nft's following of it,
the read, the diff and the repair batch (what one reconcile after such an event does).

`followed`: the element change taken from the notification itself (nra now); `listed`: the
table read again in full to find it (forced here by forget()). `rule`: someone else's rule
added to `classify` instead: the chains and rules read again (the elements known), the
chain written again; `rule_full`: the same with the table read in full.

    .venv/bin/python benchmarks/nft_repair_bench.py [--sizes 10000,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nra.kernel import nft_netlink as nl  # noqa: E402
from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.marks import parse_mark_field  # noqa: E402
from nra.kernel.nft import NftState  # noqa: E402
from nra.kernel.socket import NetlinkSocket  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

FIELD = parse_mark_field("0x2/0x3e")
BASE = int(ipaddress.IPv4Address("100.64.0.0"))


def prefixes(n: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(f"{ipaddress.IPv4Address(BASE + i * 8)}/30") for i in range(n)]


async def repair_times(ns, n: int, rounds: int, listed: bool, rule: bool = False) -> list[float]:
    """rule: someone else adds a rule to `classify` (nft, the binary) instead of deleting an
    element; timed from the binary's return (its transaction committed)."""
    ns_name = ns.name
    want = nft.desired_table(prefixes(n), ["eth0"], {("eth0", "02:00:00:00:00:01"): 1}, FIELD)
    owner = NftState(ns_name)
    other = NetlinkSocket(ns_name, protocol=nl.NETLINK_NETFILTER)  # someone else (another thread)
    reasons: asyncio.Queue[str] = asyncio.Queue()

    async def watch() -> None:
        async for reason in owner.changes():
            reasons.put_nowait(reason)

    task = asyncio.create_task(watch())
    try:
        current = await owner.read()
        await owner.apply(nft.diff(want, current), want, FIELD, current)
        await asyncio.sleep(0.3)
        await owner.read()
        times = []
        for i in range(rounds):
            low = BASE + (i * 997 % n) * 8
            if rule:
                await asyncio.to_thread(ns.nft, "add rule inet nra classify counter accept")
            else:
                ops = nl.prefix_ops({}, {4: [(low, low + 3)]}, nft.PREFIX_SETS)
                await asyncio.to_thread(other.transaction, lambda seq: nl.batch(nft.TABLE, ops, seq), "someone else")
            t0 = time.perf_counter()
            reason = await reasons.get()
            if listed:
                owner.forget()
            current = await owner.read()
            change = nft.diff(want, current)
            if rule:
                assert change.rewrite == ("classify",) and not change.rebuild, (reason, change.describe())
            else:
                assert change.add_prefixes[4] == ((low, low + 3),), (reason, change.describe())
            await owner.apply(change, want, FIELD, current)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        other.close()
        owner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'N':>7} {'followed_ms':>12} {'listed_ms':>10} {'rule_ms':>8} {'rule_full_ms':>12}   (median of "
          f"{args.rounds}; from the other transaction committed to nra's repair acknowledged)")
    for n in (int(s) for s in args.sizes.split(",")):
        ns = new_netns("nra-nftrepair")
        try:
            followed = asyncio.run(repair_times(ns, n, args.rounds, listed=False))
            listed = asyncio.run(repair_times(ns, n, max(1, args.rounds // 2), listed=True))
            rule = asyncio.run(repair_times(ns, n, args.rounds, listed=False, rule=True))
            rule_full = asyncio.run(repair_times(ns, n, max(1, args.rounds // 2), listed=True, rule=True))
        finally:
            ns.delete()
        print(f"{n:>7} {statistics.median(followed) * 1000:>12.1f} {statistics.median(listed) * 1000:>10.1f} "
              f"{statistics.median(rule) * 1000:>8.1f} {statistics.median(rule_full) * 1000:>12.1f}", flush=True)
    print("followed: an element deleted by someone else, followed from its notification; listed: the same with "
          "the table read in full (forget()); rule: a rule added to classify by someone else, the chains and rules "
          "read again; rule_full: the same with the table read in full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
