"""nra's own route reading (codec.decode_route through NetlinkSocket) against pyroute2's
view of the same kernel routes: every kind of route a managed table or the main table can
hold, both families, in a throwaway namespace."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pyroute2 import IPRoute

from nra.kernel import routes as kroutes
from nra.kernel.socket import NetlinkSocket, in_netns
from tests.netns import add_peer_link, new_netns
from tests.pyroute2_routes import route_from_message, table_of

ROUTES = [
    # a weighted multipath, as nra installs it
    "-4 route replace default table 20 nexthop via 10.99.0.2 weight 3 nexthop via 10.99.0.3 weight 1",
    "-6 route replace default table 20 nexthop via fd99::2 weight 2 nexthop via fd99::3",
    # a single gateway, with a metric and a protocol
    "-4 route add 198.51.100.0/24 via 10.99.0.2 table 21 metric 7 proto static",
    "-6 route add 2001:db8:1::/48 via fd99::2 table 21 metric 1024",
    # a device route (link scope), a blackhole, a throw, a prohibit, a local route
    "-4 route add 203.0.113.0/25 dev eth0 table 22",
    "-4 route add blackhole 203.0.113.128/25 table 22",
    "-6 route add throw 2001:db8:2::/48 table 22",
    "-4 route add prohibit 192.0.2.0/24 table 22",
    "-4 route add local 192.0.2.77 dev eth0 table 22",
    # an onlink gateway, a tos, a table id above 255
    "-4 route add 100.64.0.0/10 via 10.200.0.1 dev eth0 onlink table 22",
    "-4 route add 100.128.0.0/10 tos 0x10 via 10.99.0.2 table 22",
    "-4 route add 100.192.0.0/10 via 10.99.0.3 table 100000",
    # an IPv4 route via an IPv6 nexthop (RTA_VIA), alone and as a hop of a multipath
    "-4 route add 100.32.0.0/12 via inet6 fd99::3 dev eth0 table 22",
    "-4 route add 100.48.0.0/12 table 22 nexthop via inet6 fd99::2 dev eth0 nexthop via 10.99.0.3",
    # main: connected routes and routes with gateways (only the first count as connected)
    "-4 route add 172.16.0.0/16 dev eth0",
    "-4 route add 172.17.0.0/16 via 10.99.0.2",
    "-6 route add 2001:db8:3::/48 via fd99::3",
    "-4 route add 172.18.0.0/16 nexthop via 10.99.0.2 nexthop via 10.99.0.3",
    "-4 route add 172.19.0.0/16 via inet6 fd99::2 dev eth0",
]
TABLES = (20, 21, 22, 100000, 254)


@pytest.fixture
def ns():
    namespace = new_netns("nra-rtcodec")
    try:
        add_peer_link(namespace)
        for route in ROUTES:
            namespace.ip(route)
        yield namespace
    finally:
        namespace.delete()


def pyroute2_view(netns: str, table: int) -> list:
    def read():
        with IPRoute(strict_check=True) as ipr:
            return [route_from_message(msg) for family in (socket.AF_INET, socket.AF_INET6)
                    for msg in ipr.route("dump", family=family, table=table)
                    if table_of(msg) == table]
    return in_netns(netns, read)


def test_every_kind_of_route_reads_as_pyroute2_reads_it(ns):
    sock = NetlinkSocket(ns.name)
    try:
        for table in TABLES:
            ours = kroutes.read_tables(sock, (table,))
            theirs = pyroute2_view(ns.name, table)
            assert ours == theirs, table
            # what equality leaves out: nexthop flags and links
            assert [[(h.flags, h.oif) for h in r.nexthops] for r in ours] == \
                [[(h.flags, h.oif) for h in r.nexthops] for r in theirs], table
            assert ours, table  # every table above holds routes
    finally:
        sock.close()


def test_connected_routes_are_the_gatewayless_unicast_ones_of_main(ns):
    sock = NetlinkSocket(ns.name)
    try:
        got = asyncio.run(kroutes.Routes(None, 20, sock).connected((4, 6)))
    finally:
        sock.close()
    found = {str(network) for network, _ in got}
    assert {"10.99.0.0/24", "172.16.0.0/16", "fd99::/64"} <= found
    assert not found & {"172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16", "2001:db8:3::/48"}
    eth0 = in_netns(ns.name, lambda: socket.if_nametoindex("eth0"))
    assert {oif for network, oif in got if str(network) == "172.16.0.0/16"} == {eth0}
