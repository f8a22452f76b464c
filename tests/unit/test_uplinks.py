"""The uplink model: MetalLB's BGPPeer and BGPAdvertisement fields into resolved uplinks and
groups of pools by peer set, with their tables; conflicts refused by name, the rest kept."""

import ipaddress

import pytest

from nra.config.intent import PeerSpec
from nra.config.metallb import parse_legacy_config, parse_objects
from nra.config.uplinks import (
    MULTIHOP,
    ON_LINK,
    UNNUMBERED,
    Neighbour,
    NodeFacts,
    RouteLookup,
    Uplink,
    assign_tables,
    build_model,
    link_local_router,
    resolve_intent,
    resolve_peer,
    routers,
)
from tests.unit.test_metallb import advertisement, bgp_peer, pool

NODE = {"kubernetes.io/hostname": "prod-01", "rack": "r1"}
W = 7
TABLE = 20
TABLES = range(1000, 1064)


def ip(text):
    return ipaddress.ip_address(text)


def on_link(*pairs):
    """lookups for on-link peers: (address, link)"""
    return {a: RouteLookup(link) for a, link in pairs}


def model(objects, facts=None, tables=TABLES, keep=None):
    result = parse_objects(objects, NODE, W)
    return result, build_model(result.intent, facts or NodeFacts(), TABLE, tables, keep)


def groups_of(m):
    """pools -> (peer keys, vrf, table)"""
    return {g.pools: (set(g.peers), g.vrf, g.table) for g in m.groups}


TWO_UPLINKS = [
    bgp_peer("a1", "10.1.0.1"), bgp_peer("a2", "10.1.0.2"),
    bgp_peer("b1", "10.2.0.1"), bgp_peer("b2", "10.2.0.2"),
    pool("pool-a", "198.51.100.0/24"), pool("pool-b", "203.0.113.0/24"), pool("pool-a2", "192.0.2.0/24"),
    advertisement("to-a", ["pool-a", "pool-a2"], peers=["a1", "a2"]),
    advertisement("to-b", ["pool-b"], peers=["b1", "b2"]),
]
TWO_FACTS = NodeFacts(on_link(("10.1.0.1", "eth1"), ("10.1.0.2", "eth1"), ("10.2.0.1", "eth2"), ("10.2.0.2", "eth2")))


def test_advertisement_peers_split_the_pools_into_groups():
    result, m = model(TWO_UPLINKS, TWO_FACTS)
    assert result.problems == () and m.problems == () and m.waiting == ()
    groups = groups_of(m)
    assert set(groups) == {("pool-a", "pool-a2"), ("pool-b",)}  # same peer set: one group
    assert groups[("pool-a", "pool-a2")][0] == {"10.1.0.1", "10.1.0.2"}
    assert groups[("pool-b",)][0] == {"10.2.0.1", "10.2.0.2"}
    tables = {g.table for g in m.groups}
    assert len(tables) == 2 and tables <= set(TABLES)  # neither is every peer: both from the range
    by_pools = {g.pools: g for g in m.groups}
    assert [str(h) for h, _, _ in m.hops(by_pools[("pool-b",)], 4)] == ["10.2.0.1", "10.2.0.2"]
    assert {link for _, link, _ in m.hops(by_pools[("pool-a", "pool-a2")], 4)} == {"eth1"}
    assert m.hops(by_pools[("pool-b",)], 6) == ()


def test_every_pool_to_every_peer_keeps_the_one_table():
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24"), pool("q", "2001:db8::/64"), advertisement("all")]
    _, m = model(objects, TWO_FACTS)
    assert groups_of(m) == {("p", "q"): ({"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"}, "", TABLE)}


def test_legacy_config_is_one_group_in_the_one_table():
    legacy = parse_legacy_config("""
peers: [{peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2}, {peer-address: "fd00::1", peer-asn: 1, my-asn: 2}]
address-pools:
- {name: v4, protocol: bgp, addresses: [198.51.100.0/24]}
- {name: v6, protocol: bgp, addresses: ["2001:db8::/64"]}
""", NODE, W)
    m = build_model(legacy.intent, NodeFacts(on_link(("10.0.0.1", "eth0"), ("fd00::1", "eth0"))), TABLE, TABLES)
    assert groups_of(m) == {("v4", "v6"): ({"10.0.0.1", "fd00::1"}, "", TABLE)}


