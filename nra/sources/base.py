"""The contract between configuration sources and the agent core.

A source runs forever (or until cancelled) and calls `publish(result)` with a complete
ParseResult each time the desired state may have changed. It never publishes a partial or
failed load: if it cannot read its input it logs why and publishes nothing, so the agent
keeps the last good intent and the kernel is left as it is. Publishing the same intent
twice is harmless; the agent only reconciles on a real change.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from nra.intent import ParseResult

Publish = Callable[[ParseResult], None]


class Source(Protocol):
    """What the agent needs from a source of MetalLB configuration."""

    #: a short human name for logs and metrics, e.g. "static-file", "configmap", "crds"
    name: str

    async def run(self, publish: Publish) -> None:
        """Watch the configuration and publish every complete, successfully parsed state."""
        ...


SourceFactory = Callable[[], Awaitable[Source]]
