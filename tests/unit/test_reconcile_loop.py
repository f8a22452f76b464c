"""The reconcile loop on an in-memory kernel (tests/fake_kernel.py): built without Settings
and without root, the same Reconciler for both return paths (it never asks which)."""

from __future__ import annotations

import ipaddress

from nra.config.intent import Intent, Peer
from nra.daemon.reconciler import ReconcileConfig, Reconciler
from nra.kernel.codec import request
from nra.kernel.events import KernelEvents, Resync
from nra.kernel.marks import MarkField
from nra.kernel.operations import AddRule, ApplyNft, DeleteRule, ReplaceRoute
from nra.kernel.rules import Rules
from nra.observe import metrics
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.conntrack import ConntrackReturnPath, ReturnPathPolicy
from nra.plan.return_path.rules import RulesReturnPath
from tests.fake_kernel import FakeKernel

ip, net = ipaddress.ip_address, ipaddress.ip_network
POLICY = RoutingPolicy(table=20, priority=20)
R1_4, R1_6, R2_4 = ip("10.99.0.2"), ip("fd99::2"), ip("10.99.0.3")
MACS = {R1_4: "02:00:00:00:00:01", R1_6: "02:00:00:00:00:01", R2_4: "02:00:00:00:00:02"}
WANT = Intent(frozenset({Peer(R1_4, 1), Peer(R1_6, 1), Peer(R2_4, 1)}),
              frozenset({net("192.0.2.0/24"), net("198.51.100.7/32"), net("2001:db8::/64")}))


def rules_path() -> RulesReturnPath:
    return RulesReturnPath(POLICY)


def conntrack_path() -> ConntrackReturnPath:
    return ConntrackReturnPath(POLICY, ReturnPathPolicy(MarkField(0x2, 0x3E), range(21, 36), 20, 20))


def gauge(name: str, family: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"family": family})


async def test_rules_converge_in_one_reconcile_then_hold_steady():
    kernel = FakeKernel(20)
    reconciler = Reconciler(kernel, ReconcileConfig(rules_path()))
    first = await reconciler.reconcile(WANT, "test")
    assert first.ok and first.applied == 5  # two routes, three rules
    assert sorted(str(r.src) for r in kernel.rules) == ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/64"]
    assert gauge("nra_peers_in_route", "ipv4") == 2 and gauge("nra_rules_installed", "ipv4") == 2
    again = await reconciler.reconcile(WANT, "test")
    assert again.ok and again.applied == 0 and kernel.reads_done == 2


async def test_conntrack_converges_with_the_same_reconciler_then_holds_steady():
    path = conntrack_path()
    kernel = FakeKernel(20, path.reads, lladdrs=MACS)
    reconciler = Reconciler(kernel, ReconcileConfig(path))
    first = await reconciler.reconcile(WANT, "test")
    assert first.ok, first.describe()
    ops = first.applied_ops
    # nft first (its marks are what the rules match), then routes and rules
    assert isinstance(ops[0], ApplyNft) and kernel.nft is not None and set(kernel.nft.routers.values()) == {1, 2}
    assert {r.table for r in kernel.routes} == {20, 21, 22}
    assert {(r.table, r.priority) for r in kernel.rules} == {(21, 20), (22, 20), (20, 21)}
    assert all(isinstance(op, (ReplaceRoute, AddRule)) for op in ops[1:])
    again = await reconciler.reconcile(WANT, "test")
    assert again.ok and again.applied == 0, [str(op) for op in again.applied_ops]
    # a new prefix is an nft change only: no rule per prefix in this mode
    more = Intent(WANT.peers, WANT.prefixes | {net("203.0.113.0/24")})
    change = await reconciler.reconcile(more, "test")
    assert change.ok and [op.kind for op in change.applied_ops] == ["nft"]


