"""Health and metrics over HTTP: /healthz (liveness), /readyz (readiness), /metrics, and
/status (what `nra status` shows), in a thread of their own.

The reconciler never waits for HTTP: the server runs its own event loop in its own thread,
serves documents the daemon built (nra.observe.documents) as bytes, and bounds what clients
can take (nra.observe.connections: a connection cap, idle and header timeouts). Polling
/status and /metrics shares DOCUMENT_RATE requests a second; more wait their turn (at most
BUDGET_WAIT_S, then 503), so their CPU, which the reconciler shares through the GIL, stays
small however many clients poll. /healthz and /readyz skip that queue: a probe is answered
at once. While the daemon works on a change (AgentStatus.working: a configuration being
loaded, a loaded one waiting for its reconcile, a reconcile), the rest waits for it, at most
HOLD_MAX_S: the change has the GIL and the server's share of the cores to itself (see
"holding back" below). The daemon wakes the server when the change ends
(AgentStatus.on_done); meanwhile the server's thread sleeps, but for one timer at the next
deadline (HOLD_MAX_S, ACCEPT_PAUSE_S; the waiting room's PARK_WAIT_S only while the daemon
is not working): it never polls. The thread is named `nra-http` (in
/proc/<pid>/task/<tid>/comm, top -H, ps -L). Liveness is
AgentStatus's, which judges the daemon's loop by whether it answers (AgentStatus.ask_loop: a
question scheduled into that loop when liveness is asked), never by the server's own progress. Documents older than REFRESH_S are rebuilt when asked for
(Documents.request): nothing is built, and nothing wakes, while nobody asks.

/status is answered only on a loopback address unless STATUS_ACCESS=health: when the health
listener is on another address (the chart's node address), a second listener on the
loopback address, same port, serves it (`nra status` in the pod asks there).

METRICS_ADDRESS adds a listener of its own serving /metrics only, over HTTPS (nra.observe.tls)
to scrapers the API server allows (nra.observe.metrics_auth, METRICS_AUTH=kubernetes); plain
/metrics on the health listener is then answered on loopback only. Its connections share the
cap; at most HANDSHAKES of them are in their TLS handshake at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import socket
import threading
from collections.abc import Callable

from loguru import logger

from nra.observe import web
from nra.observe.connections import MAX_CONNECTIONS, BoundedServer, request_waiting
from nra.observe.documents import Documents
from nra.observe.exposition import choose_encoder
from nra.observe.metrics_auth import KubernetesReviewer, ReviewUnavailable, Verdict, bearer_token
from nra.observe.status import AgentStatus
from nra.observe.tls import Certificates
from nra.settings import parse_health_address

#: /status and /metrics requests a second, all clients together
DOCUMENT_RATE = 200.0
#: a request that would wait longer than this for its turn is answered 503
BUDGET_WAIT_S = 5.0
#: full prefix listings (/status?prefixes=all) streamed at once
FULL_LISTINGS = 1
#: connections the kernel queues before the server accepts them (a crowd of idle clients
#: must not crowd out a probe's connection)
LISTEN_BACKLOG = 1024
#: connections accepted in one go
ACCEPT_BATCH = 256
#: a connection is handed to the server only once its first bytes arrived (TCP_DEFER_ACCEPT),
#: or after this long: an idle crowd waits in the kernel, not in the server's slots, and a
#: probe, whose request comes with its connection, is accepted among them at once
DEFER_ACCEPT_S = 10
#: newcomers waiting a moment for their request (see HealthServer._park), at most
PARKED = 64
#: how long a newcomer may wait there for its request (a probe's comes within milliseconds)
PARK_WAIT_S = 1.0
#: how long start() waits for the thread to listen, and stop() for it to end
THREAD_WAIT_S = 10.0
#: the server thread's name, as the kernel shows it (15 bytes at most)
THREAD_NAME = "nra-http"
#: how long a request waits for documents being rebuilt (then it gets the last ones)
REBUILD_WAIT_S = 0.5
#: while the daemon works on a change (AgentStatus.working), what can wait is held, at most
#: this long: /status and /metrics requests, and new connections other than probes (the
#: daemon wakes the server when the change ends: nothing polls)
HOLD_MAX_S = 2.0
#: while the daemon works, new connections are accepted (and probes answered) at most
#: every ACCEPT_PAUSE_S: in between, the server's thread wakes for nothing
ACCEPT_PAUSE_S = 0.2
#: new connections held at most (past it, the oldest held is closed)
HELD = 256
#: what a probe's request starts with (answered at once, held or not)
PROBES = (b"GET /healthz", b"GET /readyz", b"HEAD /healthz", b"HEAD /readyz")

#: TLS handshakes in progress on the HTTPS listener, at most (more newcomers are closed)
HANDSHAKES = 64
#: a TLS handshake not done in this long is abandoned
HANDSHAKE_TIMEOUT_S = 10.0

STATUS_ACCESS = ("loopback", "health", "off")


class SecureMetrics:
    """The HTTPS /metrics listener: where, its certificates, and who reviews the scrapers
    (None: anyone may scrape, METRICS_AUTH=none)."""

    def __init__(self, host: str, port: int, certificates: Certificates,
                 reviewer: KubernetesReviewer | None) -> None:
        self.host, self.port = host, port
        self.certificates = certificates
        self.reviewer = reviewer


class HealthAddressError(ValueError):
    """health_address is not host:port, or cannot be listened on; str() is the one line shown."""


def parse_address(address: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101`, `[::1]:9101`, `:9101` (all interfaces) -> (host, port); None if disabled.
    The rules are the settings' (nra.settings.parse_health_address), which refuse a bad
    address at start; this only turns their error into HealthAddressError."""
    try:
        return parse_health_address(address)
    except ValueError as exc:
        raise HealthAddressError(f"health address: {exc}") from None