def test_two_advertisements_of_one_pool_take_the_union_of_their_peers():
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24"), advertisement("x", ["p"], peers=["a1"]),
                                 advertisement("y", ["p"], peers=["b2"])]
    _, m = model(objects, TWO_FACTS)
    assert groups_of(m)[("p",)][0] == {"10.1.0.1", "10.2.0.2"}


def test_advertisement_without_peers_goes_to_every_peer_even_beside_one_with_peers():
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24"), advertisement("x", ["p"], peers=["a1"]),
                                 advertisement("y", ["p"])]
    _, m = model(objects, TWO_FACTS)
    assert groups_of(m)[("p",)][2] == TABLE


def test_advertisement_node_selectors_pick_the_advertisements_of_this_node():
    here = [{"matchLabels": {"rack": "r1"}}]
    elsewhere = [{"matchLabels": {"rack": "r2"}}]
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24"),
                                 advertisement("here", ["p"], peers=["a1"], nodeSelectors=here),
                                 advertisement("there", ["p"], peers=["b1"], nodeSelectors=elsewhere)]
    _, m = model(objects, TWO_FACTS)
    assert groups_of(m)[("p",)][0] == {"10.1.0.1"}


def test_broken_advertisement_fields_are_named_and_skip_only_that_advertisement():
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24"), pool("q", "203.0.113.0/24"),
                                 advertisement("typo", ["p"], peers="a1"),
                                 advertisement("bad-selector", ["p"], nodeSelectors=[{"matchExpressions": [
                                     {"key": "a", "operator": "Is"}]}]),
                                 advertisement("ghost", ["q"], peers=["a1", "nobody"])]
    result, m = model(objects, TWO_FACTS)
    assert [p.where for p in result.problems] == ["BGPAdvertisement typo", "BGPAdvertisement bad-selector",
                                                  "BGPAdvertisement ghost"]
    assert "peers must be a list" in result.problems[0].message
    assert "invalid operator" in result.problems[1].message
    assert "'nobody', which does not exist" in result.problems[2].message
    assert groups_of(m) == {("q",): ({"10.1.0.1"}, "", groups_of(m)[("q",)][2])}


def test_ip_address_pool_selectors_and_aggregation_length():
    # aggregationLength changes what is announced, not the replies' source addresses
    objects = TWO_UPLINKS[:4] + [pool("p", "198.51.100.0/24", labels={"uplink": "b"}), pool("q", "203.0.113.0/24"),
                                 advertisement("sel", selectors=[{"matchLabels": {"uplink": "b"}}], peers=["b1"],
                                               aggregationLength=24)]
    result, m = model(objects, TWO_FACTS)
    assert {str(n) for n in result.intent.prefixes} == {"198.51.100.0/24"}
    assert groups_of(m)[("p",)][0] == {"10.2.0.1"}


def test_peer_node_selectors_leave_the_peer_out_of_every_group():
    objects = [bgp_peer("a1", "10.1.0.1"), bgp_peer("a2", "10.1.0.2", nodeSelectors=[{"matchLabels": {"rack": "r9"}}]),
               pool("p", "198.51.100.0/24"), advertisement("x", ["p"], peers=["a1", "a2"])]
    result, m = model(objects, TWO_FACTS)
    assert result.problems == ()  # a2 exists, it just does not peer with this node
    assert groups_of(m) == {("p",): ({"10.1.0.1"}, "", TABLE)}  # every peer of this node


def test_table_ids_are_stable_and_independent_of_order():
    sets = [frozenset({f"10.0.{i}.1", f"10.0.{i}.2"}) for i in range(40)]
    first = assign_tables(sets, frozenset(), TABLE, TABLES)
    again = assign_tables(list(reversed(sets)), frozenset(), TABLE, TABLES)
    assert first == again
    assert len(set(first.values())) == 40 and set(first.values()) <= set(TABLES)
    # a set already holding a table keeps it, even one a new set would hash onto
    moved = {sets[0]: first[sets[1]], sets[1]: first[sets[0]]}
    kept = assign_tables(sets, frozenset(), TABLE, TABLES, keep=moved)
    assert kept[sets[0]] == first[sets[1]] and kept[sets[1]] == first[sets[0]]