async def test_a_refused_operation_fails_the_reconcile_and_loses_nothing():
    kernel = FakeKernel(20)
    reconciler = Reconciler(kernel, ReconcileConfig(rules_path()))
    assert (await reconciler.reconcile(WANT, "test")).ok
    held = list(kernel.routes)
    kernel.refuse = lambda op: "Operation not permitted (errno 1)" if isinstance(op, DeleteRule) else None
    fewer = Intent(WANT.peers, frozenset({net("192.0.2.0/24")}))
    outcome = await reconciler.reconcile(fewer, "test")
    assert not outcome.ok and len(outcome.failed) == 2 and "Operation not permitted" in outcome.failed[0]
    assert kernel.routes == held and len(kernel.rules) == 3  # nothing emptied
    kernel.refuse = lambda op: None
    assert (await reconciler.reconcile(fewer, "test", verify=True)).ok and len(kernel.rules) == 1


async def test_verify_reads_again_and_names_what_still_differs():
    kernel = FakeKernel(20)
    kernel.refuse = lambda op: "File exists (errno 17)" if isinstance(op, AddRule) and op.family == 6 else None
    outcome = await Reconciler(kernel, ReconcileConfig(rules_path())).reconcile(WANT, "clean", verify=True)
    assert not outcome.ok
    assert outcome.remaining == ["ip -6 rule add from 2001:db8::/64 lookup 20 priority 20  # missing"]


async def test_a_peer_off_link_is_left_out_and_the_outcome_degraded():
    kernel = FakeKernel(20, off_link={R2_4})
    outcome = await Reconciler(kernel, ReconcileConfig(rules_path())).reconcile(WANT, "test")
    assert outcome.ok and outcome.degraded and outcome.plan.left_out == {R2_4: "off-link"}
    v4 = next(r for r in kernel.routes if r.family == 4)
    assert [str(nh.gateway) for nh in v4.nexthops] == ["10.99.0.2"]


