"""Rules mode and the conntrack mode's nft table (`inet nra`), on the real kernel in a throwaway
namespace, the adapter's events listened to as the daemon does: the table is looked for with
one GETTABLE on the full reads only (the start, the periodic resync), never listed and never
with libnftables, and removed (one DELTABLE) by an operation of the plan."""

from __future__ import annotations

import asyncio
import ctypes.util
import json

import pytest

from nra.daemon.reconciler import ReconcileConfig, Reconciler
from nra.kernel import libnft
from nra.kernel.adapter import KernelAdapter
from nra.kernel.nft import NftState
from nra.plan.return_path.rules import RulesReturnPath
from tests.kernel.test_kept_rules import POLICY, WANT, converge
from tests.netns import NetNS

pytestmark = pytest.mark.kernel

TABLE = "table inet nra { chain prerouting { type filter hook prerouting priority mangle; }; }"


def tables(ns: NetNS) -> set[tuple[str, str]]:
    listed = json.loads(ns.exec(["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return {(t["table"]["family"], t["table"]["name"]) for t in listed if "table" in t}


async def drain(adapter: KernelAdapter) -> None:
    async for _ in adapter.events():
        pass


async def test_looked_for_on_full_reads_only_and_removed_without_libnftables(node_ns: NetNS, monkeypatch):
    monkeypatch.setattr(libnft, "LIBRARY_NAMES", ("libnftables-not-here.so.1",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(OSError, match="libnftables not found"):
        NftState(node_ns.name)  # the loader really does not find it
    node_ns.nft(TABLE)
    node_ns.nft("add table inet other")
    path = RulesReturnPath(POLICY)
    async with KernelAdapter(POLICY.table, netns=node_ns.name, reads=path.reads) as adapter:
        # its events consumed as the daemon does (the kept view of the rules needs them)
        task = asyncio.create_task(drain(adapter))
        try:
            await adapter.subscribed()
            reconciler = Reconciler(adapter, ReconcileConfig(path))
            outcome = await converge(reconciler)  # the first read is a full one: the table is found
            removed = [str(op) for op in outcome.applied_ops if op.kind == "nft"]
            assert removed == ["nft delete table inet nra  # left over: nra's table of the conntrack return "
                               "path (RETURN_PATH=conntrack), which the current return path does not use"]
            assert tables(node_ns) == {("inet", "other")}
            node_ns.nft(TABLE)  # back (another run's, say) while the view of the rules is kept
            again = await converge(reconciler, trigger="netlink")
            assert again.applied == 0 and adapter.full_reads == 1  # no full read: not looked for
            assert ("inet", "nra") in tables(node_ns)
            resync = await converge(reconciler, trigger="timer")  # the periodic full read finds it
            assert adapter.full_reads == 2
            assert [op.kind for op in resync.applied_ops] == ["nft"]
            assert tables(node_ns) == {("inet", "other")}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert node_ns.rules("-4", 20) == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245",
                                        "20:\tfrom 198.51.100.0/26 lookup 20 proto 245"]
