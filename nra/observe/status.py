"""What the agent knows about itself, and the liveness and readiness answers built from it
(pure: the health endpoints only serve them)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

#: a reconcile (hooks included) running longer than this means the worker is stuck
STUCK_AFTER_S = 30.0
#: a beat older than this is asked for again when liveness is asked (see ask_loop)
ASK_AFTER_S = 1.0
#: more time a reconcile may take per kernel operation it applies: a first reconcile of
#: 40,000 rules is minutes of kernel work, not a hang (measured: about 1.4 ms a rule on
#: a loaded 2-core VM; 5 ms leaves room for slower nodes and still bounds a hang)
PER_OPERATION_S = 0.005


@dataclass
class AgentStatus:
    source_name: str = ""
    #: set once the first configuration has been loaded from the source
    config_loaded: bool = False
    #: the source runs and has published (False once it stopped); read by /status
    source_synced: bool = False
    #: the last reconcile left the kernel equal to the intent
    in_sync: bool = False
    last_reconcile_ok: bool | None = None
    last_reconcile_at: float | None = None  # wall clock (time.time()); read by /status
    #: monotonic time the running reconcile started; None while the worker waits
    busy_since: float | None = None
    #: monotonic time the daemon's event loop last answered (None: no daemon loop watched).
    #: The HTTP server runs in a thread of its own and answers whatever the loop does, so it
    #: judges the loop by this, never by its own progress.
    loop_beat: float | None = None
    #: how the server asks the loop for a beat (the daemon sets it: a callback scheduled into
    #: its loop that calls loop_ran). None: the loop beats by itself (tests).
    ask: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: monotonic time of the last question not answered yet (None: every one answered)
    asked_at: float | None = None
    #: how long a reconcile may run, or the loop stand still, before liveness fails
    stuck_after_s: float = STUCK_AFTER_S
    #: kernel operations the running reconcile applies (each adds PER_OPERATION_S)
    busy_operations: int = 0
    #: configurations being loaded now (see loading)
    loads: int = 0
    #: a configuration was loaded and its reconcile has not started yet (see change_loaded)
    change_queued: bool = False
    #: called, from the daemon's thread, each time the daemon is done with a change (working
    #: turned false): the HTTP server's wake-up (nra.observe.server). None: nobody listens.
    on_done: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: another writer keeps undoing our changes (see nra.daemon.contention)
    contention: str = ""
    #: what /status shows beyond this (the intent, the last outcome, the settings): a
    #: callable the agent sets, returning nra.observe.status_report.StatusDetails
    details: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    #: what is wrong with the source's input now (None: nothing); the source's `problem`
    source_problem: Callable[[], str | None] = field(default=lambda: None, repr=False, compare=False)

    def reconcile_started(self) -> None:
        self.busy_since = time.monotonic()
        self.busy_operations = 0
        # (set after busy_since: working never dips; a configuration loaded during this
        # reconcile queues itself again and waits for the next one)
        self.change_queued = False

    def change_loaded(self) -> None:
        """A configuration was loaded and its reconcile is queued: the change goes on until
        that reconcile ends (see working)."""
        self.change_queued = True

    def applying(self, operations: int) -> None:
        """The running reconcile is about to apply this many kernel operations."""
        self.busy_operations = operations

    def reconcile_finished(self) -> None:
        self.busy_since = None
        self.busy_operations = 0
        self._done()

    @contextmanager
    def loading(self):
        """A source reads and parses a configuration in the daemon's loop (see working)."""
        self.loads += 1
        try:
            yield
        finally:
            self.loads -= 1
            self._done()

    def _done(self) -> None:
        if not self.working and self.on_done is not None:
            self.on_done()

    @property
    def working(self) -> bool:
        """The daemon works on a change: a configuration being loaded, a loaded one waiting
        for its reconcile, or a reconcile. The HTTP server, whose thread shares Python's GIL
        and the node's cores with the daemon, holds what can wait meanwhile, and is woken
        (on_done) when the change ends (nra.observe.server). Read from the server's thread."""
        return self.busy_since is not None or self.loads > 0 or self.change_queued

    def loop_ran(self) -> None:
        self.loop_beat = time.monotonic()
        self.asked_at = None

    def ask_loop(self) -> None:
        """Ask the daemon's loop for a beat, when the last is older than ASK_AFTER_S and no
        question is open. The loop beats only when asked: an idle agent wakes for nothing,
        and liveness fails when a question stays unanswered for the stuck limit (a loop
        starved, or blocked by a call that never returns). Called from the server's thread."""
        if self.ask is None or self.asked_at is not None:
            return
        now = time.monotonic()
        if self.loop_beat is None or now - self.loop_beat > ASK_AFTER_S:
            self.asked_at = now
            try:
                self.ask()
            except RuntimeError:  # the loop is closed: the agent is stopping, nobody will answer
                self.asked_at = None

    def liveness(self, stuck_after_s: float | None = None) -> tuple[bool, str]:
        """Alive unless one reconcile has been running for longer than `stuck_after_s`
        (default: this status's own) plus PER_OPERATION_S for each operation it applies, or
        the daemon's event loop has stood still (starved, or blocked by a call that never
        returns) for longer than `stuck_after_s`: since a question it did not answer
        (ask_loop), or, for a loop that beats by itself, since its last beat."""
        base = self.stuck_after_s if stuck_after_s is None else stuck_after_s
        now = time.monotonic()
        busy_since, loop_beat = self.busy_since, self.loop_beat  # (set by another thread)
        if busy_since is not None:
            running = now - busy_since
            limit = base + self.busy_operations * PER_OPERATION_S
            if running > limit:
                work = f" for {self.busy_operations:,} operations" if self.busy_operations else ""
                return False, f"one reconcile has been running for {running:.0f} s (limit {limit:g} s{work})"
        asked_at = self.asked_at
        if self.ask is not None:  # beats when asked: silent since the open question, if any
            still = now - asked_at if asked_at is not None else None
        else:  # beats by itself: silent since the last beat
            still = now - loop_beat if loop_beat is not None else None
        if still is not None and still > base:
            return False, f"the agent's event loop has not run for {still:.0f} s (limit {base:g} s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        problem = self.source_problem()
        if not self.config_loaded:
            why = f": {problem}" if problem else ""
            return False, f"no configuration loaded yet from {self.source_name or 'the source'}{why}"
        if problem:
            return False, problem
        if not self.in_sync:
            if self.last_reconcile_ok is None:
                return False, "configuration loaded, first reconcile not done yet"
            return False, "kernel not in sync: the last reconcile failed"
        if self.contention:
            return False, f"another writer keeps undoing our changes: {self.contention}"
        return True, "ok"

    @property
    def ready(self) -> bool:
        return self.readiness()[0]
