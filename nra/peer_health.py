"""Whether each peer answers: the one owner of the "peer does not answer" hysteresis.

Facts come in (a neighbour entry's state from a read, or from a notification); a verdict per
peer goes out, which the planner turns into route membership. Pure: no I/O, no clock.

A dead peer's ARP/ND entry cycles FAILED -> INCOMPLETE -> FAILED each time anything sends to
it (the BGP speaker's retries; with IPv6 forwarding on, as on Kubernetes nodes, every reply
hashed to it, so FAILED lasts only microseconds). So a peer seen FAILED stays SILENT through
the INCOMPLETE retries until its entry is valid again (REACHABLE, STALE, DELAY, PROBE,
PERMANENT, NOARP) or gone. An INCOMPLETE never seen failing is a first resolution: UNSURE.

Other liveness signals (routes learned over BGP, FRR-K8s session state) are meant to feed
this same owner as further observe_* methods, each with its own reason in Verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from nra.intent import IPAddress


class Liveness(Enum):
    ANSWERS = "answers"  # a valid entry, no entry, or nothing known against it
    UNSURE = "unsure"  # being resolved for the first time: keep its place as it is
    SILENT = "silent"  # does not answer: leave it out


@dataclass(frozen=True)
class Verdict:
    liveness: Liveness
    #: the peers_left_out reason when SILENT ("no-arp"; later "bgp-down")
    reason: str = ""


ANSWERS = Verdict(Liveness.ANSWERS)


def neighbour_liveness(previous: Liveness | None, nud: str | None) -> Liveness:
    """The liveness a neighbour state means, given the one before (see the module doc)."""
    if nud == "FAILED":
        return Liveness.SILENT
    if nud == "INCOMPLETE":
        return Liveness.SILENT if previous is Liveness.SILENT else Liveness.UNSURE
    return Liveness.ANSWERS


class PeerHealth:
    """Liveness per peer address, kept between reconciles."""

    def __init__(self) -> None:
        self._neighbour: dict[IPAddress, Liveness] = {}

    def observe_neighbours(self, peers: Iterable[IPAddress], states: Mapping[IPAddress, str]) -> None:
        """A read of the on-link peers' entries (`states`: NUD name; absent: no entry). Peers
        not listed in `peers` (gone, or off-link) are forgotten."""
        old = self._neighbour
        self._neighbour = {a: neighbour_liveness(old.get(a), states.get(a)) for a in peers}

    def observe_neighbour_change(self, address: IPAddress, nud: str | None) -> str | None:
        """A notification for a watched peer's entry (`nud` None: the entry was removed).
        Returns a reason to reconcile when the peer's liveness changed, else None: most
        state changes (REACHABLE -> STALE -> DELAY ...) do not matter."""
        if address not in self._neighbour:
            return None
        old = self._neighbour[address]
        new = neighbour_liveness(old, nud)
        if new is old:
            return None
        self._neighbour[address] = new
        return f"neighbour {address}: {nud or 'entry removed'} ({old.value} -> {new.value})"

    def verdict(self, address: IPAddress) -> Verdict:
        liveness = self._neighbour.get(address, Liveness.ANSWERS)
        return Verdict(liveness, "no-arp") if liveness is Liveness.SILENT else Verdict(liveness)

    def verdicts(self) -> dict[IPAddress, Verdict]:
        """Every peer with something known against it (absent: ANSWERS)."""
        return {a: self.verdict(a) for a, liveness in self._neighbour.items() if liveness is not Liveness.ANSWERS}


def verdicts_from_states(states: Mapping[IPAddress, str]) -> dict[IPAddress, Verdict]:
    """Verdicts from one read alone, without history (`nra plan`, tests)."""
    health = PeerHealth()
    health.observe_neighbours(states, states)
    return health.verdicts()
