"""nra's nftables table against the real kernel, in throwaway namespaces: the round trip,
drift of every kind repaired by the planned change, a router's link-layer address changing,
notifications that name who touched the table, and never another table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json

import pytest

from nra.kernel import nft_netlink as nl
from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field
from nra.kernel.nft import NftState
from nra.kernel.socket import open_netlink
from testbed.netns import NetNS
from tests.wait import holds_async, wait_for_async

pytestmark = pytest.mark.kernel

FIELD = parse_mark_field("0x2/0x3e")
PREFIXES = [ipaddress.ip_network(p) for p in ("10.80.0.0/28", "10.81.0.5/32", "fd00:80::/120", "fd00:81::7/128",
                                              "10.84.0.0/28", "fd00:84::/120")]
ROUTERS = {("eth0", "02:00:00:00:00:01"): 1, ("eth0", "02:00:00:00:00:02"): 2}
# two uplink groups' fallbacks (indexes 3 and 4): a connection from an unknown router goes by its prefix's group.
# The rest (10.84.0.0/28, fd00:84::/120, fd00:81::7) are in no group: the prefix sets hold those alone
GROUPS = {3: [PREFIXES[0], PREFIXES[2]], 4: [PREFIXES[1]]}


def _set_of(prefix: str) -> str:
    """The prefix set holding one prefix of one block (nft_table.SHARDS), or a wide one."""
    net = ipaddress.ip_network(prefix)
    return nft.prefix_set(net.version, (int(net.network_address), int(net.broadcast_address)))


def _map_of(prefix: str) -> str:
    """The group map holding one prefix of one block, or a wide one (placed_groups)."""
    net = ipaddress.ip_network(prefix)
    (name,) = nft.placed_groups(net.version, [(int(net.network_address), int(net.broadcast_address), 0)])
    return name


#: the sets of the prefixes the drifts below touch (10.84.0.0/28 and fd00:84::/120 are nra's)
LB4_84, LB6_84, LB4_192, LB6_DB8 = (_set_of(p) for p in ("10.84.0.0/28", "fd00:84::/120", "192.0.2.0/24",
                                                         "2001:db8::/64"))
#: the group maps of 10.81.0.5 (group 4's) and of 2001:db8::/64 (a wide one's: groups6)
GROUPS4_81, GROUPS6_DB8 = _map_of("10.81.0.5"), _map_of("2001:db8::/64")


def desired(prefixes=PREFIXES, links=("eth0",), routers=ROUTERS, groups=None) -> nft.NftTable:
    if groups is None:
        groups = {i: [p for p in g if p in prefixes] for i, g in GROUPS.items()}
    return nft.desired_table(prefixes, links, routers, FIELD, groups=groups)


def reconcile(owner: NftState, want: nft.NftTable) -> nft.NftChange:
    current = owner.read_blocking()
    change = nft.diff(want, current)
    owner.apply_blocking(change, want, FIELD, current)
    return change


def listed(ns: NetNS, *what: str) -> list[dict]:
    return json.loads(ns.exec(["nft", "-j", "list", *what]).stdout)["nftables"]


@pytest.fixture
def owner(netns: NetNS):
    o = NftState(netns.name)
    try:
        yield o
    finally:
        o.close()


def test_round_trip_then_nothing_to_do_and_no_reread(netns, owner):
    first = reconcile(owner, desired())
    assert first.rebuild and first.reason == "table missing"
    assert not nft.diff(desired(), owner.read_blocking())
    # the kernel lists exactly what the model rendered (a fresh owner reads it all)
    fresh = NftState(netns.name)
    try:
        assert fresh.read_blocking() == desired()
    finally:
        fresh.close()
    reads = owner.full_reads
    owner.read_blocking()
    assert owner.full_reads == reads, "an unchanged ruleset generation must not cost a listing"


@pytest.mark.parametrize("drift, expect", [
    ("delete table inet nra", "rebuild"),
    ("flush chain inet nra classify", "rewrite classify"),
    (f"add rule inet nra in_{LB4_84} accept", f"rewrite in_{LB4_84}"),
    ("add chain inet nra extra", "drop chain extra"),
    ("add set inet nra extra { type ipv4_addr; }", "drop set extra"),
    (f"flush chain inet nra in_{LB6_84}; delete set inet nra {LB6_84}", f"remake {LB6_84}"),
    ("flush chain inet nra output; delete chain inet nra output; "
     "add chain inet nra output { type filter hook output priority 0; }", "rewrite output"),
    (f"delete element inet nra {LB4_84} {{ 10.84.0.0/28 }}", "add"),
    (f"delete element inet nra {LB6_84} {{ fd00:84::/120 }}", "add"),
    (f"add element inet nra {LB4_192} {{ 192.0.2.0/24 }}", "delete"),
    (f"add element inet nra {LB6_DB8} {{ 2001:db8::/64 }}", "delete"),
    ("delete element inet nra link_routers { \"eth0\" . 02:00:00:00:00:02 }", "routers"),
    ("add element inet nra link_routers { \"eth1\" . 02:00:00:00:00:02 : goto save_2 }", "routers gone"),
    (f"delete element inet nra {GROUPS4_81} {{ 10.81.0.5 }}", "groups add"),
    (f"add element inet nra {GROUPS6_DB8} {{ 2001:db8::/64 : goto group_1 }}", "groups delete"),
    # one of nra's group elements moved to another block's map: deleted there, added back
    (f"delete element inet nra {GROUPS4_81} {{ 10.81.0.5 }}; "
     f"add element inet nra groups4_9 {{ 10.81.0.5 : goto group_4 }}", "groups moved"),
    ("add element inet nra links { \"eth9\" }", "links"),
])
def test_drift_is_seen_and_repaired(netns, owner, drift, expect):
    reconcile(owner, desired())
    netns.nft(drift)
    change = reconcile(owner, desired())  # the generation moved: read in full
    assert change, drift
    if expect == "rebuild":
        assert change.rebuild
    elif expect.startswith("rewrite"):  # repaired in place, the sets untouched
        assert not change.rebuild and change.rewrite == (expect.split()[1],) and not any(change.add_prefixes.values())
    elif expect.startswith("drop"):
        assert not change.rebuild and change.drop == (expect.split(" ", 1)[1],) and not change.rewrite
    elif expect.startswith("remake"):
        assert not change.rebuild and change.remake_sets == (LB6_84,) and change.rewrite == (f"in_{LB6_84}",)
        assert change.add_prefixes[6] and not change.add_prefixes[4]
    elif expect == "add":
        assert not change.rebuild and any(change.add_prefixes.values()) and not any(change.delete_prefixes.values())
    elif expect == "delete":
        assert not change.rebuild and any(change.delete_prefixes.values()) and not any(change.add_prefixes.values())
    elif expect == "routers":
        assert change.set_routers == {("eth0", "02:00:00:00:00:02"): 2}
    elif expect == "routers gone":
        assert change.delete_routers == (("eth1", "02:00:00:00:00:02"),) and not change.set_routers
    elif expect == "groups add":
        element = (int(ipaddress.ip_address("10.81.0.5")),) * 2 + (4,)
        assert change.add_groups[4] == (element,)
        assert nft.group_pieces(change) == ({}, {GROUPS4_81: (element,)})
        assert not any(change.delete_groups.values()) and not any(change.add_prefixes.values())
    elif expect == "groups delete":
        assert len(change.delete_groups[6]) == 1 and not any(change.add_groups.values())
        assert list(nft.group_pieces(change)[0]) == [GROUPS6_DB8]
    elif expect == "groups moved":
        assert GROUPS4_81 != "groups4_9" and not any(change.add_groups.values()) and not any(change.delete_groups.values())
        element = (int(ipaddress.ip_address("10.81.0.5")),) * 2 + (4,)
        assert nft.group_pieces(change) == ({"groups4_9": (element,)}, {GROUPS4_81: (element,)})
    else:
        assert change.delete_links == ("eth9",)
    owner.forget()
    assert owner.read_blocking() == desired()


def test_table_flags_are_read_back_and_cleared_in_place(netns, owner):
    """A dormant table has every chain off: it must be seen (the listing's JSON does not say
    it: nft 1.0.6 prints garbage there) and repaired without a rebuild."""
    reconcile(owner, desired())
    netns.exec(["nft", "add table inet nra { flags dormant; }"])
    current = owner.read_blocking()
    assert current is not None and current.flags == 1
    change = nft.diff(desired(), current)
    assert change and not change.rebuild and change.table_flags == 0
    assert change.describe() == ["nft add table inet nra  # table flags: dormant -> none"]
    owner.apply_blocking(change, desired(), FIELD, current)
    assert "flags dormant" not in netns.exec(["nft", "list", "table", "inet", "nra"]).stdout
    owner.forget()
    assert owner.read_blocking() == desired()


def test_element_changes_are_one_batch_and_exact(netns, owner):
    reconcile(owner, desired())
    smaller = [p for p in PREFIXES if str(p) != "10.84.0.0/28"] + [ipaddress.ip_network("10.84.0.0/29")]
    change = reconcile(owner, desired(smaller))
    assert not change.rebuild
    assert [nft.interval_text(4, i) for i in change.add_prefixes[4]] == ["10.84.0.0/29"]
    assert [nft.interval_text(4, i) for i in change.delete_prefixes[4]] == ["10.84.0.0/28"]
    owner.forget()
    assert owner.read_blocking().prefixes[4] == desired(smaller).prefixes[4]  # (the prefixes of no group)


def test_a_routers_new_link_layer_address_keeps_its_mark(netns, owner):
    reconcile(owner, desired())
    moved = {("eth0", "02:00:00:00:00:01"): 1, ("eth0", "02:00:00:00:00:99"): 2}
    change = reconcile(owner, desired(routers=moved))
    assert not change.rebuild
    assert change.delete_routers == (("eth0", "02:00:00:00:00:02"),)
    assert change.set_routers == {("eth0", "02:00:00:00:00:99"): 2}
    owner.forget()
    assert owner.read_blocking().routers == moved


def test_one_mac_on_two_links_is_two_routers_and_groups_take_adjacent_intervals(netns, owner):
    """The map's key is (ingress interface, MAC): one MAC on two uplinks holds two marks. Two
    groups' adjacent intervals (10.90.0.0/24 and 10.90.1.0/24) share a boundary key in the
    kernel's interval tree (one's end, the other's start): both held exactly; a group moving to
    another index is one batch (delete, then add)."""
    two = {("eth1", "02:00:00:00:00:07"): 1, ("eth2", "02:00:00:00:00:07"): 2}
    a, b = ipaddress.ip_network("10.90.0.0/24"), ipaddress.ip_network("10.90.1.0/24")
    want = desired(PREFIXES + [a, b], ("eth1", "eth2"), two, {3: [a], 4: [b]})
    assert reconcile(owner, want).rebuild
    owner.forget()
    assert owner.read_blocking() == want
    text = netns.exec(["nft", "list", "map", "inet", "nra", "link_routers"]).stdout
    assert '"eth1" . 02:00:00:00:00:07 : goto save_1' in text and '"eth2" . 02:00:00:00:00:07 : goto save_2' in text
    moved = desired(PREFIXES + [a, b], ("eth1", "eth2"), two, {5: [a], 4: [b]})
    change = reconcile(owner, moved)
    assert not change.rebuild and change.delete_groups[4] and change.add_groups[4]
    owner.forget()
    assert owner.read_blocking() == moved
    assert "10.90.0.0/24 : goto group_5" in netns.exec(["nft", "list", "map", "inet", "nra", _map_of("10.90.0.0/24")]).stdout


def test_a_table_of_an_nra_before_the_group_shards_is_made_anew_once(netns, owner):
    """An nra before the group maps' shards held every group interval in groups4/groups6,
    looked up in chain `save`: such a table is made anew (one rebuild, as the prefix sets'
    sharding did), its group intervals then in their blocks' maps, and nothing left to do."""
    reconcile(owner, desired())
    old = "".join(f"flush chain inet nra in_lb{f}_{i}\ndelete map inet nra groups{f}_{i}\n"
                  for f in (4, 6) for i in range(nft.SHARDS))
    old += ("add chain inet nra save\n"
            "add rule inet nra save iifname . ether saddr vmap @link_routers\n"
            "add rule inet nra save ip daddr vmap @groups4\n"
            "add rule inet nra save ip6 daddr vmap @groups6\n"
            "add element inet nra groups4 { 10.80.0.0/28 : goto save_3, 10.81.0.5 : goto save_4 }\n"
            "add element inet nra groups6 { fd00:80::/120 : goto save_3 }\n")
    netns.nft(old)
    owner.forget()
    current = owner.read_blocking()
    assert current.groups == desired().groups  # (read back whole from the wide maps)
    change = nft.diff(desired(), current)
    assert change.rebuild and change.reason == "group maps not sharded"
    owner.apply_blocking(change, desired(), FIELD, current)
    owner.forget()
    assert owner.read_blocking() == desired()
    assert not nft.diff(desired(), owner.read_blocking())
    assert "10.81.0.5 : goto group_4" in netns.exec(["nft", "list", "map", "inet", "nra", GROUPS4_81]).stdout
    assert "elements" not in netns.exec(["nft", "list", "map", "inet", "nra", "groups4"]).stdout


