"""Telling our own changes' notifications from someone else's.

Every rule and route we change comes back as a netlink notification. Events during our own
reconcile, or within ECHO_WINDOW_S after one that changed something, are most likely those
echoes: instead of re-reading the whole table at once (which would also hold up a
configuration change arriving meanwhile), the agent checks once, ECHO_CHECK_S later. Real
drift in this window is still repaired, within ECHO_CHECK_S."""

from __future__ import annotations

import time

ECHO_WINDOW_S = 0.3
ECHO_CHECK_S = 1.0


class EchoFilter:
    def __init__(self, window_s: float = ECHO_WINDOW_S):
        self.window_s = window_s
        self._until = 0.0

    def reconcile_started(self) -> None:
        self._until = float("inf")

    def reconcile_finished(self, changed: bool) -> None:
        self._until = time.monotonic() + (self.window_s if changed else 0.0)

    def probably_echo(self) -> bool:
        return time.monotonic() < self._until