def fd_headroom() -> int:
    """Raise the soft limit of open files to the hard one (idle clients must not take the
    descriptors a hook or a netlink socket needs); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open files limit from {} to {}: {}", soft, target, exc)
    return soft


def connection_cap(fd_limit: int) -> int:
    """Connections the server takes at once: MAX_CONNECTIONS, and never more than a quarter
    of the descriptors the process may hold."""
    return max(8, min(MAX_CONNECTIONS, fd_limit // 4))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listeners(host: str, port: int, status_access: str, secure: bool = False) -> list[tuple[str, int]]:
    """Where to listen: the health address, and a loopback one on the same port when
    /status (or, with the HTTPS listener, plain /metrics) must stay on loopback and the
    health address is neither loopback nor a wildcard (which covers loopback already)."""
    where = [(host, port)]
    wildcard = host in ("0.0.0.0", "::")
    if (status_access == "loopback" or secure) and not _is_loopback(host) and not wildcard:
        where.append(("::1" if ":" in host else "127.0.0.1", port))
    return where


class _Budget:
    """DOCUMENT_RATE requests a second, in arrival order, in the server's loop."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0

    async def take(self) -> bool:
        """Wait for this request's turn; False when that is more than BUDGET_WAIT_S away."""
        now = asyncio.get_running_loop().time()
        at = max(now, self.next_at)
        if at - now > BUDGET_WAIT_S:
            return False
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)
        return True