def test_a_full_table_range_refuses_the_group_by_name_and_keeps_the_rest():
    _, m = model(TWO_UPLINKS, TWO_FACTS, tables=range(1000, 1001))
    assert len(m.groups) == 1
    assert len(m.problems) == 1 and "no table left in UPLINK_TABLES (1000-1000)" in m.problems[0].message


def test_vrf_peers_are_a_group_of_their_own():
    objects = [bgp_peer("red1", "10.9.0.1", vrf="red"), bgp_peer("red2", "10.9.0.2", vrf="red"),
               bgp_peer("a1", "10.1.0.1"), pool("r", "198.51.100.0/24"), pool("d", "203.0.113.0/24"),
               advertisement("to-red", ["r"], peers=["red1", "red2"]), advertisement("to-a", ["d"], peers=["a1"])]
    facts = NodeFacts({"10.9.0.1@red": RouteLookup("eth9"), "10.9.0.2@red": RouteLookup("eth9"),
                       "10.1.0.1": RouteLookup("eth1")})
    _, m = model(objects, facts)
    groups = groups_of(m)
    assert groups[("r",)][:2] == ({"10.9.0.1@red", "10.9.0.2@red"}, "red")
    assert groups[("d",)] == ({"10.1.0.1"}, "", TABLE)  # every peer of the default VRF
    assert groups[("r",)][2] in TABLES
    assert {u.key: (u.vrf, u.link) for u in m.uplinks}["10.9.0.1@red"] == ("red", "eth9")


def test_same_address_in_two_vrfs_is_two_peers():
    result = parse_objects([bgp_peer("red", "10.0.0.1", vrf="red"), bgp_peer("blue", "10.0.0.1", vrf="blue")],
                           NODE, W)
    assert {s.key for s in result.intent.specs} == {"10.0.0.1@red", "10.0.0.1@blue"}


def test_a_pool_announced_to_peers_of_two_vrfs_is_refused_by_name_and_the_rest_kept():
    objects = [bgp_peer("red1", "10.9.0.1", vrf="red"), bgp_peer("a1", "10.1.0.1"),
               pool("mixed", "198.51.100.0/24"), pool("fine", "203.0.113.0/24"),
               advertisement("both", ["mixed"]), advertisement("one", ["fine"], peers=["a1"])]
    _, m = model(objects, NodeFacts({"10.9.0.1@red": RouteLookup("eth9"), "10.1.0.1": RouteLookup("eth1")}))
    assert [p.where for p in m.problems] == ["pool mixed"]
    assert "VRFs default, red" in m.problems[0].message and "10.9.0.1@red (red)" in m.problems[0].message
    assert set(groups_of(m)) == {("fine",)}


def test_multihop_peer_resolves_through_the_routing_table_and_follows_it():
    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), pool("p", "198.51.100.0/24"), advertisement("x")]
    before = NodeFacts({"192.0.2.9": RouteLookup("eth1", (ip("10.1.0.254"),))})
    after = NodeFacts({"192.0.2.9": RouteLookup("eth2", (ip("10.2.0.254"), ip("10.2.0.253")))})
    result, m1 = model(objects, before)
    assert next(iter(result.intent.specs)).multihop
    assert [(u.kind, u.link, [str(h) for h in u.next_hops]) for u in m1.uplinks] == [(MULTIHOP, "eth1", ["10.1.0.254"])]
    _, m2 = model(objects, after)
    assert [str(h) for h, _, _ in m2.hops(m2.groups[0], 4)] == ["10.2.0.253", "10.2.0.254"]
    assert m1.groups[0].table == m2.groups[0].table == TABLE  # the route changed, not the group