def test_a_table_holding_group_prefixes_in_its_prefix_sets_too_loses_them_after_its_chains(netns, owner):
    """An nra before 2026-12-06 held an uplink group's prefixes in the prefix sets as well as
    in the group maps, and its blocks' chains looked in the prefix sets alone. Its table is
    repaired in place with the prefix sets' deletes after the chains are written again: the
    other way round, a connection to such an address in between would have been marked
    examined, and its replies left by the default route for good."""
    want = desired()
    examined = nft._set_mark("ct", FIELD, FIELD.examined)
    chains = dict(want.chains)
    for family in (4, 6):
        for i in range(nft.SHARDS):
            hook, rules = chains[nft.shard_chain(family, i)]
            first = nft._rule(*({"match": {"op": "!=", "left": nft._daddr(family), "right": f"@{name}"}}
                                for name in (nft.SHARD_SETS[family][i], nft.PREFIX_SETS[family])),
                              examined, {"return": None})
            chains[nft.shard_chain(family, i)] = (hook, (first, *rules[1:]))
    before = dataclasses.replace(want, prefixes=nft.prefix_intervals(PREFIXES), chains=chains)
    reconcile(owner, before)
    listener = open_netlink(netns.name, 1 << (nl.NFNLGRP_NFTABLES - 1), protocol=nl.NETLINK_NETFILTER)
    try:
        change = reconcile(owner, want)
        assert change.rewrite and any(change.delete_prefixes.values()) and not any(change.add_prefixes.values())
        listener.setblocking(False)
        reader, transactions = nl.NotificationReader(), []
        with contextlib.suppress(BlockingIOError):
            while True:
                transactions += reader.feed(listener.recv(1 << 20))
    finally:
        listener.close()
    rewritten = [n for n, t in enumerate(transactions)
                 if any(o and o.kind == "rule" and not o.delete and o.chain.startswith("in_lb") for o in t.objects)]
    emptied = [n for n, t in enumerate(transactions)
               if any(e.set_name in nft.PREFIX_SET_FAMILY and e.delete for e in t.elements)]
    assert rewritten and emptied and max(rewritten) < min(emptied), (rewritten, emptied)
    owner.forget()
    assert owner.read_blocking() == want


