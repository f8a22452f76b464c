"""Kubernetes Events on this node's Node object when its return path degrades and recovers,
so `kubectl describe node` and event-based alerting see what nra's log and metrics say.

One Event per change of state (degraded: Warning `ReturnPathDegraded`, naming the peers left
out; recovered: Normal `ReturnPathRestored`), and at most one per `min_interval_s`: a state
that changes again within it is sent, as it then is, once the interval has passed (the next
reconcile, at the latest the timer's). The Events live in `default`, as the kubelet's own
about a Node: the API server refuses an Event about a cluster-scoped object in any other
namespace but kube-system (RBAC: `create` on `events` in `default`); `kubectl describe node`
lists them.
Posting is best effort: a refusal is one warning, and the agent goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

import aiohttp
from loguru import logger

from nra.sources.kube.client import ApiClientFactory, ApiError, _error_from_body

if TYPE_CHECKING:
    from nra.settings import Settings

DEGRADED, RESTORED = "ReturnPathDegraded", "ReturnPathRestored"
#: at most one Event per this many seconds
MIN_INTERVAL_S = 300.0
#: the longest message sent (the API server refuses messages over 1 KiB in events.k8s.io)
MAX_MESSAGE = 1000
#: where Events about a Node (cluster-scoped) are accepted: `default` (or kube-system)
NODE_EVENTS_NAMESPACE = "default"


def event_object(namespace: str, node_name: str, reason: str, message: str, now: datetime) -> dict:
    """A core/v1 Event about the Node `node_name`."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{node_name}.nra-", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning" if reason == DEGRADED else "Normal",
        "source": {"component": "nra", "host": node_name},
        "reportingComponent": "nra",
        "reportingInstance": node_name,
        "action": "Reconcile",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": micro,
        "count": 1,
    }


def node_events_for(settings: "Settings") -> "NodeEvents | None":
    """Events need the Kubernetes API and this node's name: none from a static file."""
    if settings.metallb_static_file or not settings.node_name:
        return None
    from nra.sources.kube.client import api_client_factory

    return NodeEvents(api_client_factory(settings.kubeconfig), NODE_EVENTS_NAMESPACE, settings.node_name)


class NodeEvents:
    """Turns each reconcile's verdict (degraded or not, and why) into rate-limited Events."""

    def __init__(self, api_client_factory: ApiClientFactory, namespace: str, node_name: str,
                 min_interval_s: float = MIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.api_client_factory = api_client_factory
        self.namespace = namespace
        self.node_name = node_name
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._sent_state: bool | None = None  # None: nothing sent yet (healthy needs no Event)
        self._sent_at: float | None = None
        self._failing = False
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> asyncio.Task | None:
        """The Event being sent, if any (cancelled when the agent stops)."""
        return self._task

    def observe(self, degraded: bool, left_out: Mapping[Any, str]) -> None:
        """Called after every reconcile (`left_out`: peer -> why); sends an Event in the
        background when one is due."""
        if degraded == bool(self._sent_state):
            return  # nothing new (a first healthy reconcile is not news either)
        now = self.clock()
        if self._sent_at is not None and now - self._sent_at < self.min_interval_s:
            return  # rate-limited: a later reconcile sends the state as it is then
        if self._task is not None and not self._task.done():
            return
        self._sent_state, self._sent_at = degraded, now
        reason = DEGRADED if degraded else RESTORED
        why = "; ".join(f"peer {peer} left out ({reason})" for peer, reason in sorted(left_out.items(), key=str))
        message = f"return path degraded: {why or 'a peer is unusable'}" if degraded else \
            "return path restored: every peer usable"
        self._task = asyncio.get_running_loop().create_task(self._post(reason, message), name="node-event")

    async def _post(self, reason: str, message: str) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/events"
        body = event_object(self.namespace, self.node_name, reason, message, datetime.now(timezone.utc))
        try:
            api = await self.api_client_factory()
            try:
                resp = await api.call_api(
                    path, "POST", body=body, header_params={"Accept": "application/json",
                                                            "Content-Type": "application/json"},
                    auth_settings=["BearerToken"], _preload_content=False,
                    _request_timeout=aiohttp.ClientTimeout(total=10))
                try:
                    answer = await resp.read()
                finally:
                    resp.release()
                if resp.status not in (200, 201):
                    raise _error_from_body(resp.status, answer)
            finally:
                await api.close()
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            if not self._failing:  # said once until an Event gets through again
                logger.warning("cannot create the {} Event on node {}: {}; events are best effort, "
                               "nra goes on (RBAC: create events in {})", reason, self.node_name, exc,
                               self.namespace)
            self._failing = True
            return
        if self._failing:
            logger.info("node Events are created again")
        self._failing = False
        logger.bind(event=reason).info("Event {} on node {}: {}", reason, self.node_name, json.dumps(message))
