"""What the kernel holds, as plain facts: the types the kernel components return and the
planner reads. No I/O and no policy here."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Collection, Mapping

from nra.config.intent import IPAddress, IPNetwork
from nra.kernel.nft_table import NftTable

# Kernel metric our route gets: IPv4 routes default to 0, IPv6 routes to 1024
# (IP6_RT_PRIO_USER).
DEFAULT_METRIC = {4: 0, 6: 1024}
# A rule with `fwmark M` and no mask is stored and listed with mask 0xffffffff.
FULL_MASK = 0xFFFFFFFF
#: The routing protocol number on every rule and route nra writes (FRA_PROTOCOL,
#: rtm_protocol): how nra finds what it owns in tables its settings no longer name (a new
#: TABLE or RETURN_PATH_TABLES, a mark whose capacity shrank, conntrack switched to rules).
#: Unassigned in iproute2's rt_protos; a rule of nra's tables without it is not nra's.
NRA_PROTOCOL = 245


@dataclass(frozen=True, order=True)
class Nexthop:
    gateway: IPAddress | None  # None: a device route without a gateway
    weight: int = 1  # 1..256
    # e.g. "dead", "linkdown", "onlink"; informative, not part of equality
    flags: frozenset[str] = field(default=frozenset(), compare=False)
    #: the link's index; needed to install a link-local gateway, informative otherwise
    oif: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KernelRoute:
    """A route of the managed table as the kernel lists it."""

    family: int  # 4 or 6
    dst: IPNetwork
    table: int
    nexthops: tuple[Nexthop, ...] = ()
    type: str = "unicast"
    metric: int = 0
    tos: int = 0
    proto: int = 0
    oif: int | None = None
    scope: int = 0  # RT_SCOPE_UNIVERSE; a device route is "link" (253), a local one "host" (254)
    #: the nexthop object it goes through (0: none); with nexthop_compat_mode=0 its gateways
    #: are not in `nexthops` (nra.kernel.codec.nexthop_hops)
    nh_id: int = 0


#: rule_key's layout: family, the source's high and low 64 bits, its length (255: from
#: all), priority, table, fwmark and fwmask (-1: none)
_RULE_KEY = struct.Struct("=BQQBIIqq")
_LOW64 = (1 << 64) - 1


def rule_key(family: int, src: IPNetwork | None, priority: int, table: int,
             fwmark: int | None, fwmask: int | None) -> bytes:
    """What makes two rules the same rule to the kernel, as bytes: a bytes object keeps its
    hash once computed (a tuple hashes its items again on every look-up, and ipaddress
    hashes in Python), so the planner's set operations over 10,000 rules are pointer work.
    `from 0.0.0.0/0` and "no from" are one rule; so are "no fwmark" and any fwmark with mask 0."""
    if not fwmask:
        fwmark = fwmask = None
    if src is None or not src.prefixlen:
        high = low = 0
        length = 255
    else:
        value = int(src.network_address)
        high, low, length = value >> 64, value & _LOW64, src.prefixlen
    return _RULE_KEY.pack(family, high, low, length, priority, table, -1 if fwmark is None else fwmark,
                          -1 if fwmask is None else fwmask)


@dataclass(frozen=True, slots=True)
class KernelRule:
    """A rule pointing at the managed table as the kernel lists it."""

    family: int  # 4 or 6
    src: IPNetwork | None  # None: no `from` (from all)
    priority: int
    table: int
    #: the fwmark selector: None when the rule has none; a mark of 0 with a mask is one
    fwmark: int | None = None
    fwmask: int | None = None
    # Any other selector or modifier, rendered `ip rule`-like ("iifname eth1", "to
    # 10.0.0.0/8", "not", "tos 0x10", "action 2"); a rule with any of these is never ours.
    extra: tuple[str, ...] = ()
    #: the kernel's own message body for this rule, sent back to delete exactly it
    wire: bytes = field(default=b"", compare=False, hash=False, repr=False)
    #: rule_key() of this rule; None for a rule that can never be ours. Computed once, when
    #: the rule is made (the rules component reuses unchanged rules between reads), and an
    #: attribute, so that the planner's pass over 10,000 rules is operator.attrgetter's
    identity: bytes | None = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", None if self.extra else rule_key(
            self.family, self.src, self.priority, self.table, self.fwmark, self.fwmask))

    def key(self) -> bytes | None:
        """rule_key() of this rule (its `identity`)."""
        return self.identity


#: entry states that carry no link-layer address yet (a resolution under way, or none made)
UNRESOLVED = ("INCOMPLETE", "NONE")


@dataclass(frozen=True)
class NeighbourEntry:
    """One ARP/ND entry (from a dump or a notification)."""

    address: IPAddress
    ifindex: int
    state: str  # a NUD state name ("REACHABLE", "FAILED", "INCOMPLETE" ...), or "NONE"
    deleted: bool = False  # an RTM_DELNEIGH notification
    lladdr: str | None = None  # the link-layer address, when the entry has one ("02:00:...")


@dataclass(frozen=True)
class KernelState:
    """One read of everything a reconcile looks at."""

    routes: tuple[KernelRoute, ...] = ()
    #: the rules pointing at the tables: a RuleSet (nra.kernel.rule_set: held as bytes,
    #: decoded on iteration) from the adapter, or a tuple of decoded rules
    rules: Collection[KernelRule] = ()
    #: candidate peers the kernel would refuse as a nexthop (no connected route to them)
    unreachable: frozenset[IPAddress] = frozenset()
    #: candidate peers' neighbour entries on the link of their connected route, by NUD
    #: state name; a peer without an entry is not listed
    neighbours: Mapping[IPAddress, str] = field(default_factory=dict)
    #: the link index of each on-link candidate peer (where the kernel resolves it)
    links: Mapping[IPAddress, frozenset[int]] = field(default_factory=dict)
    #: candidate peers the kernel knows as something that cannot be a nexthop, with what it
    #: is ("this node's own address", "a broadcast address", ...)
    invalid: Mapping[IPAddress, str] = field(default_factory=dict)
    #: how many routes installed by the configured routing daemons (LEARNED_ROUTE_PROTOS) go
    #: via each candidate peer; None when learned-route liveness is off
    learned: Mapping[IPAddress, int] | None = None
    #: rules and routes of nra's (NRA_PROTOCOL) in tables the settings no longer name
    leftovers: tuple[KernelRule | KernelRoute, ...] = ()
    #: nra's nftables table is there though the return path does not own it (the conntrack
    #: mode's, found in rules mode; KernelReads.nft_leftover), as of the last full read
    nft_leftover: bool = False
    # -- read only when the return path asks (KernelReads) ---------------------------------
    #: candidate peers' link-layer addresses (their neighbour entries'); KernelReads.peer_links
    lladdrs: Mapping[IPAddress, str] = field(default_factory=dict)
    #: names of the peers' links, by index; KernelReads.peer_links
    link_names: Mapping[int, str] = field(default_factory=dict)
    #: routes of the return path's other tables (KernelReads.route_tables: the router tables)
    router_routes: tuple[KernelRoute, ...] = ()
    #: nra's nftables table, None when absent (or not read: KernelReads.nftables)
    nft: NftTable | None = None


@dataclass(frozen=True)
class KernelReads:
    """What a return path needs read beyond the table (TABLE_WEIGHT) and its rules: the
    kernel side reads exactly this, so a return path declares it and the adapter has no
    mode of its own."""

    #: more tables whose routes, and the rules pointing at them, are nra's
    route_tables: range = range(0)
    #: nra's nftables table (read, written, and its foreign changes watched)
    nftables: bool = False
    #: the peers' link-layer addresses and the names of their links
    peer_links: bool = False
    #: whether nra's nftables table is there though this return path does not own it (the
    #: conntrack mode's, seen from rules mode): one GETTABLE on each full read, never a listing
    nft_leftover: bool = False
