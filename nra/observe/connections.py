"""The HTTP server's connections, bounded: how many, how long idle, how long one request.

An idle connection costs the agent a file descriptor; 20,000 of them once took the last one
a hook needed. So:
- at most `cap` connections at once, decided when a connection is accepted (a refused one is
  closed there, before anything is built for it: a crowd costs little); past the cap the
  connection idle the longest makes room for a newcomer whose request is already there (a
  kubelet probe sends it at once), and for an idle newcomer only once it has been idle
  EVICT_AFTER_S; else the newcomer waits for its request in a small waiting room (the
  server's `_park`), the oldest there closed to make room. Clients that keep asking keep
  their connections;
- a connection with no request in progress is closed IDLE_TIMEOUT_S after it opened or
  after its last answer: a client that sends no complete request headers in that time
  (slowloris) is closed too, which is the header-read timeout;
- a request still in progress after REQUEST_TIMEOUT_S (a client that does not read a long
  answer) is aborted.
Runs in the server's own event loop (its own thread): nothing here is shared.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from nra.observe import web

#: connections at once, at most (and at most a quarter of the file descriptor limit)
MAX_CONNECTIONS = 256
#: an idle connection younger than this is never evicted for an idle newcomer
EVICT_AFTER_S = 0.5
#: no request in progress for this long (headers included): closed
IDLE_TIMEOUT_S = 10.0
#: one request (a streamed /status?prefixes=all included) may take this long
REQUEST_TIMEOUT_S = 30.0
#: how often the timeouts are checked
SWEEP_S = 1.0


@dataclass
class _Connection:
    transport: asyncio.Transport
    #: loop time of the last answer (or of the connection); what idleness is measured from
    last_active: float
    #: loop time the request in progress started; None between requests
    busy_since: float | None = None


@dataclass
class ConnectionStats:
    """Counted for /metrics (read from another thread: plain ints)."""

    open: int = 0
    evicted: int = 0
    refused: int = 0
    timed_out: int = 0


class BoundedServer(web.Server):
    """aiohttp's low-level server with the bounds above."""

    def __init__(self, handler: Any, cap: int, idle_timeout_s: float | None = None,
                 request_timeout_s: float | None = None, **kwargs: Any) -> None:
        idle_timeout_s = IDLE_TIMEOUT_S if idle_timeout_s is None else idle_timeout_s
        request_timeout_s = REQUEST_TIMEOUT_S if request_timeout_s is None else request_timeout_s
        # handler_cancellation: a request whose connection is aborted stops there
        super().__init__(handler, keepalive_timeout=idle_timeout_s, handler_cancellation=True, **kwargs)
        self.cap = cap
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.stats = ConnectionStats()
        self._pending = 0  # admitted, not yet made (aiohttp builds its handler in a task)
        # insertion order is activity order: the first idle one is the idle one the longest
        self._tracked: dict[Any, _Connection] = {}
        # set while there are connections to sweep: with none, the sweeper sleeps
        self._any = asyncio.Event()

    def admit(self, has_request: bool) -> bool:
        """May one more connection come in (decided at accept, before anything is built for
        it)? Below the cap, yes; at the cap the connection idle the longest makes room, for a
        newcomer whose request is already there at once, for an idle newcomer only if that
        one has been idle EVICT_AFTER_S: a crowd accepted together cannot evict each other
        (nor a probe among them) before their requests are read."""
        if len(self._tracked) + self._pending < self.cap or self._evict_one(0.0 if has_request else EVICT_AFTER_S):
            self._pending += 1
            return True
        self.stats.refused += 1
        return False

    def abandon(self) -> None:
        """An admitted connection that never came to be (its TLS handshake failed)."""
        self._pending = max(0, self._pending - 1)

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._pending = max(0, self._pending - 1)
        self._tracked[handler] = _Connection(transport, self._loop.time())
        self.stats.open = len(self._tracked)
        self._any.set()

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._tracked.pop(handler, None)
        self.stats.open = len(self._tracked)

    def _evict_one(self, idle_at_least_s: float) -> bool:
        now = self._loop.time()
        for handler, conn in self._tracked.items():  # (in activity order: oldest first)
            if conn.busy_since is not None:
                continue
            if now - conn.last_active < idle_at_least_s:
                return False
            del self._tracked[handler]
            conn.transport.abort()
            self.stats.evicted += 1
            return True
        return False

    def request_started(self, handler: Any) -> None:
        conn = self._tracked.get(handler)
        if conn is not None:
            conn.busy_since = self._loop.time()

    def request_finished(self, handler: Any) -> None:
        conn = self._tracked.pop(handler, None)
        if conn is not None:
            conn.busy_since = None
            conn.last_active = self._loop.time()
            self._tracked[handler] = conn  # now the most recently active

    def sweep(self) -> None:
        """Close what has been idle, or inside one request, too long."""
        now = self._loop.time()
        expired = [h for h, c in self._tracked.items()
                   if (c.busy_since is None and now - c.last_active > self.idle_timeout_s)
                   or (c.busy_since is not None and now - c.busy_since > self.request_timeout_s)]
        for handler in expired:
            self._tracked.pop(handler).transport.abort()
            self.stats.timed_out += 1
        self.stats.open = len(self._tracked)

    async def sweep_forever(self) -> None:
        """Sweep every SWEEP_S while there are connections; wait for one while there are none
        (an agent nobody asks wakes for nothing)."""
        while True:
            await self._any.wait()
            await asyncio.sleep(min(SWEEP_S, self.idle_timeout_s / 2))
            self.sweep()
            if not self._tracked:
                self._any.clear()


def request_waiting(conn: socket.socket) -> bool:
    """Has the client of a just-accepted connection sent something already?"""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False