def test_a_table_whose_group_elements_go_to_save_chains_is_made_anew_once(netns, owner):
    """An nra before the group chains wrote a group map's elements as `goto save_<i>` (and
    looked the group maps up after the routers): such a table is made anew, once, the
    groups' numbers read back as they were (their connections keep their marks)."""
    reconcile(owner, desired())
    netns.nft(f"delete element inet nra {GROUPS4_81} {{ 10.81.0.5 }}\n"
              f"add element inet nra {GROUPS4_81} {{ 10.81.0.5 : goto save_4 }}\n")
    owner.forget()
    current = owner.read_blocking()
    assert current.legacy_groups and current.groups == desired().groups  # (numbered as they were)
    change = nft.diff(desired(), current)
    assert change.rebuild and change.reason == "group maps' elements go to save chains"
    owner.apply_blocking(change, desired(), FIELD, current)
    owner.forget()
    again = owner.read_blocking()
    assert again == desired() and not again.legacy_groups and not nft.diff(desired(), again)
    assert "10.81.0.5 : goto group_4" in netns.exec(["nft", "list", "map", "inet", "nra", GROUPS4_81]).stdout


def test_other_tables_are_never_touched(netns, owner):
    netns.nft("table inet other { set s { type ipv4_addr; elements = { 10.0.0.1 }; }; }\n"
              "table ip nra { chain c { }; }\n")
    before = [x for x in listed(netns, "ruleset") if "metainfo" not in x]
    reconcile(owner, desired())
    reconcile(owner, desired(prefixes=PREFIXES[:1]))
    owner.apply_blocking(nft.removal(owner.read_blocking()), None, None, owner.read_blocking())
    after = [x for x in listed(netns, "ruleset") if "metainfo" not in x]
    assert after == before
    assert owner.read_blocking() is None


