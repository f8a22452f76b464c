"""nra's nft table read back through its own nf_tables dumps (nra.kernel.nft_read), against
the real kernel in throwaway namespaces: what was written reads back exactly (both shapes of
prefixes, both families, the uplink group maps, the `iifname . ether saddr` router map), as
`nft -j list` also lists it; and others' changes are seen by the read."""

from __future__ import annotations

import ipaddress
import json

import pytest

from nra.kernel import nft_netlink as nl
from nra.kernel import nft_read
from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field
from nra.kernel.nft import NftState
from nra.kernel.socket import NetlinkSocket
from testbed.netns import NetNS

pytestmark = pytest.mark.kernel

FIELD = parse_mark_field("0x2/0x3e")
ROUTERS = {("eth0", "02:00:00:00:00:01"): 1, ("eth1", "02:00:00:00:00:01"): 2, ("eth1", "0a:bc:de:f0:12:34"): 3}


def shape(count: int, distinct: bool, family: int, start: str | None = None) -> list:
    """`count` single addresses: two apart (as many intervals) or one apart (one interval)."""
    base = int(ipaddress.ip_address(start or ("100.64.0.0" if family == 4 else "fd00:64::")))
    step = 2 if distinct else 1
    return [ipaddress.ip_network((base + i * step, 32 if family == 4 else 128)) for i in range(count)]


def fresh_read(netns: NetNS) -> nft.NftTable | None:
    owner = NftState(netns.name)
    try:
        return owner.read_blocking()
    finally:
        owner.close()


def written(netns: NetNS, want: nft.NftTable) -> None:
    owner = NftState(netns.name)
    try:
        owner.apply_blocking(nft.diff(want, owner.read_blocking()), want, FIELD, owner.read_blocking())
    finally:
        owner.close()


def listed_intervals(netns: NetNS, kind: str, name: str) -> list[tuple[int, int]]:
    """The set's or map's intervals as `nft -j list` gives them (the oracle: libnftables)."""
    doc = json.loads(netns.exec(["nft", "-j", "list", kind, "inet", "nra", name]).stdout)["nftables"]
    out = []
    for item in doc:
        for elem in item.get(kind, {}).get("elem", []):
            elem = elem[0] if isinstance(elem, list) else elem  # a map's [key, verdict]
            if isinstance(elem, str):
                value = int(ipaddress.ip_address(elem))
                out.append((value, value))
            elif "prefix" in elem:
                net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
                out.append((int(net.network_address), int(net.broadcast_address)))
            else:
                low, high = elem["range"]
                out.append((int(ipaddress.ip_address(low)), int(ipaddress.ip_address(high))))
    return sorted(out)


@pytest.mark.parametrize("distinct", [False, True], ids=["consecutive", "distinct"])
def test_what_was_written_reads_back_exactly(netns, distinct):
    # in no uplink group (the prefix sets), and in groups (the group maps: nowhere else)
    v4, v6 = shape(3000, distinct, 4), shape(3000, distinct, 6)
    top4, top6 = ipaddress.ip_network("240.0.0.0/4"), ipaddress.ip_network("ffff::/16")  # to the top of the space
    g4, g6 = shape(3000, distinct, 4, "100.96.0.0"), shape(3000, distinct, 6, "fd00:96::")
    wide4, wide6 = ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("fffe::/16")
    groups = {4: g4[:1000] + g6[:1000], 5: g4[1000:] + [wide4], 6: g6[1000:] + [wide6]}
    want = nft.desired_table(v4 + v6 + g4 + g6 + [top4, top6, wide4, wide6], ["eth0", "eth1"], ROUTERS, FIELD,
                             groups=groups)
    written(netns, want)
    got = fresh_read(netns)
    assert got == want
    assert got.routers == {(link, mac): i for (link, mac), i in ROUTERS.items()}
    assert got.links == {"eth0", "eth1"} and got.flags == 0 and not got.foreign and not got.unreadable
    assert len(got.prefixes[4]) == (3001 if distinct else 2)
    # libnftables lists the same intervals, set by set (nft_table.SHARDS): the consecutive
    # addresses' one interval split at its blocks' edges, a piece in each block's set
    for name in nft.PREFIX_SET_FAMILY:
        assert listed_intervals(netns, "set", name) == sorted(got.raw_prefixes.get(name, ())), name
    assert sum(1 for name in nft.SHARD_SETS[4] if got.raw_prefixes.get(name)) == (16 if distinct else 12)
    assert got.raw_prefixes["lb4"] == ((int(top4.network_address), int(top4.broadcast_address)),)
    # and the group maps, map by map: each group's intervals split at their blocks' edges
    # (placed_groups), read back joined again
    for name, family in nft.GROUP_MAP_FAMILY.items():
        assert listed_intervals(netns, "map", name) == sorted((low, high) for low, high, _ in
                                                              got.raw_groups.get(name, ())), name
    assert got.raw_groups["groups4"] == ((int(wide4.network_address), int(wide4.broadcast_address), 5),)
    assert sum(1 for name in nft.GROUP_SHARD_MAPS[4] if got.raw_groups.get(name)) == (16 if distinct else 12)
    if not distinct:  # 1000 addresses in a row, then 2000: an interval each, in pieces
        assert len(got.groups[4]) == 3 and len(got.raw_groups) > 3
    assert {i for _, _, i in got.groups[4]} == {4, 5}
    text = netns.exec(["nft", "list", "map", "inet", "nra", "link_routers"]).stdout
    assert '"eth1" . 0a:bc:de:f0:12:34 : goto save_3' in text
    assert not nft.diff(want, got)


