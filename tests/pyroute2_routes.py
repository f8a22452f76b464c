"""pyroute2's reading of route messages as nra's KernelRoute: an independent decoder the
tests hold nra's codec against (test_route_codec), and read route monitors with. nra itself
decodes routes one way only, with nra.kernel.codec."""

from __future__ import annotations

import ipaddress

from nra.kernel.codec import ROUTE_TYPES, VERSION, nexthop_flags
from nra.kernel.model import KernelRoute, Nexthop


def table_of(msg) -> int:
    """The table of a pyroute2 route message (the attribute holds ids above 255)."""
    return msg.get("RTA_TABLE") or msg["table"]


def _gateway(hop) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = hop.get("RTA_GATEWAY")
    if not value:
        via = hop.get("RTA_VIA")
        value = via.get("addr") if isinstance(via, dict) else None
    return ipaddress.ip_address(value) if value else None


def route_from_message(msg) -> KernelRoute:
    version = VERSION[msg["family"]]
    dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
    multipath = msg.get("RTA_MULTIPATH")
    if multipath:
        nexthops = tuple(Nexthop(_gateway(nh), nh["hops"] + 1, nexthop_flags(nh["flags"]), nh.get("oif"))
                         for nh in multipath)
    elif _gateway(msg) or msg.get("RTA_OIF"):
        nexthops = (Nexthop(_gateway(msg), 1, nexthop_flags(msg["flags"]), msg.get("RTA_OIF")),)
    else:
        nexthops = ()
    return KernelRoute(
        family=version, dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
        table=table_of(msg), nexthops=nexthops, type=ROUTE_TYPES.get(msg["type"], str(msg["type"])),
        metric=msg.get("RTA_PRIORITY") or 0, tos=msg["tos"], proto=msg["proto"], oif=msg.get("RTA_OIF"),
        scope=msg["scope"],
    )
