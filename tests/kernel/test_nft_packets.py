"""Packets through nra's nftables table, on the real kernel: a connection from a router is
marked with that router's mark in nra's bits only, and its replies carry the mark into
routing (and out through the router's own table), whatever other bits someone else set."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import pytest

from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field
from nra.kernel.nft import NftState
from testbed.netns import add_veth, new_netns

pytestmark = pytest.mark.kernel

FIELD = parse_mark_field("0x2/0x3e")
ROUTER_MAC, OTHER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:07"
# someone else's bits, set before nra's chains run (like kube-proxy's 0x4000 or a CNI's)
FOREIGN = """table inet foreign {
  chain pre { type filter hook prerouting priority -200; policy accept; ct state new ct mark set ct mark | 0x100; }
  chain out { type route hook output priority -200; policy accept; meta mark set meta mark | 0x4000; }
}
table inet seen {
  counter via_router { }
  counter via_main { }
  chain post { type filter hook postrouting priority 0; policy accept;
    tcp sport 7007 oifname "eth0" meta mark 0x4006 counter name via_router
    tcp sport 7007 oifname "eth1" counter name via_main
  }
}
"""


@pytest.fixture
def lab():
    node, router, other = new_netns("nra-pk-node"), new_netns("nra-pk-rtr"), new_netns("nra-pk-oth")
    try:
        add_veth(node, "eth0", router, "eth0")
        add_veth(node, "eth1", other, "eth0")
        router.ip(f"link set dev eth0 address {ROUTER_MAC}")
        other.ip(f"link set dev eth0 address {OTHER_MAC}")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        node.ip("addr add 10.61.0.1/24 dev eth1")
        node.ip("addr add 10.80.0.10/32 dev lo")
        router.ip("addr add 10.60.0.2/24 dev eth0")
        router.ip("addr add 10.79.0.1/32 dev lo")  # a client behind the router
        router.ip("route add 10.80.0.10/32 via 10.60.0.1")
        other.ip("addr add 10.61.0.2/24 dev eth0")
        other.ip("route add default via 10.61.0.1")
        # the node's main table sends the client's replies the wrong way (via `other`)
        node.ip("route add 10.79.0.0/24 via 10.61.0.2")
        # the router's table and the rules, as nra's return path plans them
        node.ip("route add default via 10.60.0.2 table 21")
        node.ip(f"rule add fwmark {FIELD.router(1):#x}/{FIELD.mask:#x} lookup 21 priority 20")
        node.nft(FOREIGN)
        yield node, router, other
    finally:
        for ns in (node, router, other):
            ns.delete()


def counters(ns) -> dict[str, int]:
    out = json.loads(ns.exec(["nft", "-j", "list", "counters", "table", "inet", "seen"]).stdout)["nftables"]
    return {c["counter"]["name"]: c["counter"]["packets"] for c in out if "counter" in c}


def test_connection_marked_by_its_router_replies_routed_back_through_it(lab):
    node, router, _ = lab
    owner = NftState(node.name)
    try:
        want = nft.desired_table([ipaddress.ip_network("10.80.0.0/28")], ["eth0"],
                                 {("eth0", ROUTER_MAC): 1}, FIELD)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
    finally:
        owner.close()
    proc = subprocess.Popen([*node.exec_prefix(), "python3", "-c",
                             "import socket\n"
                             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                             "s.bind(('10.80.0.10', 7007)); s.listen(); print('up', flush=True)\n"
                             "c,_=s.accept(); c.sendall(c.recv(100)); c.close()"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        got = router.exec(["python3", "-c",
                           "import socket\n"
                           "s=socket.create_connection(('10.80.0.10', 7007), timeout=3, source_address=('10.79.0.1', 0))\n"
                           "s.sendall(b'hello'); print(s.recv(100).decode())"]).stdout.strip()
        assert got == "hello"
        proc.wait(5)
    finally:
        proc.kill()
    entries = node.exec(["conntrack", "-L", "-p", "tcp", "--dport", "7007"], check=False).stdout
    marks = {int(word.split("=")[1]) for word in entries.split() if word.startswith("mark=")}
    # nra's bits say router 1, the foreign 0x100 bit is still there
    assert marks == {0x100 | FIELD.router(1)}, entries
    seen = counters(node)
    assert seen["via_router"] > 0 and seen["via_main"] == 0, seen


def test_routers_are_link_and_mac_and_unknown_senders_get_their_prefixs_group_mark():
    """One MAC on two links is two routers (two marks); a sender no router entry knows gets
    the mark of its destination prefix's uplink group, or the external mark for a prefix of
    the group of every peer."""
    node = new_netns("nra-pk-id")
    peers = [new_netns(f"nra-pk-id{i}") for i in range(3)]
    owner = None
    try:
        for i, peer in enumerate(peers):
            add_veth(node, f"eth{i}", peer, "eth0")
            node.ip(f"addr add 10.6{i}.0.1/24 dev eth{i}")
            peer.ip(f"addr add 10.6{i}.0.2/24 dev eth0")
            peer.ip(f"route add default via 10.6{i}.0.1")
        for peer in peers[:2]:  # the same MAC behind eth0 and behind eth1
            peer.ip(f"link set dev eth0 address {ROUTER_MAC}")
        node.ip("addr add 10.80.0.10/32 dev lo")
        node.ip("addr add 10.81.0.10/32 dev lo")
        a, b = ipaddress.ip_network("10.80.0.0/28"), ipaddress.ip_network("10.81.0.0/28")
        want = nft.desired_table([a, b], ["eth0", "eth1", "eth2"], {("eth0", ROUTER_MAC): 1, ("eth1", ROUTER_MAC): 2},
                                 FIELD, groups={3: [a]})  # b: the group of every peer (no element)
        owner = NftState(node.name)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
        send = ("import socket, sys\n"
                "for dst in sys.argv[1:]:\n"
                "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (dst, 7009))\n")
        for peer in peers:
            peer.exec(["python3", "-c", send, "10.80.0.10", "10.81.0.10"])
        entries = node.exec(["conntrack", "-L", "-p", "udp", "--dport", "7009"], check=False).stdout
        marks = {}
        for line in entries.splitlines():
            words: dict[str, str] = {}
            for word in line.split():  # (the original direction's src and dst come first)
                if "=" in word:
                    words.setdefault(*word.split("=", 1))
            marks.setdefault((words["src"], words["dst"]), int(words["mark"]))
        assert marks == {
            ("10.60.0.2", "10.80.0.10"): FIELD.router(1), ("10.60.0.2", "10.81.0.10"): FIELD.router(1),
            ("10.61.0.2", "10.80.0.10"): FIELD.router(2), ("10.61.0.2", "10.81.0.10"): FIELD.router(2),
            ("10.62.0.2", "10.80.0.10"): FIELD.router(3), ("10.62.0.2", "10.81.0.10"): FIELD.value,
        }, entries
    finally:
        if owner is not None:
            owner.close()
        for ns in (node, *peers):
            ns.delete()


def udp_marks(node, peer, family: int, addresses: list[str], port: int) -> tuple[dict[str, int], str]:
    """One datagram from `peer` to each address at `port`; the connection mark `node`'s
    conntrack gave each (by destination), and the listing it was read from."""
    send = ("import socket, sys\n"
            f"for dst in sys.argv[1:]:\n"
            f"    socket.socket(socket.AF_INET{'6' if family == 6 else ''}, socket.SOCK_DGRAM).sendto(b'x', (dst, {port}))\n")
    peer.exec(["python3", "-c", send, *addresses])
    entries = node.exec(["conntrack", "-L", "-f", f"ipv{family}", "-p", "udp", "--dport", str(port)],
                        check=False).stdout
    marks = {}
    for line in entries.splitlines():
        words: dict[str, str] = {}
        for word in line.split():
            if "=" in word:
                words.setdefault(*word.split("=", 1))
        marks[str(ipaddress.ip_address(words["dst"]))] = int(words["mark"])
    return marks, entries


def test_a_prefix_is_found_in_its_shard_in_the_wide_set_and_across_a_blocks_edge():
    """The prefixes dealt over the sets by address block (nft_table.SHARDS): an address of a
    one-block prefix, of a wide one (its set: lb4), and on each side of a blocks' edge an
    interval is split at are all marked with their router's mark; an address that is no
    LoadBalancer's, from the same router, gets the examined mark (in its shard's chain)."""
    node, peer = new_netns("nra-pk-sh"), new_netns("nra-pk-sh1")
    owner = None
    try:
        add_veth(node, "eth0", peer, "eth0")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        peer.ip("addr add 10.60.0.2/24 dev eth0")
        peer.ip("route add default via 10.60.0.1")
        peer.ip(f"link set dev eth0 address {ROUTER_MAC}")
        prefixes = [ipaddress.ip_network(p) for p in ("10.80.0.0/28", "10.90.0.0/16", "10.70.1.128/25", "10.70.2.0/25")]
        want = nft.desired_table(prefixes, ["eth0"], {("eth0", ROUTER_MAC): 1}, FIELD)
        placed = nft.placed(4, sorted(want.prefixes[4]))
        assert placed["lb4"] == [(int(ipaddress.ip_address("10.90.0.0")), int(ipaddress.ip_address("10.90.255.255")))]
        assert len([name for name, pieces in placed.items() if name != "lb4"]) == 3  # 10.80.0.0/28, the split one's two
        owner = NftState(node.name)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
        lb = ["10.80.0.10", "10.90.200.7", "10.70.1.255", "10.70.2.0"]
        for address in [*lb, "10.85.0.1", "10.70.2.128"]:
            node.ip(f"addr add {address}/32 dev lo")
        marks, entries = udp_marks(node, peer, 4, [*lb, "10.85.0.1", "10.70.2.128"], 7010)
        assert marks == {**{a: FIELD.router(1) for a in lb}, "10.85.0.1": FIELD.examined,
                         "10.70.2.128": FIELD.examined}, entries
    finally:
        if owner is not None:
            owner.close()
        for ns in (node, peer):
            ns.delete()


def test_an_ipv6_prefix_is_found_in_its_shard_in_the_wide_set_and_across_a_blocks_edge():
    """The same for IPv6 (blocks of 256 addresses, a /120; the verdict map on daddr & ::f00)."""
    node, peer = new_netns("nra-pk-sh6"), new_netns("nra-pk-sh61")
    owner = None
    try:
        add_veth(node, "eth0", peer, "eth0")
        node.ip("-6 addr add fd60::1/64 dev eth0 nodad")
        peer.ip("-6 addr add fd60::2/64 dev eth0 nodad")
        peer.ip("-6 route add default via fd60::1")
        peer.ip(f"link set dev eth0 address {ROUTER_MAC}")
        prefixes = [ipaddress.ip_network(p) for p in ("fd00:80::/120", "fd00:90::/64", "fd00:70::180/121",
                                                      "fd00:70::200/121")]
        want = nft.desired_table(prefixes, ["eth0"], {("eth0", ROUTER_MAC): 1}, FIELD)
        placed = nft.placed(6, sorted(want.prefixes[6]))
        assert [nft.interval_text(6, i) for i in placed["lb6"]] == ["fd00:90::/64"]
        assert len([name for name in placed if name != "lb6"]) == 3
        owner = NftState(node.name)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
        lb = ["fd00:80::10", "fd00:90::7:1", "fd00:70::1ff", "fd00:70::200"]
        other = ["fd00:85::1", "fd00:70::280"]
        for address in lb + other:
            node.ip(f"-6 addr add {address}/128 dev lo nodad")
        marks, entries = udp_marks(node, peer, 6, [*lb, *other], 7011)
        assert marks == {**{a: FIELD.router(1) for a in lb}, **{a: FIELD.examined for a in other}}, entries
    finally:
        if owner is not None:
            owner.close()
        for ns in (node, peer):
            ns.delete()


def test_an_unknown_routers_connection_gets_its_prefixs_group_mark_from_the_sharded_group_maps():
    """Two uplink groups (fallbacks 3 and 4) and the group of every peer, the group maps dealt
    by block as the prefix sets (placed_groups): a datagram from a sender no router entry
    knows, to an address of each, gets its group's mark: a one-block prefix (its block's
    map), one across a blocks' edge, a wide one (the wide map); two groups' pools side by
    side over 32 blocks (each in its blocks' maps, where no prefix set holds them: an
    address is looked up in the maps too); the group of every peer's prefix gets the external mark
    and an address that is no LoadBalancer's the examined one. IPv4 and IPv6."""
    node, peer = new_netns("nra-pk-gr"), new_netns("nra-pk-gr1")
    owner = None
    try:
        add_veth(node, "eth0", peer, "eth0")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        node.ip("-6 addr add fd60::1/64 dev eth0 nodad")
        peer.ip("addr add 10.60.0.2/24 dev eth0")
        peer.ip("-6 addr add fd60::2/64 dev eth0 nodad")
        peer.ip("route add default via 10.60.0.1")
        peer.ip("-6 route add default via fd60::1")
        net = ipaddress.ip_network
        three = [net(p) for p in ("10.80.0.0/28", "10.70.1.128/25", "10.90.0.0/16", "10.100.0.0/20",
                                  "fd00:80::/120", "fd00:70::180/121", "fd00:a0::/116")]
        four = [net(p) for p in ("10.70.2.0/25", "10.100.16.0/20", "fd00:70::200/121", "fd00:a0::1000/116")]
        every = [net("10.81.0.0/28"), net("fd00:81::/120")]
        want = nft.desired_table(three + four + every, ["eth0"], {("eth0", OTHER_MAC): 1}, FIELD,
                                 groups={3: three, 4: four})
        # the layout the addresses below go through: the prefix sets hold the group of every
        # peer's prefixes alone; 10.100.0.0/19 is two groups' pools of 16 blocks each (not
        # wide: split), in their blocks' maps
        assert want.prefixes == {f: nft.prefix_intervals(every)[f] for f in (4, 6)}
        maps4 = nft.placed_groups(4, sorted(want.groups[4]))
        assert [e[:2] for e in maps4["groups4"]] == [(int(ipaddress.ip_address("10.90.0.0")),
                                                       int(ipaddress.ip_address("10.90.255.255")))]
        assert (int(ipaddress.ip_address("10.100.25.0")), int(ipaddress.ip_address("10.100.25.255")), 4) \
            in maps4["groups4_9"]
        owner = NftState(node.name)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
        expect4 = {"10.80.0.10": FIELD.router(3), "10.70.1.255": FIELD.router(3), "10.70.2.0": FIELD.router(4),
                   "10.90.200.7": FIELD.router(3), "10.100.3.3": FIELD.router(3), "10.100.25.5": FIELD.router(4),
                   "10.81.0.5": FIELD.value, "10.85.0.1": FIELD.examined, "10.70.2.128": FIELD.examined}
        expect6 = {"fd00:80::10": FIELD.router(3), "fd00:70::1ff": FIELD.router(3), "fd00:70::200": FIELD.router(4),
                   "fd00:a0::3": FIELD.router(3), "fd00:a0::1905": FIELD.router(4), "fd00:81::5": FIELD.value,
                   "fd00:85::1": FIELD.examined}
        for address in expect4:
            node.ip(f"addr add {address}/32 dev lo")
        for address in expect6:
            node.ip(f"-6 addr add {address}/128 dev lo nodad")
        marks, entries = udp_marks(node, peer, 4, list(expect4), 7012)
        assert marks == expect4, entries
        marks, entries = udp_marks(node, peer, 6, list(expect6), 7013)
        assert marks == expect6, entries
    finally:
        if owner is not None:
            owner.close()
        for ns in (node, peer):
            ns.delete()


