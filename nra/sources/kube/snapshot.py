"""From several reflectors' caches to published intents, never from a partial view.

The Node.js agent published whatever it had when any watch fired, so after a cut stream it
could publish peers before the node's labels were known, and the table flapped. Here an
intent is computed only when every reflector holds a complete list (and the source agrees
the view is usable), bursts of events are merged for a short delay, and only a result that
differs from the last published one goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from loguru import logger

from nra.config.intent import ParseResult
from nra.config.metallb import ConfigError
from nra.observe import metrics
from nra.sources.base import REFUSED, Publish, SourceHealth
from nra.sources.kube.reflector import Reflector

#: returns the result to publish, or None when the complete caches still do not make a
#: usable view (e.g. this node's object is not there yet); gets the caches by reflector name
Compute = Callable[[dict[str, list[dict]]], ParseResult | None]


class SnapshotPublisher:
    def __init__(self, health: SourceHealth, reflectors: Sequence[Reflector], compute: Compute,
                 publish: Publish, coalesce_s: float = 0.1):
        self.health = health
        self.source_name = health.source_name
        self.reflectors = list(reflectors)
        self.compute = compute
        self.publish = publish
        self.coalesce_s = coalesce_s
        self.last: ParseResult | None = None
        self._flush: asyncio.TimerHandle | None = None
        self._synced = False

    def changed(self) -> None:
        """A reflector's cache changed; publish after the coalescing delay."""
        # The first change of a burst arms the timer and later ones ride along, so an
        # event waits at most coalesce_s, however long the burst goes on.
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.coalesce_s, self.flush)

    def cancel(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._set_synced(False)

    def flush(self) -> None:
        self._flush = None
        waiting = [r.resource.name for r in self.reflectors if not r.synced]
        if waiting:
            logger.debug("{}: waiting for the first list of {}", self.source_name, ", ".join(waiting))
            return
        caches = {r.resource.name: list(r.objects.values()) for r in self.reflectors}  # type: ignore[union-attr]
        try:
            result = self.compute(caches)
        except ConfigError as exc:  # unusable text: MetalLB keeps its old config too
            self.health.set(REFUSED, f"{exc}; keeping the last good configuration", "ERROR")
            return
        except Exception as exc:  # a parser bug must not take the last good state with it
            logger.opt(exception=exc).error("{}: unexpected error computing the desired state (a bug in nra)",
                                            self.source_name)
            metrics.unexpected_error("source")
            self.health.set(REFUSED, f"cannot compute the desired state ({type(exc).__name__}, a bug in nra); "
                                     "keeping the last good configuration", "ERROR")
            return
        self.health.clear(REFUSED, None if result is None else "the configuration is usable again")
        if result is None:
            self._set_synced(False)
            return
        self._set_synced(True)
        if result == self.last:
            return  # e.g. a relist that returned the same objects
        self.last = result
        self.publish(result)

    def _set_synced(self, synced: bool) -> None:
        if synced != self._synced:
            self._synced = synced
            metrics.source_synced(self.source_name, synced)
