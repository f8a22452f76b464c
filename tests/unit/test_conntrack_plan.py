"""The mark field's arithmetic, the nft model's rendering and diff, and the conntrack return
path's plan (routers numbered and kept, routes withdrawn, a constant number of rules)."""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import weakref

import pytest

from nra.config.intent import Intent, Peer
from nra.kernel import nft_table as nft
from nra.kernel.marks import DEFAULT_MARK_TEXT, MarkField, parse_mark_field
from nra.plan.return_path.conntrack import (
    PeerFacts,
    ReturnPathPolicy,
    RouterRule,
    assign_routers,
    plan_return_path,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network


def test_default_field_numbers_fifteen_routers_in_bits_1_to_5():
    field = parse_mark_field(DEFAULT_MARK_TEXT)
    assert (field.value, field.mask, field.capacity) == (0x2, 0x3E, 15)
    marks = [field.router(i) for i in range(1, 16)]
    assert len(set(marks)) == 15 and all(m & field.mask == m and m & 0x2 for m in marks)
    assert [field.index_of(m) for m in marks] == list(range(1, 16))
    assert field.index_of(0x2) == 0 and field.index_of(0x4) is None


@pytest.mark.parametrize("text", ["0x100/0x700", "0x10000000/0xf0000000", "1/0x15"])
def test_marks_never_touch_bits_outside_the_mask(text):
    field = parse_mark_field(text)
    for other in (0, 0x4000, 0xFFFFFFFF & ~field.mask, 0xDEADBEEF & ~field.mask):
        for i in range(field.capacity + 1):
            mark = field.router(i) if i else field.value
            got = field.set_bits(other | (field.mask & 0xAAAAAAAA), mark)
            assert got & ~field.mask == other & ~field.mask
            assert got & field.mask == mark
    # a non-contiguous mask spreads the index over its free bits
    assert parse_mark_field("1/0x15").router(3) == 0x15


@pytest.mark.parametrize("text, why", [
    ("0x2", "VALUE/MASK"), ("0/0x3e", "must not be 0"), ("0x40/0x3e", "outside mask"),
    ("0x3e/0x3e", "no bit beside"), ("x/y", "VALUE/MASK"), ("0x2/0x1ffffffff", "32-bit"),
])
def test_bad_fields_are_refused_with_the_reason(text, why):
    with pytest.raises(ValueError, match=why):
        parse_mark_field(text)


FIELD = MarkField(0x2, 0x3E)
POLICY = ReturnPathPolicy(FIELD, range(21, 36), 20, 20)
R1_4, R1_6, R2_4, R2_6 = ip("10.77.0.1"), ip("fd00:77::1"), ip("10.77.0.2"), ip("fd00:77::2")
INTENT = Intent(frozenset(Peer(a, 100) for a in (R1_4, R1_6, R2_4, R2_6)),
                frozenset({net("10.80.0.0/28"), net("fd00:80::/120")}))
DST = {4: net("0.0.0.0/0"), 6: net("::/0")}
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
K1, K2 = ("eth0", MAC1), ("eth0", MAC2)  # a router: (ingress link, link-layer address)


def facts(overrides: dict | None = None) -> dict:
    base = {R1_4: PeerFacts(MAC1, "eth0"), R1_6: PeerFacts(MAC1, "eth0"),
            R2_4: PeerFacts(MAC2, "eth0"), R2_6: PeerFacts(MAC2, "eth0")}
    base.update(overrides or {})
    return base


def test_two_routers_two_tables_and_three_rules_per_family_whatever_the_prefixes():
    state = plan_return_path(INTENT, facts(), POLICY, {}, {}, DST)
    assert [(r.index, r.lladdr, {p.address for p in r.peers}) for r in state.routers] == [
        (1, MAC1, {R1_4, R1_6}), (2, MAC2, {R2_4, R2_6})]
    assert {(r.table, r.family, r.nexthops) for r in state.routes} == {
        (21, 4, ((R1_4, 100),)), (21, 6, ((R1_6, 100),)), (22, 4, ((R2_4, 100),)), (22, 6, ((R2_6, 100),))}
    assert RouterRule(4, FIELD.router(1), 0x3E, 21, 20) in state.rules
    assert RouterRule(6, 0x2, 0x2, 20, 21) in state.rules
    assert len(state.rules) == 6
    many = Intent(INTENT.peers, frozenset(net(f"10.{i // 250}.{i % 250}.0/24") for i in range(5000)))
    assert len(plan_return_path(many, facts(), POLICY, {}, {}, DST).rules) == 6
    assert state.nft.routers == {K1: 1, K2: 2} and state.nft.links == {"eth0"}


def test_numbers_are_kept_across_restarts_and_new_link_layer_addresses():
    # the nft map says MAC2 is router 1: kept
    assert assign_routers([K1, K2], {K2: 1}, {}, {}, 15)[0] == {K2: 1, K1: 2}
    # R1 got a new MAC; its table (21) still routes via R1's address: same number
    new = "02:00:00:00:00:99"
    state = plan_return_path(INTENT, facts({R1_4: PeerFacts(new, "eth0"), R1_6: PeerFacts(new, "eth0")}),
                             POLICY, {K1: 1, K2: 2}, {1: {R1_4}}, DST)
    assert state.nft.routers == {("eth0", new): 1, K2: 2}


def test_unusable_router_route_withdrawn_and_its_mark_kept():
    state = plan_return_path(INTENT, facts({R1_4: PeerFacts(MAC1, "eth0", usable=False)}), POLICY,
                             {}, {}, DST)
    assert (21, 4, ()) in {(r.table, r.family, r.nexthops) for r in state.routes}
    assert state.withdrawn == {R1_4} and state.nft.routers[K1] == 1
    # its address unknown now (entry failed): the map element stays, the route is gone
    gone = plan_return_path(INTENT, facts({R1_4: PeerFacts(None, "eth0", usable=False),
                                             R1_6: PeerFacts(None, "eth0", usable=False)}),
                            POLICY, {K1: 1, K2: 2}, {1: {R1_4, R1_6}}, DST)
    assert gone.nft.routers == {K1: 1, K2: 2}
    assert not [r for r in gone.routes if r.table == 21 and r.nexthops]


def test_more_routers_than_the_field_numbers_is_a_warning_not_a_failure():
    small = ReturnPathPolicy(MarkField(0x1, 0x3), range(21, 30), 20, 20)  # capacity 1
    state = plan_return_path(INTENT, facts(), small, {}, {}, DST)
    assert len(state.routers) == 1 and any("no mark or table left" in w for w in state.warnings)


def test_prefixes_merge_into_the_intervals_the_kernel_holds():
    got = nft.prefix_intervals([net("10.0.0.0/25"), net("10.0.0.128/25"), net("10.0.0.5/32"), net("fd00::/127"),
                                net("10.0.2.0/24")])
    assert [nft.interval_text(4, i) for i in sorted(got[4])] == ["10.0.0.0/24", "10.0.2.0/24"]
    assert [nft.interval_text(6, i) for i in got[6]] == ["fd00::/127"]


def test_nft_diff_of_a_read_with_foreign_and_stray_elements_and_rules():
    """A table as nra.kernel.nft_read gives it: an interval nra does not want is deleted as
    read, from the set it is in; one of nra's in another set than its own is moved; a rule
    without nra's digest (or with another's) makes its chain written again; a set whose
    elements do not pair up makes the table anew."""
    want = nft.desired_table([net("10.80.0.0/28")], ["eth0"], {K1: 1}, FIELD)
    ours, stray = (int(ip("10.80.0.0")), int(ip("10.80.0.15"))), (int(ip("10.90.0.0")), int(ip("10.90.0.9")))
    assert nft.prefix_set(4, ours) == "lb4_0"
    read = nft.NftTable({4: frozenset({ours, stray}), 6: frozenset()}, frozenset({"eth0"}), {K1: 1}, dict(want.chains),
                        {"lb4_0": (ours,), "lb4": (stray,)}, sets=nft.NRA_SETS, groups={4: frozenset(), 6: frozenset()})
    change = nft.diff(want, read)
    assert not change.rebuild and change.delete_prefixes[4] == (stray,)
    assert change.describe() == ["nft delete element inet nra lb4 { 10.90.0.0-10.90.0.9 }"]
    assert not change.add_prefixes[4] and not change.rewrite
    moved = nft.diff(want, dataclasses.replace(read, raw_prefixes={"lb4_5": (ours,)}, prefixes={4: frozenset({ours})}))
    assert not moved.add_prefixes[4] and not moved.delete_prefixes[4]  # (the same prefixes: moved only)
    assert moved.describe() == ["nft delete element inet nra lb4_5 { 10.80.0.0/28 }",
                                "nft add element inet nra lb4_0 { 10.80.0.0/28 }"]
    hook, rules = want.chains["in_lb4_0"]
    foreign = nft.Rule("(rule handle 9, not nra's: comment None)")
    for drifted in ((*rules, foreign), (rules[1], rules[0], *rules[2:]), rules[:-1],
                    (*rules[:-1], nft.Rule(want.chains["classify"][1][-1].digest))):
        changed = nft.diff(want, dataclasses.replace(read, chains={**want.chains, "in_lb4_0": (hook, drifted)}))
        assert changed.rewrite == ("in_lb4_0",) and not changed.rebuild
    # the digest is what is compared: a rule read back (no text) equals nra's own
    assert nft.Rule(rules[0].digest) == rules[0] and rules[0].digest.startswith("nra:")
    broken = nft.diff(want, dataclasses.replace(read, unreadable=("lb4",)))
    assert broken.rebuild and "lb4" in broken.reason


def test_others_objects_followed_from_notifications_become_repairs_of_those_objects():
    from nra.kernel.nft_netlink import ObjectChange

    want = nft.desired_table([net("10.80.0.0/28")], ["eth0"], {K1: 1}, FIELD)
    known, ignored = nft.with_objects(want, [
        ObjectChange("set", False, "nra", "__set0", flags=nft.SET_FLAG_ANONYMOUS),  # a foreign rule's own set
        ObjectChange("rule", False, "nra", chain="in_lb4_0", handle=41),
        ObjectChange("rule", False, "nra", chain="classify", handle=42),
        ObjectChange("rule", True, "nra", chain="classify", handle=42),  # gone again
        ObjectChange("rule", True, "nra", chain="dispatch_out", handle=7),  # one of nra's
        ObjectChange("chain", False, "nra", "extra"), ObjectChange("rule", False, "nra", chain="extra", handle=43),
        ObjectChange("set", False, "nra", "mine", flags=nft.SET_FLAG_MAP),
        ObjectChange("rule", False, "other", chain="x", handle=1),  # another table's
    ])
    assert ignored == {"__set0", "mine"}
    change = nft.diff(want, known)
    assert change.drop_rules == (("in_lb4_0", 41),) and change.rewrite == ("dispatch_out",)
    assert set(change.drop) == {"chain extra", "map mine"} and not change.rebuild
    assert "nft delete rule inet nra in_lb4_0 handle 41  # not nra's" in change.describe()
    # what cannot be attributed: one of nra's sets, an object of another kind, a rule in an unknown chain
    for obj in (ObjectChange("set", True, "nra", "lb4"), None, ObjectChange("rule", False, "nra", chain="x", handle=1)):
        assert nft.with_objects(want, [obj]) is None


def test_a_repair_writes_chains_only_after_sets_and_elements():
    """The sets made again come first (empty), the elements next (nra's batch), and the
    repair's one libnftables transaction holds no set and no element."""
    want = nft.desired_table([net("10.80.0.0/28"), net("fd00::/120")], ["eth0"], {K1: 1}, FIELD)
    change = nft.NftChange(reason="x", remake_sets=("lb6",), rewrite=("classify",),
                           add_prefixes={4: ((1, 2),), 6: ((3, 4),)}, add_links=("eth1",))
    assert nft.remake_commands(change, want, want) == [{"add": {"set": {"family": "inet", "table": "nra", "name": "lb6",
                                                                         "type": "ipv6_addr", "flags": ["interval"]}}}]
    repair = nft.repair_commands(change, want, want)
    assert repair and not any("set" in c.get("add", {}) or "element" in c.get("add", {}) for c in repair)


def test_nft_operations_can_be_counted_like_the_others():
    # nra.daemon.contention keys applied operations in a dict: an nft change must be hashable, and the
    # same change the same operation
    from nra.kernel.operations import ApplyNft

    want = nft.desired_table([net("10.80.0.0/28")], ["eth0"], {K1: 1}, FIELD)
    ops = [ApplyNft(nft.diff(want, None), want, FIELD, None) for _ in range(2)]
    assert len({op: 0 for op in ops}) == 1 and ops[0] == ops[1]
    assert str(ops[0]).startswith("nft -f <table inet nra")


# -- uplink groups and router identity (issue 16) ---------------------------------------------

from nra.config.intent import PeerSpec, PoolBinding  # noqa: E402
from nra.kernel.model import KernelState  # noqa: E402
from nra.plan.planner import RoutingPolicy  # noqa: E402
from nra.plan.return_path.conntrack import (  # noqa: E402
    ConntrackReturnPath,
    describe_uplinks,
    uplink_fallbacks,
)

A1, A2, B1, B2 = ip("10.1.0.2"), ip("10.1.0.3"), ip("10.2.0.2"), ip("10.2.0.3")
POOL_A, POOL_B = net("198.51.100.0/24"), net("198.51.101.0/24")  # adjacent: one group each


def uplink_intent(extra_pools=()) -> Intent:
    """Two uplinks: pool A announced to A1, A2 (eth1), pool B to B1, B2 (eth2)."""
    names = {A1: "a1", A2: "a2", B1: "b1", B2: "b2"}
    pools = {PoolBinding("a", frozenset({POOL_A}), frozenset({str(A1), str(A2)})),
             PoolBinding("b", frozenset({POOL_B}), frozenset({str(B1), str(B2)})), *extra_pools}
    return Intent(frozenset(Peer(a, 100, n) for a, n in names.items()),
                  frozenset().union(*(p.prefixes for p in pools)),
                  frozenset(PeerSpec(n, a, 100) for a, n in names.items()), frozenset(pools))


def uplink_facts(macs=None) -> dict:
    macs = macs or {A1: "02:0a:00:00:00:01", A2: "02:0a:00:00:00:02", B1: "02:0b:00:00:00:01", B2: "02:0b:00:00:00:02"}
    return {a: PeerFacts(m, "eth1" if a in (A1, A2) else "eth2") for a, m in macs.items()}


def test_each_uplink_group_gets_a_fallback_via_its_own_peers_only():
    intent = uplink_intent()
    state = plan_return_path(intent, uplink_facts(), POLICY, {}, {}, DST)
    routers = [r for r in state.routers if r.group is None]
    fallbacks = {r.group.pools: r for r in state.routers if r.group is not None}
    assert [(r.index, r.link) for r in routers] == [(1, "eth1"), (2, "eth1"), (3, "eth2"), (4, "eth2")]
    assert set(fallbacks) == {("a",), ("b",)}
    a, b = fallbacks[("a",)], fallbacks[("b",)]
    routes = {(r.table, r.family): r.nexthops for r in state.routes}
    assert routes[(POLICY.table_of(a.index), 4)] == ((A1, 100), (A2, 100))
    assert routes[(POLICY.table_of(b.index), 4)] == ((B1, 100), (B2, 100))
    # the group maps: pool A's interval to A's fallback, B's to B's (adjacent, both held)
    low_a, low_b = int(POOL_A.network_address), int(POOL_B.network_address)
    assert state.nft.groups[4] == {(low_a, low_a + 255, a.index), (low_b, low_b + 255, b.index)}
    # every prefix is in a group map: the prefix sets hold none (no element twice)
    assert state.nft.prefixes == {4: frozenset(), 6: frozenset()}
    # one rule per router and fallback, one for the external mark: constant in the prefixes
    assert len(state.rules) == 7
    assert RouterRule(4, FIELD.router(a.index), FIELD.mask, POLICY.table_of(a.index), 20) in state.rules
    many = uplink_intent([PoolBinding("c", frozenset(net(f"10.{i // 250}.{i % 250}.0/24") for i in range(2000)),
                                      frozenset({str(A1), str(A2)}))])
    assert len(plan_return_path(many, uplink_facts(), POLICY, {}, {}, DST).rules) == 7


def test_a_pool_to_every_peer_keeps_the_external_mark_and_no_group_element():
    every = PoolBinding("all", frozenset({net("203.0.113.0/24")}), frozenset({str(A1), str(A2), str(B1), str(B2)}))
    state = plan_return_path(uplink_intent([every]), uplink_facts(), POLICY, {}, {}, DST)
    low = int(net("203.0.113.0/24").network_address)
    assert not any(e[0] == low for e in state.nft.groups[4])
    assert len([r for r in state.routers if r.group is not None]) == 2
    # the legacy sources (no pools): no group at all, the table exactly as before
    plain = plan_return_path(INTENT, facts(), POLICY, {}, {}, DST)
    assert plain.nft.groups == {4: frozenset(), 6: frozenset()} and len(plain.routers) == 2


def test_one_mac_on_two_uplinks_is_two_routers():
    same = "02:00:00:00:00:77"
    state = plan_return_path(uplink_intent(), uplink_facts({A1: same, A2: "02:0a:00:00:00:02", B1: same,
                                                            B2: "02:0b:00:00:00:02"}), POLICY, {}, {}, DST)
    assert {("eth1", same), ("eth2", same)} <= set(state.nft.routers)
    routes = {(r.table, r.family): r.nexthops for r in state.routes}
    assert routes[(POLICY.table_of(state.nft.routers[("eth1", same)]), 4)] == ((A1, 100),)
    assert routes[(POLICY.table_of(state.nft.routers[("eth2", same)]), 4)] == ((B1, 100),)
    assert not [w for w in state.warnings if "share" in w]


def test_two_peers_behind_one_virtual_mac_are_one_router_with_a_multipath_route_said_once():
    vmac = "00:00:5e:00:01:01"  # a VRRP virtual MAC
    state = plan_return_path(uplink_intent(), uplink_facts({A1: vmac, A2: vmac, B1: "02:0b:00:00:00:01",
                                                            B2: "02:0b:00:00:00:02"}), POLICY, {}, {}, DST)
    (pair,) = [r for r in state.routers if r.lladdr == vmac]
    assert {p.address for p in pair.peers} == {A1, A2}
    assert (POLICY.table_of(pair.index), 4, ((A1, 100), (A2, 100))) in {(r.table, r.family, r.nexthops)
                                                                        for r in state.routes}
    (line,) = [w for w in state.warnings if "share" in w]
    assert "a1 (10.1.0.2), a2 (10.1.0.3)" in line and vmac in line and "eth1" in line


def test_a_group_keeps_its_number_while_it_exists():
    intent = uplink_intent()
    first = plan_return_path(intent, uplink_facts(), POLICY, {}, {}, DST)
    marks = {r.group.pools: r.index for r in first.routers if r.group is not None}
    # a new router appears (a third peer's MAC on eth1 would take the lowest free number): the
    # groups keep theirs, read back from the group maps
    c = ip("10.1.0.4")
    bigger = Intent(intent.peers | {Peer(c, 100, "a3")}, intent.prefixes, intent.specs | {PeerSpec("a3", c, 100)},
                    intent.pools)
    again = plan_return_path(bigger, {**uplink_facts(), c: PeerFacts("02:0a:00:00:00:03", "eth1")}, POLICY,
                             first.nft.routers, {}, DST, current_groups=first.nft.groups)
    assert {r.group.pools: r.index for r in again.routers if r.group is not None} == marks
    assert again.nft.routers[("eth1", "02:0a:00:00:00:03")] not in marks.values()


def test_an_unknown_peer_says_its_connections_get_the_group_mark():
    f = uplink_facts()
    f[A1] = PeerFacts(None, "eth1")
    state = plan_return_path(uplink_intent(), f, POLICY, {}, {}, DST)
    assert any("10.1.0.2" in w and "uplink group" in w for w in state.warnings)


def test_plan_and_status_describe_each_group_its_routers_tables_and_marks():
    intent = uplink_intent()
    policy = RoutingPolicy(table=20, priority=20, destinations=tuple(DST.values()))
    path = ConntrackReturnPath(policy, POLICY)
    lladdrs = {a: f.lladdr for a, f in uplink_facts().items()}
    state = KernelState(lladdrs=lladdrs, links={a: frozenset({1 if a in (A1, A2) else 2}) for a in lladdrs},
                        link_names={1: "eth1", 2: "eth2"})
    plan = path.plan(intent, state, {})
    groups = {tuple(g["pools"]): g for g in plan.uplinks}
    a = groups[("a",)]
    assert a["peers"] == ["10.1.0.2", "10.1.0.3"] and a["prefixes"] == 1
    assert [(r["link"], r["peers"]) for r in a["routers"]] == [("eth1", ["a1 (10.1.0.2)"]), ("eth1", ["a2 (10.1.0.3)"])]
    assert a["table"] in POLICY.tables and a["mark"] != groups[("b",)]["mark"]
    # the grouping is made once per intent
    assert path._fallbacks[0] is intent and uplink_fallbacks(intent)[0] == path._fallbacks[1][0]
    assert describe_uplinks(INTENT, plan_return_path(INTENT, facts(), POLICY, {}, {}, DST), POLICY, 20)[0]["table"] == 20


def test_a_group_past_the_router_tables_keeps_its_prefixes_in_the_prefix_sets():
    """A group the settings cannot number (4 routers and 2 groups, 5 router tables) gets the
    external mark: its prefixes stay in the prefix sets (in no map and no set, its
    connections would be marked examined and leave by the default route)."""
    small = ReturnPathPolicy(FIELD, range(21, 26), 20, 20)
    state = plan_return_path(uplink_intent(), uplink_facts(), small, {}, {}, DST)
    numbered = {r.group.pools for r in state.routers if r.group is not None}
    assert len(numbered) == 1 and any("no mark or table left" in w for w in state.warnings), state.warnings
    for pool, prefix in ((("a",), POOL_A), (("b",), POOL_B)):
        interval = (int(prefix.network_address), int(prefix.broadcast_address))
        in_map = any(e[:2] == interval for e in state.nft.groups[4])
        in_sets = interval in state.nft.prefixes[4]
        assert (in_map, in_sets) == ((True, False) if pool in numbered else (False, True)), pool


def test_kept_desired_tables_follow_a_changed_group_exactly():
    """DesiredTables merges each group's prefixes from its last ones: after a pool gains and
    loses prefixes, the table equals one built afresh (prefix set and group maps)."""
    tables = nft.DesiredTables()
    a = frozenset(net(f"10.1.{i}.0/30") for i in range(0, 200, 2))
    b = frozenset(net(f"10.2.{i}.0/30") for i in range(0, 200, 2))
    before = None
    for step in range(3):
        a2 = a | {net(f"10.1.{i}.0/30") for i in range(1, 2 + step * 2, 2)} - {net("10.1.0.0/30")} if step else a
        groups = {3: a2, 4: b}
        got = tables.get(a2 | b, frozenset({4}), ["eth0"], {}, FIELD, groups)
        fresh = nft.desired_table(a2 | b, ["eth0"], {}, FIELD, (4,), groups)
        assert got.prefixes == fresh.prefixes and got.groups == fresh.groups, step
        if before is not None:  # against nra's own last table: the few changes, as a full compare gives them
            change = nft.diff(got, before)
            assert set(change.add_groups[4]) == got.groups[4] - before.groups[4] and change.add_groups[4]
            assert set(change.delete_groups[4]) == before.groups[4] - got.groups[4]
        before = got
        assert len(got.groups[4]) == len(a2) + len(b) and not got.prefixes[4]  # (each in its map alone)
    # a pool of group 4 made to overlap group 3's: caught by the neighbour check, said, left to group 3
    clash = b | {net("10.1.0.0/29")}
    got = tables.get(a | clash, frozenset({4}), ["eth0"], {}, FIELD, {3: a, 4: clash})
    fresh, problems = nft.group_intervals({3: a, 4: clash}, (4,))
    assert got.groups == fresh and tables.group_problems == problems and len(problems) == 1
    # ... and the prefix sets hold every prefix again (the interval left out is classified)
    assert got.prefixes[4] == nft.prefix_intervals(a | clash, (4,))[4]
    # and the overlap gone again: back to every interval of both, each in its map alone
    got = tables.get(a | b, frozenset({4}), ["eth0"], {}, FIELD, {3: a, 4: b})
    assert got.groups == nft.group_intervals({3: a, 4: b}, (4,))[0] and not tables.group_problems
    assert not got.prefixes[4]


def test_ungrouped_prefixes_follow_patched_sets_and_say_their_difference():
    """The prefix sets hold the prefixes of no group: with groups patched (as the parser
    patches a pool), the result moves by the few that changed and records that (the merged
    intervals then move by them too); anything else is the whole difference."""
    from nra.config import prefix_delta
    from nra.config.metallb import _patched
    ungrouped = nft.UngroupedPrefixes()
    a = frozenset(net(f"10.1.{i}.0/30") for i in range(0, 200, 2))
    c = frozenset(net(f"10.3.{i}.0/30") for i in range(0, 100, 2))  # a pool of every peer's
    every = a | c
    assert ungrouped.get(every, []) is every  # no groups: the intent's own set
    first = ungrouped.get(every, [a])
    assert first == c
    assert ungrouped.get(every, [a]) is first  # the same sets: the same object
    # a line added to group a's pool, and one to the ungrouped pool
    a2 = _patched(a, {net("10.1.201.0/30")}, set())
    every2 = _patched(every, {net("10.1.201.0/30"), net("10.3.101.0/30")}, set())
    second = ungrouped.get(every2, [a2])
    assert second == every2 - a2
    assert prefix_delta.delta(second, first) == (frozenset({net("10.3.101.0/30")}), frozenset())
    # a prefix moved from the ungrouped pool into group a: it leaves the prefix sets
    moved = net("10.3.0.0/30")
    a3, every3 = _patched(a2, {moved}, set()), every2
    third = ungrouped.get(every3, [a3])
    assert third == every3 - a3 and moved not in third
    assert prefix_delta.delta(third, second) == (frozenset(), frozenset({moved}))
    # sets made whole (no recorded difference): the whole difference, still exact
    fresh_a = frozenset(set(a3))
    assert ungrouped.get(every3, [fresh_a]) == every3 - fresh_a
    # every prefix grouped: none, and the same empty object while it stays so
    none = ungrouped.get(every3, [fresh_a, every3 - fresh_a])
    assert none == frozenset()
    assert ungrouped.get(frozenset(every3), [frozenset(fresh_a), every3 - fresh_a]) is none


def test_overlapping_pools_of_two_groups_leave_the_overlap_to_the_first():
    got, problems = nft.group_intervals({3: [net("10.0.0.0/24")], 4: [net("10.0.0.128/25"), net("10.9.0.0/24")]})
    assert {(nft.interval_text(4, e[:2]), e[2]) for e in got[4]} == {("10.0.0.0/24", 3), ("10.9.0.0/24", 4)}
    assert problems == ["prefix 10.0.0.128/25: in two uplink groups' pools (overlaps 10.0.0.0/24); left to the first group"]



def test_a_kept_table_does_not_keep_the_intervals_it_was_updated_from():
    """The desired table kept between reconciles (nra's last write) holds its own merged
    intervals, not those of the table before it: at 100,000 distinct prefixes a dead set of
    100,000 intervals (~2 MiB) stayed alive through prefixes_delta until the next change."""
    tables = nft.DesiredTables()
    prefixes = frozenset(net(f"10.1.{i}.{j}/30") for i in range(0, 40) for j in range(0, 256, 8))
    first = tables.get(prefixes, frozenset({4}), ["eth0"], {}, FIELD)
    gone = weakref.ref(first.prefixes[4])
    del first
    second = tables.get(prefixes | {net("10.200.0.0/24")}, frozenset({4}), ["eth0"], {}, FIELD)
    assert second.prefixes_delta is not None and second.prefixes[4] is not None
    gc.collect()
    assert gone() is None

def test_chains_are_built_for_the_configured_routers_not_every_mark_of_a_wide_mask():
    # issue 20 #9: a mask of 8 index bits built 512 chains even with 3 router tables
    wide = parse_mark_field("0x2/0x3fe")
    state = plan_return_path(INTENT, facts(), ReturnPathPolicy(wide, range(21, 24), 20, 20), {}, {}, DST)
    saves = sorted(c for c in state.nft.chains if c.startswith("save_"))
    restores = sorted(c for c in state.nft.chains if c.startswith("restore_"))
    assert saves == ["save_1", "save_2", "save_3"]
    assert restores == ["restore_1", "restore_2", "restore_3", "restore_external"]
    assert sorted(c for c in state.nft.chains if c.startswith("group_")) == ["group_1", "group_2", "group_3"]
    assert len(nft.desired_chains(wide)) == 3 * 255 + 6 + 2 * nft.SHARDS  # (the field alone: every mark; the shards)


def test_a_kept_table_sends_the_intervals_that_moved_as_a_full_compare_gives_them():
    """DesiredTables' tables carry the merged intervals that moved (prefixes_delta): diff()
    against nra's own last table sends those alone, the same change a full compare finds."""
    tables = nft.DesiredTables()
    prefixes = frozenset(net(f"10.1.{i}.{j}/30") for i in range(0, 40) for j in range(0, 256, 8))
    before = tables.get(prefixes, frozenset({4}), ["eth0"], {}, FIELD)
    edits = [{net("10.1.0.4/30")}, {net("10.1.0.0/30")}, {net("10.1.0.8/30"), net("10.200.0.0/24")},
             {net("10.1.0.12/30")}, {net("10.1.3.0/24")}]
    for step, edit in enumerate(edits):
        prefixes = prefixes ^ edit
        got = tables.get(prefixes, frozenset({4}), ["eth0"], {}, FIELD)
        assert got.prefixes_delta is not None and got.prefixes_delta[0][4]() is before.prefixes[4]
        quick = nft.diff(got, before)
        full = nft.diff(dataclasses.replace(got, prefixes_delta=None), before)
        assert (sorted(quick.add_prefixes[4]), sorted(quick.delete_prefixes[4])) == \
            (sorted(full.add_prefixes[4]), sorted(full.delete_prefixes[4])), step
        assert quick.add_prefixes[4] or quick.delete_prefixes[4]
        before = got
