"""The desired state as the agent holds it, and running a configuration source.

Every run mode starts its source the same way (run_source); the daemon keeps it running,
the one-off modes (ONESHOT, `nra plan`) wait for its first configuration
(first_configuration)."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from loguru import logger

from nra.config.intent import Intent, ParseResult, Problem
from nra.observe import metrics
from nra.observe.logs import VERBOSE, intent_fields
from nra.sources.base import Source


class Desired:
    """The last good intent and the problems of the configuration it came from."""

    def __init__(self) -> None:
        self.intent: Intent | None = None
        #: wall clock of the last configuration the source published (for `nra status`)
        self.loaded_at: float | None = None
        self._problems: tuple[Problem, ...] = ()

    def accept(self, result: ParseResult) -> bool:
        """Take a configuration the source published; True when the intent changed (or is
        the first)."""
        self._log_problems(result.problems)
        self.loaded_at = time.time()
        metrics.config_loaded(len(result.problems))
        metrics.desired_state({v: len(result.intent.peers_of(v)) for v in (4, 6)},
                              result.intent.prefix_counts)
        first = self.intent is None
        if not first and result.intent == self.intent:
            logger.log(VERBOSE, "configuration reloaded, desired state unchanged")
            return False
        self.intent = result.intent
        logger.bind(**intent_fields(result.intent.peers, result.intent.prefix_counts)).info(
            "desired state {}: {}", "loaded" if first else "changed", result.intent.summary())
        return True

    def _log_problems(self, problems: tuple[Problem, ...]) -> None:
        # Each bad entry is named once, when it appears; fixed ones are acknowledged.
        for problem in problems:
            if problem not in self._problems:
                logger.error("configuration: {} (skipped; everything else still applies)", problem)
        for problem in self._problems:
            if problem not in problems:
                logger.info("configuration: fixed: {}", problem.where)
        self._problems = tuple(problems)


async def run_source(source: Source, publish: Callable[[ParseResult], None]) -> None:
    """Run the source until cancelled. One that dies is logged (with its traceback when it
    is a bug) and re-raised; what was published stays."""
    try:
        await source.run(publish)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.opt(exception=exc).error("source {} stopped: {}: {}; keeping the last good configuration",
                                        source.name, type(exc).__name__, exc)
        metrics.unexpected_error(f"source-{source.name}")
        metrics.source_synced(source.name, False)
        raise


async def first_configuration(source: Source, timeout_s: float) -> Desired | None:
    """Run the source until its first configuration (returned), for at most `timeout_s`;
    None, after saying why, if none came. A source whose input is there or not right now
    (`read_now`: the static file) is read once: waiting would not change its answer."""
    desired = Desired()
    read_now = getattr(source, "read_now", None)
    if read_now is not None:
        result = read_now()
        if result is None:
            logger.error("no configuration from {}: {}", source.name, source.problem or "nothing to read")
            return None
        desired.accept(result)
        return desired
    loaded = asyncio.Event()

    def publish(result: ParseResult) -> None:
        desired.accept(result)
        loaded.set()

    running = asyncio.create_task(run_source(source, publish), name="source")
    waiter = asyncio.create_task(loaded.wait())
    try:
        done, _ = await asyncio.wait([waiter, running], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, running):
            task.cancel()
        await asyncio.gather(waiter, running, return_exceptions=True)
    if loaded.is_set():
        return desired
    if running in done:
        logger.error("source {} stopped before loading a configuration", source.name)
    else:
        logger.error("no configuration from {} within {:.0f} s; kernel left as it is", source.name, timeout_s)
    return None
