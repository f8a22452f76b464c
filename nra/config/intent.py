"""The desired state: which peers carry the return path, and which prefixes use it.

Every source (static file, ConfigMap, CRDs) produces an Intent; the planner diffs it
against the kernel. An Intent is immutable and compares by value, so "did the desired
state really change?" is a plain `==`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

from nra.config import prefix_delta

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Linux multipath weights are 1..256 (stored as hops = weight - 1).
MIN_WEIGHT = 1
MAX_WEIGHT = 256


@dataclass(frozen=True, order=True)
class Peer:
    """A BGP peer used as a nexthop of the managed route."""

    address: IPAddress
    weight: int
    # Where the peer came from (BGPPeer name, or the legacy peer's index); for logs only.
    name: str = field(default="", compare=False)
    #: the prefix family this nexthop serves when not its own: 4 for an IPv6 link-local
    #: nexthop of IPv4 prefixes (RFC 8950, `via inet6 fe80::.. dev X`); 0: its own family
    serves: int = 0

    @property
    def family(self) -> int:
        """The family of the prefixes (and route) it is a nexthop for."""
        return self.serves or self.address.version


@dataclass(frozen=True)
class PeerSpec:
    """A BGP peer of this node as MetalLB describes it, before the node's tables resolve it
    to a link and a next hop (nra.config.uplinks). Compared without its name, like Peer:
    a renamed BGPPeer, or the same peer in the legacy ConfigMap, is the same peer."""

    name: str = field(compare=False)
    #: None: an unnumbered peer, found on `interface` (its link-local address is discovered)
    address: IPAddress | None
    weight: int
    interface: str = ""  # BGPPeer.spec.interface (unnumbered BGP)
    vrf: str = ""  # BGPPeer.spec.vrf; "" is the default VRF
    multihop: bool = False  # BGPPeer.spec.ebgpMultiHop
    graceful_restart: bool = False  # BGPPeer.spec.enableGracefulRestart
    dual_stack: bool = False  # BGPPeer.spec.dualStackAddressFamily: the session carries both families

    @property
    def key(self) -> str:
        """The peer's identity, which two peers may not share: its address (or `%interface`
        when unnumbered), `@vrf` outside the default VRF. Uplink groups are sets of keys."""
        where = str(self.address) if self.address is not None else f"%{self.interface}"
        return f"{where}@{self.vrf}" if self.vrf else where


@dataclass(frozen=True)
class Resolution:
    """How one configured peer was resolved on this node (nra.config.uplinks.resolve_intent):
    the nexthops it stands for in the return path, and how they were found, for the logs,
    `nra status` and `nra plan`."""

    key: str  # PeerSpec.key
    name: str = field(compare=False)
    kind: str  # "on-link", "multihop", "unnumbered", "waiting"
    how: str  # one line: "via 10.0.1.254 (eth0), 10.0.2.254 (eth1)", "fe80::1 on eth1 (router)"
    vrf: str = ""
    peers: tuple[Peer, ...] = ()  # its nexthops, as the return path's peers


@dataclass(frozen=True)
class PoolBinding:
    """An announced pool and the peers (PeerSpec keys) that announce it on this node."""

    name: str = field(compare=False)
    prefixes: frozenset[IPNetwork]
    peers: frozenset[str]


@dataclass(frozen=True)
class Intent:
    """The complete desired state for this node.

    `peers` and `prefixes` are what the one multipath table serves (addressed peers of the
    default VRF, every announced prefix); `specs` and `pools` describe the uplinks: every
    configured peer of this node and which of them announce each pool (nra.config.uplinks).
    """

    peers: frozenset[Peer] = frozenset()
    prefixes: frozenset[IPNetwork] = frozenset()
    specs: frozenset[PeerSpec] = frozenset()
    pools: frozenset[PoolBinding] = frozenset()
    #: the peers that needed the node's tables to find their nexthops (multihop, unnumbered),
    #: once resolved (nra.config.uplinks.resolve_intent); `peers` then holds their nexthops
    resolved: tuple[Resolution, ...] = ()

    def peers_of(self, version: int) -> list[Peer]:
        """The nexthops of the family's route (an IPv6 link-local one serving IPv4 included)."""
        return sorted((p for p in self.peers if p.family == version), key=lambda p: (p.address.version, p))

    def prefixes_of(self, version: int) -> list[IPNetwork]:
        return sorted(p for p in self.prefixes if p.version == version)

    @cached_property
    def prefix_counts(self) -> dict[int, int]:
        """How many prefixes of each family (counted once per intent: a pass over 10,000
        prefixes costs milliseconds, and the metrics, the log and the planner all ask)."""
        known = prefix_delta.family_counts(self.prefixes)  # (a patched set's: from the last)
        if known is not None:
            return dict(known)
        v4 = sum(n for kind, n in Counter(map(type, self.prefixes)).items()  # (by type: at C speed)
                 if issubclass(kind, ipaddress.IPv4Network))
        prefix_delta.remember_counts(self.prefixes, {4: v4, 6: len(self.prefixes) - v4})
        return {4: v4, 6: len(self.prefixes) - v4}

    def summary(self) -> str:
        v4, v6 = self.peers_of(4), self.peers_of(6)
        return (
            f"{len(v4)} IPv4 + {len(v6)} IPv6 peers "
            f"({', '.join(f'{p.address} w{p.weight}' for p in v4 + v6) or 'none'}), "
            f"{self.prefix_counts[4]} IPv4 + {self.prefix_counts[6]} IPv6 prefixes"
        )


@dataclass(frozen=True)
class Problem:
    """A bad entry in the user's configuration: named, logged, skipped."""

    where: str  # e.g. "pool my-ip-space", "peer peer1", "BGPAdvertisement adv1"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class ParseResult:
    """An intent plus the problems met while building it (the intent excludes the bad entries)."""

    intent: Intent
    problems: tuple[Problem, ...] = ()
