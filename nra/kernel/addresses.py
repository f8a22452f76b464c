"""The node's own addresses, as the kernel's local table lists them: which candidate peers
are not a neighbour at all (the node itself, a broadcast or a subnet's anycast address)."""

from __future__ import annotations

import asyncio
from typing import Iterable

from nra.config.intent import IPAddress
from nra.kernel.codec import (
    AF,
    RT_TABLE_LOCAL,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTN_ANYCAST,
    RTN_BROADCAST,
    RTN_LOCAL,
    Message,
    decode_route_header,
)
from nra.kernel.neighbours import by_packed
from nra.kernel.socket import NetlinkSocket

LOCAL_KINDS = {RTN_LOCAL: "this node's own address", RTN_BROADCAST: "a broadcast address",
               RTN_ANYCAST: "a subnet's anycast (network) address"}


class LocalAddresses:
    def __init__(self, sock: NetlinkSocket):
        self.sock = sock

    async def kinds(self, addresses: Iterable[IPAddress]) -> dict[IPAddress, str]:
        """Of `addresses`, those the local table holds, with what they are."""
        return await asyncio.to_thread(self.kinds_blocking, tuple(addresses))

    def kinds_blocking(self, addresses: Iterable[IPAddress]) -> dict[IPAddress, str]:
        """kinds(), in the calling thread (a worker thread: it blocks)."""
        wanted = by_packed(addresses)

        def keep(message: Message) -> tuple[bytes, int] | None:
            if message.kind != RTM_NEWROUTE:
                return None
            route = decode_route_header(message)
            if route.table != RT_TABLE_LOCAL or route.dst_len != len(route.dst) * 8:
                return None
            return (route.dst, route.type) if route.dst in wanted and route.type in LOCAL_KINDS else None

        found: dict[IPAddress, str] = {}
        for version in sorted({a.version for group in wanted.values() for a in group}):
            for dst, kind in self.sock.dump(RTM_GETROUTE, AF[version], keep, RT_TABLE_LOCAL):
                for address in wanted[dst]:
                    found[address] = LOCAL_KINDS[kind]
        return found