# a large table: the old two-transaction rebuild left it without prefixes for a while
REBUILD_PREFIXES = 20_000
FLOWS_PER_S = 500
SENDER = """
import socket, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
sent = 0
print('up', flush=True)
while time.monotonic() - start < seconds:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new source port: a new connection
    s.sendto(b'x', ('10.80.0.10', 7008))
    s.close()
    sent += 1
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
print(sent, flush=True)
"""


def large_table(n: int) -> list:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [ipaddress.ip_network("10.80.0.0/28")] + [
        ipaddress.ip_network(f"{ipaddress.IPv4Address(base + i * 8)}/30") for i in range(n)]


def test_a_repair_under_new_flows_leaves_no_flow_with_a_wrong_mark(lab):
    """Repairing the table is one transaction: a connection arriving during it meets the old
    table or the new one, never a table without its prefixes (which marks it "examined" for
    good: the old rebuild made the table, then added the prefixes)."""
    node, router, _ = lab
    want = nft.desired_table(large_table(REBUILD_PREFIXES), ["eth0"], {("eth0", ROUTER_MAC): 1}, FIELD)
    owner = NftState(node.name)
    try:
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
        node.exec(["nft", "add rule inet nra in_lb4_0 accept"])  # someone else's rule
        owner.forget()
        current = owner.read_blocking()
        change = nft.diff(want, current)
        assert change
        sender = subprocess.Popen([*router.exec_prefix(), "python3", "-c", SENDER, str(FLOWS_PER_S), "4"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert sender.stdout.readline().strip() == "up"
            time.sleep(1)
            owner.apply_blocking(change, want, FIELD, current)
            assert sender.poll() is None, "the rebuild must happen while flows arrive"
            sent = int(sender.stdout.readline())
            sender.wait(10)
        finally:
            sender.kill()
    finally:
        owner.close()
    entries = node.exec(["conntrack", "-L", "-p", "udp", "-d", "10.80.0.10"], check=False).stdout.splitlines()
    marks = [int(word.split("=")[1]) for line in entries for word in line.split() if word.startswith("mark=")]
    assert len(marks) > sent * 0.9, (len(marks), sent)
    wrong = [m for m in marks if m & FIELD.mask != FIELD.router(1)]
    assert not wrong, f"{len(wrong)} of {len(marks)} flows kept a wrong mark: {sorted(set(wrong))}"
