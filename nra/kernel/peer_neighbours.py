"""What nra sets up in the kernel's neighbour machinery for its peers: two opt-in settings,
and the re-resolution of silent peers.

- managed entries (MANAGED_NEIGHBOURS, Linux 5.16+): each on-link peer's ARP/ND entry (unless
  set by hand: PERMANENT or NOARP) is marked NTF_MANAGED, so the kernel keeps it resolved without traffic and a dead idle router
  goes FAILED (without it its entry sits in STALE for ever). nra owns the mark it sets: an
  entry it marked is deleted when its peer goes (the kernel makes a plain one again on use),
  and marked again if it vanished (a link flap flushes the link's entries).
- timers (PEER_NEIGH_TIMERS) of the peers' links, ARP and ND, through RTM_SETNEIGHTBL (needs
  NET_ADMIN only, no writable /proc/sys), set once per link; they stay when nra stops.
- re-resolution (always): a peer judged silent is out of the route, so nothing sends to it
  and its entry stays FAILED, or is collected by the kernel's neighbour GC, even once the
  router is back (only the node's BGP speaker might still try it). `resolve` starts the
  resolution of such entries again: one RTM_NEWNEIGH with NTF_USE per peer and link (what
  `ip neigh replace ADDR dev DEV use` sends), with which the kernel makes the entry if it is
  gone and sends its ARP request or neighbour solicitation, exactly as for a packet to the
  peer, but with no packet: nothing for the router to answer, no socket, no source address
  to pick. The entry so made is the kernel's, like one a packet makes; nra does not keep it.
  With managed entries, a marked one is left to the kernel (it re-probes it every
  `interval_probe_time_ms`) and one that went is marked again (which resolves it at once).
  The caller bounds the rate (nra.daemon.peer_resolution).

Measured in docs/failover.md.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Mapping

from nra.config.intent import IPAddress
from nra.kernel.codec import (
    AF,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    RTM_SETNEIGHTBL,
    encode_neighbour,
    encode_neighbour_timers,
    error_text,
)
from nra.kernel.socket import NetlinkSocket

#: what a kernel without managed neighbour entries (before 5.16) answers
UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT}


class PeerNeighbours:
    def __init__(self, sock: NetlinkSocket, managed: bool = False, timers: Mapping[str, int] | None = None):
        self.sock = sock
        self.managed = managed
        self.timers = dict(timers or {})
        #: (packed address, family, link index) of the entries nra marked managed
        self._marked: set[tuple[bytes, int, int]] = set()
        #: (family, link index) whose timers nra set
        self._timed: set[tuple[int, int]] = set()

    @property
    def active(self) -> bool:
        return self.managed or bool(self.timers)

    async def set_up(self, links: Mapping[IPAddress, frozenset[int]], present: Mapping[IPAddress, str]) -> list[str]:
        """For the on-link peers (`links`: peer -> its links; `present`: the peers with an
        entry there): mark their entries managed and set their links' timers, where not done
        yet; unmark the entries of peers that went. Returns warnings (a refusal names what)."""
        warnings: list[str] = []
        if self.timers:
            await self._set_timers(links, warnings)
        if self.managed:
            await self._mark(links, present, warnings)
        return warnings

    async def _set_timers(self, links: Mapping[IPAddress, frozenset[int]], warnings: list[str]) -> None:
        todo = sorted({(AF[a.version], oif) for a, oifs in links.items() for oif in oifs} - self._timed)
        if not todo:
            return
        bodies = [encode_neighbour_timers(family, oif, self.timers) for family, oif in todo]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_SETNEIGHTBL, NLM_F_REQUEST | NLM_F_ACK, bodies)
        for (family, oif), code in zip(todo, codes):
            if code == 0:
                self._timed.add((family, oif))
            else:
                warnings.append(f"neighbour timers of link #{oif} (IPv{4 if family == AF[4] else 6}) not set: "
                                f"{error_text(code)}")

    async def _mark(self, links: Mapping[IPAddress, frozenset[int]], present: Mapping[IPAddress, str],
                    warnings: list[str]) -> None:
        peers = {(a.packed, AF[a.version], oif): a for a, oifs in links.items() for oif in oifs}
        # an entry set by hand (PERMANENT, NOARP) is the operator's: never made managed, and no
        # longer ours to delete
        by_hand = {key for key, a in peers.items() if present.get(a) in ("PERMANENT", "NOARP")}
        self._marked -= by_hand
        want = {key: a for key, a in peers.items() if key not in by_hand}
        todo = [key for key, a in want.items() if key not in self._marked or a not in present]
        gone = sorted(self._marked - peers.keys())
        if todo:
            bodies = [encode_neighbour(packed, family, oif, managed=True) for packed, family, oif in todo]
            codes = await asyncio.to_thread(self.sock.request_batch, RTM_NEWNEIGH,
                                            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, bodies)
            for key, code in zip(todo, codes):
                if code == 0:
                    self._marked.add(key)
                elif code in UNSUPPORTED:
                    self.managed = False
                    warnings.append(f"this kernel refuses managed neighbour entries ({error_text(code)}; "
                                    f"Linux 5.16+ has them): MANAGED_NEIGHBOURS is off")
                    return
                else:
                    warnings.append(f"neighbour entry of peer {want[key]} not made managed: {error_text(code)}")
        if gone:
            bodies = [encode_neighbour(packed, family, oif, managed=False) for packed, family, oif in gone]
            codes = await asyncio.to_thread(self.sock.request_batch, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, bodies)
            for key, code in zip(gone, codes):
                if code in (0, errno.ENOENT, errno.ENODEV):
                    self._marked.discard(key)

    async def resolve(self, links: Mapping[IPAddress, frozenset[int]],
                      entries: Mapping[IPAddress, str | None]) -> list[str]:
        """Start resolving the entries of silent peers on their links (`links`: peer -> its
        links; `entries`: the state of each one's entry, None when gone; see the module doc).
        Returns warnings (a refusal names the peer)."""
        todo: dict[tuple[bytes, int, int], IPAddress] = {}
        for address, oifs in links.items():
            for oif in oifs:
                key = (address.packed, AF[address.version], oif)
                if self.managed and key in self._marked and entries.get(address) is not None:
                    continue  # managed: the kernel re-probes it
                todo[key] = address
        if not todo:
            return []
        bodies = [encode_neighbour(packed, family, oif, managed=self.managed, use=not self.managed)
                  for packed, family, oif in todo]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_NEWNEIGH,
                                        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, bodies)
        warnings: list[str] = []
        for (key, address), code in zip(todo.items(), codes):
            if code == 0:
                if self.managed:
                    self._marked.add(key)
            else:
                warnings.append(f"resolution of silent peer {address} not started: {error_text(code)}")
        return warnings