class HealthServer:
    """The endpoints, served from a thread of their own with their own event loop."""

    def __init__(self, where: list[tuple[str, int]], documents: Documents, status_access: str = "loopback",
                 cap: int = MAX_CONNECTIONS, rate: float = DOCUMENT_RATE, secure: SecureMetrics | None = None) -> None:
        self.where = where
        self.secure = secure
        self.documents = documents
        self.status: AgentStatus = documents.status
        self.status_access = status_access
        self.cap = cap
        self.rate = rate
        self.server: BoundedServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: str | None = None
        self._stop: asyncio.Event | None = None
        self._openmetrics: tuple[object, bytes] = (None, b"")
        self._parked: dict[int, tuple[socket.socket, float]] = {}  # newcomers whose request may come, since
        self._held: dict[int, tuple[socket.socket, float]] = {}  # newcomers held while the daemon works
        self._waiting: dict[asyncio.Future, float] = {}  # requests held while the daemon works, since
        self._timer: asyncio.TimerHandle | None = None  # the one timer: the next deadline of what is held
        self._want_wake = False  # something is held: the daemon's on_done wakes this loop
        self._listening: list[socket.socket] = []
        self._accepts_paused_at: float | None = None  # loop time accept() stopped for the daemon
        self._connecting: set[asyncio.Task] = set()  # accepted, being handed to aiohttp

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (raises HealthAddressError with one line if it cannot), then serve in the
        background until stop()."""
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_WAIT_S):
            raise HealthAddressError("health server: did not start listening within "
                                     f"{THREAD_WAIT_S:g} s")
        if self._failure is not None:
            self._thread.join(THREAD_WAIT_S)
            raise HealthAddressError(self._failure)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass
            self._thread.join(THREAD_WAIT_S)

    def _run(self) -> None:
        # named for the kernel too (Python 3.11 names only its own Thread object): top -H,
        # ps -L and /proc/<pid>/task/<tid>/{comm,schedstat} tell the server from the daemon.
        # Its priority stays the process's: a lower one (nice 10 was tried) left the daemon
        # waiting on a GIL held by a thread the kernel would not run (priority inversion).
        try:
            with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
                comm.write(THREAD_NAME)
        except OSError:
            pass
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # a bug: say it; the daemon's liveness does not depend on us
            logger.opt(exception=exc).error("the health server stopped: {}: {}", type(exc).__name__, exc)
            if not self._started.is_set():
                self._failure = f"health server: {type(exc).__name__}: {exc}"
                self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._budget = _Budget(self.rate)
        self._listings = asyncio.Semaphore(FULL_LISTINGS)
        self.status.on_done = self._daemon_done
        self.server = BoundedServer(self._dispatch, cap=self.cap, access_log=None)
        loop = asyncio.get_running_loop()
        listening: list[socket.socket] = self._listening
        secure_socket: socket.socket | None = None
        try:
            if self.secure is not None:  # the HTTPS listener: the agent cannot run without it either
                try:
                    secure_socket = _listen(self.secure.host, self.secure.port)
                except OSError as exc:
                    self._failure = (f"metrics address {self.secure.host}:{self.secure.port}: cannot listen: "
                                     f"{exc.strerror or exc}")
                    self._started.set()
                    return
                loop.add_reader(secure_socket.fileno(), self._accept, secure_socket, True)
            for index, (host, port) in enumerate(self.where):
                try:
                    listening.append(_listen(host, port))
                except OSError as exc:
                    why = f"{host}:{port}: cannot listen: {exc.strerror or exc}"
                    if index == 0:  # the health address itself: the agent cannot run without it
                        self._failure = f"health address {why}"
                        self._started.set()
                        return
                    # only the loopback listener for /status: the probes still work
                    logger.warning("/status listener {}; /status is not served", why)
                    self.where = self.where[:index]
                    break
            for sock in listening:
                loop.add_reader(sock.fileno(), self._accept, sock)
            self._started.set()
            sweeper = asyncio.create_task(self.server.sweep_forever())
            await self._stop.wait()
            sweeper.cancel()
        finally:
            for sock in listening + ([secure_socket] if secure_socket is not None else []):
                loop.remove_reader(sock.fileno())
                sock.close()
            listening.clear()
            self.status.on_done = None
            for fd in list(self._parked):
                self._close_parked(fd)
            if self._timer is not None:
                self._timer.cancel()
            for waiting in self._waiting:
                waiting.cancel()
            for conn, _ in self._held.values():
                conn.close()
            self._held.clear()
            for task in self._connecting:  # (accepted just before the stop)
                task.cancel()
            await asyncio.gather(*self._connecting, return_exceptions=True)
            await self.server.shutdown(1.0)
            if self.secure is not None and self.secure.reviewer is not None:
                await self.secure.reviewer.close()

    def _accept(self, listening: socket.socket, tls: bool = False) -> None:
        """Accept what is waiting; the cap decides here, before aiohttp builds anything.
        While the daemon works, one batch (the probes in it answered), then a pause."""
        assert self.server is not None and self._loop is not None
        if self.status.working:
            self._pause_accepts()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS: say so (rate limited), try again later
                logging.getLogger("asyncio").warning("health server: accept failed: %s", exc.strerror or exc)
                return
            conn.setblocking(False)
            if tls:  # no waiting room: a handshake has begun, or the client is gone
                if len(self._connecting) >= HANDSHAKES:
                    self.server.stats.refused += 1
                    conn.close()
                elif self.server.admit(request_waiting(conn)):
                    self._connect(conn, tls=True)
                else:
                    conn.close()
                continue
            first = _first_bytes(conn)
            if not first:  # silent through DEFER_ACCEPT_S (or its request still on its way)
                self._park(conn)
            else:
                self._take(conn, first)

    def _take(self, conn: socket.socket, first: bytes) -> None:
        """A newcomer whose request is there: held while the daemon works (a probe: never),
        else in if the cap lets it, else in the waiting room."""
        assert self.server is not None
        if self.status.working and not first.startswith(PROBES):
            self._hold(conn)
        elif self.server.admit(True):
            self._connect(conn)
        else:
            self._park(conn)

    # -- holding back while the daemon works ----------------------------------------------
    # The daemon's reconciler and this thread share Python's GIL and the node's cores:
    # whatever this thread runs while a change is being loaded and reconciled, the change
    # waits for (a crowd of clients took half the GIL and more, each change 2-10 times its
    # idle time). So while AgentStatus.working, probes are answered at once and everything
    # else waits, at most HOLD_MAX_S: new connections in `_held` (accepted, nothing built for
    # them), requests for /status and /metrics in `_waiting`; the waiting room's newcomers
    # (`_parked`) are not closed meanwhile. The daemon wakes this loop when its change ends
    # (AgentStatus.on_done -> _daemon_done); until then this thread sleeps but for one timer,
    # at the next deadline of what it holds (`_arm`). It never polls.

    def _daemon_done(self) -> None:
        """From the daemon's thread (AgentStatus.on_done): its change ended. Wakes this loop
        only when something is held."""
        if self._want_wake and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._look)
            except RuntimeError:  # (the server's loop already closed)
                pass

    def _wait_for_the_daemon(self) -> None:
        """Something is now held: ask for the daemon's wake-up, and arm the timer."""
        assert self._loop is not None
        self._want_wake = True
        if not self.status.working:  # (it ended just before the wish was seen: look now)
            self._loop.call_soon(self._look)
        self._arm()

    def _pause_accepts(self) -> None:
        """Leave new connections in the kernel's queue until the daemon is done, at most
        ACCEPT_PAUSE_S (see _look)."""
        assert self._loop is not None
        if self._accepts_paused_at is None:
            for sock in self._listening:
                self._loop.remove_reader(sock.fileno())
            self._accepts_paused_at = self._loop.time()
            self._wait_for_the_daemon()

    def _resume_accepts(self) -> None:
        assert self._loop is not None
        if self._accepts_paused_at is not None:
            self._accepts_paused_at = None
            for sock in self._listening:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _hold(self, conn: socket.socket) -> None:
        assert self._loop is not None
        if len(self._held) >= HELD:
            self._held.pop(next(iter(self._held)))[0].close()
        self._held[conn.fileno()] = (conn, self._loop.time())
        self._wait_for_the_daemon()

    async def _after_the_daemon(self) -> None:
        """Wait until the daemon is done with its change, at most HOLD_MAX_S."""
        assert self._loop is not None
        if not self.status.working:
            return
        done = self._loop.create_future()
        self._waiting[done] = self._loop.time()
        self._wait_for_the_daemon()
        try:
            await done
        finally:
            self._waiting.pop(done, None)

    def _arm(self) -> None:
        """The one timer, at the next deadline of what is held: the oldest held connection's
        or request's HOLD_MAX_S, the accept pause's end, and, unless the daemon works, the
        oldest parked newcomer's PARK_WAIT_S. None when nothing is due."""
        assert self._loop is not None
        deadlines = []
        if self._held:
            deadlines.append(next(iter(self._held.values()))[1] + HOLD_MAX_S)
        if self._waiting:
            deadlines.append(next(iter(self._waiting.values())) + HOLD_MAX_S)
        if self._accepts_paused_at is not None:
            deadlines.append(self._accepts_paused_at + ACCEPT_PAUSE_S)
        if self._parked and not self.status.working:  # (stopped while the daemon works: on_done)
            deadlines.append(next(iter(self._parked.values()))[1] + PARK_WAIT_S)
        if not deadlines:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        when = min(deadlines)
        if self._timer is not None and self._timer.when() <= when:
            return  # (it fires first, and arms the next)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._look()

    def _look(self) -> None:
        """Woken by the daemon at the end of its change, or by the timer: the daemon done,
        let everything in; else what has waited HOLD_MAX_S (and new connections after
        ACCEPT_PAUSE_S). Then the timer for the next deadline, if anything is still held."""
        assert self._loop is not None and self.server is not None
        now = self._loop.time()
        working = self.status.working
        if self._accepts_paused_at is not None and (not working or now - self._accepts_paused_at >= ACCEPT_PAUSE_S):
            self._resume_accepts()
        since = now - HOLD_MAX_S
        for done, at in list(self._waiting.items()):
            if working and at > since:
                break
            del self._waiting[done]
            if not done.done():
                done.set_result(None)
        while self._held:
            fd = next(iter(self._held))
            conn, held_at = self._held[fd]
            if working and held_at > since:
                break
            del self._held[fd]
            if self.server.admit(True):
                self._connect(conn)
            else:
                self._park(conn)
        if not working:
            self._expire_parked(now)
        if not self._held and not self._waiting and not self._parked and self._accepts_paused_at is None:
            self._want_wake = False
        self._arm()

    def _connect(self, conn: socket.socket, tls: bool = False) -> None:
        assert self._loop is not None and self.server is not None
        if tls:
            assert self.secure is not None
            connecting = self._handshake(conn, self.secure.certificates.current())
        else:
            connecting = self._loop.connect_accepted_socket(self.server, conn)
        task = self._loop.create_task(connecting)
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _park(self, conn: socket.socket) -> None:
        """A newcomer with no request yet (silent through TCP_DEFER_ACCEPT's wait, or its
        request still on its way), or refused for now: wait for the request in a waiting room
        of PARKED sockets, at most PARK_WAIT_S (the oldest closed to make room), with nothing
        built for it. A probe's request arrives within milliseconds and is let in; an idle
        crowd just passes through."""
        assert self._loop is not None
        if len(self._parked) >= PARKED:
            self._close_parked(next(iter(self._parked)))
        fd = conn.fileno()
        self._parked[fd] = (conn, self._loop.time())
        self._loop.add_reader(fd, self._unpark, fd)
        self._want_wake = True  # (before _arm reads AgentStatus.working: see _wait_for_the_daemon)
        self._arm()

    def _expire_parked(self, now: float) -> None:
        """Close who waited PARK_WAIT_S in the waiting room (the oldest first). Not while the
        daemon works: the room is bounded by PARKED, and the change goes first."""
        assert self.server is not None
        while self._parked:
            fd = next(iter(self._parked))
            if self._parked[fd][1] + PARK_WAIT_S > now:
                break
            self._close_parked(fd)
            self.server.stats.timed_out += 1

    async def _handshake(self, conn: socket.socket, context) -> None:
        """A TLS connection handed to the server once its handshake is done (a failed one:
        closed, debug-logged: scanners and clients that refuse the certificate do this)."""
        assert self._loop is not None and self.server is not None
        try:
            await self._loop.connect_accepted_socket(self.server, conn, ssl=context,
                                                     ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            logger.debug("metrics: TLS handshake failed: {}", exc)
            self.server.abandon()
            conn.close()

    def _unpark(self, fd: int) -> None:
        assert self.server is not None and self._loop is not None
        parked = self._parked.get(fd)
        if parked is None:
            return
        conn = parked[0]
        first = _first_bytes(conn)
        if not first:  # closed by the client
            self._close_parked(fd)
            return
        self._loop.remove_reader(fd)
        del self._parked[fd]
        if self.status.working and not first.startswith(PROBES):
            self._hold(conn)
        elif self.server.admit(True):
            self._connect(conn)
        else:  # nothing to evict: gone
            conn.close()

    def _close_parked(self, fd: int) -> None:
        assert self._loop is not None
        conn, _ = self._parked.pop(fd)
        self._loop.remove_reader(fd)
        conn.close()

    # -- requests --------------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self.server is not None
        self.server.request_started(request.protocol)
        try:
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, text="only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
            if self.secure is not None and _is_tls(request):
                if request.path != "/metrics":
                    return web.Response(status=404, text="not found: only /metrics is served here\n")
                refusal = await self._authorize(request)
                return refusal if refusal is not None else await self._metrics(request)
            handler = self._routes.get(request.path)
            if handler is None:
                return web.Response(status=404, text="not found: /healthz, /readyz, /metrics, /status\n")
            return await handler(self, request)
        finally:
            self.server.request_finished(request.protocol)

    async def _healthz(self, _request: web.BaseRequest) -> web.Response:
        self.status.ask_loop()
        return _answer(self.status.liveness())

    async def _readyz(self, _request: web.BaseRequest) -> web.Response:
        return _answer(self.status.readiness())

    async def _authorize(self, request: web.BaseRequest) -> web.Response | None:
        """None when the scraper may have /metrics; else the answer (401, 403, 503)."""
        assert self.secure is not None
        reviewer = self.secure.reviewer
        if reviewer is None:
            return None
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            return _unauthorized("a bearer token is needed (Authorization: Bearer <token>)")
        try:
            verdict = await reviewer.review(token)
        except ReviewUnavailable as exc:
            return _busy(f"cannot review the token now: {exc}")
        if verdict is Verdict.UNAUTHENTICATED:
            return _unauthorized("the API server does not accept this token")
        if verdict is Verdict.FORBIDDEN:
            return web.Response(status=403, text="forbidden: this token's user may not get /metrics "
                                                 "(bind it to the chart's metrics-reader ClusterRole)\n")
        return None

    async def _metrics(self, request: web.BaseRequest) -> web.Response:
        if self.secure is not None and not _is_tls(request) and not _on_loopback(request):
            return web.Response(status=404, text=f"/metrics is served over HTTPS on port {self.secure.port} "
                                                 "(METRICS_ADDRESS); plain HTTP on loopback only\n")
        await self._after_the_daemon()
        if not await self._budget.take():
            return _busy()
        await self._fresh_documents()
        snapshot = self.documents.snapshot
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        if not content_type.startswith("application/openmetrics-text"):
            body = snapshot.metrics  # (built by generate_latest, the plain text format)
        else:  # OpenMetrics, when the scraper asks: encoded here, once per build
            if self._openmetrics[0] is not snapshot:
                self._openmetrics = (snapshot, encode(self.documents.registry))
            body = self._openmetrics[1]
        # aiohttp refuses a content_type with parameters; set the header as-is.
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._status_allowed(request):
            return web.Response(status=404, text="/status is served on the loopback address only "
                                                 "(STATUS_ACCESS=health serves it here)\n")
        await self._after_the_daemon()
        if not await self._budget.take():
            return _busy()
        self.status.ask_loop()
        await self._fresh_documents()
        if request.query.get("prefixes") == "all":
            return await self._full_status(request)
        return web.Response(body=self.documents.status_body(), content_type="application/json")

    async def _fresh_documents(self) -> None:
        """Documents older than REFRESH_S: ask the daemon to rebuild them and wait a moment
        (a busy or blocked daemon: the last ones are served)."""
        pending = self.documents.request()
        if pending is not None:
            await asyncio.wait({asyncio.wrap_future(pending)}, timeout=REBUILD_WAIT_S)

    async def _full_status(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._listings.locked():
            return _busy("a full listing is being sent to another client; try again")
        async with self._listings:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for chunk in self.documents.full_status_chunks():
                await response.write(chunk)
            await response.write_eof()
            return response

    def _status_allowed(self, request: web.BaseRequest) -> bool:
        if self.status_access == "health":
            return True
        if self.status_access == "off":
            return False
        return _on_loopback(request)

    _routes: dict[str, Callable] = {"/healthz": _healthz, "/readyz": _readyz, "/metrics": _metrics,
                                    "/status": _status}


def _on_loopback(request: web.BaseRequest) -> bool:
    """The request came in on a loopback address (the listener's own address, not the peer's)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return bool(sockname) and _is_loopback(sockname[0])


def _is_tls(request: web.BaseRequest) -> bool:
    return request.transport is not None and request.transport.get_extra_info("ssl_object") is not None


def _unauthorized(why: str) -> web.Response:
    return web.Response(status=401, text=f"unauthorized: {why}\n", headers={"WWW-Authenticate": "Bearer"})


def _first_bytes(conn: socket.socket) -> bytes:
    """What the client of a just-accepted connection has sent already (left to be read)."""
    try:
        return conn.recv(len(max(PROBES, key=len)), socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return b""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _answer(ok_reason: tuple[bool, str]) -> web.Response:
    ok, reason = ok_reason
    return web.Response(status=200 if ok else 503, text=reason + "\n")


def _busy(why: str = "too many requests for /status and /metrics; try again") -> web.Response:
    return web.Response(status=503, text=why + "\n", headers={"Retry-After": "1"})


async def start_health_server(address: str, status: AgentStatus, stuck_after_s: float | None = None,
                              documents: Documents | None = None, status_access: str = "loopback",
                              cap: int | None = None, secure: SecureMetrics | None = None) -> HealthServer | None:
    """Serve the endpoints on `address` from a thread of their own; None when disabled
    ('' or 'off'). Stop it with `await stop_health_server(server)`. `documents` (else
    built from `status` and refreshed once here) is what /status and /metrics serve."""
    where = parse_address(address)
    if where is None:
        logger.info("health endpoints disabled")
        return None
    if stuck_after_s is not None:
        status.stuck_after_s = stuck_after_s
    if documents is None:
        documents = Documents(status, status.details)
        documents.refresh()
    host, port = where
    server = HealthServer(listeners(host, port, status_access, secure is not None), documents, status_access,
                          cap if cap is not None else connection_cap(fd_headroom()), secure=secure)
    await asyncio.to_thread(server.start)
    shown = ", ".join(f"http://{_hostport(h, p)}/" for h, p in server.where)
    logger.info("health endpoints on {} (healthz, readyz, metrics{}{}); at most {} connections",
                shown, " on loopback" if secure else "",
                {"loopback": ", status on loopback", "health": ", status", "off": ""}[status_access], server.cap)
    if secure is not None:
        logger.info("metrics over HTTPS on https://{}/metrics with {}, {}", _hostport(secure.host, secure.port),
                    secure.certificates.what, "to scrapers the API server allows (TokenReview, SubjectAccessReview)"
                    if secure.reviewer else "to anyone (METRICS_AUTH=none)")
    return server


def _hostport(host: str, port: int) -> str:
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


async def stop_health_server(server: HealthServer | None) -> None:
    if server is not None:
        await asyncio.to_thread(server.stop)
