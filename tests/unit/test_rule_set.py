"""The rules' view held as bytes (nra.kernel.rule_set): a rule's template and member give
back its exact message, the view's sets are copied only when someone else holds them, and
the rules return path's diff over members plans what the diff over decoded rules plans."""

from __future__ import annotations

import random
import socket
import struct
from ipaddress import ip_address, ip_network

from nra.config.intent import Intent, Peer
from nra.kernel.codec import (
    FIB_RULE_HDR,
    FR_ACT_TO_TBL,
    FRA_DST,
    FRA_FWMARK,
    FRA_FWMASK,
    FRA_IIFNAME,
    FRA_PRIORITY,
    FRA_PROTOCOL,
    FRA_SRC,
    FRA_SUPPRESS_PREFIXLEN,
    FRA_TABLE,
    U32,
    attribute,
    decode_rule,
)
from nra.kernel.model import NRA_PROTOCOL, rule_key
from nra.kernel.rule_set import FOREIGN, LEFTOVER, OURS, Members, RuleBook, RuleSet, member_of, prefix_of
from nra.plan.planner import PlanSteps, RoutingPolicy, rule_diff
from nra.plan.return_path.rules import (
    OWN_PREFIXES_MIN,
    desired_rules,
    rule_set_diff,
    shared_desired,
    updated_rules,
)

POLICY = RoutingPolicy(table=20, priority=20, destinations=(ip_network("0.0.0.0/0"), ip_network("::/0")))


def body(src: str | None, table: int = 20, priority: int = 20, protocol: int | None = NRA_PROTOCOL,
         fwmark: int | None = None, fwmask: int | None = None, iif: str | None = None, dst: str | None = None) -> bytes:
    """A rule's message body laid out as the kernel lists it (fib_nl_fill_rule's order)."""
    net = ip_network(src) if src else None
    to = ip_network(dst) if dst else None
    family = socket.AF_INET6 if (net or to) and (net or to).version == 6 else socket.AF_INET
    data = FIB_RULE_HDR.pack(family, to.prefixlen if to else 0, net.prefixlen if net else 0, 0,
                             table if table < 256 else 252, 0, 0, FR_ACT_TO_TBL, 0)
    data += attribute(FRA_TABLE, U32.pack(table)) + attribute(FRA_SUPPRESS_PREFIXLEN, U32.pack(0xFFFFFFFF))
    if iif:
        data += attribute(FRA_IIFNAME, iif.encode() + b"\0")
    data += attribute(FRA_PRIORITY, U32.pack(priority))
    if fwmark is not None:
        data += attribute(FRA_FWMARK, U32.pack(fwmark))
    if fwmask is not None:
        data += attribute(FRA_FWMASK, U32.pack(fwmask))
    if protocol is not None:
        data += attribute(FRA_PROTOCOL, bytes([protocol]))
    if to:
        data += attribute(FRA_DST, to.network_address.packed)
    if net and net.prefixlen:
        data += attribute(FRA_SRC, net.network_address.packed)
    return data


BODIES = [body("192.0.2.0/24"), body("198.51.100.7/32"), body("2001:db8::/64"), body(None),
          body("203.0.113.0/24", iif="eth1"), body("203.0.113.0/24", fwmark=0x100, fwmask=0xff00),
          body("10.0.0.0/8", dst="10.1.0.0/16"), body("10.0.0.0/8", dst="10.1.2.3/32"),
          body("192.0.2.0/24", protocol=None), body("192.0.2.0/24", table=77), body("192.0.2.0/24", table=100000)]


def test_a_template_and_member_give_back_the_exact_message_and_rule():
    book = RuleBook(20, (100000,))
    for data in BODIES:
        shape, member = book.split(data)
        assert shape.body(member) == data
        assert shape.decode(member) == decode_rule(data) and shape.decode(member).wire == data
        assert member == member_of(decode_rule(data).src)


def test_rules_of_one_shape_share_one_template_and_are_ints():
    book = RuleBook(20)
    nets = [f"100.64.{i >> 6}.{(i & 63) * 4}/30" for i in range(1000)] + ["2001:db8::/64", "2001:db8:1::/48"]
    for net in nets:
        book.add(body(net), dumped=True)
    rules, leftovers = book.snapshot()
    groups = list(rules.groups())
    assert sorted((s.rule.family, s.kind, len(m)) for s, m in groups) == [(4, OURS, 1000), (6, OURS, 2)]
    assert book.templates() == 2 and leftovers == ()
    assert {m for _, members in groups for m in members} == {member_of(ip_network(n)) for n in nets}
    assert sorted(str(r.src) for r in rules) == sorted(nets) and len(rules) == 1002
    assert rules.tables() == {20} and rules.families() == {4: 1000, 6: 2}


