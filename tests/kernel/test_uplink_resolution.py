"""Multihop and unnumbered peers resolved against the real kernel (issue 16), in throwaway
namespaces: the node reaches a router's loopback over two links (a multipath route), and has a
third, point-to-point link with IPv6 link-local addresses only (unnumbered BGP).

- the kernel's lookup gives every hop of the multipath, and refuses an answer from nra's own
  table (a rule of nra's without a source would make one);
- the nra daemon (no timer: events alone) routes the multihop peer's pools via the gateways
  and follows the route when it changes; it finds the unnumbered router's link-local address
  once the router's neighbour entry appears, and routes IPv4 through it (`via inet6`); the
  route read back is the one written (`nra plan` finds nothing to do).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import subprocess

import pytest

from nra.config.intent import PeerSpec
from nra.kernel.adapter import KernelAdapter
from nra.kernel.events import UplinkChange
from tests.agent.helpers import NRA, REPO, Daemon, clean_env
from tests.netns import new_netns, sh
from tests.wait import wait_for, wait_for_async

pytestmark = pytest.mark.kernel

LOOPBACK = "192.0.2.9"
GW1, GW2 = "10.98.1.2", "10.98.2.2"


@pytest.fixture
def uplinks():
    """(node, router, router's link-local address on the point-to-point link)."""
    node, router = new_netns("nra-ur-node"), new_netns("nra-ur-rtr")
    try:
        for ns in (node, router):
            sh(f"ip netns exec {ns.name} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0")
        router.sysctl(net__ipv4__ip_forward=1, net__ipv6__conf__all__forwarding=1)
        for i in (0, 1, 2):
            node.ip(f"link add name eth{i} type veth peer name eth{i} netns {router.name}")
        node.ip("addr add 10.98.1.1/24 dev eth0")
        node.ip("addr add 10.98.2.1/24 dev eth1")
        router.ip(f"addr add {GW1}/24 dev eth0")
        router.ip(f"addr add {GW2}/24 dev eth1")
        router.ip(f"addr add {LOOPBACK}/32 dev lo")
        for ns in (node, router):
            ns.ip("link set lo up")
            for i in (0, 1, 2):
                ns.ip(f"link set eth{i} up")
        node.ip(f"route add {LOOPBACK}/32 nexthop via {GW1} dev eth0 nexthop via {GW2} dev eth1")
        link_local = wait_for(lambda: _link_local(router, "eth2"), 5, what="the router's link-local address")
        yield node, router, link_local
    finally:
        node.delete()
        router.delete()


def _link_local(ns, link: str) -> str:
    words = ns.ip(f"-6 addr show dev {link} scope link").split()
    return next((w.split("/")[0] for i, w in enumerate(words) if words[i - 1] == "inet6"), "")


def gateways(node, family: str, table: int = 20) -> set[str]:
    """The gateways of a table's routes of one family (`via inet6 X` read as X)."""
    words = node.ip(f"{family} route show table {table}", check=False).split()
    found = set()
    for i, word in enumerate(words):
        if word == "via":
            found.add(words[i + 2] if words[i + 1] in ("inet", "inet6") else words[i + 1])
    return found


def test_the_lookup_gives_every_hop_of_a_multipath_and_never_nras_own_table(uplinks):
    node, router, _ = uplinks
    spec = PeerSpec("loop", ipaddress.ip_address(LOOPBACK), 1, multihop=True)

    async def look():
        async with KernelAdapter(20, node.name) as kernel:
            return await kernel.uplink_facts([spec])

    facts = asyncio.run(look())
    lookup = facts.lookups[LOOPBACK]
    assert {str(g): link for g, link in lookup.hops()} == {GW1: "eth0", GW2: "eth1"}
    # a hop whose link lost its carrier (the kernel marks it linkdown) is no gateway; none left: said
    router.ip("link set eth0 down")
    assert wait_for(lambda: [str(g) for g in asyncio.run(look()).lookups[LOOPBACK].gateways] == [GW2], 5,
                    what="the linkdown hop left out")
    router.ip("link set eth1 down")
    assert "every hop of the node's route to 192.0.2.9 is down" in wait_for(
        lambda: asyncio.run(look()).unresolved.get(LOOPBACK, ""), 5, what="both hops down")
    for link in ("eth0", "eth1"):
        router.ip(f"link set {link} up")
    # IPv6: a loopback behind the router's link-local addresses on two links
    ll0, ll1 = (wait_for(lambda: _link_local(router, link), 5, what=f"the router's link-local address on {link}")
                for link in ("eth0", "eth1"))
    node.ip(f"-6 route add 2001:db8:ff::9/128 nexthop via {ll0} dev eth0 nexthop via {ll1} dev eth1")
    spec6 = PeerSpec("loop6", ipaddress.ip_address("2001:db8:ff::9"), 1, multihop=True)

    async def look6():
        async with KernelAdapter(20, node.name) as kernel:
            return await kernel.uplink_facts([spec6])

    hops6 = asyncio.run(look6()).lookups["2001:db8:ff::9"].hops()
    assert {(str(g), link) for g, link in hops6} == {(ll0, "eth0"), (ll1, "eth1")}
    # a rule of nra's without a source (a 0.0.0.0/0 pool) would make the lookup land in table 20
    node.ip(f"route add default via {GW1} table 20")
    node.ip("rule add from all lookup 20 priority 100")
    facts = asyncio.run(look())
    assert LOOPBACK not in facts.lookups
    assert "in nra's own table 20" in facts.unresolved[LOOPBACK]
    node.ip(f"-6 route add default via {ll0} dev eth0 table 20")
    node.ip("-6 rule add from all lookup 20 priority 100")
    assert "in nra's own table 20" in asyncio.run(look6()).unresolved["2001:db8:ff::9"]


def test_a_route_change_to_a_multihop_peer_is_an_event(uplinks):
    node, _, _ = uplinks
    spec = PeerSpec("loop", ipaddress.ip_address(LOOPBACK), 1, multihop=True)

    async def follow():
        async with KernelAdapter(20, node.name) as kernel:
            await kernel.uplink_facts([spec])
            events = kernel.events()
            first = asyncio.ensure_future(anext(events))
            await kernel.subscribed()
            await asyncio.to_thread(node.ip, f"route replace {LOOPBACK}/32 via {GW2} dev eth1")
            event = await asyncio.wait_for(first, 5)
            while not isinstance(event, UplinkChange):
                event = await asyncio.wait_for(anext(events), 5)
            facts = await kernel.uplink_facts([spec])
            await events.aclose()
            return event, facts

    event, facts = asyncio.run(follow())
    assert f"route to multihop peer {LOOPBACK}" in event.reason
    assert [str(g) for g in facts.lookups[LOOPBACK].gateways] == [GW2]


CONFIG = f"""\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: loop}}
spec: {{peerAddress: {LOOPBACK}, ebgpMultiHop: true, myASN: 64512, peerASN: 64500}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: p2p}}
spec: {{interface: eth2, dualStackAddressFamily: true, myASN: 64512, peerASN: 64500}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool}}
spec: {{addresses: [198.51.100.0/24, 2001:db8:100::/120]}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: all}}
"""


def test_the_daemon_follows_a_multihop_route_and_routes_ipv4_via_the_unnumbered_routers_link_local(
        uplinks, tmp_path):
    node, _, link_local = uplinks
    config = tmp_path / "metallb.yaml"
    config.write_text(CONFIG)
    daemon = Daemon("--static-file", str(config), "--netns", node.name, log_path=tmp_path / "nra.log",
                    env=clean_env(MAX_RECONCILE_WAIT="0", LOG_LEVEL="debug"))
    try:
        wait_for(lambda: gateways(node, "-4") == {GW1, GW2}, 10, what="the multihop peer's gateways in table 20")
        assert "peer p2p: no router's link-local address seen on eth2 yet" in daemon.log()
        # the BGP session's first packets (here a ping) make the router's entry: an event
        assert node.run(["ping", "-6", "-c", "1", "-W", "2", f"{link_local}%eth2"], capture_output=True).returncode == 0
        wait_for(lambda: gateways(node, "-4") == {GW1, GW2, link_local}, 10, what="IPv4 via the link-local router")
        assert gateways(node, "-6") == {link_local}
        assert f"via inet6 {link_local} dev eth2" in node.ip("-4 route show table 20")

        # the route to the loopback changes: the table follows, no timer
        node.ip(f"route replace {LOOPBACK}/32 via {GW2} dev eth1")
        wait_for(lambda: gateways(node, "-4") == {GW2, link_local}, 10, what="the table following the route change")
        assert re.search(r"reconcile \([^)]*uplink", daemon.log())
    finally:
        daemon.stop()
    # the routes read back are the ones written: nothing to do
    plan = subprocess.run([*NRA, "plan", "--static-file", str(config), "--netns", node.name],
                                        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "# uplink group: pools pool; default vrf; table 20" in plan.stdout, plan.stdout
    assert f"# peer loop (192.0.2.9): multihop via {GW2} (eth1)" in plan.stdout, plan.stdout
    assert f"# peer p2p (%eth2): unnumbered {link_local} (eth2)" in plan.stdout, plan.stdout


def test_a_zoned_link_local_hop_of_an_ipv4_route_is_written_via_inet6_on_its_link(uplinks):
    """The router tables of conntrack mode write a peer's address as the planner has it: an
    unnumbered router's is zoned (fe80::x%eth2); its zone is the hop's link."""
    from nra.kernel.model import Nexthop
    from nra.kernel.operations import ReplaceRoute

    node, _, link_local = uplinks
    hop = Nexthop(ipaddress.ip_address(f"{link_local}%eth2"), 1)

    async def write():
        async with KernelAdapter(20, node.name) as kernel:
            return await kernel.apply([ReplaceRoute(4, ipaddress.ip_network("0.0.0.0/0"), 20, 0, (hop,))])

    report = asyncio.run(write())
    assert not report.failed, report.failed
    assert f"default via inet6 {link_local} dev eth2" in node.ip("-4 route show table 20")


def test_the_routing_daemons_link_local_next_hops_name_the_unnumbered_router(uplinks):
    """With LEARNED_ROUTE_PROTOS, the link-local gateway of a route the BGP daemon installed
    over the unnumbered link names its router (before any neighbour entry exists); so does
    the gateway of a route a router advertisement installed."""
    node, _, _ = uplinks
    node.ip("-6 route add 2001:db8:55::/64 via fe80::99 dev eth2 proto bird")
    node.ip("route add 10.55.0.0/24 via inet6 fe80::98 dev eth2 proto bird")
    node.ip("-6 route add 2001:db8:56::/64 via fe80::97 dev eth1 proto bird")  # another link: not this peer's
    spec = PeerSpec("p2p", None, 1, interface="eth2")

    async def look(protos):
        async with KernelAdapter(20, node.name, learned_protos=protos) as kernel:
            return await kernel.uplink_facts([spec])

    assert asyncio.run(look(frozenset({12}))).learned_hops == {
        "eth2": (ipaddress.ip_address("fe80::98"), ipaddress.ip_address("fe80::99"))}
    assert asyncio.run(look(frozenset())).learned_hops == {}  # learned-route reading off: not read
    # a route from a router advertisement (proto ra) names the router whatever the setting
    node.ip("-6 route add 2001:db8:57::/64 via fe80::96 dev eth2 proto ra")
    assert asyncio.run(look(frozenset())).learned_hops == {"eth2": (ipaddress.ip_address("fe80::96"),)}
