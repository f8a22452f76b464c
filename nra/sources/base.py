"""The contract between configuration sources and the agent core.

A source runs forever (or until cancelled) and calls `publish(result)` with a complete
ParseResult each time the desired state may have changed. It never publishes a partial or
failed load: if it cannot read its input it logs why and publishes nothing, so the agent
keeps the last good intent and the kernel is left as it is. Publishing the same intent
twice is harmless; the agent only reconciles on a real change.

A source also says what is wrong with its input right now (`problem`, None when nothing
is): readiness fails with that reason while the last good state is kept. A source whose
input is usable now or not (a file) may also offer `read_now()`, which a one-off run calls
instead of waiting for the source to start.
"""

from __future__ import annotations

from typing import Callable, Protocol

from loguru import logger

from nra.config.intent import ParseResult
from nra.observe import metrics

Publish = Callable[[ParseResult], None]

#: the kinds of trouble a source reports, each with its own metric where one exists
REFUSED = "refused"  # the configuration exists but cannot be used at all
MISSING = "missing"  # the configuration is gone (ConfigMap deleted, every object gone)
UNREADABLE = "unreadable"  # the static file or its directory cannot be read
NODE_MISSING = "node-missing"  # this node's Node object is not in the API
DENIED = "denied"  # the API refuses our identity (401) or a verb on a resource (403); per resource


class Source(Protocol):
    """What the agent needs from a source of MetalLB configuration."""

    #: a short human name for logs and metrics, e.g. "static-file", "configmap", "crds"
    name: str

    async def run(self, publish: Publish) -> None:
        """Watch the configuration and publish every complete, successfully parsed state."""
        ...

    @property
    def problem(self) -> str | None:
        """Why the current input is not used (the last good state is kept), or None."""
        ...

    def reload(self) -> None:
        """Read the input again now (SIGHUP, the timer); publishes like a change would."""
        ...


class SourceHealth:
    """What is wrong with a source's input, said once when it starts and once when it ends.

    Each kind of trouble (REFUSED, MISSING, ...) is set with a one-line reason or cleared;
    a change of reason is said again, a repeat is not. `problem` is the first current one.
    """

    def __init__(self, source_name: str):
        self.source_name = source_name
        self._current: dict[str, str] = {}

    @property
    def problem(self) -> str | None:
        # tuple() copies in one step: the HTTP server's thread asks while the loop may change it
        current = tuple(self._current.values())
        return current[0] if current else None

    def has(self, kind: str) -> bool:
        return kind in self._current

    def set(self, kind: str, reason: str, level: str = "WARNING") -> None:
        if self._current.get(kind) != reason:
            logger.log(level, "{}: {}", self.source_name, reason)
        self._current[kind] = reason
        self._metric(kind, True)

    def clear(self, kind: str, recovered: str | None = None) -> None:
        """The trouble is over: say `recovered` (if given and it was current)."""
        if self._current.pop(kind, None) is not None and recovered:
            logger.info("{}: {}", self.source_name, recovered)
        self._metric(kind, False)

    @staticmethod
    def _metric(kind: str, on: bool) -> None:
        if kind == REFUSED:
            metrics.config_refused(on)
        elif kind == MISSING:
            metrics.config_missing(on)