def test_a_guessed_layout_is_only_taken_when_the_bytes_match_a_walked_template():
    # equal lengths, different layouts: a source (FRA_SRC) and a destination (FRA_DST) of 4 bytes
    book = RuleBook(20)
    with_src, with_dst = body("192.0.2.0/24"), body(None, dst="192.0.2.0/24")
    assert len(with_src) == len(with_dst)
    for data in (with_src, with_dst, with_src, with_dst):
        shape, member = book.split(data)
        assert shape.body(member) == data and shape.decode(member) == decode_rule(data)


def test_owners_leftovers_and_anyone_elses_rules():
    book = RuleBook(20, (100,))
    assert book.add(body("192.0.2.0/24"))[0].kind == OURS
    assert book.add(body("192.0.2.0/24", table=100))[0].kind == OURS
    assert book.add(body("192.0.2.0/24", table=77))[0].kind == LEFTOVER  # nra's protocol elsewhere
    assert book.add(body("192.0.2.0/24", table=77, protocol=None)) is None  # anyone else's elsewhere
    assert book.split(body(None, table=254, protocol=None))[0].kind == FOREIGN
    rules, leftovers = book.snapshot()
    assert sorted(r.table for r in rules) == [20, 100] and [r.table for r in leftovers] == [77]
    assert rules.of_tables((100,)).tables() == {100} and len(rules.of_tables((100,))) == 1
    book.discard(body("192.0.2.0/24", table=77))
    assert book.snapshot()[1] == ()


def test_a_read_never_sees_a_later_change_and_a_change_copies_no_base():
    book = RuleBook(20)
    nets = [f"100.64.0.{i * 4}/30" for i in range(50)]
    for net in nets:
        book.add(body(net), dumped=True)
    held, _ = book.snapshot()
    [(_, first)] = held.groups()
    book.add(body("198.51.100.0/24"))
    book.discard(body(nets[0]))
    assert sorted(str(r.src) for r in held) == sorted(nets)  # the read as it was
    now, _ = book.snapshot()
    [(_, members)] = now.groups()
    assert members.base is first.base and len(first.base) == 50  # one base, two changes beside it
    assert set(members) == {member_of(ip_network(n)) for n in nets[1:] + ["198.51.100.0/24"]}
    assert sorted(str(r.src) for r in now) == sorted(nets[1:] + ["198.51.100.0/24"])
    book.add(body(nets[0]))
    book.discard(body("198.51.100.0/24"))  # undone: nothing beside the base
    [(_, back)] = book.snapshot()[0].groups()
    assert back.base is first.base and not back.added and not back.removed


def test_many_changes_make_a_new_base():
    book = RuleBook(20)
    nets = [f"100.64.{i >> 6}.{(i & 63) * 4}/30" for i in range(4096)]
    for net in nets:
        book.add(body(net), dumped=True)
    [(_, first)] = book.snapshot()[0].groups()
    for net in nets[::2]:
        book.discard(body(net))
    [(_, after)] = book.snapshot()[0].groups()
    assert after.base is not first.base and not after.added and not after.removed and len(after) == 2048
    assert len(first) == 4096


def test_duplicates_a_full_read_finds_go_first():
    book = RuleBook(20)
    book.add(body("192.0.2.0/24"), dumped=True)
    book.add(body("192.0.2.0/24"), dumped=True)
    rules, _ = book.snapshot()
    assert len(rules) == 2 and rules.duplicates == (body("192.0.2.0/24"),)
    book.discard(body("192.0.2.0/24"))
    assert [str(r.src) for r in book.snapshot()[0]] == ["192.0.2.0/24"]
    book.discard(body("192.0.2.0/24"))
    assert len(book.snapshot()[0]) == 0


def test_an_interrupted_dump_is_not_counted_twice():
    book = RuleBook(20)
    for data in (body("192.0.2.0/24"), body("198.51.100.0/24")):
        book.add(data, dumped=True)
    other = RuleBook(20)
    other.add(body("2001:db8::/64"), dumped=True)
    book.merge(other)
    assert sorted(str(r.src) for r in book.snapshot()[0]) == ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64"]


def test_members_and_prefixes():
    for net in ("192.0.2.0/24", "0.0.0.0/0", "2001:db8::/64", "::/0", "198.51.100.7/32"):
        network = ip_network(net)
        assert prefix_of(network.version, member_of(network)) == network
    assert member_of(None) == member_of(ip_network("0.0.0.0/0")) == 0