@contextlib.asynccontextmanager
async def watched(owner):
    """nra's table applied, then its change reasons collected while the block runs."""
    await owner.apply(*(lambda cur: (nft.diff(desired(), cur), desired(), FIELD, cur))(await owner.read()))
    seen: list[str] = []

    async def watch():
        async for reason in owner.changes():
            seen.append(reason)

    task = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(owner.watching.wait(), 3.0)
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_notifications_name_the_process_and_only_this_table(netns, owner):
    async with watched(owner) as seen:
        # our own change: no drift
        current = await owner.read()
        await owner.apply(nft.diff(desired(PREFIXES[:2]), current), desired(PREFIXES[:2]), FIELD, current)
        # someone else's table: no drift
        netns.nft("table inet other { chain c { }; }\n")
        await holds_async(lambda: seen == [], 0.3, what="no drift reported")
        reads = owner.full_reads
        await owner.read()
        assert owner.full_reads == reads, "changes elsewhere must not cost a listing of nra's table"
        # someone else's change to nra's table: seen at once
        netns.exec(["nft", "flush chain inet nra classify"])
        await wait_for_async(lambda: seen, 0.5, interval=0.01, what="the foreign change reported")
        assert len(seen) == 1 and "changed by pid" in seen[0], seen
        change = nft.diff(desired(PREFIXES[:2]), await owner.read())
        assert change.rewrite == ("classify",)


