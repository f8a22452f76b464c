"""The per-packet path of nra's table on the real kernel (nftrace): a connection already
found not to be LoadBalancer traffic (the examined mark) stops at prerouting's first rule,
without the jump to dispatch_in and its verdict map; a LoadBalancer connection's packets go
on to it. And a rebuilt table is inert until its jumps are in (the compare before them
changes no packet: it accepts, as the policy does)."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import threading
import time

import pytest

from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field
from nra.kernel.nft import NftState
from testbed.netns import add_veth, new_netns

pytestmark = pytest.mark.kernel

FIELD = parse_mark_field("0x2/0x3e")
ROUTER_MAC = "02:00:00:00:00:01"
LB = "10.80.0.10"  # in the LB prefix
OTHER = "10.60.0.1"  # the node's own address on the peers' link: not LoadBalancer traffic
PROBE = 40999  # the source port of the datagrams that show the trace monitor listens
TRACE = """table inet trace {
  chain pre { type filter hook prerouting priority -300; policy accept; udp dport 7009 meta nftrace set 1; }
}
"""


@pytest.fixture
def lab():
    node, router = new_netns("nra-dp-node"), new_netns("nra-dp-rtr")
    try:
        add_veth(node, "eth0", router, "eth0")
        router.ip(f"link set dev eth0 address {ROUTER_MAC}")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        node.ip(f"addr add {LB}/32 dev lo")
        router.ip("addr add 10.60.0.2/24 dev eth0")
        router.ip(f"route add {LB}/32 via 10.60.0.1")
        node.nft(TRACE)
        yield node, router
    finally:
        for ns in (node, router):
            ns.delete()


def send(router, address: str, count: int, port: int) -> None:
    """`count` datagrams of one connection (one source port) to address:7009."""
    router.exec(["python3", "-c",
                 "import socket, time\n"
                 f"s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.60.0.2', {port}))\n"
                 f"for _ in range({count}):\n"
                 f"    s.sendto(b'x', ('{address}', 7009)); time.sleep(0.05)"])


def traced(node, router, action) -> dict[str, list[str]]:
    """The nftrace lines of nra's table while `action` runs, by trace id (one per packet).
    The monitor is known to listen once a probe datagram's trace shows (its packets are left
    out)."""
    monitor = subprocess.Popen([*node.exec_prefix(), "nft", "monitor", "trace"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(monitor.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(f"sport {PROBE}" in line for line in lines):
            assert time.monotonic() < deadline, "nft monitor trace printed nothing"
            send(router, OTHER, 1, PROBE)
            time.sleep(0.2)
        action()
        time.sleep(0.5)
    finally:
        monitor.terminate()
        monitor.wait(timeout=5)
        reader.join(timeout=5)
    probes = {line.split()[2] for line in lines if f"sport {PROBE}" in line}
    packets: dict[str, list[str]] = {}
    for line in lines:
        found = re.match(r"trace id (\S+) inet nra (\S+) (.*)", line)
        if found and found[1] not in probes:
            packets.setdefault(found[1], []).append(f"{found[2]} {found[3]}")
    return packets


def apply(node, prefixes=("10.80.0.0/28",)) -> nft.NftTable:
    want = nft.desired_table([ipaddress.ip_network(p) for p in prefixes], ["eth0"], {("eth0", ROUTER_MAC): 1}, FIELD)
    owner = NftState(node.name)
    try:
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
    finally:
        owner.close()
    return want


def test_an_examined_connection_stops_at_preroutings_compare_a_lb_one_goes_on(lab):
    node, router = lab
    apply(node)
    examined = traced(node, router, lambda: send(router, OTHER, 3, 40001))
    assert len(examined) == 3, examined
    first, *rest = examined.values()
    # its first packet is classified (examined), the next ones stop at the compare
    assert any(line.startswith("classify") for line in first), first
    for lines in rest:
        assert not any(line.startswith(("dispatch_in", "classify")) for line in lines), lines
        assert any(line.startswith("prerouting rule") and "(verdict accept)" in line for line in lines), lines
    lb = traced(node, router, lambda: send(router, LB, 3, 40002))
    assert len(lb) == 3, lb
    for lines in lb.values():  # marked with router 1's mark: through dispatch_in to restore_1 each time
        assert any(line.startswith("dispatch_in rule") for line in lines), lines
    assert any(line.startswith("save_1") for line in next(iter(lb.values()))), lb


def test_the_skeleton_touches_no_packet_until_the_jumps(lab):
    node, router = lab
    want = nft.desired_table([ipaddress.ip_network("10.80.0.0/28")], ["eth0"], {("eth0", ROUTER_MAC): 1}, FIELD)
    subprocess.run([*node.exec_prefix(), "nft", "-j", "-f", "-"], check=True, text=True,
                   input=json.dumps({"nftables": nft.skeleton_commands(want, False)}))
    # the hooked chains hold the compare alone: no packet goes further, none is marked
    inert = traced(node, router, lambda: send(router, LB, 2, 40003))
    assert inert and all(not any(line.startswith(("dispatch_in", "classify", "save")) for line in lines)
                         for lines in inert.values()), inert
    entries = node.exec(["conntrack", "-L", "-p", "udp", "--dport", "7009"], check=False).stdout
    assert entries and all(int(w.split("=")[1]) & FIELD.mask == 0 for w in entries.split() if w.startswith("mark=")), entries


def _marks(node, sport: int) -> list[int]:
    entries = node.exec(["conntrack", "-L", "-p", "udp", "--sport", str(sport), "--dport", "7009"],
                        check=False).stdout
    return [int(w.split("=")[1]) & FIELD.mask for w in entries.split() if w.startswith("mark=")]


def test_a_peer_links_packet_classify_does_not_place_stays_unmarked_and_its_next_is_marked(lab):
    """classify's last rule marks examined only what comes from another link: a packet from a
    peer's link that the block's verdict map did not place (here the IPv4 rule is gone, as a
    look-up miss would leave it) keeps its connection unmarked, so the connection's next packet,
    once the rule is back, gets its router's mark (examined, it would bypass the return path
    for good)."""
    node, router = lab
    want = apply(node)
    listed = json.loads(node.exec(["nft", "-j", "-a", "list", "chain", "inet", "nra", "classify"]).stdout)
    ipv4 = [e["rule"]["handle"] for e in listed["nftables"]
            if "rule" in e and "ip" in json.dumps(e["rule"]["expr"]) and "in_lb4_" in json.dumps(e["rule"]["expr"])]
    assert len(ipv4) == 1, listed
    node.nft(f"delete rule inet nra classify handle {ipv4[0]}")
    send(router, LB, 1, 40004)
    assert _marks(node, 40004) == [0]  # unmarked, not examined
    owner = NftState(node.name)
    try:  # nra's repair, as the daemon makes it: classify written again
        current = owner.read_blocking()
        change = nft.diff(want, current)
        assert change.rewrite == ("classify",), change
        owner.apply_blocking(change, want, FIELD, current)
    finally:
        owner.close()
    send(router, LB, 1, 40004)
    assert _marks(node, 40004) == [FIELD.router(1)]


def test_a_packet_from_another_link_is_examined(lab):
    node, router = lab
    apply(node)
    # a connection arriving on a link that is not a peer's (eth1, not in `links`)
    other = new_netns("nra-dp-other")
    try:
        add_veth(node, "eth1", other, "eth0")
        node.ip("addr add 10.61.0.1/24 dev eth1")
        other.ip("addr add 10.61.0.2/24 dev eth0")
        other.ip(f"route add {LB}/32 via 10.61.0.1")
        other.exec(["python3", "-c",
                    "import socket\n"
                    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.61.0.2', 40005))\n"
                    f"s.sendto(b'x', ('{LB}', 7009))"])
        assert _marks(node, 40005) == [FIELD.examined]
    finally:
        other.delete()
