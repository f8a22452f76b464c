"""The agent: a source feeds intents, triggers wake one worker that reconciles.

Triggers (a configuration change, netlink drift, the timer, SIGHUP) only mark work as
pending and wake the worker; the worker waits a few milliseconds to merge a burst, then
runs one reconcile with everything pending. So reconciles never overlap and a storm of
events costs one reconcile, not one each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from loguru import logger

from nra import logsetup  # noqa: F401  (registers the VERBOSE level used below)
from nra import metrics
from nra.intent import Intent, ParseResult, Problem
from nra.netlink import KernelAdapter
from nra.reconciler import Outcome, Reconciler, policy_from_settings
from nra.settings import Settings
from nra.sources.base import Source
from nra.status import AgentStatus

# Merge triggers that arrive within this window into one reconcile.
COALESCE_S = 0.01
# The loop proves it is alive this often; /healthz calls it wedged after WEDGED_AFTER_S.
HEARTBEAT_S = 1.0
WEDGED_AFTER_S = 30.0
# While degraded (a peer unusable, a change failed), reconcile again after RETRY_S,
# doubling up to RETRY_MAX_S. Netlink events (link, neighbour) still trigger at once.
RETRY_S = 1.0
RETRY_MAX_S = 30.0
# Netlink events during our own reconcile, or this soon after it changed something, are
# taken for echoes of our changes: verified once after ECHO_CHECK_S.
ECHO_WINDOW_S = 0.3
ECHO_CHECK_S = 1.0


def make_source(settings: Settings) -> Source:
    if settings.metallb_static_file:
        from nra.sources.static_file import StaticFileSource

        return StaticFileSource(settings.metallb_static_file, settings.node_name, settings.peer_weight)
    from nra.sources.kube import make_kube_source

    return make_kube_source(settings)


class Agent:
    def __init__(self, settings: Settings, source: Source):
        self.settings = settings
        self.source = source
        self.status = AgentStatus(source_name=source.name)
        self.status.source_problem = lambda: getattr(source, "problem", None)
        self.intent: Intent | None = None
        self._problems: tuple[Problem, ...] = ()
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._first_config = asyncio.Event()
        self._stop = asyncio.Event()
        self.last_outcome: Outcome | None = None
        self._retry: asyncio.Task | None = None
        self._retry_delay = RETRY_S
        self._echo_until = 0.0
        self._echo_check: asyncio.Task | None = None

    # -- the source side --------------------------------------------------------------

    def publish(self, result: ParseResult) -> None:
        """Called by the source with every complete configuration it loads."""
        self._log_problems(result.problems)
        metrics.config_loaded(len(result.problems))
        first = self.intent is None
        self.status.config_loaded = True
        self.status.source_synced = True
        self._first_config.set()
        if not first and result.intent == self.intent:
            logger.log("VERBOSE", "configuration reloaded, desired state unchanged")
            return
        self.intent = result.intent
        logger.info("desired state {}: {}", "loaded" if first else "changed", result.intent.summary())
        self.trigger("config")

    def _log_problems(self, problems: tuple[Problem, ...]) -> None:
        # Each bad entry is named once, when it appears; fixed ones are acknowledged.
        for problem in problems:
            if problem not in self._problems:
                logger.error("configuration: {} (skipped; everything else still applies)", problem)
        for problem in self._problems:
            if problem not in problems:
                logger.info("configuration: fixed: {}", problem.where)
        self._problems = tuple(problems)

    # -- triggers and the worker -------------------------------------------------------

    def trigger(self, why: str) -> None:
        if why in ("timer", "sighup") and hasattr(self.source, "reload"):
            self.source.reload()  # re-read the input too, not only the kernel
        self._pending.add(why)
        self._wake.set()

    async def _worker(self, reconciler: Reconciler) -> None:
        while True:
            await self._wake.wait()
            if "config" not in self._pending:
                # netlink events come in bursts (one per rule or route); a configuration
                # change was already debounced by its source and goes at once
                await asyncio.sleep(COALESCE_S)
            self._wake.clear()
            triggers, self._pending = self._pending, set()
            trigger = "+".join(sorted(triggers)) or "unknown"
            self._echo_until = float("inf")  # netlink events from here on may be our own
            outcome = await reconciler.reconcile(self.intent, trigger)
            self._echo_until = time.monotonic() + (ECHO_WINDOW_S if outcome.applied else 0.0)
            self.last_outcome = outcome
            if "netlink" in triggers and outcome.applied:
                metrics.drift_repaired()
            if outcome.degraded or not outcome.ok:
                # A peer unusable now (link down, address not yet back, no ARP answer) or
                # a failed change: retry soon rather than at the next timer tick, backing
                # off so a long outage does not cost a full kernel read every second.
                self._schedule_retry()
            else:
                self._retry_delay = RETRY_S

    def _schedule_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_later(self._retry_delay))
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)

    async def _retry_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.trigger("retry")

    async def _timer(self) -> None:
        period = self.settings.max_reconcile_wait / 1000
        while True:
            await asyncio.sleep(period)
            self.trigger("timer")

    async def _watch_kernel(self, adapter: KernelAdapter) -> None:
        async for reason in adapter.events():
            logger.debug("netlink: {}", reason)
            if time.monotonic() < self._echo_until:
                # Most likely the echo of our own changes: check once, a little later,
                # instead of re-reading the whole table right away (which would also hold
                # up a configuration change arriving meanwhile). Real drift in this window
                # is still repaired, within ECHO_CHECK_S.
                if self._echo_check is None or self._echo_check.done():
                    self._echo_check = asyncio.create_task(self._check_later())
            else:
                self.trigger("netlink")

    async def _check_later(self) -> None:
        await asyncio.sleep(ECHO_CHECK_S)
        self.trigger("netlink")

    async def _heartbeat(self) -> None:
        while True:
            self.status.beat()
            await asyncio.sleep(HEARTBEAT_S)

    async def _run_source(self) -> None:
        try:
            await self.source.run(self.publish)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A source that dies must not take the kernel state with it: keep what we have.
            logger.error("source {} stopped: {}: {}; keeping the last good configuration",
                         self.source.name, type(exc).__name__, exc)
            self.status.source_synced = False
            metrics.source_synced(self.source.name, False)
            raise

    # -- modes ---------------------------------------------------------------------------

    async def run(self) -> int:
        """The daemon: runs until SIGTERM/SIGINT; leaves the kernel as it is on exit."""
        loop = asyncio.get_running_loop()
        previous = self._install_signal_handlers(loop)
        from nra.health import HealthAddressError  # aiohttp: only the daemon needs it

        try:
            return await self._run_daemon()
        except (HealthAddressError, OSError) as exc:
            # the health port taken, no permission for netlink: one line, not a traceback
            logger.error("cannot run: {}", exc)
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask a running daemon to stop (what SIGTERM does)."""
        self._stop.set()

    async def _run_daemon(self) -> int:
        from nra.health import start_health_server, stop_health_server

        self._check_multipath_sysctl()
        health = None
        if self.settings.health_address:
            health = await start_health_server(self.settings.health_address, self.status, WEDGED_AFTER_S)
        async with KernelAdapter(policy_from_settings(self.settings), netns=self.settings.netns) as adapter:
            reconciler = Reconciler(adapter, self.settings, self.status)
            tasks = [
                asyncio.create_task(self._worker(reconciler), name="worker"),
                asyncio.create_task(self._watch_kernel(adapter), name="netlink-events"),
                asyncio.create_task(self._heartbeat(), name="heartbeat"),
                asyncio.create_task(self._run_source(), name="source"),
            ]
            if self.settings.max_reconcile_wait:
                tasks.append(asyncio.create_task(self._timer(), name="timer"))
            logger.info("nra running: source {}, table {}, {}", self.source.name, self.settings.table,
                        f"namespace {self.settings.netns}" if self.settings.netns else "this network namespace")
            stop = asyncio.create_task(self._stop.wait())
            # The worker, the timer and the heartbeat never return; the source and the
            # netlink watcher may fail, and the agent goes on with what it has.
            while not stop.done():
                done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is stop:
                        continue
                    tasks.remove(task)
                    if task.get_name() in ("worker", "netlink-events") and not task.cancelled():
                        logger.error("{} stopped unexpectedly: {}", task.get_name(), task.exception())
                        self._stop.set()
            logger.info("stopping; the kernel state is left as it is")
            tasks += [t for t in (self._retry, self._echo_check) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await stop_health_server(health)
        return 0

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> dict:
        """SIGTERM/SIGINT stop the daemon, SIGHUP reconciles.

        Plain signal.signal handlers rather than loop.add_signal_handler: the latter routes
        signals through a wakeup fd that processes forked without exec (pyroute2's
        namespace helpers) inherit, so a signal sent to such a helper used to look like a
        SIGTERM to the agent and stopped it.
        """
        pid = os.getpid()

        def on_signal(signum: int, _frame) -> None:
            if os.getpid() != pid:  # a forked helper got it: behave as if we had no handler
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            if signum == signal.SIGHUP:
                loop.call_soon_threadsafe(self.trigger, "sighup")
            else:
                loop.call_soon_threadsafe(self._stop.set)

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    async def run_oneshot(self) -> int:
        """One reconcile, then exit: 0 on success, 1 with the reason on failure."""
        source = asyncio.create_task(self._run_source(), name="source")
        try:
            waiter = asyncio.create_task(self._first_config.wait())
            done, _ = await asyncio.wait([waiter, source], timeout=self.settings.source_start_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                if source in done:
                    logger.error("ONESHOT failed: source {} stopped before loading a configuration", self.source.name)
                else:
                    logger.error("ONESHOT failed: no configuration from {} within {:.0f} s; kernel left as it is",
                                 self.source.name, self.settings.source_start_timeout)
                return 1
        finally:
            source.cancel()
            await asyncio.gather(source, return_exceptions=True)
        self._check_multipath_sysctl()
        async with KernelAdapter(policy_from_settings(self.settings), netns=self.settings.netns) as adapter:
            outcome = await Reconciler(adapter, self.settings, self.status).reconcile(self.intent, "oneshot")
        self.last_outcome = outcome
        if not outcome.ok:
            logger.error("ONESHOT failed: {}", outcome.describe())
            return 1
        logger.info("ONESHOT done: {}", outcome.describe())
        return 0

    async def plan_only(self) -> int:
        """`nra plan`: print what a reconcile would do, change nothing."""
        code = await self._load_once()
        if code:
            return code
        async with KernelAdapter(policy_from_settings(self.settings), netns=self.settings.netns) as adapter:
            _, the_plan = await Reconciler(adapter, self.settings, self.status).compute_plan(self.intent)
        print(f"# desired: {self.intent.summary()}")
        for warning in the_plan.warnings:
            print(f"# warning: {warning}")
        for op in the_plan.operations:
            print(op)
        if not the_plan.operations:
            print("# nothing to do: the kernel matches the configuration")
        return 0

    async def _load_once(self) -> int:
        source = asyncio.create_task(self._run_source(), name="source")
        try:
            await asyncio.wait_for(self._first_config.wait(), self.settings.source_start_timeout)
        except asyncio.TimeoutError:
            logger.error("no configuration from {} within {:.0f} s", self.source.name, self.settings.source_start_timeout)
            return 1
        finally:
            source.cancel()
            await asyncio.gather(source, return_exceptions=True)
        return 0

    # -- helpers -----------------------------------------------------------------------

    def _check_multipath_sysctl(self) -> None:
        """ECMP must skip peers whose neighbour entry failed, or a dead router keeps its
        share of flows: net.ipv4.fib_multipath_use_neigh=1. Set it, or warn."""
        key = "net.ipv4.fib_multipath_use_neigh"
        try:
            if self.settings.netns:
                prefix = ["ip", "netns", "exec", self.settings.netns]
                value = subprocess.run([*prefix, "sysctl", "-n", key], capture_output=True, text=True,
                                       check=True).stdout.strip()
                if value != "1" and self.settings.set_multipath_use_neigh:
                    subprocess.run([*prefix, "sysctl", "-qw", f"{key}=1"], check=True, capture_output=True)
                    value = "1"
            else:
                path = Path("/proc/sys/net/ipv4/fib_multipath_use_neigh")
                value = path.read_text().strip()
                if value != "1" and self.settings.set_multipath_use_neigh:
                    path.write_text("1\n")
                    value = "1"
                    logger.info("set {}=1 so ECMP avoids peers whose neighbour entry failed", key)
        except (OSError, subprocess.CalledProcessError) as exc:
            logger.warning("could not check/set {}: {}; set it to 1 on the node so a dead peer "
                           "stops receiving its share of replies", key, getattr(exc, "strerror", None) or exc)
            return
        if value != "1":
            logger.warning("{}={}: ECMP keeps sending replies to a dead peer until BGP drops it; "
                           "set it to 1", key, value)


async def clean_and_exit(settings: Settings) -> int:
    """CLEANANDEXIT: remove every rule of either family pointing at the table, flush it."""
    try:
        async with KernelAdapter(policy_from_settings(settings), netns=settings.netns) as adapter:
            removed = await adapter.clean()
    except Exception as exc:
        logger.error("CLEANANDEXIT failed: {}: {}", type(exc).__name__, exc)
        return 1
    logger.info("CLEANANDEXIT: removed {} rule(s)/route(s) of table {}", removed, settings.table)
    return 0