@pytest.mark.parametrize("drift", [
    f"delete element inet nra {LB4_84} {{ 10.84.0.0/28 }}",
    f"delete element inet nra {LB6_84} {{ fd00:84::/120 }}",
    f"add element inet nra {LB4_192} {{ 192.0.2.0/24 }}",
    "delete element inet nra link_routers { \"eth0\" . 02:00:00:00:00:02 }",
    "add element inet nra link_routers { \"eth3\" . 02:00:00:00:00:09 : goto save_1 }",
    "add element inet nra links { \"eth9\" }",
    "add table inet nra { flags dormant; }",
])
async def test_foreign_element_changes_are_followed_from_notifications_without_a_listing(netns, owner, drift):
    async with watched(owner) as seen:
        await owner.read()  # (the watch starting forgets what was known: one listing)
        reads = owner.full_reads
        netns.nft(drift)
        await wait_for_async(lambda: seen, 2.0, interval=0.01, what="the drift reported")
        assert seen and seen[0].endswith("(followed from its notifications)"), seen
        current = await owner.read()
        assert owner.full_reads == reads, "followed: no listing"
        change = nft.diff(desired(), current)
        assert change and not change.rebuild and not change.rewrite
        await owner.apply(change, desired(), FIELD, current)
        fresh = NftState(netns.name)
        try:
            assert fresh.read_blocking() == desired(), "repaired exactly"
        finally:
            fresh.close()


@pytest.mark.parametrize("drift, rewrite", [
    # an object of a kind nra does not follow (a named counter) with a rule: chains and rules read again
    ("add counter inet nra theirs; add rule inet nra classify counter accept", ("classify",)),
])
async def test_a_foreign_change_that_cannot_be_attributed_reads_chains_and_rules_not_the_elements(netns, owner, drift,
                                                                                                  rewrite):
    """Only the chains, rules and sets' names are read again (the elements are known, and
    followed from the notifications of the same transaction); the repair is exact. (What
    can be attributed, a rule, a chain, a set: no read at all, see above.)"""
    async with watched(owner) as seen:
        await owner.read()
        full, structure = owner.full_reads, owner.structure_reads
        netns.nft(drift)
        await wait_for_async(lambda: seen, 2.0, interval=0.01, what="the drift reported")
        assert seen[0].endswith("(chains and rules read again)"), seen
        current = await owner.read()
        assert (owner.full_reads, owner.structure_reads) == (full, structure + 1)
        change = nft.diff(desired(), current)
        assert change and not change.rebuild and change.rewrite == rewrite
        await owner.apply(change, desired(), FIELD, current)
        fresh = NftState(netns.name)
        try:
            assert fresh.read_blocking() == desired(), "repaired exactly"
        finally:
            fresh.close()