def test_a_multihop_peer_whose_gateway_is_a_peer_is_merged_into_one_next_hop():
    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True, labels={"metallb-nra/weight": "50"}),
               bgp_peer("r1", "10.1.0.1"), pool("p", "198.51.100.0/24"), advertisement("x")]
    facts = NodeFacts({"192.0.2.9": RouteLookup("eth1", (ip("10.1.0.1"),)), "10.1.0.1": RouteLookup("eth1")})
    result, m = model(objects, facts)
    assert m.problems == () and len(m.notes) == 1
    assert "peer loop: multihop peer reached through peer r1 (10.1.0.1)" in m.notes[0]
    assert groups_of(m) == {("p",): ({"10.1.0.1", "192.0.2.9"}, "", TABLE)}
    assert m.hops(m.groups[0], 4) == ((ip("10.1.0.1"), "eth1", 50),)  # once, the higher weight
    resolved = resolve_intent(result.intent, facts)
    assert [(str(p.address), p.weight, p.name) for p in resolved.peers_of(4)] == [("10.1.0.1", 50, "r1")]


def test_a_peer_with_no_route_waits_and_keeps_its_group():
    _, m = model(TWO_UPLINKS, NodeFacts(on_link(("10.1.0.1", "eth1"))))
    assert "peer a2: no route to 10.1.0.2" in m.waiting
    group = next(g for g in m.groups if "pool-a" in g.pools)
    assert set(group.peers) == {"10.1.0.1", "10.1.0.2"}
    assert [str(h) for h, _, _ in m.hops(group, 4)] == ["10.1.0.1"]


def test_unnumbered_peer_finds_the_routers_link_local_address():
    objects = [bgp_peer("p2p", interface="swp1", dualStackAddressFamily=True), pool("p", "198.51.100.0/24"),
               pool("q", "2001:db8::/64"), advertisement("x")]
    result, waiting = model(objects)
    spec = next(iter(result.intent.specs))
    assert (spec.address, spec.interface, spec.key, spec.dual_stack) == (None, "swp1", "%swp1", True)
    assert waiting.waiting == ("peer p2p: no router's link-local address seen on swp1 yet",)
    from_neighbours = NodeFacts(neighbours=(Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02"),
                                            Neighbour(ip("fe80::9"), "swp2", "02:00:00:00:00:09")))
    from_learned = NodeFacts(learned_hops={"swp1": (ip("fe80::2"),)})
    for facts in (from_neighbours, from_learned):
        _, m = model(objects, facts)
        (uplink,) = m.uplinks
        assert (uplink.kind, uplink.link, uplink.next_hops) == (UNNUMBERED, "swp1", (ip("fe80::2"),))
        # IPv4 prefixes through the IPv6 next hop (RFC 8950)
        assert m.hops(m.groups[0], 4) == m.hops(m.groups[0], 6) == ((ip("fe80::2"), "swp1", W),)


def test_unnumbered_without_dual_stack_carries_ipv6_only():
    spec = PeerSpec("p2p", None, W, interface="swp1")
    uplink = resolve_peer(spec, NodeFacts(learned_hops={"swp1": (ip("fe80::2"),)}))
    assert isinstance(uplink, Uplink) and uplink.hops_for(4) == () and uplink.hops_for(6) == (ip("fe80::2"),)


