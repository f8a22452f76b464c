"""What the ConfigMap and CRD sources share: connect, find resources, reflect them all.

`run` keeps retrying until it has a client and the list of resources (credentials that do
not load yet, an API server that is down, CRDs not installed), publishing nothing
meanwhile, then runs one reflector per resource and a SnapshotPublisher over them. On
cancellation every task stops and the one HTTP session is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from loguru import logger

from nra.config.intent import ParseResult
from nra.sources.base import MISSING, NODE_MISSING, Publish, SourceHealth
from nra.sources.kube.client import (
    ApiClientFactory,
    ApiError,
    KubeHTTP,
    KubeSourceError,
)
from nra.sources.kube.reflector import Backoff, Reflector, ResourceKind, WatchTiming
from nra.sources.kube.snapshot import SnapshotPublisher

NODE = "node"


def node_resource(node_name: str) -> ResourceKind:
    return ResourceKind(NODE, "/api/v1/nodes", "v1", "Node", f"metadata.name={node_name}")


class WatchedSource:
    """Base of ConfigMapSource and CRDSource; subclasses say what to watch and how to parse."""

    name = "kube"

    def __init__(self, api_client_factory: ApiClientFactory, namespace: str, node_name: str | None,
                 default_weight: int, timing: WatchTiming | None = None, coalesce_s: float = 0.1):
        self.api_client_factory = api_client_factory
        self.namespace = namespace
        self.node_name = node_name
        self.default_weight = default_weight
        self.timing = timing or WatchTiming()
        self.coalesce_s = coalesce_s
        self.reflectors: list[Reflector] = []
        self.health = SourceHealth(self.name)
        self._said: set[str] = set()

    # -- for subclasses ---------------------------------------------------------------

    async def resources(self, http: KubeHTTP) -> list[ResourceKind]:
        raise NotImplementedError

    def compute(self, caches: dict[str, list[dict]]) -> ParseResult | None:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        return self.health.problem

    def reload(self) -> None:
        """Nothing to do: the watches keep the view current (and relist on their own)."""

    def say_once(self, message: str) -> None:
        """For a fact of the settings, which cannot change while the process runs."""
        if message not in self._said:
            self._said.add(message)
            logger.warning(message)

    def config_missing(self, missing: bool, what: str) -> None:
        """The configuration is gone (or back): MetalLB's speaker keeps its last one then, so
        its routers still send traffic our way; so do we, and say it."""
        if missing:
            self.health.set(MISSING, f"configuration missing: {what}; keeping the last good configuration")
        else:
            self.health.clear(MISSING, f"configuration present again: {what}")

    def node_labels(self, caches: Mapping[str, list[dict]]) -> dict[str, str] | None:
        """This node's labels; {} without NODE_NAME; None while the Node is not (yet) there."""
        if self.node_name is None:
            return {}
        nodes = caches.get(NODE) or []
        if not nodes:
            self.health.set(NODE_MISSING, f"node {self.node_name} not found in the API (is NODE_NAME right?); "
                                          "keeping the last good configuration until it is back")
            return None
        self.health.clear(NODE_MISSING, f"node {self.node_name} found")
        labels = (nodes[0].get("metadata") or {}).get("labels") or {}
        if not isinstance(labels, Mapping):
            return {}
        return {str(k): str(v) for k, v in labels.items()}

    async def run(self, publish: Publish) -> None:
        backoff = Backoff(self.timing.backoff_min_s, self.timing.backoff_max_s)
        last_error: str | None = None
        while True:
            try:
                api = await self.api_client_factory()
            except KubeSourceError as exc:
                if str(exc) != last_error:
                    logger.error("{}: {}; retrying", self.name, exc)
                last_error = str(exc)
                await asyncio.sleep(max(backoff.next_delay(), 1.0))
                continue
            try:
                http = KubeHTTP(api, self.timing.request_timeout_s)
                while True:
                    try:
                        kinds = await self.resources(http)
                        break
                    except (ApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                        message = f"{self.name}: cannot discover the resources to watch: {exc or type(exc).__name__}"
                        if message != last_error:
                            logger.warning("{}; retrying", message)
                        last_error = message
                        await asyncio.sleep(backoff.next_delay())
                if last_error is not None:
                    logger.info("{}: the API server answers again", self.name)
                await self._reflect(http, kinds, publish)
            finally:
                await api.close()

    async def _reflect(self, http: KubeHTTP, kinds: list[ResourceKind], publish: Publish) -> None:
        snapshot = SnapshotPublisher(self.health, [], self.compute, publish, self.coalesce_s)
        self.reflectors = [Reflector(http, kind, snapshot.changed, self.timing, self.health) for kind in kinds]
        snapshot.reflectors = self.reflectors
        logger.info("{}: watching {}", self.name, ", ".join(k.path + (f"?fieldSelector={k.field_selector}"
                                                                    if k.field_selector else "") for k in kinds))
        try:
            async with asyncio.TaskGroup() as group:
                for reflector in self.reflectors:
                    group.create_task(reflector.run(), name=f"reflect-{reflector.resource.name}")
        finally:
            snapshot.cancel()