@pytest.mark.parametrize("drift", [
    f"flush chain inet nra in_{LB6_84}; delete set inet nra {LB6_84}",
    "delete table inet nra; add table inet nra",
    # a group map's elements are not followed from notifications: read back, repaired map by map
    f"delete element inet nra {GROUPS4_81} {{ 10.81.0.5 }}; add element inet nra groups4_9 {{ 10.81.0.5 : goto group_4 }}",
])
async def test_a_set_of_nras_deleted_or_the_table_made_again_is_read_in_full(netns, owner, drift):
    async with watched(owner) as seen:
        await owner.read()
        full = owner.full_reads
        netns.nft(drift)
        await wait_for_async(lambda: seen, 2.0, interval=0.01, what="the drift reported")
        assert seen[0].endswith("(read in full)"), seen
        current = await owner.read()
        assert owner.full_reads == full + 1
        change = nft.diff(desired(), current)
        await owner.apply(change, desired(), FIELD, current)
        fresh = NftState(netns.name)
        try:
            assert fresh.read_blocking() == desired(), "repaired exactly"
        finally:
            fresh.close()


@pytest.mark.parametrize("drift, expect", [
    (f"add rule inet nra in_{LB4_84} accept", f"drop_rules in_{LB4_84}"),
    ("insert rule inet nra classify ip daddr { 10.80.0.1, 10.80.0.2 } accept", "drop_rules classify"),
    ("add rule inet nra prerouting meta mark set 0x4", "drop_rules prerouting"),
    ("flush chain inet nra classify", "rewrite classify"),
    ("add chain inet nra extra", "drop chain extra"),
    ("add chain inet nra extra { type filter hook prerouting priority -300; }; add rule inet nra extra accept",
     "drop chain extra"),
    ("add set inet nra extra { type ipv4_addr; }; add element inet nra extra { 10.0.0.1 }", "drop set extra"),
    ("flush chain inet nra output; delete chain inet nra output; "
     "add chain inet nra output { type filter hook output priority 0; }", "rewrite output"),
    ("add chain inet nra prerouting { type filter hook prerouting priority -150; policy drop; }",
     "rewrite prerouting"),
    ("delete table inet nra", "rebuild"),
    ("flush ruleset", "rebuild"),
])
async def test_foreign_objects_are_repaired_one_by_one_from_notifications_without_a_listing(netns, owner, drift,
                                                                                             expect):
    """A chain, rule or set someone else adds to or deletes from nra's table is known from the
    notifications alone, and the repair is that object: a rule deleted by its handle, one chain
    written again, a foreign object dropped, the table made again when it was deleted; the sets'
    elements are never sent again but for a rebuild. (On the code before, any of these listed
    the whole table: seconds at 100,000 prefixes.)"""
    async with watched(owner) as seen:
        await owner.read()  # (the watch starting forgets what was known: one listing)
        reads = owner.full_reads
        netns.nft(drift)
        await wait_for_async(lambda: seen, 2.0, interval=0.01, what="the drift reported")
        assert all("(followed from its notifications" in s for s in seen), seen
        current = await owner.read()
        assert owner.full_reads == reads, "followed: no listing"
        change = nft.diff(desired(), current)
        kind, _, what = expect.partition(" ")
        if kind == "rebuild":
            assert change.rebuild and current is None
        else:
            assert not change.rebuild and not any(change.add_prefixes.values()), change.describe()
            if kind == "drop_rules":
                assert [chain for chain, _ in change.drop_rules] == [what] and not change.rewrite, change.describe()
            elif kind == "rewrite":
                assert change.rewrite == (what,) and not change.drop_rules, change.describe()
            else:
                assert change.drop == (what,) and not change.rewrite, change.describe()
        await owner.apply(change, desired(), FIELD, current)
        fresh = NftState(netns.name)
        try:
            again = fresh.read_blocking()
            assert again == desired() and not again.foreign, "repaired exactly"
        finally:
            fresh.close()
        assert not nft.diff(desired(), await owner.read())