def test_the_address_label_wins_over_discovery_on_the_interface():
    objects = [bgp_peer("p2p", interface="swp1", labels={"metallb-nra/address": "fe80::7"}),
               pool("q", "2001:db8::/64"), advertisement("x")]
    _, m = model(objects, NodeFacts(neighbours=(Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02"),)))
    assert [(u.kind, u.link, u.next_hops) for u in m.uplinks] == [(UNNUMBERED, "swp1", (ip("fe80::7"),))]


@pytest.mark.parametrize("spec, message", [
    ({"interface": "swp1", "peerAddress": "10.0.0.1"}, "mutually exclusive"),
    ({"interface": "no/slash"}, "not an interface name"),
    ({"interface": "x" * 16}, "not an interface name"),
])
def test_bad_interface_fields_are_refused_by_name(spec, message):
    result = parse_objects([bgp_peer("bad", **spec), bgp_peer("good", "10.0.0.2")], NODE, W)
    assert [p.where for p in result.problems] == ["peer bad"] and message in result.problems[0].message
    assert {s.name for s in result.intent.specs} == {"good"}


def test_dual_stack_numbered_peer_uses_the_same_boxs_other_family_address():
    objects = [bgp_peer("a1", "10.1.0.1", dualStackAddressFamily=True), pool("q", "2001:db8::/64"), advertisement("x")]
    facts = NodeFacts(on_link(("10.1.0.1", "eth1")), neighbours=(
        Neighbour(ip("10.1.0.1"), "eth1", "02:00:00:00:00:01"), Neighbour(ip("fe80::1"), "eth1", "02:00:00:00:00:01"),
        Neighbour(ip("fe80::5"), "eth1", "02:00:00:00:00:05"), Neighbour(ip("fe80::1"), "eth2", "02:00:00:00:00:01")))
    _, m = model(objects, facts)
    (uplink,) = m.uplinks
    assert uplink.kind == ON_LINK and uplink.next_hops == (ip("10.1.0.1"), ip("fe80::1"))
    assert uplink.families == frozenset({4, 6}) and m.hops(m.groups[0], 6) == ((ip("fe80::1"), "eth1", W),)


def test_graceful_restart_is_part_of_the_peer():
    result = parse_objects([bgp_peer("gr", "10.0.0.1", enableGracefulRestart=True), bgp_peer("no", "10.0.0.2")],
                           NODE, W)
    assert {s.name: s.graceful_restart for s in result.intent.specs} == {"gr": True, "no": False}


def test_routers_are_told_apart_by_link_and_mac():
    a = Uplink("10.1.0.1", "a", ON_LINK, "eth1", "", W, (ip("10.1.0.1"),), frozenset({4}))
    b = Uplink("10.1.0.2", "b", ON_LINK, "eth1", "", W, (ip("10.1.0.2"),), frozenset({4}))
    c = Uplink("10.2.0.1", "c", ON_LINK, "eth2", "", W, (ip("10.2.0.1"),), frozenset({4}))
    a6 = Uplink("fd00::1", "a6", ON_LINK, "eth1", "", W, (ip("fd00::1"),), frozenset({6}))
    vmac = "00:00:5E:00:01:01"
    found, notes = routers([a, b, c, a6], {ip("10.1.0.1"): vmac, ip("10.1.0.2"): vmac, ip("10.2.0.1"): vmac,
                                           ip("fd00::1"): vmac})
    assert [(r.link, r.lladdr, r.peers) for r in found] == [
        ("eth1", vmac.lower(), ("10.1.0.1", "10.1.0.2", "fd00::1")), ("eth2", vmac.lower(), ("10.2.0.1",))]
    # the two IPv4 peers behind one MAC are named once; the IPv6 address of the box is not a pair
    assert notes == (f"peers a, b share link-layer address {vmac.lower()} on eth1: one router (a VRRP-style pair); "
                     "its table holds a multipath route via all of them",)


def test_rules_mode_plans_one_table_per_uplink_group_and_empties_those_no_group_uses():
    from nra.kernel.model import KernelRoute, KernelRule, KernelState, Nexthop
    from nra.kernel.operations import AddRule, DeleteRoute, DeleteRule, ReplaceRoute
    from nra.plan.planner import RoutingPolicy
    from nra.plan.return_path.rules import RulesReturnPath

    defaults = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    path = RulesReturnPath(RoutingPolicy(TABLE, 20, None, None, defaults), TABLES)
    assert path.reads.route_tables == TABLES
    split = parse_objects(TWO_UPLINKS, NODE, W).intent
    ops = path.plan(split, KernelState(), {}).operations
    tables = {str(op.src): op.table for op in ops if isinstance(op, AddRule)}
    table_a, table_b = tables["198.51.100.0/24"], tables["203.0.113.0/24"]
    assert tables["192.0.2.0/24"] == table_a != table_b and {table_a, table_b} <= set(TABLES)
    routes = {op.table: {str(h.gateway) for h in op.nexthops} for op in ops if isinstance(op, ReplaceRoute)}
    assert routes == {TABLE: {"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"},
                      table_a: {"10.1.0.1", "10.1.0.2"}, table_b: {"10.2.0.1", "10.2.0.2"}}
    # back to every pool for every peer: table A's route and rules go, TABLE_WEIGHT serves all
    every = parse_objects(TWO_UPLINKS[:6] + [advertisement("all")], NODE, W).intent
    old_route = KernelRoute(4, defaults[0], table_a, (Nexthop(ip("10.1.0.1"), W), Nexthop(ip("10.1.0.2"), W)))
    old_rule = KernelRule(4, ipaddress.ip_network("198.51.100.0/24"), 20, table_a, None, None)
    ops = path.plan(every, KernelState(rules=(old_rule,), router_routes=(old_route,)), {}).operations
    assert [type(op) for op in ops if op.__class__ in (DeleteRoute, DeleteRule)] == [DeleteRule, DeleteRoute]
    assert {op.table for op in ops if isinstance(op, (AddRule, ReplaceRoute))} == {TABLE}


def test_rules_mode_deletes_the_leftovers_of_other_settings_once_with_uplink_groups():
    from nra.kernel.model import KernelRule, KernelState
    from nra.kernel.operations import DeleteRule
    from nra.plan.planner import RoutingPolicy
    from nra.plan.return_path.rules import RulesReturnPath

    path = RulesReturnPath(RoutingPolicy(TABLE, 20, None, None, (ipaddress.ip_network("0.0.0.0/0"),)), TABLES)
    stale = KernelRule(4, ipaddress.ip_network("198.51.100.0/24"), 20, 77, None, None)
    ops = path.plan(parse_objects(TWO_UPLINKS, NODE, W).intent, KernelState(leftovers=(stale,)), {}).operations
    assert [op.rule for op in ops if isinstance(op, DeleteRule)] == [stale]


# -- resolve_intent: the return path's next hops -------------------------------------------------


def test_multihop_peer_becomes_the_gateways_of_the_nodes_route_to_it():
    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), bgp_peer("a1", "10.1.0.1"),
               pool("p", "198.51.100.0/24"), advertisement("x")]
    result = parse_objects(objects, NODE, W)
    assert {str(p.address) for p in result.intent.peers} == {"192.0.2.9", "10.1.0.1"}  # as configured
    facts = NodeFacts({"192.0.2.9": RouteLookup("eth1", (ip("10.1.0.254"), ip("10.2.0.254")), ("eth1", "eth2"))})
    resolved = resolve_intent(result.intent, facts)
    assert sorted((str(p.address), p.name) for p in resolved.peers) == [
        ("10.1.0.1", "a1"), ("10.1.0.254", "loop via 10.1.0.254"), ("10.2.0.254", "loop via 10.2.0.254")]
    (how,) = resolved.resolved
    assert (how.key, how.kind, how.how) == ("192.0.2.9", MULTIHOP, "via 10.1.0.254 (eth1), 10.2.0.254 (eth2)")
    # the route changes: so do the next hops; the same facts give an equal intent
    moved = resolve_intent(result.intent, NodeFacts({"192.0.2.9": RouteLookup("eth2", (ip("10.2.0.253"),))}))
    assert {str(p.address) for p in moved.peers} == {"10.1.0.1", "10.2.0.253"}
    assert resolve_intent(result.intent, facts) == resolved


def test_a_link_local_gateway_is_zoned_with_its_link():
    objects = [bgp_peer("loop", "2001:db8:ffff::9", ebgpMultiHop=True), pool("q", "2001:db8::/64"), advertisement("x")]
    result = parse_objects(objects, NODE, W)
    resolved = resolve_intent(result.intent, NodeFacts({"2001:db8:ffff::9": RouteLookup("eth3", (ip("fe80::1"),))}))
    assert [str(p.address) for p in resolved.peers] == ["fe80::1%eth3"]


def test_a_multihop_peer_not_resolved_yet_is_no_next_hop_and_says_why():
    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), bgp_peer("a1", "10.1.0.1"),
               pool("p", "198.51.100.0/24"), advertisement("x")]
    result = parse_objects(objects, NODE, W)
    why = "the node's route to 192.0.2.9 is in nra's own table 20 (a rule of nra's without a source?): not used"
    resolved = resolve_intent(result.intent, NodeFacts(unresolved={"192.0.2.9": why}))
    assert {str(p.address) for p in resolved.peers} == {"10.1.0.1"}
    assert [(r.kind, r.how) for r in resolved.resolved] == [("waiting", why)]


