"""The daemon: a source feeds the desired state, kernel events and a timer trigger the
worker, which reconciles; /healthz and /readyz tell the truth about it.

Vital tasks: the worker and the kernel event watcher. If either ends, the daemon stops with
exit code 1 (a process supervisor restarts it); the source may die (the last good state is
kept). Liveness fails while one reconcile runs past its limit (a hook or kernel call hung).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import contextmanager

from loguru import logger

from nra import __version__
from nra.config import prefix_delta
from nra.config.intent import Intent, ParseResult
from nra.daemon.contention import ContentionDetector
from nra.daemon.desired import Desired, run_source
from nra.daemon import gc_pause
from nra.daemon.echo import ECHO_CHECK_S, EchoFilter
from nra.daemon.host import check_multipath_use_neigh
from nra.daemon.memory import LARGE_CHANGE_OPERATIONS, AfterReconcile
from nra.daemon.peer_resolution import PeerResolution
from nra.daemon.reconciler import Outcome, Reconciler
from nra.daemon.wiring import reconciler
from nra.daemon.worker import Worker
from nra.kernel.events import LearnedRouteChange, NeighbourChange, TableChange, UplinkChange
from nra.kernel.table_names import name_table
from nra.observe import metrics
from nra.observe.documents import Documents
from nra.observe.logs import reconcile_context
from nra.observe.status import STUCK_AFTER_S, AgentStatus
from nra.observe.status_report import StatusDetails
from nra.settings import Settings
from nra.sources.base import Source

#: exit code of a daemon whose vital task ended
EXIT_VITAL_TASK = 1
WORKER, KERNEL_WATCHER, SOURCE = "worker", "netlink-events", "source"
#: how often the BGPSessionState watch's health is looked at
SESSION_WATCH_CHECK_S = 0.5
#: how long the first reconcile waits for the kernel's notifications to be listened to
SUBSCRIBED_WAIT_S = 2.0


def stuck_limit(settings: Settings) -> float:
    """How long one reconcile may run before /healthz fails: STUCK_AFTER_S beyond what the
    two hooks may legitimately take."""
    hooks = [p for p in (settings.pre_reconcile_script_path, settings.post_reconcile_script_path) if p]
    return STUCK_AFTER_S + len(hooks) * settings.hook_timeout


class Agent:
    def __init__(self, settings: Settings, source: Source, stuck_after_s: float | None = None):
        self.settings = settings
        self.source = source
        self.status = AgentStatus(source_name=source.name)
        self.status.source_problem = lambda: getattr(source, "problem", None)
        if hasattr(source, "loading"):  # (the static file: its parse is the daemon's work)
            source.loading = self._loading
        if hasattr(source, "expect_edits"):  # (a YAML source: its first edit patched, not parsed whole)
            source.expect_edits()
        self.status.details = lambda: StatusDetails(intent=self.intent, outcome=self.last_outcome,
                                                    settings=self.settings,
                                                    config_loaded_at=self.desired.loaded_at,
                                                    return_path=self.return_path,
                                                    datapath=self.datapath)
        self.datapath: dict | None = None  # what nra.kernel.datapath found at start
        self.desired = Desired()
        self.stuck_after_s = stuck_after_s if stuck_after_s is not None else stuck_limit(settings)
        self.status.stuck_after_s = self.stuck_after_s
        # what /status and /metrics serve, rebuilt here and read by the server's thread
        self.documents = Documents(self.status, self.status.details)
        self.echo = EchoFilter()
        # free heap handed back after the first reconcile and each change (and again a second
        # after the first and a large one)
        self.memory = AfterReconcile(
            later=lambda delay, release: asyncio.get_running_loop().call_later(delay, release))
        #: the daemon's wait for the kernel's notifications to be listened to (set by _supervise),
        #: awaited by the first reconcile
        self._listening: asyncio.Future | None = None
        self.contention = ContentionDetector()
        self.worker: Worker | None = None
        self._stop = asyncio.Event()
        self._echo_check: asyncio.Task | None = None
        self.resolution: PeerResolution | None = None
        self.node_events = None
        if not settings.metallb_static_file:  # (the Kubernetes client only where it is used)
            from nra.sources.kube.node_events import node_events_for

            self.node_events = node_events_for(settings)
        #: what /status shows of the return path (its describe()), once running
        self.return_path: dict | None = None

    @property
    def intent(self) -> Intent | None:
        return self.desired.intent

    @property
    def last_outcome(self) -> Outcome | None:
        return self.worker.last_outcome if self.worker else None

    @contextmanager
    def _loading(self):
        """Around the static file's read and parse: the collector paused until the change's
        reconcile is over (nra.daemon.gc_pause; released in _reconciled, or here when the
        read publishes nothing)."""
        gc_pause.hold()
        self._published = False
        try:
            with self.status.loading():
                yield
        finally:
            if not self._published:
                gc_pause.release()

    def publish(self, result: ParseResult) -> None:
        """Called by the source with every complete configuration it loads."""
        self._published = True
        changed = self.desired.accept(result)
        self.status.config_loaded = True
        self.status.source_synced = True
        metrics.ready(self.status.ready)
        if changed and self.worker is not None:
            self.status.change_loaded()  # (the HTTP server holds back until its reconcile ends)
            self.worker.trigger("config")  # (the documents follow that reconcile)
        else:
            gc_pause.release()  # (no reconcile follows: the collector runs again now)
            self.documents.refresh()

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGTERM does)."""
        self._stop.set()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> int:
        """Runs until SIGTERM/SIGINT (0) or until a vital task ends (1); leaves the kernel as
        it is on exit."""
        loop = asyncio.get_running_loop()
        previous = self._install_signal_handlers(loop)
        from nra.observe.server import (
            HealthAddressError,  # aiohttp: only the daemon needs it
        )

        try:
            return await self._run()
        except (HealthAddressError, OSError) as exc:
            # the health port taken, no permission for netlink: one line, not a traceback
            logger.error("cannot run: {}", exc)
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def _run(self) -> int:
        from nra.observe.server import (
            connection_cap,
            fd_headroom,
            start_health_server,
            stop_health_server,
        )

        # idle HTTP clients must never take the descriptors a hook or a netlink socket needs
        cap = connection_cap(fd_headroom())
        await check_multipath_use_neigh(self.settings.netns, self.settings.set_multipath_use_neigh)
        name_table(self.settings.table, self.settings.table_name)
        health = None
        if self.settings.health_address:
            # the server's thread asks this loop for a beat (liveness) and for fresh documents
            loop = asyncio.get_running_loop()
            self.status.ask = lambda: loop.call_soon_threadsafe(self.status.loop_ran)
            self.documents.schedule = loop.call_soon_threadsafe
            self.status.loop_ran()
            self.documents.refresh()
            health = await start_health_server(self.settings.health_address, self.status, self.stuck_after_s,
                                               documents=self.documents,
                                               status_access=self.settings.status_access, cap=cap,
                                               secure=await self._secure_metrics())
        try:
            async with reconciler(self.settings, self.status, daemon=True) as one:
                return await self._supervise(one)
        finally:
            await stop_health_server(health)

    async def _secure_metrics(self):
        """The HTTPS /metrics listener's parts (METRICS_ADDRESS), or None."""
        if self.settings.metrics_endpoint is None:
            return None
        from nra.observe.metrics_auth import KubernetesReviewer
        from nra.observe.server import SecureMetrics
        from nra.observe.tls import Certificates
        from nra.sources.kube.client import api_client_factory

        host, port = self.settings.metrics_endpoint
        certificates = await asyncio.to_thread(Certificates, self.settings.metrics_tls_cert_file,
                                               self.settings.metrics_tls_key_file, (host,))
        reviewer = (KubernetesReviewer(api_client_factory(self.settings.kubeconfig))
                    if self.settings.metrics_auth == "kubernetes" else None)
        return SecureMetrics(host, port, certificates, reviewer)

    async def _supervise(self, reconciler: Reconciler) -> int:
        self.return_path = reconciler.return_path.describe()
        self.worker = Worker(lambda trigger: self._reconcile(reconciler, trigger), self._reconciled)
        self.resolution = PeerResolution(reconciler.health.to_resolve, reconciler.kernel.resolve_peers)
        if self.intent is not None:
            self.worker.trigger("config")
        self._listening = asyncio.ensure_future(asyncio.wait_for(reconciler.kernel.subscribed(), SUBSCRIBED_WAIT_S))
        vital = {
            asyncio.create_task(self.worker.run(), name=WORKER),
            asyncio.create_task(self._watch_kernel(reconciler), name=KERNEL_WATCHER),
        }
        others = {asyncio.create_task(run_source(self.source, lambda r: self.publish(r)), name=SOURCE),
                  asyncio.create_task(self.resolution.run(), name="peer-resolution")}
        if self.settings.frrk8s_namespace:
            others.add(asyncio.create_task(self._watch_session_states(reconciler), name="session-states"))
        if self.settings.max_reconcile_wait:
            others.add(asyncio.create_task(self._timer(), name="timer"))
        metrics.agent_started(__version__, self.source.name, reconciler.return_path.name)
        logger.info("nra running: source {}, table {}, {}", self.source.name, self.settings.table,
                    f"namespace {self.settings.netns}" if self.settings.netns else "this network namespace")
        stop = asyncio.create_task(self._stop.wait())
        code = 0
        try:
            while not stop.done():
                done, _ = await asyncio.wait([stop, *vital, *others], return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stop}:
                    if task in vital:
                        vital.discard(task)
                        self._vital_task_ended(task)
                        code = EXIT_VITAL_TASK
                        self._stop.set()
                    else:
                        others.discard(task)
                        if task.get_name() == SOURCE:
                            self.status.source_synced = False  # (run_source said why)
        finally:
            logger.info("stopping; the kernel state is left as it is")
            pending_event = self.node_events.pending if self.node_events else None
            tasks = [stop, *vital, *others,
                     *(t for t in (self._echo_check, pending_event, self._listening) if t is not None)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return code

    def _vital_task_ended(self, task: asyncio.Task) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            logger.opt(exception=exc).error("{} died: {}: {}; stopping (exit {})", task.get_name(),
                                            type(exc).__name__, exc, EXIT_VITAL_TASK)
        else:
            logger.error("{} ended; stopping (exit {})", task.get_name(), EXIT_VITAL_TASK)
        metrics.unexpected_error(task.get_name())

    async def _reconcile(self, reconciler: Reconciler, trigger: str) -> Outcome:
        listening, self._listening = self._listening, None
        if listening is not None:
            # The daemon's first reconcile reads the kernel once its notifications are listened
            # to, so that the kernel view of that read is kept (nra.kernel.rules.KeptRules):
            # read before, it was not, and at 100,000 rules the first change after a start
            # dumped and decoded every rule again (~1 s and ~15 MiB more at its peak).
            try:
                await listening
            except asyncio.TimeoutError:
                pass  # (read anyway: the view is then kept from the next full read)
        self.status.reconcile_started()
        self.echo.reconcile_started()  # netlink events from here on may be our own
        try:
            with reconcile_context(trigger):
                return await reconciler.reconcile(self.intent, trigger)
        finally:
            self.status.reconcile_finished()

    def _reconciled(self, triggers: set[str], outcome: Outcome) -> None:
        gc_pause.release()  # the change is in the kernel: the collector runs again
        self.documents.refresh()  # (after the reconcile: a change reaches the kernel first)
        self.echo.reconcile_finished(bool(outcome.applied))
        if self.resolution is not None:  # a read may have judged a peer silent
            self.resolution.wake()
        if self.node_events is not None and outcome.plan is not None:
            self.node_events.observe(outcome.degraded, outcome.plan.left_out)
        by_drift = "netlink" in triggers
        if by_drift and outcome.applied:
            metrics.drift_repaired()
        change = self.contention.reconciled(time.monotonic(), by_drift, outcome.applied_ops)
        if change == "started":
            logger.warning("another writer keeps undoing nra's changes to table {} and its rules: {}; is a "
                           "second agent (or another configuration) managing this table?",
                           self.settings.table, self.contention.fight)
        elif change == "ended":
            logger.info("table {}: nothing has undone nra's changes for {:g} s; no longer contended",
                        self.settings.table, self.contention.quiet_s)
        if change:
            self.status.contention = self.contention.fight
            metrics.contention(bool(self.contention.fight))
            metrics.ready(self.status.ready)
        outcome.shed()  # (kept for /status: its counts and warnings, not the plan's tables)
        if outcome.ok and outcome.intent is not None:  # (its patch's record held the set before)
            prefix_delta.settled(outcome.intent.prefixes)
        # start-up's imports and first parse, a change's last intent, plan and documents: freed
        # memory given back (nra.daemon.memory.AfterReconcile)
        self.memory.reconciled(bool(outcome.applied), outcome.applied >= LARGE_CHANGE_OPERATIONS)

    async def _watch_session_states(self, reconciler: Reconciler) -> None:
        """FRR-K8s's BGPSessionStates of this node (advisory, see nra.sources.kube.session_states):
        each change, and the watch failing for the hold time or recovering, wakes the worker. If
        the watch dies, every peer is unknown to this signal again."""
        from nra.sources.kube import api_client_factory
        from nra.sources.kube.session_states import SessionStateFeed, SessionStateWatch

        feed = SessionStateFeed(self.settings.bgp_session_hold)

        def publish(states) -> None:
            feed.states = states
            self.worker.trigger("session-state")

        watch = SessionStateWatch(api_client_factory(self.settings.kubeconfig), self.settings.frrk8s_namespace,
                                  self.settings.node_name)
        reconciler.session_states = feed.current
        runner = asyncio.create_task(watch.run(publish), name="session-state-watch")
        try:
            while not runner.done():
                await asyncio.wait({runner}, timeout=SESSION_WATCH_CHECK_S)
                if feed.check(watch.healthy, time.monotonic()):
                    self.worker.trigger("session-state")
            runner.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.opt(exception=exc).error("the BGPSessionState watch stopped: {}: {}; its states are ignored",
                                            type(exc).__name__, exc)
            metrics.unexpected_error("session-states")
            reconciler.session_states = lambda: None
            self.worker.trigger("session-state")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _timer(self) -> None:
        period = self.settings.max_reconcile_wait / 1000
        while True:
            await asyncio.sleep(period)
            self._reread("timer")

    def _reread(self, why: str) -> None:
        """The timer and SIGHUP re-read the source's input too, not only the kernel."""
        reload = getattr(self.source, "reload", None)
        if reload is not None:
            reload()
        if self.worker is not None:
            self.worker.trigger(why)

    async def _watch_kernel(self, reconciler: Reconciler) -> None:
        async for event in reconciler.kernel.events():
            if isinstance(event, NeighbourChange):
                entry = event.entry
                reason = reconciler.health.observe_neighbour_change(
                    entry.address, None if entry.deleted else entry.state, entry.lladdr)
                if self.resolution is not None:  # a silent peer's entry may have failed or gone
                    self.resolution.wake()
                if reason:  # a peer starts or stops answering, or its router is known: not an echo of ours
                    logger.debug("netlink: {}", reason)
                    self.worker.trigger("neighbour")
                continue
            logger.debug("netlink: {}", event.reason)
            if isinstance(event, LearnedRouteChange):  # a BGP session of a peer went or came: at once
                self.worker.trigger("learned-route")
                continue
            if isinstance(event, UplinkChange):  # a multihop or unnumbered peer to resolve again: at once
                self.worker.trigger("uplink")
                continue
            if isinstance(event, TableChange) and event.reason.startswith("link "):
                self.worker.trigger("link")  # the kernel's doing, not another writer's
            elif isinstance(event, TableChange) and self.echo.probably_echo():
                if self._echo_check is None or self._echo_check.done():
                    self._echo_check = self.worker.trigger_later("netlink", ECHO_CHECK_S)
            else:
                self.worker.trigger("netlink")

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> dict:
        """SIGTERM/SIGINT stop the daemon, SIGHUP reconciles.

        Plain signal.signal handlers rather than loop.add_signal_handler: the latter routes
        signals through a wakeup fd that processes forked without exec inherit, so a signal
        sent to such a child looked like a SIGTERM to the agent and stopped it.
        """
        pid = os.getpid()

        def on_signal(signum: int, _frame) -> None:
            if os.getpid() != pid:  # a forked child got it: behave as if we had no handler
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            if signum == signal.SIGHUP:
                loop.call_soon_threadsafe(self._reread, "sighup")
            else:
                loop.call_soon_threadsafe(self._stop.set)

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