def _random_rules(rng: random.Random) -> list[bytes]:
    nets = [f"10.{rng.randrange(4)}.{rng.randrange(4)}.0/24" for _ in range(12)] + ["2001:db8::/64", "2001:db8:1::/64"]
    out = []
    for net in nets:
        kind = rng.randrange(8)
        out.append(body(net, priority=21 if kind == 1 else 20, fwmark=0x10 if kind == 2 else None,
                        fwmask=0xff if kind == 2 else None, iif="eth1" if kind == 3 else None,
                        protocol=None if kind == 4 else NRA_PROTOCOL))
    if rng.random() < 0.3:
        out.append(body(None))  # from all, lookup 20
    return out


def test_the_diff_over_members_plans_what_the_diff_over_decoded_rules_plans():
    rng = random.Random(19)
    for _ in range(200):
        bodies = _random_rules(rng)
        book = RuleBook(20)
        for data in bodies:
            book.add(data, dumped=True)
        rules, _ = book.snapshot()
        want = {ip_network(f"10.{rng.randrange(4)}.{rng.randrange(4)}.0/24") for _ in range(8)}
        want |= {ip_network("2001:db8::/64")} if rng.random() < 0.5 else set()
        want |= {ip_network("0.0.0.0/0")} if rng.random() < 0.2 else set()
        families = frozenset(rng.choice([{4}, {4, 6}, {6}]))
        desired = desired_rules(Intent(frozenset(), frozenset(want)))

        new, old = PlanSteps(), PlanSteps()
        missing = rule_set_diff(new, rules, desired, POLICY, families)
        wanted = {rule_key(p.version, p, POLICY.priority, POLICY.table, POLICY.fwmark, POLICY.effective_fwmask): p
                  for p in want if p.version in families}
        expected = rule_diff(old, [decode_rule(b) for b in bodies], wanted, POLICY, families)
        assert sorted(map(str, missing)) == sorted(map(str, expected))
        shown = sorted((op.command(), op.reason) for op in new.rule_deletes)
        assert shown == sorted((op.command(), op.reason) for op in old.rule_deletes)
        # (which copy of a duplicate stays may differ: the first listed, the first template)
        assert sorted(op.rule.wire for op in new.rule_deletes if op.reason != "duplicate") == sorted(
            op.rule.wire for op in old.rule_deletes if op.reason != "duplicate")
        loose = PlanSteps()  # decoded rules given as such (the fake kernel's): the same plan
        assert sorted(map(str, rule_set_diff(loose, RuleSet.of(decode_rule(b) for b in bodies), desired, POLICY,
                                             families))) == sorted(map(str, expected))
        assert sorted((op.command(), op.reason) for op in loose.rule_deletes) == shown


def test_the_desired_members_share_the_views_base_and_a_change_copies_none():
    book = RuleBook(20)
    nets = [ip_network(f"100.64.0.{i * 4}/30") for i in range(50)]
    for net in nets:
        book.add(body(str(net)), dumped=True)
    rules, _ = book.snapshot()
    desired = desired_rules(Intent(frozenset(), frozenset(nets)))
    shared = shared_desired(desired, rules, POLICY)
    [(_, members)] = rules.groups()
    assert shared[4] is members and shared[6] is desired[6]
    new = ip_network("198.18.0.0/30")
    more = updated_rules(shared, frozenset(nets), frozenset(nets[1:] + [new]))
    assert more[4].base is members.base and len(members) == 50 and len(more[4]) == 50  # (nothing copied)
    assert member_of(new) in more[4] and member_of(nets[0]) not in more[4]
    assert set(more[4]) == {member_of(n) for n in nets[1:] + [new]}
    assert more[4].missing_from(members) == {member_of(new)} and more[4].unwanted_in(members) == {member_of(nets[0])}
    book.add(body(str(new)))  # the kernel's echo: beside the same base
    book.discard(body(str(nets[0])))
    again, _ = book.snapshot()
    [(_, now)] = again.groups()
    assert now.base is members.base and not more[4].missing_from(now) and not more[4].unwanted_in(now)
    assert shared_desired(more, again, POLICY)[4] is more[4]  # (already over the same base)
    assert updated_rules(more, frozenset(nets[1:] + [new]), frozenset(nets[1:] + [new]))[4] is more[4]
    other = shared_desired(desired, RuleSet.of(decode_rule(body(str(n))) for n in nets), POLICY)
    assert other == desired  # loose rules: nothing shared


