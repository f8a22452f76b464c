"""The rules' view kept between full reads (nra.kernel.rules.KeptRules), against the real
kernel, each test in its own throwaway namespace: while the adapter's events are listened
to, a read answers from what the notifications told, and is a full read (a dump of every
rule) only when the view may be out of step."""

from __future__ import annotations

import asyncio
import contextlib
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.daemon.reconciler import ReconcileConfig, Reconciler
from nra.kernel.adapter import KernelAdapter
from nra.kernel.events import Resync, TableChange
from nra.kernel.rules import Rules
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import RulesReturnPath
from tests.netns import NetNS
from tests.wait import wait_for_async

pytestmark = pytest.mark.kernel

POLICY = RoutingPolicy(table=20, priority=20, destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))
PEERS = frozenset({Peer(ip_address("10.99.0.2"), 1), Peer(ip_address("10.99.0.3"), 1), Peer(ip_address("fd99::2"), 1)})


def intent(*prefixes: str) -> Intent:
    return Intent(PEERS, frozenset(ip_network(p) for p in prefixes))


WANT = intent("192.0.2.0/24", "198.51.100.0/26", "2001:db8::/64")


@contextlib.asynccontextmanager
async def listening(ns: NetNS):
    """An adapter whose events are consumed (as the daemon does), its Reconciler, and the
    events seen so far."""
    async with KernelAdapter(POLICY.table, netns=ns.name) as adapter:
        seen: list = []
        arrived = asyncio.Event()

        async def collect():
            async for event in adapter.events():
                seen.append(event)
                arrived.set()

        watcher = asyncio.create_task(collect())
        try:
            await adapter.subscribed()
            yield adapter, Reconciler(adapter, ReconcileConfig(RulesReturnPath(POLICY))), seen, arrived
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def converge(reconciler: Reconciler, want: Intent = WANT, trigger: str = "test"):
    outcome = await reconciler.reconcile(want, trigger, hooks=False)
    assert outcome.ok, outcome.describe()
    return outcome


async def dumped(adapter: KernelAdapter) -> set[bytes]:
    """What a full dump lists now (a Rules of its own: the adapter's counters untouched)."""
    return {r.wire for r in await Rules(adapter._sock, POLICY.table).read()}


async def assert_view_is_the_kernel(adapter: KernelAdapter) -> None:
    state = await adapter.read_state(p.address for p in PEERS)
    assert {r.wire for r in state.rules} == await dumped(adapter)


async def test_an_imposter_added_between_reconciles_is_removed_without_a_full_read(node_ns: NetNS):
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        assert adapter.full_reads == 1
        node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")
        await wait_for_async(lambda: any(isinstance(e, TableChange) and "203.0.113.0/24" in e.reason for e in seen),
                             what="the imposter's notification", wake=arrived)
        outcome = await converge(reconciler, trigger="netlink")
        assert [op.kind for op in outcome.applied_ops] == ["delete_rule"]
        assert "from 203.0.113.0/24" in str(outcome.applied_ops[0])
        assert adapter.full_reads == 1  # the view told the imposter; no dump of every rule
        await assert_view_is_the_kernel(adapter)
    assert node_ns.rules("-4", 20) == ["20:\tfrom 192.0.2.0/24 lookup 20 proto 245",
                                        "20:\tfrom 198.51.100.0/26 lookup 20 proto 245"]
    assert len(node_ns.routes("-4")) == 3  # the peers' route untouched (a multipath of two)


async def test_a_rule_flush_is_repaired_from_the_notifications(node_ns: NetNS):
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        node_ns.ip("-4 rule flush")  # every IPv4 rule but `lookup local`, theirs and nra's
        await wait_for_async(lambda: sum("rule deleted" in getattr(e, "reason", "") for e in seen) == 2,
                             what="the flushed rules' notifications", wake=arrived)
        outcome = await converge(reconciler, trigger="netlink")
        assert [op.kind for op in outcome.applied_ops] == ["add_rule"] * 2
        assert adapter.full_reads == 1
        await assert_view_is_the_kernel(adapter)
    assert len(node_ns.rules("-4", 20)) == 2 and node_ns.rules("-6", 20) == ["20:\tfrom 2001:db8::/64 lookup 20 proto 245"]
    assert len(node_ns.routes("-4")) == 3