async def test_a_multihop_peer_follows_its_route_and_an_unnumbered_one_carries_ipv4_via_inet6():
    from nra.config.metallb import parse_objects
    from nra.config.uplinks import Neighbour, NodeFacts, RouteLookup
    from tests.unit.test_metallb import advertisement, bgp_peer, pool

    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), bgp_peer("p2p", interface="swp1",
                                                                         dualStackAddressFamily=True),
               pool("p", "198.51.100.0/24"), advertisement("x")]
    intent = parse_objects(objects, {"kubernetes.io/hostname": "n"}, 1).intent
    kernel = FakeKernel(20)
    reconciler = Reconciler(kernel, ReconcileConfig(rules_path()))
    router = (Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02", router=True),)
    kernel.uplinks = NodeFacts({"192.0.2.9": RouteLookup("eth1", (ip("10.1.0.254"),))}, neighbours=router)
    first = await reconciler.reconcile(intent, "test")
    assert first.ok, first.describe()
    assert "nexthop via inet6 fe80::2 weight 1" in str(first.applied_ops[0])
    route = next(r for r in kernel.routes if r.family == 4)
    assert {str(nh.gateway) for nh in route.nexthops} == {"10.1.0.254", "fe80::2"}
    assert (await reconciler.reconcile(intent, "test")).applied == 0  # read back equal: no churn
    kernel.uplinks = NodeFacts({"192.0.2.9": RouteLookup("eth2", (ip("10.2.0.254"),))}, neighbours=router)
    moved = await reconciler.reconcile(intent, "uplink")
    assert moved.ok and [op.kind for op in moved.applied_ops] == ["replace_route"]
    assert {str(nh.gateway) for r in kernel.routes if r.family == 4 for nh in r.nexthops} == {"10.2.0.254", "fe80::2"}
    # the route to the multihop peer goes: it waits, said once as a warning, the other peer kept
    kernel.uplinks = NodeFacts(unresolved={"192.0.2.9": "no route to 192.0.2.9"}, neighbours=router)
    gone = await reconciler.reconcile(intent, "uplink")
    assert "peer loop: no route to 192.0.2.9; no next hop until it resolves" in gone.warnings
    assert {str(nh.gateway) for r in kernel.routes if r.family == 4 for nh in r.nexthops} == {"fe80::2"}


async def test_conntrack_router_tables_route_ipv4_via_the_unnumbered_routers_link_local():
    from nra.config.metallb import parse_objects
    from nra.config.uplinks import Neighbour, NodeFacts
    from tests.unit.test_metallb import advertisement, bgp_peer, pool

    objects = [bgp_peer("p2p", interface="swp1", dualStackAddressFamily=True), pool("p", "198.51.100.0/24"),
               advertisement("x")]
    intent = parse_objects(objects, {"kubernetes.io/hostname": "n"}, 1).intent
    path = conntrack_path()
    kernel = FakeKernel(20, path.reads, lladdrs={ip("fe80::2%swp1"): "02:00:00:00:00:02"})
    kernel.uplinks = NodeFacts(neighbours=(Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02", router=True),))
    reconciler = Reconciler(kernel, ReconcileConfig(path))
    assert (await reconciler.reconcile(intent, "test")).ok
    router_table = {(r.family, tuple(str(nh.gateway) for nh in r.nexthops)) for r in kernel.routes if r.table == 21}
    assert router_table == {(4, ("fe80::2%swp1",)), (6, ("fe80::2%swp1",))}  # one hop each, IPv4 via inet6
    assert (await reconciler.reconcile(intent, "test")).applied == 0
async def test_only_a_resync_reads_the_whole_kernel_again():
    """The timer, SIGHUP and a retry make the read a full one (Kernel.resync), and so does
    an event the kernel side could not attribute (a Resync); a configuration change, drift
    and nra's own echoes are answered from the kept view."""
    kernel = FakeKernel(20)
    reconciler = Reconciler(kernel, ReconcileConfig(rules_path()))
    assert (await reconciler.reconcile(WANT, "config")).ok and kernel.full_reads == 1
    more = Intent(WANT.peers, WANT.prefixes | {net("203.0.113.0/24")})
    for want, trigger in ((more, "config"), (more, "netlink"), (WANT, "config+netlink"), (WANT, "link")):
        assert (await reconciler.reconcile(want, trigger)).ok
    assert kernel.full_reads == 1 and kernel.reads_done == 5
    for trigger, full_reads in (("timer", 2), ("netlink", 2), ("config+sighup", 3), ("retry", 4), ("hold", 4)):
        assert (await reconciler.reconcile(WANT, trigger)).ok
        assert kernel.full_reads == full_reads, trigger
    kernel.notify(Resync("netlink socket error (No buffer space available): resync"))
    assert (await reconciler.reconcile(WANT, "netlink")).ok and kernel.full_reads == 5


def test_a_message_the_event_source_cannot_attribute_is_a_resync():
    rules = Rules(None, 20)  # type: ignore[arg-type]  (no socket: only notifications come)
    kept = rules.kept
    kept.listening = True
    kept.full_read_done(kept.full_read_started(), rules.book())
    assert kept.valid
    source = KernelEvents(None, 20, kept=kept)
    noop = request(1, 0, 0, b"")  # NLMSG_NOOP: nothing the table socket is sent
    events = source._table_buffer(noop)
    assert [type(e) for e in events] == [Resync] and "type 1" in events[0].reason
    assert not kept.valid and "cannot attribute" in kept.stale_reason


async def test_a_shed_outcome_keeps_what_status_shows_and_no_nft_table():
    # the worker keeps the last outcome for /status: once recorded it lets go of the plan's
    # operations and the state read, which held the desired and the current nft tables
    import gc
    import weakref

    path = conntrack_path()
    kernel = FakeKernel(20, path.reads, lladdrs=MACS)
    reconciler = Reconciler(kernel, ReconcileConfig(path))
    await reconciler.reconcile(WANT, "test")
    more = Intent(WANT.peers, WANT.prefixes | {net("203.0.113.0/24")})
    outcome = await reconciler.reconcile(more, "test")
    nft_op = outcome.plan.operations[0]
    assert isinstance(nft_op, ApplyNft) and nft_op.current is not None
    before = weakref.ref(nft_op.current)  # the table of the reconcile before: no longer current
    shown = (outcome.ok, outcome.applied, outcome.warnings, outcome.plan.uplinks, outcome.plan.left_out,
             outcome.intent, outcome.describe())
    del nft_op
    outcome.shed()
    gc.collect()
    assert before() is None, "the shed outcome still holds the nft table it was planned against"
    assert (outcome.ok, outcome.applied, outcome.warnings, outcome.plan.uplinks, outcome.plan.left_out,
            outcome.intent, outcome.describe()) == shown
    assert outcome.state is None and outcome.applied_ops == [] and outcome.plan.operations == ()
