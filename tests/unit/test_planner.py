"""The planner against hand-built kernel listings: pure, no kernel."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address, ip_network

import pytest

from nra.config.intent import Intent, Peer
from nra.kernel.model import (
    DEFAULT_METRIC,
    KernelRoute,
    KernelRule,
    KernelState,
    Nexthop,
)
from nra.kernel.operations import AddRule, DeleteRoute, DeleteRule, ReplaceRoute
from nra.plan.peer_health import Liveness, Verdict
from nra.plan.planner import RoutingPolicy
from nra.plan.return_path.rules import plan

V4_DEFAULT = ip_network("0.0.0.0/0")
V6_DEFAULT = ip_network("::/0")
POLICY = RoutingPolicy(table=20, priority=20, fwmark=None, fwmask=None, destinations=(V4_DEFAULT, V6_DEFAULT))


def peer(addr: str, weight: int = 1, name: str = "") -> Peer:
    return Peer(ip_address(addr), weight, name)


def intent(peers=(), prefixes=()) -> Intent:
    return Intent(frozenset(peers), frozenset(ip_network(p) for p in prefixes))


def rule(src: str | None, family: int = 4, priority: int = 20, table: int = 20, fwmark=None, fwmask=None,
         extra=()) -> KernelRule:
    return KernelRule(family, ip_network(src) if src else None, priority, table, fwmark, fwmask, tuple(extra))


def route(nexthops, family: int = 4, dst: str | None = None, **kw) -> KernelRoute:
    dst_net = ip_network(dst) if dst else (V4_DEFAULT if family == 4 else V6_DEFAULT)
    kw.setdefault("metric", DEFAULT_METRIC[family])
    return KernelRoute(family, dst_net, 20, tuple(Nexthop(ip_address(a), w) for a, w in nexthops), **kw)


def simulate(state: KernelState, ops, policy: RoutingPolicy = POLICY) -> KernelState:
    """Apply operations the way the kernel would, to check the plan converges."""
    routes, rules = list(state.routes), list(state.rules)
    for op in ops:
        if isinstance(op, ReplaceRoute):
            routes = [r for r in routes if not (r.family == op.family and r.dst == op.dst and r.tos == 0
                                                and r.metric == op.metric)]
            nexthops = op.nexthops
            if len(nexthops) == 1:  # the kernel does not report a lone nexthop's weight
                nexthops = (Nexthop(nexthops[0].gateway, 1),)
            routes.append(KernelRoute(op.family, op.dst, op.table, nexthops, metric=op.metric))
        elif isinstance(op, DeleteRoute):
            routes.remove(op.route)
        elif isinstance(op, AddRule):
            mask = op.fwmask if op.fwmask is not None else (0xFFFFFFFF if op.fwmark else None)
            new = KernelRule(op.family, op.src, op.priority, op.table, op.fwmark, mask)
            if new not in rules:  # NLM_F_EXCL: adding an existing rule is EEXIST
                rules.append(new)
        elif isinstance(op, DeleteRule):
            rules.remove(op.rule)
    return KernelState(tuple(routes), tuple(rules), state.unreachable, state.neighbours)


def kinds(p) -> list[str]:
    return [op.kind for op in p.operations]


def test_from_empty_both_families():
    want = intent([peer("10.99.0.2", 100), peer("10.99.0.3", 50), peer("fd99::2", 7)],
                  ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/64"])
    p = plan(want, KernelState(), POLICY)
    assert kinds(p) == ["replace_route", "replace_route", "add_rule", "add_rule", "add_rule"]
    v4, v6 = p.operations[0], p.operations[1]
    assert v4.family == 4 and v4.dst == V4_DEFAULT and v4.table == 20 and v4.metric == 0
    assert v4.nexthops == (Nexthop(ip_address("10.99.0.2"), 100), Nexthop(ip_address("10.99.0.3"), 50))
    assert v6.family == 6 and v6.dst == V6_DEFAULT and v6.metric == 1024
    assert str(v4).startswith("ip -4 route replace default table 20 nexthop via 10.99.0.2 weight 100 "
                              "nexthop via 10.99.0.3 weight 50")
    assert str(v6).startswith("ip -6 route replace default table 20 nexthop via fd99::2 weight 7")
    assert [str(op.src) for op in p.operations[2:]] == ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/64"]
    assert p.operations[2].command() == "ip -4 rule add from 192.0.2.0/24 lookup 20 priority 20"
    assert p.operations[4].command() == "ip -6 rule add from 2001:db8::/64 lookup 20 priority 20"
    assert p.warnings == ()
    assert not plan(want, simulate(KernelState(), p.operations), POLICY)


def test_steady_state_is_an_empty_plan():
    want = intent([peer("10.99.0.2", 3), peer("10.99.0.3", 4)], ["192.0.2.0/24"])
    state = KernelState(routes=(route([("10.99.0.3", 4), ("10.99.0.2", 3)]),), rules=(rule("192.0.2.0/24"),))
    p = plan(want, state, POLICY)
    assert p.operations == () and p.warnings == () and not p


def test_weight_change_replaces_the_route_only():
    want = intent([peer("10.99.0.2", 3), peer("10.99.0.3", 9)], ["192.0.2.0/24"])
    state = KernelState(routes=(route([("10.99.0.2", 3), ("10.99.0.3", 4)]),), rules=(rule("192.0.2.0/24"),))
    p = plan(want, state, POLICY)
    assert kinds(p) == ["replace_route"]
    assert "weight 9" in str(p.operations[0]) and "differ" in p.operations[0].reason


def test_a_lone_nexthop_is_compared_by_gateway_only():
    # The kernel neither keeps nor lists a weight for a single-nexthop route.
    want = intent([peer("10.99.0.2", 77)], ["192.0.2.0/24"])
    state = KernelState(routes=(route([("10.99.0.2", 1)]),), rules=(rule("192.0.2.0/24"),))
    assert not plan(want, state, POLICY)
    moved = KernelState(routes=(route([("10.99.0.9", 1)]),), rules=(rule("192.0.2.0/24"),))
    assert kinds(plan(want, moved, POLICY)) == ["replace_route"]


@pytest.mark.parametrize("fwmark,fwmask,rendered,listed_mask", [
    (0x14, 0xFF, "fwmark 0x14/0xff", 0xFF),
    (0x14, None, "fwmark 0x14", 0xFFFFFFFF),
])
def test_fwmark_with_and_without_mask(fwmark, fwmask, rendered, listed_mask):
    policy = dataclasses.replace(POLICY, fwmark=fwmark, fwmask=fwmask)
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24"])
    p = plan(want, KernelState(), policy)
    add = p.operations[1]
    assert add.command() == f"ip -4 rule add from 192.0.2.0/24 {rendered} lookup 20 priority 20"
    assert (add.fwmark, add.fwmask) == (fwmark, fwmask)
    # the kernel lists the rule with the full mask when none was given: that is ours
    listed = KernelState(routes=(route([("10.99.0.2", 1)]),),
                         rules=(rule("192.0.2.0/24", fwmark=fwmark, fwmask=listed_mask),))
    assert not plan(want, listed, policy)
    assert not plan(want, simulate(KernelState(), p.operations, policy), policy)


def test_a_mark_of_0_with_a_mask_is_a_selector():
    # RULE_FWMARK=0/0xff: packets whose low byte is 0 (issue 11 #5)
    policy = dataclasses.replace(POLICY, fwmark=0, fwmask=0xFF)
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24"])
    add = plan(want, KernelState(), policy).operations[1]
    assert add.command() == "ip -4 rule add from 192.0.2.0/24 fwmark 0x0/0xff lookup 20 priority 20"
    marked = rule("192.0.2.0/24", fwmark=0, fwmask=0xFF)
    state = KernelState(routes=(route([("10.99.0.2", 1)]),), rules=(marked,))
    assert not plan(want, state, policy)
    # and without a fwmark setting, that rule is not ours
    p = plan(want, state, POLICY)
    assert kinds(p) == ["add_rule", "delete_rule"] and p.operations[1].rule == marked


def test_rules_with_other_marks_are_imposters():
    policy = dataclasses.replace(POLICY, fwmark=0x14, fwmask=0xFF)
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24"])
    ours = rule("192.0.2.0/24", fwmark=0x14, fwmask=0xFF)
    no_mark = rule("192.0.2.0/24")
    other_mask = rule("192.0.2.0/24", fwmark=0x14, fwmask=0xFFFFFFFF)
    other_mark = rule("192.0.2.0/24", fwmark=0x15, fwmask=0xFF)
    state = KernelState(routes=(route([("10.99.0.2", 1)]),), rules=(no_mark, ours, other_mask, other_mark))
    p = plan(want, state, policy)
    assert kinds(p) == ["delete_rule"] * 3
    assert {op.rule for op in p.operations} == {no_mark, other_mask, other_mark}
    assert all("fwmark" in op.reason for op in p.operations)


def test_duplicates_keep_exactly_one():
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24", "198.51.100.0/24"])
    dup = rule("192.0.2.0/24")
    state = KernelState(routes=(route([("10.99.0.2", 1)]),), rules=(dup, dup, dup, rule("198.51.100.0/24")))
    p = plan(want, state, POLICY)
    assert kinds(p) == ["delete_rule", "delete_rule"]
    assert all(op.rule == dup and op.reason == "duplicate" for op in p.operations)
    assert not plan(want, simulate(state, p.operations), POLICY)


@pytest.mark.parametrize("imposter,why", [
    (rule(None), "no from"),
    (rule("192.0.2.0/24", priority=30), "priority 30"),
    (rule("203.0.113.0/24"), "not an announced prefix"),
    (rule("192.0.2.0/24", extra=["iif eth1"]), "iif eth1"),
    (rule("192.0.2.0/24", extra=["to 10.0.0.0/8"]), "to 10.0.0.0/8"),
    (rule("192.0.2.0/24", extra=["not"]), "not"),
    (rule("192.0.2.0/24", fwmark=1, fwmask=0xFFFFFFFF), "fwmark"),
    (rule("2001:db8::/64", family=6), "no IPv6 peers"),
])
def test_every_rule_imposter_kind_is_removed(imposter, why):
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24"])
    ours = rule("192.0.2.0/24")
    state = KernelState(routes=(route([("10.99.0.2", 1)]),), rules=(imposter, ours))
    p = plan(want, state, POLICY)
    assert [(op.kind, op.rule) for op in p.operations] == [("delete_rule", imposter)]
    assert why in p.operations[0].reason
    assert str(p.operations[0]).startswith(f"ip -{imposter.family} rule del priority {imposter.priority} ")


@pytest.mark.parametrize("imposter,why", [
    (route([("10.99.0.2", 1)], dst="10.0.0.0/8"), "destination 10.0.0.0/8"),
    (route([], type="blackhole"), "type blackhole"),
    (route([("10.99.0.2", 1)], metric=100), "metric 100"),
    (route([("10.99.0.2", 1)], tos=0x10), "tos"),
    (route([("fd99::2", 1)], family=6), "no IPv6 peers"),
])
def test_every_route_imposter_kind_is_removed(imposter, why):
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24"])
    state = KernelState(routes=(imposter, route([("10.99.0.2", 1)])), rules=(rule("192.0.2.0/24"),))
    p = plan(want, state, POLICY)
    assert [(op.kind, op.route) for op in p.operations] == [("delete_route", imposter)]
    assert why in p.operations[0].reason
    assert not plan(want, simulate(state, p.operations), POLICY)


def test_unreachable_peer_is_left_out_with_a_warning():
    want = intent([peer("10.99.0.2", 5), peer("10.55.0.1", 5, name="far-peer")], ["192.0.2.0/24"])
    state = KernelState(unreachable=frozenset({ip_address("10.55.0.1")}))
    p = plan(want, state, POLICY)
    assert kinds(p) == ["replace_route", "add_rule"]
    assert p.operations[0].nexthops == (Nexthop(ip_address("10.99.0.2"), 5),)
    assert len(p.warnings) == 1 and "10.55.0.1 (far-peer)" in p.warnings[0]
    after = simulate(state, p.operations)
    again = plan(want, after, POLICY)
    assert again.operations == () and again.warnings == p.warnings


def test_all_peers_unreachable_keeps_the_route_and_the_rules():
    want = intent([peer("10.99.0.2"), peer("10.99.0.3")], ["192.0.2.0/24"])
    existing = route([("10.99.0.2", 1), ("10.99.0.3", 1)])
    state = KernelState(routes=(existing,), rules=(rule("192.0.2.0/24"),),
                        unreachable=frozenset({ip_address("10.99.0.2"), ip_address("10.99.0.3")}))
    p = plan(want, state, POLICY)
    assert p.operations == ()
    assert any("existing route is kept" in w for w in p.warnings)
    # nothing there yet: rules are still added (they follow the intent), no route
    p = plan(want, KernelState(unreachable=state.unreachable), POLICY)
    assert kinds(p) == ["add_rule"]
    assert any("no route installed" in w for w in p.warnings)


def test_family_without_peers_gets_nothing_and_one_warning():
    want = intent([peer("10.99.0.2")], ["192.0.2.0/24", "2001:db8::/64", "2001:db8:1::/64"])
    state = KernelState(routes=(route([("fd99::2", 1)], family=6),),
                        rules=(rule("2001:db8::/64", family=6),))
    p = plan(want, state, POLICY)
    assert kinds(p) == ["replace_route", "add_rule", "delete_rule", "delete_route"]
    assert all(op.family == 4 for op in p.operations[:2])
    assert p.operations[2].rule.family == 6 and p.operations[3].route.family == 6
    assert [w for w in p.warnings if "IPv6" in w] == ["no IPv6 peers: 2 IPv6 prefix(es) get no rule and no route"]


def test_empty_intent_wipes_everything():
    state = KernelState(routes=(route([("10.99.0.2", 1)]), route([("fd99::2", 1)], family=6)),
                        rules=(rule("192.0.2.0/24"), rule("2001:db8::/64", family=6), rule(None)))
    p = plan(Intent(), state, POLICY)
    assert kinds(p) == ["delete_rule"] * 3 + ["delete_route"] * 2
    assert p.warnings == ()
    assert simulate(state, p.operations) == KernelState()
    assert not plan(Intent(), KernelState(), POLICY)


def test_order_never_leaves_a_gap_and_is_deterministic():
    want = intent([peer("10.99.0.3", 2), peer("10.99.0.2", 1), peer("fd99::2")],
                  ["198.51.100.0/24", "192.0.2.0/24", "2001:db8::/64"])
    state = KernelState(routes=(route([("10.99.0.9", 1)]), route([("10.99.0.2", 1)], dst="10.0.0.0/8")),
                        rules=(rule("203.0.113.0/24"), rule(None), rule("192.0.2.0/24", priority=5)))
    p = plan(want, state, POLICY)
    order = {"replace_route": 0, "add_rule": 1, "delete_rule": 2, "delete_route": 3}
    ranks = [order[k] for k in kinds(p)]
    assert ranks == sorted(ranks)
    assert kinds(p).count("add_rule") == 3 and kinds(p).count("delete_rule") == 3
    adds = [str(op.src) for op in p.operations if op.kind == "add_rule"]
    assert adds == ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64"]
    shuffled = KernelState(routes=tuple(reversed(state.routes)), rules=tuple(reversed(state.rules)))
    assert [str(op) for op in plan(want, shuffled, POLICY).operations] == [str(op) for op in p.operations]
    assert not plan(want, simulate(state, p.operations), POLICY)


def test_other_table_and_priority_from_policy():
    policy = RoutingPolicy(table=1000, priority=123, fwmark=None, fwmask=None,
                           destinations=(ip_network("10.0.0.0/8"),))
    want = intent([peer("10.99.0.2"), peer("fd99::2")], ["192.0.2.0/24", "2001:db8::/64"])
    p = plan(want, KernelState(), policy)
    assert [op.command() for op in p.operations] == [
        "ip -4 route replace 10.0.0.0/8 table 1000 nexthop via 10.99.0.2 weight 1",
        "ip -4 rule add from 192.0.2.0/24 lookup 1000 priority 123",
    ]
    assert any("no IPv6 destination" in w for w in p.warnings)


def test_whole_space_prefix_is_a_rule_without_from():
    want = intent([peer("10.99.0.2")], ["0.0.0.0/0"])
    p = plan(want, KernelState(), POLICY)
    assert p.operations[1].command() == "ip -4 rule add from all lookup 20 priority 20"
    assert not plan(want, simulate(KernelState(), p.operations), POLICY)


# -- peers that do not answer ARP/ND (their neighbour entry) --------------------------------

A4, B4, C4 = ip_address("10.99.0.2"), ip_address("10.99.0.3"), ip_address("10.99.0.4")
A6, B6 = ip_address("fd99::2"), ip_address("fd99::3")


def both_routes(v4=(("10.99.0.2", 1), ("10.99.0.3", 1)), v6=(("fd99::2", 1), ("fd99::3", 1))):
    routes = []
    if v4:
        routes.append(route(v4))
    if v6:
        routes.append(route(v6, family=6))
    return tuple(routes)


TWO_BY_TWO = intent([peer("10.99.0.2"), peer("10.99.0.3", name="r2"), peer("fd99::2"), peer("fd99::3", name="r2")],
                    ["192.0.2.0/24", "2001:db8::/64"])
RULES = (rule("192.0.2.0/24"), rule("2001:db8::/64", family=6))


def test_failed_peer_is_left_out_of_its_family_only_with_a_warning_naming_it():
    state = KernelState(both_routes(), RULES, neighbours={B6: "FAILED", A6: "REACHABLE", A4: "STALE"})
    p = plan(TWO_BY_TWO, state, POLICY)
    assert kinds(p) == ["replace_route"]
    assert p.operations[0].family == 6 and p.operations[0].nexthops == (Nexthop(A6, 1),)
    assert p.warnings == ("peer fd99::3 (r2) does not answer ARP/ND (neighbour entry failed); "
                          "left out of the IPv6 route until it does",)
    assert p.unusable_peers == {B6}
    after = simulate(state, p.operations)
    again = plan(TWO_BY_TWO, after, POLICY)
    assert again.operations == () and again.warnings == p.warnings


def test_incomplete_peer_in_the_route_stays_there():
    # a live nexthop's first resolution (or re-resolution) is not a failure
    state = KernelState(both_routes(), RULES, neighbours={B4: "INCOMPLETE", B6: "INCOMPLETE"})
    p = plan(TWO_BY_TWO, state, POLICY)
    assert p.operations == () and p.warnings == () and p.unusable_peers == frozenset()


def test_incomplete_peer_out_of_the_route_stays_out_so_speaker_retries_do_not_churn():
    # The dead peer's entry cycles FAILED -> INCOMPLETE -> FAILED as the speaker retries it:
    # the plan and its warning are the same at every step.
    state = KernelState(both_routes(v4=(("10.99.0.2", 1), ("10.99.0.3", 1))), RULES)
    plans = []
    for nud in ("FAILED", "INCOMPLETE", "FAILED", "INCOMPLETE"):
        state = dataclasses.replace(state, neighbours={B4: nud})
        p = plan(TWO_BY_TWO, state, POLICY)
        plans.append(p)
        state = simulate(state, p.operations)
    assert kinds(plans[0]) == ["replace_route"] and plans[0].operations[0].nexthops == (Nexthop(A4, 1),)
    assert all(p.operations == () and p.warnings == plans[0].warnings for p in plans[1:])
    assert all(p.unusable_peers == {B4} for p in plans)


def test_incomplete_peer_that_failed_before_is_left_out_even_from_the_route():
    # With IPv6 forwarding on, replies hashed to a dead nexthop restart its resolution at
    # once: the listing shows INCOMPLETE, only peer_health's history says it failed.
    state = KernelState(both_routes(), RULES, neighbours={B6: "INCOMPLETE"})
    silent = {B6: Verdict(Liveness.SILENT, "no-arp")}
    p = plan(TWO_BY_TWO, state, POLICY, silent)
    assert kinds(p) == ["replace_route"] and p.operations[0].nexthops == (Nexthop(A6, 1),)
    assert p.unusable_peers == {B6} and p.left_out == {B6: "no-arp"}
    # once the entry is valid again, peer_health says it answers
    state = dataclasses.replace(simulate(state, p.operations), neighbours={B6: "REACHABLE"})
    assert plan(TWO_BY_TWO, state, POLICY, {}).operations[0].nexthops == (Nexthop(A6, 1), Nexthop(B6, 1))


def test_incomplete_peer_joins_a_route_that_does_not_exist_yet():
    state = KernelState(rules=RULES, neighbours={B4: "INCOMPLETE"})
    p = plan(TWO_BY_TWO, state, POLICY)
    v4 = next(op for op in p.operations if op.kind == "replace_route" and op.family == 4)
    assert v4.nexthops == (Nexthop(A4, 1), Nexthop(B4, 1)) and p.unusable_peers == frozenset()


@pytest.mark.parametrize("nud", ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP", "NONE", None])
def test_a_left_out_peer_comes_back_when_its_entry_is_valid_again_or_gone(nud):
    state = KernelState(both_routes(v4=(("10.99.0.2", 1),)), RULES)
    state = dataclasses.replace(state, neighbours={} if nud is None else {B4: nud})
    p = plan(TWO_BY_TWO, state, POLICY)
    assert kinds(p) == ["replace_route"] and p.operations[0].nexthops == (Nexthop(A4, 1), Nexthop(B4, 1))
    assert p.warnings == () and p.unusable_peers == frozenset()


def test_every_peer_failed_keeps_the_route_as_it_is():
    # B failed first and was left out; now A fails too: A stays, B does not come back.
    state = KernelState(both_routes(v4=(("10.99.0.2", 1),)), RULES, neighbours={A4: "FAILED", B4: "INCOMPLETE"})
    p = plan(TWO_BY_TWO, state, POLICY)
    assert p.operations == ()
    assert p.warnings == ("every on-link IPv4 peer fails to answer ARP/ND: the route is kept as it is",)
    assert p.unusable_peers == {A4, B4}
    # a configuration change still applies to what is kept: new weight, removed peer gone
    state = dataclasses.replace(state, routes=both_routes(v4=(("10.99.0.2", 1), ("10.99.0.4", 1))),
                                neighbours={A4: "FAILED", B4: "FAILED", C4: "FAILED"})
    want = intent([peer("10.99.0.2", 9), peer("10.99.0.3"), peer("fd99::2"), peer("fd99::3")],
                  ["192.0.2.0/24", "2001:db8::/64"])
    p = plan(want, state, POLICY)
    assert kinds(p) == ["replace_route"] and p.operations[0].nexthops == (Nexthop(A4, 9),)


def test_every_peer_failed_and_no_route_installs_them_all():
    # the neighbour state is only a hint; with no route there is nothing to keep, and traffic
    # through the route makes the kernel resolve the peers again
    state = KernelState(rules=RULES, neighbours={A6: "FAILED", B6: "FAILED"})
    p = plan(TWO_BY_TWO, state, POLICY)
    v6 = next(op for op in p.operations if op.kind == "replace_route" and op.family == 6)
    assert v6.nexthops == (Nexthop(A6, 1), Nexthop(B6, 1))
    assert "every on-link IPv6 peer fails to answer ARP/ND: route installed with all of them" in p.warnings


def test_off_link_and_failed_peers_together():
    state = KernelState(both_routes(), RULES, unreachable=frozenset({A4}), neighbours={B4: "FAILED"})
    p = plan(TWO_BY_TWO, state, POLICY)
    # A is off-link (left out as before), B fails but is the last on-link peer: B is kept
    assert kinds(p) == ["replace_route"] and p.operations[0].nexthops == (Nexthop(B4, 1),)
    assert p.unusable_peers == {A4, B4}
    state = dataclasses.replace(state, neighbours={A4: "REACHABLE", B4: "FAILED"}, unreachable=frozenset())
    p = plan(TWO_BY_TWO, state, POLICY)
    assert p.operations[0].nexthops == (Nexthop(A4, 1),)


# -- learned-route liveness: the planner's side --------------------------------------------------

def test_a_peer_whose_bgp_session_dropped_is_left_out_though_it_answers_arp():
    state = KernelState(both_routes(), RULES, neighbours={A4: "REACHABLE", B4: "REACHABLE"})
    p = plan(TWO_BY_TWO, state, POLICY, {A4: Verdict(Liveness.SILENT, "bgp-down")})
    assert kinds(p) == ["replace_route"] and p.operations[0].nexthops == (Nexthop(B4, 1),)
    assert p.left_out == {A4: "bgp-down"} and p.unusable_peers == {A4}
    assert p.warnings == ("peer 10.99.0.2 has no route learned over BGP any more (its session is down); "
                          "left out of the IPv4 route until it does",)


def test_every_peer_bgp_down_keeps_the_route_as_it_is():
    verdicts = {A4: Verdict(Liveness.SILENT, "bgp-down"), B4: Verdict(Liveness.SILENT, "no-arp")}
    p = plan(TWO_BY_TWO, KernelState(both_routes(), RULES), POLICY, verdicts)
    assert p.operations == ()
    assert p.warnings == ("every on-link IPv4 peer is judged down (no ARP/ND answer, or BGP session down): "
                          "the route is kept as it is",)
    assert p.unusable_peers == {A4, B4}
