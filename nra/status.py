"""What the agent knows about itself, shared with the health endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class AgentStatus:
    started_at: float = field(default_factory=time.monotonic)
    #: set once the first configuration has been loaded from the source
    config_loaded: bool = False
    #: the last reconcile left the kernel equal to the intent
    in_sync: bool = False
    last_reconcile_ok: bool | None = None
    last_reconcile_at: float | None = None  # wall clock (time.time())
    #: monotonic time the event loop last proved it is running (see Agent.heartbeat)
    heartbeat: float = field(default_factory=time.monotonic)
    source_name: str = ""
    source_synced: bool = False
    #: what is wrong with the source's input now (None: nothing); the source's `problem`
    source_problem: Callable[[], str | None] = lambda: None

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def wedged(self, limit_s: float) -> bool:
        return time.monotonic() - self.heartbeat > limit_s

    @property
    def ready(self) -> bool:
        return self.config_loaded and self.in_sync
