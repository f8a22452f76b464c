"""Peers that stop answering ARP/ND, against the real kernel: the node namespace's eth0 faces a
router namespace that holds only some of the peers' addresses, so the kernel's own neighbour
resolution fails for the others (no mocked states, except where a test says it sets one)."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.daemon.reconciler import ReconcileConfig, Reconciler
from nra.kernel.adapter import KernelAdapter
from nra.kernel.events import NeighbourChange
from nra.plan.peer_health import Liveness
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import RulesReturnPath, plan
from tests.netns import NetNS, new_netns, sh
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

POLICY = RoutingPolicy(table=20, priority=20, fwmark=None, fwmask=None,
                       destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))
LIVE4, DEAD4, LIVE6, DEAD6 = (ip_address(a) for a in ("10.99.0.3", "10.99.0.2", "fd99::3", "fd99::2"))
WANT = Intent(frozenset({Peer(LIVE4, 1, "live"), Peer(DEAD4, 1, "dead"), Peer(LIVE6, 1, "live"),
                         Peer(DEAD6, 1, "dead")}),
              frozenset({ip_network("192.0.2.0/24"), ip_network("2001:db8::/64")}))


@pytest.fixture
def lan():
    """(node, router): node's eth0 10.99.0.1/24 fd99::1/64 <-> router's eth0 with .3 and ::3.
    The node's neighbour timers are short so a resolution fails in ~0.3 s."""
    node, router = new_netns("nra-nb-node"), new_netns("nra-nb-rtr")
    try:
        for ns in (node, router):  # no duplicate address detection delaying the link-local address
            sh(f"ip netns exec {ns.name} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
        node.ip(f"link add name eth0 type veth peer name eth0 netns {router.name}")
        node.ip("addr add 10.99.0.1/24 dev eth0")
        node.ip("-6 addr add fd99::1/64 dev eth0 nodad")
        router.ip("addr add 10.99.0.3/24 dev eth0")
        router.ip("-6 addr add fd99::3/64 dev eth0 nodad")
        for fam in ("ipv4", "ipv6"):
            sh(f"ip netns exec {node.name} sysctl -qw net.{fam}.neigh.eth0.retrans_time_ms=100 "
               f"net.{fam}.neigh.eth0.mcast_solicit=2 net.{fam}.neigh.eth0.ucast_solicit=2")
        node.ip("link set dev eth0 up")
        router.ip("link set dev eth0 up")
        wait_neigh_ready(node)
        yield node, router
    finally:
        node.delete()
        router.delete()


def wait_neigh_ready(node: NetNS, timeout: float = 5.0) -> None:
    """Until the fresh link carries IPv6 (the first packets can go before it does); then
    forget what that resolved, so each test starts without neighbour entries."""
    wait_for(lambda: resolve(node, "fd99::3", wait="0.2"), timeout, interval=0, what="fd99::3 answering on the fresh veth")
    node.ip("neigh flush dev eth0")


def resolve(ns: NetNS, address, wait: str = "1") -> bool:
    """Make the kernel resolve `address` (a ping to our own test network); True if answered."""
    return ns.run(["ping", "-c", "1", "-W", wait, "-n", str(address)], capture_output=True).returncode == 0


def neigh_state(ns: NetNS, address) -> str:
    out = ns.ip(f"neigh show {address} dev eth0").split()
    return out[-1] if out else ""


def wait_neigh(ns: NetNS, address, state: str, timeout: float = 3.0) -> None:
    wait_for(lambda: neigh_state(ns, address) == state, timeout, what=f"{address} {state}")


class Node:
    """The reconciler on the real kernel: its adapter and the peers' liveness it keeps."""

    def __init__(self, adapter: KernelAdapter):
        self.adapter = adapter
        self.reconciler = Reconciler(adapter, ReconcileConfig(RulesReturnPath(POLICY)))
        self.health = self.reconciler.health

    async def read(self, want: Intent = WANT):
        """A read as a reconcile makes it (the liveness judged), applying nothing."""
        state, _ = await self.reconciler.compute_plan(want)
        return state

    def silent(self) -> set:
        return {a for a, v in self.health.verdicts().items() if v.liveness is Liveness.SILENT}

    def plan(self, state, want: Intent = WANT):
        return plan(want, state, POLICY, self.health.verdicts())

    async def reconcile(self):
        outcome = await self.reconciler.reconcile(WANT, "test", hooks=False)
        assert outcome.failed == [], outcome.describe()
        return outcome.state, outcome.plan


def gateways(ns: NetNS, family: str) -> set[str]:
    words = " ".join(ns.routes(family)).split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


class Watcher:
    """Collects the reasons to reconcile the agent takes from adapter.events(): every table
    change, and a neighbour change when the peer's liveness changed."""

    def __init__(self, node: Node):
        self.reasons: asyncio.Queue[str] = asyncio.Queue()
        self.adapter = node.adapter
        self.task = asyncio.create_task(self._run(node))

    async def _run(self, node: Node):
        async for event in node.adapter.events():
            if isinstance(event, NeighbourChange):
                entry = event.entry
                reason = node.health.observe_neighbour_change(entry.address, None if entry.deleted else entry.state)
            else:
                reason = event.reason
            if reason:
                await self.reasons.put(reason)

    async def drain(self, settle: float = 0.2) -> list[str]:
        await asyncio.sleep(settle)
        seen = []
        while not self.reasons.empty():
            seen.append(self.reasons.get_nowait())
        return seen

    async def subscribed(self) -> None:
        await asyncio.wait_for(self.adapter.subscribed(), 3.0)

    async def expect(self, needle: str, timeout: float = 3.0) -> list[str]:
        seen: list[str] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(needle in r for r in seen):
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"no event with {needle!r}; saw {seen}"
            seen.append(await asyncio.wait_for(self.reasons.get(), left))
        return seen

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_peer_that_stops_answering_is_left_out_and_comes_back(lan):
    node, router = lan
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        state, first = await n.reconcile()
        assert state.neighbours == {} and first.unusable_peers == frozenset()
        assert gateways(node, "-4") == {"10.99.0.2", "10.99.0.3"}
        watcher = Watcher(n)
        try:
            await watcher.subscribed()
            # the live peers resolve; an unrelated neighbour fails: no wake-up for either
            assert resolve(node, LIVE4) and resolve(node, LIVE6)
            assert not resolve(node, "10.99.0.9") and not resolve(node, "fd99::9")
            wait_neigh(node, "10.99.0.9", "FAILED")
            wait_neigh(node, "fd99::9", "FAILED")
            assert await watcher.drain() == []

            # the dead peers: the kernel's resolution fails and the watcher says so
            assert not resolve(node, DEAD4) and not resolve(node, DEAD6)
            seen = await watcher.expect("neighbour 10.99.0.2: FAILED")
            seen += await watcher.expect("neighbour fd99::2: FAILED")
            assert all(DEAD4.exploded in r or str(DEAD6) in r for r in seen), seen
            state, p = await n.reconcile()
            assert n.silent() == {DEAD4, DEAD6} and p.unusable_peers == {DEAD4, DEAD6}
            assert state.neighbours[LIVE4] in ("REACHABLE", "STALE", "DELAY", "PROBE")
            assert sorted(op.kind for op in p.operations) == ["replace_route", "replace_route"]
            assert any("10.99.0.2 (dead) does not answer ARP/ND" in w for w in p.warnings)
            assert gateways(node, "-4") == {"10.99.0.3"} and gateways(node, "-6") == {"fd99::3"}

            # the speaker retries the dead peer: INCOMPLETE again, it stays out, no wake-up
            await watcher.drain()
            node.ip(f"neigh replace {DEAD6} dev eth0 nud incomplete")  # (set here: deterministic)
            assert not resolve(node, DEAD4)
            wait_neigh(node, DEAD4, "FAILED")
            state = await n.read()
            assert state.neighbours[DEAD6] == "INCOMPLETE"
            assert n.plan(state).operations == ()
            assert await watcher.drain() == []
            node.ip(f"neigh replace {DEAD6} dev eth0 nud failed")  # (a hand-set INCOMPLETE never times out)

            # it answers again: back in the route
            router.ip("addr add 10.99.0.2/24 dev eth0")
            router.ip("-6 addr add fd99::2/64 dev eth0 nodad")
            assert resolve(node, DEAD4) and resolve(node, DEAD6)
            await watcher.expect("neighbour 10.99.0.2: REACHABLE")
            await watcher.expect("neighbour fd99::2: REACHABLE")
            state, p = await n.reconcile()
            assert n.silent() == frozenset() and p.unusable_peers == frozenset() and p.warnings == ()
            assert gateways(node, "-4") == {"10.99.0.2", "10.99.0.3"}
            assert gateways(node, "-6") == {"fd99::2", "fd99::3"}
        finally:
            await watcher.stop()


async def test_a_silent_peer_whose_entry_is_removed_stays_out_until_resolved_again(lan):
    node, router = lan
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        await n.reconcile()
        assert not resolve(node, DEAD4)
        wait_neigh(node, DEAD4, "FAILED")
        await n.reconcile()
        assert gateways(node, "-4") == {"10.99.0.3"}
        assert n.health.to_resolve() == {DEAD4: "FAILED"}
        watcher = Watcher(n)
        try:
            await watcher.subscribed()
            node.ip(f"neigh del {DEAD4} dev eth0")  # what the kernel's garbage collector does
            assert await watcher.drain(0.5) == []  # no change of liveness: nothing to wake for
            state, p = await n.reconcile()
            assert DEAD4 not in state.neighbours and n.silent() == {DEAD4} and p.operations == ()
            assert gateways(node, "-4") == {"10.99.0.3"}

            # nothing sends to it now; nra starts its resolution again: still dead, FAILED again
            assert n.health.to_resolve() == {DEAD4: None}
            assert await adapter.resolve_peers(n.health.to_resolve()) == []
            assert neigh_state(node, DEAD4) in ("INCOMPLETE", "FAILED")
            wait_neigh(node, DEAD4, "FAILED")
            assert "managed" not in node.ip(f"-d neigh show {DEAD4} dev eth0")  # a plain entry
            state, p = await n.reconcile()
            assert n.silent() == {DEAD4} and p.operations == ()

            # the router is back: the next resolution finds it, and its event brings it back
            router.ip("addr add 10.99.0.2/24 dev eth0")
            await watcher.drain()
            assert await adapter.resolve_peers(n.health.to_resolve()) == []
            await watcher.expect("neighbour 10.99.0.2: REACHABLE (silent -> answers)")
            await n.reconcile()
            assert n.silent() == set() and gateways(node, "-4") == {"10.99.0.2", "10.99.0.3"}
            assert n.health.to_resolve() == {}
        finally:
            await watcher.stop()


async def test_every_peer_failing_keeps_the_route_as_it_is(lan):
    node, _ = lan
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        await n.reconcile()
        before = node.routes("-6")
        for address in (LIVE6, DEAD6):
            node.ip(f"neigh replace {address} dev eth0 nud failed")
        state, p = await n.reconcile()
        assert n.silent() == {LIVE6, DEAD6} and p.operations == ()
        assert any("every on-link IPv6 peer fails" in w for w in p.warnings)
        assert node.routes("-6") == before
        # the other family is not affected
        assert gateways(node, "-4") == {"10.99.0.2", "10.99.0.3"}


async def test_only_the_entry_on_the_peers_link_counts(lan):
    node, _ = lan
    # a FAILED entry for the dead peer's address on another link is not its entry
    node.ip("link add name eth1 type veth peer name eth1p")
    node.ip("link set dev eth1 up")
    node.ip(f"neigh replace {DEAD4} dev eth1 nud failed")
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        state, p = await n.reconcile()
    assert DEAD4 not in state.neighbours and p.unusable_peers == frozenset()
    assert gateways(node, "-4") == {"10.99.0.2", "10.99.0.3"}


async def test_peers_on_two_links_each_read_on_its_own(lan):
    node, _ = lan
    node.ip("link add name eth1 type veth peer name eth1p")
    node.ip("addr add 10.98.0.1/24 dev eth1")
    node.ip("link set dev eth1 up")
    node.ip("link set dev eth1p up")
    other = ip_address("10.98.0.2")
    want = Intent(WANT.peers | {Peer(other, 1, "other-link")}, WANT.prefixes)
    node.ip(f"neigh replace {other} dev eth1 nud failed")
    node.ip(f"neigh replace {DEAD4} dev eth0 nud failed")
    node.ip(f"neigh replace {LIVE4} dev eth1 nud failed")  # the wrong link for this one
    node.ip(f"neigh replace {LIVE4} dev eth0 lladdr 02:00:00:00:00:03 nud reachable")
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        state = await n.read(want)
    assert n.silent() == {other, DEAD4} and state.neighbours[LIVE4] == "REACHABLE"
    assert n.plan(state, want).unusable_peers == {other, DEAD4}


async def test_a_failure_seen_once_holds_while_the_entry_is_retried(lan):
    """With IPv6 forwarding on (Kubernetes nodes), replies hashed to a dead nexthop restart
    its resolution at once: FAILED lasts microseconds and a read sees INCOMPLETE. The
    adapter remembers the failure (from the event) until the entry is valid again."""
    node, _ = lan
    async with KernelAdapter(POLICY.table, netns=node.name) as adapter:
        n = Node(adapter)
        await n.reconcile()
        watcher = Watcher(n)
        try:
            await watcher.subscribed()
            assert not resolve(node, DEAD6)
            await watcher.expect("neighbour fd99::2: FAILED")
            node.ip(f"neigh replace {DEAD6} dev eth0 nud incomplete")  # the next reply's resolution
            state, p = await n.reconcile()
            assert state.neighbours[DEAD6] == "INCOMPLETE" and n.silent() == {DEAD6}
            assert gateways(node, "-6") == {"fd99::3"}
            # INCOMPLETE after FAILED: no new wake-up (only our own route change)
            assert [r for r in await watcher.drain() if not r.startswith("route")] == []
            # a fresh agent has no such history: INCOMPLETE in the route stays in
            async with KernelAdapter(POLICY.table, netns=node.name) as adapter2:
                fresh = Node(adapter2)
                await fresh.read()
            assert fresh.silent() == frozenset()
            # valid again: the history is dropped and the peer is back
            node.ip(f"neigh replace {DEAD6} dev eth0 lladdr 02:00:00:00:00:02 nud reachable")
            await watcher.expect("neighbour fd99::2: REACHABLE")
            state, _ = await n.reconcile()
            assert n.silent() == frozenset() and gateways(node, "-6") == {"fd99::2", "fd99::3"}
        finally:
            await watcher.stop()