def test_unnumbered_dual_stack_peer_serves_ipv4_through_its_link_local_next_hop():
    objects = [bgp_peer("p2p", interface="swp1", dualStackAddressFamily=True), pool("p", "198.51.100.0/24"),
               pool("q", "2001:db8::/64"), advertisement("x")]
    result = parse_objects(objects, NODE, W)
    assert result.intent.peers == frozenset()  # before: nothing routed without the label
    resolved = resolve_intent(result.intent, NodeFacts(neighbours=(
        Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02", router=True),)))
    assert [(str(p.address), p.family) for p in resolved.peers_of(4)] == [("fe80::2%swp1", 4)]
    assert [(str(p.address), p.family) for p in resolved.peers_of(6)] == [("fe80::2%swp1", 6)]
    assert resolved.resolved[0].how == "fe80::2 (swp1): the router's link-local address; IPv4 via inet6"


def test_the_router_flag_picks_the_router_among_link_local_neighbours():
    two = (Neighbour(ip("fe80::2"), "swp1", "02:00:00:00:00:02"), Neighbour(ip("fe80::3"), "swp1", "02:00:00:00:00:03"))
    assert "2 link-local neighbours on swp1 (fe80::2, fe80::3) and none said it is a router" in \
        link_local_router("swp1", NodeFacts(neighbours=two))
    flagged = (two[0], Neighbour(ip("fe80::3"), "swp1", "02:00:00:00:00:03", router=True))
    assert link_local_router("swp1", NodeFacts(neighbours=flagged)) == (ip("fe80::3"),)
    assert link_local_router("swp1", NodeFacts(neighbours=two[:1])) == (ip("fe80::2"),)  # point-to-point: the one


def test_a_vrf_peer_is_resolved_but_stays_out_of_the_default_vrfs_next_hops():
    objects = [bgp_peer("red", "192.0.2.9", vrf="red", ebgpMultiHop=True), bgp_peer("a1", "10.1.0.1"),
               pool("p", "198.51.100.0/24"), advertisement("x", peers=["a1"]),
               pool("r", "203.0.113.0/24"), advertisement("y", ["r"], peers=["red"])]
    result = parse_objects(objects, NODE, W)
    resolved = resolve_intent(result.intent, NodeFacts({"192.0.2.9@red": RouteLookup("eth9", (ip("10.9.0.1"),))}))
    assert {str(p.address) for p in resolved.peers} == {"10.1.0.1"}
    assert [(r.key, r.vrf, r.how) for r in resolved.resolved] == [("192.0.2.9@red", "red", "via 10.9.0.1 (eth9)")]


def test_an_intent_without_multihop_or_unnumbered_peers_is_itself():
    result = parse_objects(TWO_UPLINKS, NODE, W)
    assert resolve_intent(result.intent, TWO_FACTS) is result.intent


def test_status_and_plan_show_each_group_its_vrf_and_how_each_peer_was_resolved():
    from nra.config.uplinks import uplink_report
    from nra.observe.status_report import resolution_lines

    objects = [bgp_peer("loop", "192.0.2.9", ebgpMultiHop=True), bgp_peer("a1", "10.1.0.1"),
               bgp_peer("red", "10.9.0.1", vrf="red"),
               pool("p", "198.51.100.0/24"), advertisement("x", ["p"], peers=["loop", "a1"]),
               pool("r", "203.0.113.0/24"), advertisement("y", ["r"], peers=["red"])]
    result = parse_objects(objects, NODE, W)
    resolved = resolve_intent(result.intent, NodeFacts({"192.0.2.9": RouteLookup("eth1", (ip("10.1.0.254"),)),
                                                        "10.9.0.1@red": RouteLookup("eth9")}))
    report = uplink_report(resolved, TABLE, TABLES)
    assert [(g["pools"], g["vrf"], g["table"]) for g in report] == [(["p"], None, TABLE), (["r"], "red", None)]
    assert resolution_lines(report) == [
        f"uplink group:    pools p; default vrf; table {TABLE}",
        "                 peer a1 (10.1.0.1): on-link 10.1.0.1",
        "                 peer loop (192.0.2.9): multihop via 10.1.0.254 (eth1)",
        "uplink group:    pools r; vrf red; not programmed",
        "                 peer red (10.9.0.1@red): on-link 10.9.0.1 (eth9)"]
