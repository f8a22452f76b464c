"""An uplink group's fallback on the real kernel, programmed by nra's own reconcile: a sender
that is no known router (another box on router A's link) gets the mark of its destination's
uplink group, and the replies leave by that group's router only: a reply for pool B by B's
router on eth1, never by A's on eth0, though the request came in on eth0."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from nra.config.metallb import parse_static_document
from nra.daemon.wiring import reconciler
from nra.settings import Settings
from testbed.netns import add_veth, new_netns
from tests.metallb_docs import two_uplinks
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

CONFIG = two_uplinks("10.60.0.2", "10.61.0.2")
# the node's replies to the stranger, by the link they leave on
SEEN = """table inet seen {
  counter a_via_eth0 { }
  counter a_via_eth1 { }
  counter b_via_eth0 { }
  counter b_via_eth1 { }
  chain post { type filter hook postrouting priority 0; policy accept;
    ip daddr 10.60.0.3 ip saddr 10.80.0.10 oifname "eth0" counter name a_via_eth0
    ip daddr 10.60.0.3 ip saddr 10.80.0.10 oifname "eth1" counter name a_via_eth1
    ip daddr 10.60.0.3 ip saddr 10.81.0.10 oifname "eth0" counter name b_via_eth0
    ip daddr 10.60.0.3 ip saddr 10.81.0.10 oifname "eth1" counter name b_via_eth1
  }
}
"""
ECHO = """
import socket, sys
socks = []
for addr in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 7009)); socks.append(s)
print('up', flush=True)
import select
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(100); s.sendto(data, peer)
"""
FLOWS = 8  # each its own source port: on a multipath table half would go the other way


def test_an_unknown_senders_replies_leave_by_its_pools_group_only():
    node, ra, rb, stranger = (new_netns(f"nra-grp-{r}") for r in ("node", "ra", "rb", "st"))
    echo = None
    try:
        add_veth(node, "eth0", ra, "eth0")
        add_veth(node, "eth1", rb, "eth0")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        node.ip("addr add 10.61.0.1/24 dev eth1")
        for lb in ("10.80.0.10", "10.81.0.10"):
            node.ip(f"addr add {lb}/32 dev lo")
        ra.ip("addr add 10.60.0.2/24 dev eth0")
        rb.ip("addr add 10.61.0.2/24 dev eth0")
        # another box on router A's link: a macvlan of ra's port, moved into its own namespace
        ra.ip("link add link eth0 name st type macvlan mode bridge")
        ra.ip(f"link set st netns {stranger.name}")
        stranger.ip("addr add 10.60.0.3/24 dev st")
        stranger.ip("link set st up")
        stranger.ip("route add default via 10.60.0.1")
        for peer in ("10.60.0.2", "10.61.0.2"):  # the routers' neighbour entries, as BGP would leave them
            node.exec(["ping", "-c", "1", "-W", "1", peer])
        node.sysctl(**{"net.ipv4.fib_multipath_hash_policy": 1})  # (a multipath table would split the flows)
        node.nft(SEEN)
        settings = Settings(NRA_NETNS=node.name, RETURN_PATH="conntrack", HEALTH_ADDRESS="off")
        assert settings.netns == node.name  # (never the root namespace)
        intent = parse_static_document(CONFIG, None, settings.peer_weight).intent

        async def program():
            async with reconciler(settings) as one:
                outcome = await one.reconcile(intent, "test", hooks=False)
                assert outcome.ok, outcome.describe()
                return outcome

        outcome = asyncio.run(program())
        groups = {tuple(g["pools"]): g for g in outcome.plan.uplinks}
        assert set(groups) == {("a",), ("b",)} and groups[("a",)]["table"] != groups[("b",)]["table"]
        echo = subprocess.Popen([*node.exec_prefix(), "python3", "-c", ECHO, "10.80.0.10", "10.81.0.10"],
                                stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "up"
        send = ("import socket, sys\n"
                "for dst in sys.argv[1:]:\n"
                f"    for i in range({FLOWS}):\n"
                "        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', (dst, 7009))\n")
        stranger.exec(["python3", "-c", send, "10.80.0.10", "10.81.0.10"])
        def seen():
            out = json.loads(node.exec(["nft", "-j", "list", "counters", "table", "inet", "seen"]).stdout)["nftables"]
            got = {c["counter"]["name"]: c["counter"]["packets"] for c in out if "counter" in c}
            return got if got["a_via_eth0"] + got["a_via_eth1"] + got["b_via_eth0"] + got["b_via_eth1"] >= 2 * FLOWS \
                else None

        got = wait_for(seen, 5, interval=0.05, what="the echo's replies counted")
        assert got == {"a_via_eth0": FLOWS, "a_via_eth1": 0, "b_via_eth0": 0, "b_via_eth1": FLOWS}, got
    finally:
        if echo is not None:
            echo.kill()
            echo.wait(5)
        for ns in (node, ra, rb, stranger):
            ns.delete()
