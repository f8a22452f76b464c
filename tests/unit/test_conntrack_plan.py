"""The mark field's arithmetic, the nft model's rendering and diff, and the conntrack return
path's plan (routers numbered and kept, routes withdrawn, a constant number of rules)."""

from __future__ import annotations

import ipaddress

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
    assert nft.element_interval({"range": ["10.0.0.1", "10.0.0.3"]}) == (int(ip("10.0.0.1")), int(ip("10.0.0.3")))
    assert nft.element_interval({"prefix": {"addr": "fd00::", "len": 120}}) == (int(ip("fd00::")), int(ip("fd00::ff")))


def test_nft_diff_of_a_listing_with_foreign_and_stray_elements():
    want = nft.desired_table([net("10.80.0.0/28")], ["eth0"], {K1: 1}, FIELD)
    listing = [{"table": {"family": "inet", "name": "nra"}},
               {"set": {"name": "lb4", "elem": [{"prefix": {"addr": "10.80.0.0", "len": 28}},
                                                {"range": ["10.90.0.0", "10.90.0.9"]}]}},
               {"set": {"name": "lb6"}}, {"set": {"name": "links", "elem": ["eth0"]}},
               {"map": {"name": "link_routers", "elem": [[{"concat": ["eth0", MAC1]}, {"goto": {"target": "save_1"}}]]}},
               {"map": {"name": "groups4"}}, {"map": {"name": "groups6"}}]
    for name, (hook, rules) in want.chains.items():
        listing.append({"chain": {"name": name, **({"type": hook[0], "hook": hook[1], "prio": hook[2],
                                                     "policy": hook[3]} if hook else {})}})
        listing += [{"rule": {"chain": name, "expr": __import__("json").loads(r)}} for r in rules]
    change = nft.diff(want, nft.parse_listing(listing))
    assert not change.rebuild and change.delete_prefixes[4] == ((int(ip("10.90.0.0")), int(ip("10.90.0.9"))),)
    assert change.describe() == ["nft delete element inet nra lb4 { 10.90.0.0-10.90.0.9 }"]
    assert not change.add_prefixes[4]
    assert nft.parse_listing([]) is None


def test_nft_operations_can_be_counted_like_the_others():
    # nra.daemon.contention keys applied operations in a dict: an nft change must be hashable, and the
    # same change the same operation
    from nra.kernel.operations import ApplyNft

    want = nft.desired_table([net("10.80.0.0/28")], ["eth0"], {K1: 1}, FIELD)
    ops = [ApplyNft(nft.diff(want, None), want, FIELD, None) for _ in range(2)]
    assert len({op: 0 for op in ops}) == 1 and ops[0] == ops[1]
    assert str(ops[0]).startswith("nft -f <table inet nra")