def test_members_changed_back_and_forth():
    base = {1, 2, 3}
    m = Members(base).changed({2}, {4})
    assert set(m) == {1, 3, 4} and len(m) == 3
    back = m.changed({4}, {2})
    assert set(back) == {1, 2, 3} and not back.added and not back.removed and back.base is base
    assert m.missing_from({1, 2}) == {3, 4} and m.unwanted_in({1, 2, 5}) == {2, 5}


def test_struct_layout_of_the_header():
    assert FIB_RULE_HDR.size == 12 and struct.calcsize("=BBBBBBBBI") == 12
    assert FRA_SRC == 2 and FRA_DST == 1


def test_many_missing_rules_are_the_intents_own_prefixes_not_copies():
    nets = [ip_network(f"100.{64 + i // 16384}.{(i // 64) % 256}.{(i % 64) * 4}/30") for i in range(OWN_PREFIXES_MIN)]
    extra = ip_network("2001:db8::/64")
    intent = Intent(frozenset(), frozenset(nets + [extra]))
    desired = desired_rules(intent)
    book = RuleBook(20)
    book.add(body(str(nets[0])), dumped=True)  # one already there
    rules, _ = book.snapshot()
    given = nets[1:]  # (the IPv6 prefix not given: its member is made into a network)
    missing = rule_set_diff(PlanSteps(), rules, desired, POLICY, frozenset({4, 6}), given)
    assert sorted(missing, key=str) == sorted(nets[1:] + [extra], key=str)
    mine = {id(p) for p in given}
    assert sum(id(p) in mine for p in missing) == len(given)  # the very objects given, no copy
    few = rule_set_diff(PlanSteps(), rules, desired_rules(Intent(frozenset(), frozenset(nets[:10]))), POLICY,
                        frozenset({4}), nets[:10])
    assert sorted(few, key=str) == sorted(nets[1:10], key=str)  # (below the threshold: made from members)


def test_the_view_adopts_the_planners_equal_set_and_never_changes_it():
    nets = [ip_network(f"100.64.0.{i * 4}/30") for i in range(50)]
    desired = desired_rules(Intent(frozenset(), frozenset(nets)))
    mine = desired[4].base
    book = RuleBook(20)
    book.expect(body(str(nets[0])))  # (the shape and group made before the write)
    assert book.templates() == 1
    for net in nets[:-1]:
        book.add(body(str(net)))
    assert not book.adopt(mine)  # one rule not notified yet: not equal, not adopted
    book.add(body(str(nets[-1])))
    book.add(body("203.0.113.0/24", table=99))  # anyone else's elsewhere: no matter
    assert book.adopt(mine)
    [(_, members)] = book.snapshot()[0].groups()
    assert members.base is mine and not members.added and not members.removed
    book.add(body("100.64.1.0/30"))
    book.discard(body(str(nets[0])))
    assert mine == {member_of(n) for n in nets}  # the planner's set is never changed
    [(_, members)] = book.snapshot()[0].groups()
    assert set(members) == {member_of(n) for n in nets[1:]} | {member_of(ip_network("100.64.1.0/30"))}
    assert not book.adopt(mine)  # (no longer equal)
    # the plan carries the desired sets; its intent's members, as one set per family
    from nra.kernel.model import KernelState
    from nra.plan.return_path.rules import plan
    planned = plan(Intent(frozenset(), frozenset(nets)), KernelState(), POLICY, desired=desired)
    assert planned.rule_members == (mine,)


def test_the_plans_adds_come_in_the_planners_order_without_sorting_them_again():
    from nra.kernel.model import KernelState
    from nra.kernel.operations import AddRule
    from nra.plan.return_path.rules import plan
    rng = random.Random(7)
    nets = {ip_network(f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.0/{rng.choice([16, 24, 30])}",
                       strict=False) for _ in range(3000)}
    nets |= {ip_network(f"2001:db8:{rng.randrange(65536):x}::/{rng.choice([48, 64])}", strict=False) for _ in range(300)}
    nets |= {ip_network("0.0.0.0/0"), ip_network("::/0")}
    for policy in (POLICY, RoutingPolicy(table=20, priority=20, destinations=POLICY.destinations, fwmark=0x10)):
        peers = frozenset({Peer(ip_address("10.99.0.2"), 1), Peer(ip_address("fd99::2"), 1)})
        ops = plan(Intent(peers, frozenset(nets)), KernelState(), policy).operations
        adds = [op for op in ops if isinstance(op, AddRule)]
        assert len(adds) == len(nets)
        assert adds == sorted(adds, key=AddRule.sort_key)
        assert [op.src for op in adds[:1]] == [None] and adds[-1].family == 6