def test_every_rule_carries_nra_digest_as_its_comment(netns):
    want = nft.desired_table(shape(10, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    text = netns.exec(["nft", "list", "table", "inet", "nra"]).stdout
    for name, (_, rules) in want.chains.items():
        for rule in rules:
            assert f'comment "{rule.digest}"' in text, (name, rule.text)


@pytest.mark.parametrize("foreign, seen", [
    ("add rule inet nra classify accept", lambda t: t.chains["classify"][1][-1].digest.startswith("(rule handle")),
    ("insert rule inet nra in_lb4_0 counter", lambda t: not t.chains["in_lb4_0"][1][0].digest.startswith("nra:")),
    (f"delete element inet nra {nft.SHARD_SETS[4][0]} {{ 100.64.0.4 }}", lambda t: (int(ipaddress.ip_address("100.64.0.4")),) * 2
     not in t.prefixes[4]),
    ("delete element inet nra link_routers { \"eth1\" . 0a:bc:de:f0:12:34 }", lambda t: len(t.routers) == 2),
    ("add table inet nra { flags dormant; }", lambda t: t.flags == 1),
    ("flush chain inet nra prerouting; delete chain inet nra prerouting", lambda t: "prerouting" not in t.chains),
    ("add chain inet nra theirs", lambda t: t.chains["theirs"] == (None, ())),
    ("add map inet nra theirs { type ipv4_addr : verdict; }", lambda t: t.foreign == ("map theirs",)),
    ("flush chain inet nra in_lb6_0; delete map inet nra groups6_0", lambda t: "groups6_0" not in t.sets),
    # someone else's group element in its block's map, and one in the wide map (not its place)
    ("add element inet nra groups4_2 { 192.0.2.0/24 : goto group_2 }",
     lambda t: t.raw_groups["groups4_2"] == ((int(ipaddress.ip_address("192.0.2.0")),
                                             int(ipaddress.ip_address("192.0.2.255")), 2),)),
    ("add element inet nra groups4 { 192.0.2.0/24 : goto group_2 }",
     lambda t: (int(ipaddress.ip_address("192.0.2.0")), int(ipaddress.ip_address("192.0.2.255")), 2) in t.groups[4]),
])
def test_a_foreign_change_is_seen_by_the_read(netns, foreign, seen):
    want = nft.desired_table(shape(100, True, 4) + shape(100, True, 6), ["eth0", "eth1"], ROUTERS, FIELD,
                             groups={4: shape(100, True, 4)[50:60]})  # (100.64.0.4 in no group)
    written(netns, want)
    netns.nft(foreign)
    got = fresh_read(netns)
    assert got != want or got.foreign, foreign
    assert seen(got), foreign
    change = nft.diff(want, got)
    assert change and not change.rebuild, foreign
    written(netns, want)  # repaired, and read back as nra wrote it
    assert fresh_read(netns) == want


def test_a_rule_with_nra_expressions_but_no_comment_is_written_again(netns):
    """A table of an nra before the digests (or a rule someone copied without its comment):
    the chain is written again, once."""
    want = nft.desired_table(shape(10, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    _, rules = want.chains["classify"]
    doc = [{"flush": {"chain": {"family": "inet", "table": "nra", "name": "classify"}}}]
    doc += [{"add": {"rule": {"family": "inet", "table": "nra", "chain": "classify", "expr": json.loads(r.text)}}}
            for r in rules]
    netns.exec(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": doc}))
    change = nft.diff(want, fresh_read(netns))
    assert change.rewrite == ("classify",)
    written(netns, want)
    assert not nft.diff(want, fresh_read(netns))


def test_a_forged_comment_is_not_seen(netns):
    """The digest's blind spot, stated: someone else's rule carrying one of nra's comments in
    its place reads as nra's rule (see nft_table.Rule)."""
    want = nft.desired_table(shape(10, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    last = want.chains["classify"][1][-1]
    handle = json.loads(netns.exec(["nft", "-j", "-a", "list", "chain", "inet", "nra", "classify"]).stdout)
    handles = [item["rule"]["handle"] for item in handle["nftables"] if "rule" in item]
    netns.nft(f'replace rule inet nra classify handle {handles[-1]} accept comment "{last.digest}"')
    assert fresh_read(netns) == want


def test_elements_that_do_not_pair_up_make_the_table_anew(netns):
    """A start element without its end in the middle of a prefix set (a raw netlink writer's;
    nft never writes one): the read says so and the plan rebuilds the table."""
    want = nft.desired_table(shape(10, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    owner = NftState(netns.name)
    try:
        shard = nft.SHARD_SETS[4][0]  # (100.64.0.0-100.64.0.18's)
        stray = nl.ElementOp(shard, (nl._START[32] + ipaddress.ip_address("100.64.0.9").packed,))
        try:
            owner._sock.transaction(lambda seq: nl.batch(nft.TABLE, [stray], seq), "stray start")
        except OSError as exc:
            pytest.skip(f"this kernel refuses a lone start element: {exc}")
        got = owner.read_blocking()
        assert got.unreadable == (shard,)
        change = nft.diff(want, got)
        assert change.rebuild and shard in change.reason
        owner.apply_blocking(change, want, FIELD, got)
    finally:
        owner.close()
    assert fresh_read(netns) == want


def test_a_read_between_two_transactions_is_made_again(netns):
    """The read is several dumps: one that another transaction came between (the ruleset
    generation moved) is redone."""
    want = nft.desired_table(shape(10, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    owner = NftState(netns.name)
    calls = []
    real = nft_read.read_once

    def read_once_with_a_change(sock, known=None):
        calls.append(1)
        if len(calls) == 1:
            netns.nft("add chain inet nra between")
        return real(sock, known)

    try:
        nft_read.read_once = read_once_with_a_change
        got = owner.read_blocking()
    finally:
        nft_read.read_once = real
        owner.close()
    assert len(calls) == 2 and "between" in got.chains


def test_tables_and_chains_are_what_nft_lists(netns):
    """The datapath check's read (two dumps of every family) names the same tables and
    chains as the nft binary's listing, nra's table with its elements among them."""
    written(netns, nft.desired_table(shape(1000, True, 4) + shape(10, True, 6), ["eth0"], ROUTERS, FIELD))
    netns.nft("add table ip kube-proxy\nadd chain ip kube-proxy services\nadd table ip6 filter\n"
              "add chain ip6 filter KUBE-SERVICES\nadd table bridge b\nadd chain bridge b c\n"
              "add table netdev n\nadd table arp a\n")
    listed = json.loads(netns.exec(["nft", "-j", "list", "chains"]).stdout)["nftables"]
    want_chains = {(c["chain"]["family"], c["chain"]["table"], c["chain"]["name"]) for c in listed if "chain" in c}
    listed = json.loads(netns.exec(["nft", "-j", "list", "tables"]).stdout)["nftables"]
    want_tables = {f"{t['table']['family']} {t['table']['name']}" for t in listed if "table" in t}
    sock = NetlinkSocket(netns.name, protocol=nl.NETLINK_NETFILTER)
    try:
        tables, chains = nft_read.tables_and_chains(sock)
    finally:
        sock.close()
    assert tables == want_tables and len(tables) == 6
    assert chains == want_chains and ("ip6", "filter", "KUBE-SERVICES") in chains


def test_tables_and_chains_of_an_empty_namespace(netns):
    sock = NetlinkSocket(netns.name, protocol=nl.NETLINK_NETFILTER)
    try:
        assert nft_read.tables_and_chains(sock) == (frozenset(), frozenset())
    finally:
        sock.close()


def test_a_prefetched_read_is_taken_only_at_the_generation_it_was_read_at(netns):
    from nra.kernel import nft as nft_state

    want = nft.desired_table(shape(2000, True, 4), ["eth0"], ROUTERS, FIELD)
    written(netns, want)
    nft_state.prefetch(netns.name)
    owner = NftState(netns.name)
    try:
        assert owner.read_blocking() == want and owner.full_reads == 1 and netns.name not in nft_state._prefetched
        assert nft_state.take_prefetched(netns.name, owner.generation()) is None  # taken once
        # someone else's transaction after the prefetch: read again, and theirs is seen
        nft_state.prefetch(netns.name)
        nft_state._prefetched[netns.name].result(10)
        netns.nft(f"delete element inet nra {nft.SHARD_SETS[4][0]} {{ 100.64.0.0 }}")
        owner.forget()
        got = owner.read_blocking()
        assert got != want and len(got.prefixes[4]) == 1999
        assert nft_state.take_prefetched(netns.name, owner.generation()) is None
    finally:
        owner.close()


def test_a_prefetch_that_cannot_open_its_socket_is_not_waited_for(netns, monkeypatch):
    """Out of file descriptors at start (EMFILE, made here: the kernel gives it only to a
    process at its limit): the prefetch fails at its socket and the first read is told at
    once to read itself (before: the thread died before setting its result, and the first
    reconcile waited for it for good)."""
    import concurrent.futures
    import errno

    from nra.kernel import nft as nft_state

    def no_fd(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(nft_state, "NetlinkSocket", no_fd)
    nft_state.prefetch(netns.name)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        taken = pool.submit(nft_state.take_prefetched, netns.name, 1)
        assert taken.result(timeout=5) is None
    assert netns.name not in nft_state._prefetched


def test_a_job_run_from_the_loop_runs_in_the_context_thread_and_hands_back_its_result_or_error(netns):
    """Nft.run: the job goes to libnftables' thread (its native id is nra's writes' thread
    id) and its result or exception comes back to the awaiting coroutine."""
    import asyncio
    import threading

    from nra.kernel.libnft import Nft

    nft = Nft(netns.name)
    try:
        async def run():
            where = await nft.run(threading.get_native_id)
            assert where == nft.thread_id != threading.get_native_id()
            with pytest.raises(ZeroDivisionError):
                await nft.run(lambda: 1 / 0)
            results = await asyncio.gather(*(nft.run(lambda i=i: i * 2) for i in range(50)))
            assert results == [i * 2 for i in range(50)]
            assert json.loads(await nft.run(nft.cmd, "list tables"))["nftables"][0]["metainfo"]
        asyncio.run(run())
    finally:
        nft.close()


def test_a_finished_job_and_its_arguments_are_not_kept_by_the_context_thread(netns):
    """Nft.run and Nft.call: once a job's result is back, libnftables' thread holds neither the
    job nor its arguments while it waits for the next (it kept the last: an apply's change and
    its two tables, MBs at 100,000 prefixes, until the next write)."""
    import asyncio
    import gc
    import weakref

    from nra.kernel.libnft import Nft

    class Table:  # (a stand-in for the change's tables: any object the job takes)
        pass

    nft = Nft(netns.name)
    try:
        for how in ("run", "call"):
            table = Table()
            gone = weakref.ref(table)
            if how == "run":
                assert asyncio.run(nft.run(lambda t: t.__class__.__name__, table)) == "Table"
            else:
                assert nft.call(lambda t: t.__class__.__name__, table) == "Table"
            del table
            gc.collect()
            assert gone() is None, how
    finally:
        nft.close()
