#!/usr/bin/env python3
"""What writing a route costs through pyroute2 (as nra does) against nra's own socket, in a
throwaway namespace (root): the figure behind keeping pyroute2 for route writes.

A reconcile writes one multipath route per family into the managed table, and in conntrack
mode one route per router table: a handful. Each write here is a 2-hop multipath replace into
its own destination; `own` encodes the same RTM_NEWROUTE with nra's codec (for this
measurement only) and sends it through NetlinkSocket.

    .venv/bin/python benchmarks/route_write_bench.py [--routes 500]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nra.kernel import codec  # noqa: E402
from nra.kernel.model import Nexthop  # noqa: E402
from nra.kernel.routes import Routes, open_route_socket, read_tables  # noqa: E402
from nra.kernel.socket import NetlinkSocket  # noqa: E402
from testbed.netns import add_peer_link, new_netns  # noqa: E402

TABLE = 20
HOPS = (Nexthop(ipaddress.ip_address("10.99.0.2"), 3), Nexthop(ipaddress.ip_address("10.99.0.3"), 1))


def own_replace(dst: ipaddress.IPv4Network, table: int) -> bytes:
    """An RTM_NEWROUTE body: a unicast multipath replace (benchmark only)."""
    multipath = b""
    for hop in HOPS:
        gateway = codec.attribute(codec.RTA_GATEWAY, hop.gateway.packed)
        multipath += codec.RTNEXTHOP.pack(codec.RTNEXTHOP.size + len(gateway), 0, hop.weight - 1, 0) + gateway
    return (codec.RTMSG.pack(2, dst.prefixlen, 0, 0, table, 3, 0, 1, 0) + codec.attribute(codec.RTA_TABLE,
            codec.U32.pack(table)) + codec.attribute(codec.RTA_DST, dst.network_address.packed)
            + codec.attribute(codec.RTA_MULTIPATH, multipath))


async def measure(n: int) -> dict[str, float]:
    ns = new_netns("nra-rtwrite")
    try:
        add_peer_link(ns)
        dsts = [ipaddress.ip_network(f"198.18.{i // 256}.{i % 256}/32") for i in range(n)]
        ipr = await open_route_socket(ns.name)
        sock = NetlinkSocket(ns.name)
        try:
            routes = Routes(ipr, TABLE, sock)
            times = []
            for dst in dsts:
                t0 = time.perf_counter()
                await routes.replace(4, dst, 0, HOPS)
                times.append(time.perf_counter() - t0)
            pyroute2_ms = statistics.median(times) * 1000
            assert len(read_tables(sock, (TABLE,))) == n
            flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK | codec.NLM_F_CREATE | codec.NLM_F_REPLACE
            times = []
            for dst in dsts:
                t0 = time.perf_counter()
                (code,) = await asyncio.to_thread(sock.request_batch, codec.RTM_NEWROUTE, flags,
                                                  [own_replace(dst, TABLE + 1)])
                times.append(time.perf_counter() - t0)
                assert code == 0, code
            own_ms = statistics.median(times) * 1000
            # the same routes listed the same way either way
            assert [(r.dst, r.nexthops) for r in read_tables(sock, (TABLE,))] == \
                [(r.dst, r.nexthops) for r in read_tables(sock, (TABLE + 1,))]
            return {"pyroute2_write_ms": pyroute2_ms, "own_write_ms": own_ms}
        finally:
            ipr.close()
            sock.close()
    finally:
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=500)
    args = parser.parse_args()
    row = asyncio.run(measure(args.routes))
    print(f"{args.routes} routes: one write (median) through pyroute2 {row['pyroute2_write_ms']:.3f} ms, "
          f"through nra's socket {row['own_write_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