async def test_own_changes_do_not_make_full_reads_and_the_view_stays_the_kernels(node_ns: NetNS):
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        for want in (intent("192.0.2.0/24", "198.51.100.0/26", "2001:db8::/64", "203.0.113.0/24"),
                     intent("192.0.2.0/24"), intent("2001:db8:1::/64", "198.51.100.0/26"), WANT):
            outcome = await converge(reconciler, want)
            assert outcome.applied  # (each one changes rules)
            again = await converge(reconciler, want)  # at once: the echoes not awaited
            assert again.applied == 0, [str(op) for op in again.applied_ops]
            await assert_view_is_the_kernel(adapter)
        assert adapter.full_reads == 1
        # the periodic resync (the timer's trigger) is a full read, and only that one
        await converge(reconciler, trigger="timer")
        await converge(reconciler, trigger="netlink")
        assert adapter.full_reads == 2


async def test_an_overflow_of_the_notifications_forces_a_full_read(node_ns: NetNS):
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        adapter._events.table_rcvbuf = 4096  # (the kernel's least: a burst overflows it)
        seen: list = []
        events = adapter.events()

        async def collect():
            async for event in events:
                seen.append(event)

        watcher = asyncio.create_task(collect())
        try:
            await adapter.subscribed()
            reconciler = Reconciler(adapter, ReconcileConfig(RulesReturnPath(POLICY)))
            await converge(reconciler)
            await converge(reconciler)
            assert adapter.full_reads == 1
            # another writer's burst while the loop is busy (this call blocks it): more
            # notifications than the socket holds; one of them is an imposter of table 20
            batch = [f"rule add from 100.64.{i // 250}.{i % 250}/32 lookup 99 priority 30" for i in range(300)]
            batch.append("rule add from 203.0.113.0/24 lookup 20 priority 20")
            node_ns.exec(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
            outcome = await converge(reconciler, trigger="netlink")
            assert adapter.full_reads == 2  # the overflow made it read everything
            assert [op.kind for op in outcome.applied_ops] == ["delete_rule"]
            assert "203.0.113.0/24" in str(outcome.applied_ops[0])
            await wait_for_async(lambda: any(isinstance(e, Resync) for e in seen), what="a Resync event")
            # in step again after it: the next reconcile answers from the view
            await converge(reconciler, trigger="netlink")
            assert adapter.full_reads == 2
            await assert_view_is_the_kernel(adapter)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def test_without_its_events_listened_to_every_read_is_full(node_ns: NetNS):
    """ONESHOT and `nra plan` never listen: nothing can keep the view in step."""
    async with KernelAdapter(POLICY.table, netns=node_ns.name) as adapter:
        reconciler = Reconciler(adapter, ReconcileConfig(RulesReturnPath(POLICY)))
        await converge(reconciler)
        node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")
        outcome = await converge(reconciler)
        assert outcome.applied == 1 and adapter.full_reads == 2


async def test_a_route_of_nras_protocol_elsewhere_makes_the_next_read_full_and_goes(node_ns: NetNS):
    """Leftover routes (nra's protocol, a table not nra's now) come from full reads only: one
    appearing meanwhile must make the next read a full one."""
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        node_ns.ip("route add 203.0.113.0/24 via 10.99.0.2 table 77 proto 245")
        await wait_for_async(lambda: any("table 77" in getattr(e, "reason", "") for e in seen),
                             what="the leftover route's notification", wake=arrived)
        outcome = await converge(reconciler, trigger="netlink")
        assert [op.kind for op in outcome.applied_ops] == ["delete_route"] and adapter.full_reads == 2
        again = await converge(reconciler, trigger="netlink")  # its delete's echo: no full read
        assert again.applied == 0 and adapter.full_reads == 2
    assert node_ns.routes("-4", 77) == []


async def test_the_rules_are_kept_as_one_template_and_its_members(node_ns: NetNS):
    # 100,000 rules held decoded took ~50 MiB: the view holds each shape's message once (its
    # template) and each rule as an int (nra.kernel.rule_set); a rule is decoded when asked
    more = intent("192.0.2.0/24", "198.51.100.0/26", "2001:db8::/64", "203.0.113.0/24")
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler, more)
        await converge(reconciler, more, trigger="timer")  # a full read
        await converge(reconciler, more)  # the kept view
        state = await adapter.read_state(p.address for p in PEERS)
        groups = sorted((shape.rule.family, shape.rule.table, shape.rule.src, len(members))
                        for shape, members in state.rules.groups())
        assert groups == [(4, 20, None, 3), (6, 20, None, 1)]
        assert {r.wire for r in state.rules} == await dumped(adapter)
        assert sorted(str(r.src) for r in state.rules) == sorted(str(p) for p in more.prefixes)
        before = len(seen)
        node_ns.ip("rule add from 203.0.113.0/24 iif lo lookup 20 priority 20")  # anyone else's, decoded
        await wait_for_async(lambda: any("rule added: IPv4 from 203.0.113.0/24" in getattr(e, "reason", "")
                                         for e in seen[before:]), what="the rule's notification", wake=arrived)
        outcome = await converge(reconciler, more, trigger="netlink")
        assert [op.command() for op in outcome.applied_ops] == [
            "ip -4 rule del priority 20 from 203.0.113.0/24 protocol 0 iifname lo lookup 20"]
        assert [op.reason for op in outcome.applied_ops] == ["imposter: extra selector protocol 0 iifname lo"]
        await assert_view_is_the_kernel(adapter)


