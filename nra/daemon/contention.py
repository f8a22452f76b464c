"""Recognising a fight over the table: another writer (a second agent with another
configuration, say) that keeps undoing what nra just did.

Pure: the agent reports each reconcile (when, whether someone else's change to the table or
its rules triggered it, and the operations applied) and gets told when a fight starts or
ends. A fight is REPAIRS repairs, within WINDOW_S, of changes nra itself made shortly before
(an undo of a fresh change of ours, not ordinary drift); it is over after QUIET_S without one.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable, Sequence

WINDOW_S = 30.0
REPAIRS = 3
QUIET_S = 60.0
#: of one reconcile's operations, this many are remembered: a fight is over a route or a
#: few rules, and 10,000 rule adds of a new configuration need not all be hashed
TRACKED = 64


def remembered_as(op: Hashable) -> Hashable:
    """What an applied operation is remembered by for the window: its command (the same
    change is the same command, as operations compare), not the operation itself. An nft
    change (ApplyNft) holds the desired and current tables, 100,000 intervals each at scale,
    and its element lists: kept as keys for WINDOW_S, a few edits in a row held tens of MB
    past their reconcile."""
    command = getattr(op, "command", None)
    return command() if callable(command) else op


class ContentionDetector:
    def __init__(self, window_s: float = WINDOW_S, repairs: int = REPAIRS, quiet_s: float = QUIET_S):
        self.window_s = window_s
        self.repairs_needed = repairs
        self.quiet_s = quiet_s
        self._ours: dict[Hashable, float] = {}  # operation -> when we last applied it
        self._repairs: deque[tuple[float, Hashable]] = deque()
        #: what the fight is about, while there is one ("" otherwise)
        self.fight = ""

    def reconciled(self, now: float, by_drift: bool, applied: Sequence[Hashable]) -> str | None:
        """Record one reconcile (`applied`: its operations, comparable between reconciles);
        returns "started" or "ended" when that changes, else None."""
        applied = [remembered_as(op) for op in applied[:TRACKED]]
        repaired = [op for op in applied if by_drift and now - self._ours.get(op, float("-inf")) <= self.window_s]
        for op in applied:
            self._ours[op] = now
        self._ours = {op: t for op, t in self._ours.items() if now - t <= self.window_s}
        if repaired:
            self._repairs.append((now, repaired[0]))
        while self._repairs and now - self._repairs[0][0] > max(self.window_s, self.quiet_s):
            self._repairs.popleft()
        recent = [op for t, op in self._repairs if now - t <= self.window_s]
        if not self.fight and len(recent) >= self.repairs_needed:
            self.fight = (f"{len(recent)} of nra's own changes undone and repaired within "
                          f"{self.window_s:g} s (last: {recent[-1]})")
            return "started"
        if self.fight and not self._repairs:
            self.fight = ""
            return "ended"
        return None
