"""Whether each peer answers: the one owner of the "peer does not answer" hysteresis.

Facts come in (a neighbour entry's state from a read, or from a notification); a verdict per
peer goes out, which the planner turns into route membership. Pure: no I/O, no clock.

A dead peer's ARP/ND entry cycles FAILED -> INCOMPLETE -> FAILED each time anything sends to
it (the BGP speaker's retries; with IPv6 forwarding on, as on Kubernetes nodes, every reply
hashed to it, so FAILED lasts only microseconds). So a peer seen FAILED stays SILENT through
the INCOMPLETE retries until its entry is valid again (REACHABLE, STALE, DELAY, PROBE,
PERMANENT, NOARP). An INCOMPLETE never seen failing is a first resolution: UNSURE.

A SILENT peer's entry that is *gone* leaves it SILENT: the kernel's neighbour garbage
collector drops an unreferenced FAILED entry (nra took the peer out of the route, so nothing
holds it), and taking that as an answer put the dead router back into the route every GC
cycle, where the replies hashed to it were lost until it failed again. A peer never seen
failing and without an entry (first start, a fresh peer) ANSWERS. Nothing sends to a peer
that is out of the route, so `to_resolve()` lists the SILENT peers whose entry is FAILED or
gone: nra starts their resolution again, at a bounded rate (nra.daemon.peer_resolution), and a
peer comes back when its entry is valid again.

Routes learned over BGP (LEARNED_ROUTE_PROTOS) are a second signal: the node's routing
daemon installs them while the session to the peer is up and withdraws them when it drops
(with BFD, in a few hundred ms). A peer seen with at least one such route via it, and none
now, is SILENT ("bgp-down") until one is back; a peer never seen with one is not judged by
this signal (its daemon may not receive routes at all). Either signal leaves a peer out.

FRR-K8s's BGPSessionState objects (CRD mode, opt-in) are a third, advisory signal, and a
slow one (FRR-K8s refreshes them by polling FRR). A peer whose session has been reported not
Established, or with BFD down, for a hold time is SILENT ("bgp-down"); it answers again once
reported up for the same hold time (hysteresis). A peer without an object is unknown, not
down: it is not judged by this signal. A graceful-restart peer (`enableGracefulRestart`) is
judged down only after its restart time: meanwhile its router keeps forwarding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from nra.config.intent import Intent, IPAddress

#: FRR's default graceful-restart time (`bgp graceful-restart restart-time`, 120 s): MetalLB
#: enables graceful restart without setting it
GRACEFUL_RESTART_S = 120.0


class Liveness(Enum):
    ANSWERS = "answers"  # a valid entry, or nothing known against it (no entry, never failed)
    UNSURE = "unsure"  # being resolved for the first time: keep its place as it is
    SILENT = "silent"  # does not answer: leave it out


@dataclass(frozen=True)
class Verdict:
    liveness: Liveness
    #: the peers_left_out reason when SILENT ("no-arp"; later "bgp-down")
    reason: str = ""


ANSWERS = Verdict(Liveness.ANSWERS)


#: entry states that tell nothing new about a peer already judged SILENT: a resolution under
#: way (INCOMPLETE), or no entry at all (None: never made, or collected by the kernel)
_NOT_AN_ANSWER = ("INCOMPLETE", None)
#: entry states of a SILENT peer that nothing is resolving: see PeerHealth.to_resolve
_NOT_RESOLVING = ("FAILED", None)


def _is_valid(nud: str | None) -> bool:
    """An entry that holds the router's link-layer address (REACHABLE, STALE, DELAY, PROBE,
    PERMANENT, NOARP)."""
    return nud is not None and nud not in ("INCOMPLETE", "FAILED", "NONE")


def neighbour_liveness(previous: Liveness | None, nud: str | None) -> Liveness:
    """The liveness a neighbour state means, given the one before (see the module doc);
    `nud` None: no entry."""
    if nud == "FAILED":
        return Liveness.SILENT
    if nud in _NOT_AN_ANSWER and previous is Liveness.SILENT:
        return Liveness.SILENT
    if nud == "INCOMPLETE":
        return Liveness.UNSURE
    return Liveness.ANSWERS


class PeerHealth:
    """Liveness per peer address, kept between reconciles."""

    def __init__(self) -> None:
        self._neighbour: dict[IPAddress, Liveness] = {}
        #: the last entry state of each on-link peer (None: no entry)
        self._nud: dict[IPAddress, str | None] = {}
        #: the last link-layer address each on-link peer's entry had
        self._lladdr: dict[IPAddress, str] = {}
        #: peers ever seen with a learned route via them -> whether they have one now
        self._learned: dict[IPAddress, bool] = {}
        #: peers with a session state -> (reported up, since when, judged down)
        self._session: dict[IPAddress, tuple[bool, float, bool]] = {}

    def observe_neighbours(self, peers: Iterable[IPAddress], states: Mapping[IPAddress, str],
                           lladdrs: Mapping[IPAddress, str] | None = None) -> None:
        """A read of the on-link peers' entries (`states`: NUD name; absent: no entry;
        `lladdrs`: their link-layer addresses, when read). Peers not listed in `peers` (gone,
        or off-link) are forgotten."""
        old = self._neighbour
        self._nud = {a: states.get(a) for a in peers}
        self._neighbour = {a: neighbour_liveness(old.get(a), nud) for a, nud in self._nud.items()}
        self._lladdr = {a: m for a in self._nud if (m := (lladdrs or {}).get(a) or self._lladdr.get(a))}

    def observe_neighbour_change(self, address: IPAddress, nud: str | None, lladdr: str | None = None) -> str | None:
        """A notification for a watched peer's entry (`nud` None: the entry was removed).
        Returns a reason to reconcile when the peer's liveness changed, its entry became
        valid (its router is known now), or its link-layer address changed (another box
        answers); else None: most state changes (REACHABLE -> STALE -> DELAY ...) do not matter."""
        if address not in self._neighbour:
            return None
        was = self._nud.get(address)
        self._nud[address] = nud
        old = self._neighbour[address]
        new = neighbour_liveness(old, nud)
        self._neighbour[address] = new
        if new is not old:
            return f"neighbour {address}: {nud or 'entry removed'} ({old.value} -> {new.value})"
        if not _is_valid(nud) or not lladdr:
            return None
        known, self._lladdr[address] = self._lladdr.get(address), lladdr.lower()
        if not _is_valid(was):
            return f"neighbour {address}: {nud} at {lladdr} (was {was or 'no entry'})"
        if known is not None and known != lladdr.lower():
            return f"neighbour {address}: link-layer address {known} -> {lladdr.lower()}"
        return None

    def to_resolve(self) -> dict[IPAddress, str | None]:
        """The peers judged SILENT by their entry that nothing is resolving now: entry FAILED,
        or gone (None). Out of the route, nothing sends to them, so nothing would notice
        them answering again; their resolution is to be started again (see the module doc)."""
        return {a: nud for a, nud in self._nud.items()
                if nud in _NOT_RESOLVING and self._neighbour.get(a) is Liveness.SILENT}

    def observe_learned_routes(self, peers: Iterable[IPAddress], learned: Mapping[IPAddress, int]) -> None:
        """A read of the routes the routing daemons installed (`learned`: how many go via each
        peer). Peers not listed in `peers` (no longer configured) are forgotten."""
        old = self._learned
        self._learned = {a: bool(learned.get(a)) for a in peers if learned.get(a) or a in old}

    def observe_session_states(self, peers: Iterable[IPAddress], up: Mapping[IPAddress, bool], now: float,
                               hold_s: float, restart_s: Mapping[IPAddress, float] | None = None) -> float | None:
        """A view of the peers' session states (`up`: reported Established with BFD not down;
        a peer absent has no object). `restart_s`: the graceful-restart peers' restart times,
        the hold of a session reported down when longer. Returns when a verdict may change
        with no new report (a hold time running out), for a reconcile then; None if none will."""
        old = self._session
        self._session = {}
        recheck: float | None = None
        for address in peers:
            if address not in up:
                continue  # unknown: not down
            was_up, since, down = old.get(address, (up[address], now, False))
            if was_up != up[address]:
                since = now
            if down == up[address]:  # the report disagrees with the verdict: after the hold, follow it
                hold = hold_s if up[address] else max(hold_s, (restart_s or {}).get(address, 0.0))
                if now - since >= hold:
                    down = not up[address]
                else:
                    recheck = since + hold if recheck is None else min(recheck, since + hold)
            self._session[address] = (up[address], since, down)
        return recheck

    def verdict(self, address: IPAddress) -> Verdict:
        liveness = self._neighbour.get(address, Liveness.ANSWERS)
        if liveness is Liveness.SILENT:
            return Verdict(liveness, "no-arp")
        if self._learned.get(address) is False or self._session.get(address, (True, 0.0, False))[2]:
            return Verdict(Liveness.SILENT, "bgp-down")
        return Verdict(liveness)

    def verdicts(self) -> dict[IPAddress, Verdict]:
        """Every peer with something known against it (absent: ANSWERS)."""
        judged = {*self._neighbour, *(a for a, has in self._learned.items() if not has),
                  *(a for a, (_, _, down) in self._session.items() if down)}
        return {a: v for a in judged if (v := self.verdict(a)).liveness is not Liveness.ANSWERS}


def peer_sessions(intent: Intent, sessions: Mapping[str, bool]) -> dict[IPAddress, bool]:
    """The multipath table's peers' session states (`sessions` keyed as PeerSpec.key, see
    nra.sources.kube.session_states): by the peer's key, or for an unnumbered peer with the
    address label, by its interface."""
    routed = {p.address for p in intent.peers}
    found: dict[IPAddress, bool] = {}
    for spec in intent.specs:
        if spec.address not in routed:
            continue
        up = sessions.get(spec.key)
        if up is None and spec.interface:
            up = sessions.get(f"%{spec.interface}" + (f"@{spec.vrf}" if spec.vrf else ""))
        if up is not None:
            found[spec.address] = up
    return found


def restart_holds(intent: Intent, restart_s: float = GRACEFUL_RESTART_S) -> dict[IPAddress, float]:
    """How long a session of each graceful-restart peer may be reported down before it
    counts: the restart time, during which the router keeps forwarding."""
    return {s.address: restart_s for s in intent.specs if s.graceful_restart and s.address is not None}


def verdicts_from_states(states: Mapping[IPAddress, str]) -> dict[IPAddress, Verdict]:
    """Verdicts from one read alone, without history (`nra plan`, tests)."""
    health = PeerHealth()
    health.observe_neighbours(states, states)
    return health.verdicts()