async def test_own_rule_writes_change_the_view_without_an_event_and_anyone_elses_are_told(node_ns: NetNS):
    # a first start in rules mode writes 100,000 rules: their echoes are no TableChange
    # (nlmsg_pid is the writing socket's port id); the view takes them all the same
    more = intent("192.0.2.0/24", "198.51.100.0/26", "2001:db8::/64", "203.0.113.0/24")
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        await wait_for_async(lambda: adapter._events.own_echoes == 3, what="the first writes' echoes")
        outcome = await converge(reconciler, more)
        assert [op.kind for op in outcome.applied_ops] == ["add_rule"]
        await wait_for_async(lambda: adapter._events.own_echoes == 4, what="the add's echo")
        outcome = await converge(reconciler)
        assert [op.kind for op in outcome.applied_ops] == ["delete_rule"]
        await wait_for_async(lambda: adapter._events.own_echoes == 5, what="the delete's echo")
        assert not [e for e in seen if "rule " in getattr(e, "reason", "")]
        state = await adapter.read_state(p.address for p in PEERS)
        assert sorted(str(r.src) for r in state.rules) == sorted(str(p) for p in WANT.prefixes)
        await assert_view_is_the_kernel(adapter)
        assert adapter.full_reads == 1
        node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")  # another writer's: told
        await wait_for_async(lambda: any("rule added: IPv4 from 203.0.113.0/24" in getattr(e, "reason", "")
                                         for e in seen), what="the other writer's notification", wake=arrived)
        assert adapter._events.own_echoes == 5


async def test_after_writing_them_the_view_holds_the_planners_own_set_of_members(node_ns: NetNS):
    # at 100,000 rules a second equal set, made one notification at a time during the
    # write, kept ~20 MiB of that write's heap from being given back (docs/performance.md)
    async with listening(node_ns) as (adapter, reconciler, seen, arrived):
        await converge(reconciler)
        desired = reconciler.return_path._desired[POLICY.table][1]
        state = await adapter.read_state(p.address for p in PEERS)
        bases = {shape.rule.family: members.base for shape, members in state.rules.groups()}
        assert bases[4] is desired[4].base and bases[6] is desired[6].base
        assert desired[4].base == {int(ip_network(p).network_address) << 8 | ip_network(p).prefixlen
                                   for p in ("192.0.2.0/24", "198.51.100.0/26")}
        await assert_view_is_the_kernel(adapter)
        outcome = await converge(reconciler, intent("192.0.2.0/24", "2001:db8::/64"))  # a change after it
        assert [op.kind for op in outcome.applied_ops] == ["delete_rule"]
        await assert_view_is_the_kernel(adapter)
        assert len(desired[4].base) == 2  # (the set the view shares was never changed)
