"""List+watch of one resource into a local cache, the way client-go's reflector and kopf do it.

List (resourceVersion=0: from the API server's watch cache, not etcd), then watch from the
list's resourceVersion with bookmarks. A stream that ends or stalls is resumed from the last
resourceVersion seen (events or bookmarks), without a relist. Only 410 Gone (the server no
longer has that history) forces a relist, after a random wait of up to relist_jitter_s, and a
relist swaps the whole cache in one assignment, so readers see either the old or the new
list, never a mix. Errors back off with jitter. A 401 or 403 (credentials refused, RBAC
lacking a verb) is a problem of the source, not weather: it is reported on the source's
health (readiness fails with the reason) until the same request works again, and the last
good view is kept. The reflector never publishes anything: it tells its owner that its cache
changed, and the owner decides whether the combined view is complete.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from loguru import logger

from nra.config.yaml_loader import clip
from nra.observe import metrics
from nra.sources.base import DENIED, SourceHealth
from nra.sources.kube.client import ApiError, KubeHTTP

#: objects per list page (as client-go asks), and pages before a list is called malformed
LIST_PAGE_SIZE = 500
MAX_LIST_PAGES = 10_000
#: resourceVersion of a list's first page: "0" is "any version", which the API server answers
#: from its watch cache without asking etcd (docs/performance.md, "API server cost"); ""
#: (a consistent read) is what nra sent before (benchmarks/api_cost_bench.py sets it for `--modes before`).
LIST_RESOURCE_VERSION = "0"


@dataclass(frozen=True)
class ResourceKind:
    """Where one resource lives in the API and what its objects are called."""

    name: str  # for logs and metrics, e.g. "bgppeers", "node"
    path: str  # the list URL, e.g. /apis/metallb.io/v1beta2/namespaces/metallb-system/bgppeers
    api_version: str  # e.g. "metallb.io/v1beta2", "v1"
    kind: str  # e.g. "BGPPeer"; list items may omit kind/apiVersion, we put them back
    field_selector: str | None = None
    label_selector: str | None = None


@dataclass(frozen=True)
class WatchTiming:
    """How patient the reflectors are. Tests shrink these; defaults suit a real cluster."""

    backoff_min_s: float = 0.2
    backoff_max_s: float = 10.0
    #: no event and no bookmark for this long: the stream is stalled; restart it
    stall_timeout_s: float = 120.0
    #: server-side timeoutSeconds of a watch (randomised +/-10% so reflectors don't sync up)
    watch_timeout_s: int = 300
    #: total timeout of a list or discovery request
    request_timeout_s: float = 30.0
    #: a relist after 410 Gone waits uniform(0, this) first ("full jitter"): after an API
    #: server restart every agent's watch is refused at about the same moment
    relist_jitter_s: float = 1.0


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset by a success: attempt k waits uniform(minimum,
    min(maximum, minimum * 2**(k+1))), so even the first retry of many clients cut at the
    same moment (an API server restart) is spread over [minimum, 2 * minimum]."""

    minimum: float
    maximum: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** (self.attempt + 1)))
        self.attempt += 1
        return self.rng.uniform(self.minimum, max(self.minimum, ceiling))

    def reset(self) -> None:
        self.attempt = 0


def object_key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Reflector:
    """Keeps `objects` equal to the server's view of one resource."""

    def __init__(self, http: KubeHTTP, resource: ResourceKind, on_change: Callable[[], None],
                 timing: WatchTiming = WatchTiming(), health: SourceHealth | None = None):
        self.http = http
        self.health = health
        self.resource = resource
        self.on_change = on_change
        self.timing = timing
        #: None until the first list succeeded; then the complete current view
        self.objects: dict[tuple[str, str], dict] | None = None
        self.resource_version: str | None = None
        self._backoff = Backoff(timing.backoff_min_s, timing.backoff_max_s)
        # Streams that the server closes as soon as they open are not errors (the backoff
        # is reset when a watch opens) but must not become a busy loop: their own backoff.
        self._churn = Backoff(timing.backoff_min_s, timing.backoff_max_s)
        self._failing: str | None = None
        self._listed_at = float("-inf")
        self._rng = random.Random()

    @property
    def synced(self) -> bool:
        return self.objects is not None

    @property
    def healthy(self) -> bool:
        """Listed, and not failing since (a failure lasts until the next list or event)."""
        return self.synced and self._failing is None

    def _query(self) -> dict[str, str]:
        query = {}
        if self.resource.field_selector:
            query["fieldSelector"] = self.resource.field_selector
        if self.resource.label_selector:
            query["labelSelector"] = self.resource.label_selector
        return query

    def _complete(self, obj: dict) -> dict:
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return obj

    async def list(self) -> None:
        """List every page (following `metadata.continue`), then swap the cache in one step.

        The first page asks for resourceVersion=0: the watch cache answers it, at the cache's
        current version, which may lag etcd by the cache's delay; the watch that follows
        starts from that version and delivers every later change (docs/performance.md). The
        cache ignores `limit` for resourceVersion=0 and answers in one page; a server
        without a watch cache pages it, and the continue pages carry no resourceVersion
        (their token holds it). A page alone is never taken for the whole list: half the
        objects would vanish. If the continue token has expired (410) the list fails and
        starts over."""
        query = {**self._query(), "limit": str(LIST_PAGE_SIZE)}
        first = {**query, "resourceVersion": LIST_RESOURCE_VERSION} if LIST_RESOURCE_VERSION else query
        doc = await self.http.get_json(self.resource.path, **first)
        # Every page of one list is the same snapshot, at the first page's resourceVersion.
        version = str((doc.get("metadata") or {}).get("resourceVersion") or "") or None
        fresh: dict[tuple[str, str], dict] = {}
        for page in range(1, MAX_LIST_PAGES + 1):
            items = doc.get("items")
            if not isinstance(items, list):
                raise ApiError(0, "bad-response", f"list of {self.resource.name} has no items")
            fresh.update((object_key(o), self._complete(o)) for o in items if isinstance(o, dict))
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                break
            if page == MAX_LIST_PAGES:
                raise ApiError(0, "bad-response", f"list of {self.resource.name} has more than "
                                                  f"{MAX_LIST_PAGES} pages")
            doc = await self.http.get_json(self.resource.path, **query, **{"continue": str(token)})
        changed = fresh != self.objects
        self.objects = fresh  # one assignment: the cache is never half old, half new
        self.resource_version = version
        self._listed_at = asyncio.get_running_loop().time()
        if changed:
            self.on_change()

    async def watch(self) -> None:
        """Follow the stream from resource_version until it ends; apply each event."""
        jitter = random.uniform(0.9, 1.1)
        query = {
            **self._query(),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(self.timing.watch_timeout_s * jitter))),
        }
        if self.resource_version:
            query["resourceVersion"] = self.resource_version
        # A watch the server accepted proves the API works: the error backoff starts over.
        async for event in self.http.watch(self.resource.path, self.timing.stall_timeout_s,
                                           on_open=self._recovered, **query):
            self._recovered()
            kind, obj = event["type"], event["object"]
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                if version:
                    self.resource_version = str(version)
                continue
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                raise ApiError(0, "bad-response", f"watch of {self.resource.name} sent event type {kind!r}")
            assert self.objects is not None
            key = object_key(obj)
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = self._complete(obj)
            if version:
                self.resource_version = str(version)
            self.on_change()

    async def run(self) -> None:
        """List and watch forever; never raises except on cancellation."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list()
                    need_list = False
                    self._recovered()
                started = asyncio.get_running_loop().time()
                await self.watch()
                # The server ended the stream (timeoutSeconds, apiserver restart): resume.
                metrics.watch_restarted(self.resource.name, "closed")
                logger.debug("watch of {} ended; resuming from resourceVersion {}",
                             self.resource.name, self.resource_version)
                if asyncio.get_running_loop().time() - started < 1.0:
                    # Streams cut as soon as they open must not become a busy loop.
                    await asyncio.sleep(self._churn.next_delay())
                else:
                    self._churn.reset()
                continue
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.needs_relist:
                    metrics.watch_restarted(self.resource.name, "gone" if exc.gone else "error")
                    logger.info("watch of {}: {}; relisting", self.resource.name,
                                f"resourceVersion {self.resource_version} is too old (410 Gone)" if exc.gone
                                else exc)
                    need_list = True
                    self.resource_version = None
                    if asyncio.get_running_loop().time() - self._listed_at < 1.0:
                        # 410 right after a list: a server that cannot keep up; don't hammer it.
                        await asyncio.sleep(self._backoff.next_delay())
                    else:
                        await asyncio.sleep(self.relist_delay())
                    continue
                reason, why = "error", str(exc)
                if exc.status in (401, 403):
                    reason = "denied"
                    self._denied(exc, need_list)
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                if need_list:
                    reason, why = "timeout", f"no answer within {self.timing.request_timeout_s:g} s"
                else:
                    reason, why = "stalled", f"no event or bookmark for {self.timing.stall_timeout_s:g} s"
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                # A stream reset mid-way (load balancer, apiserver restart): common, not alarming.
                reason, why = "cut", f"stream cut ({type(exc).__name__})"
            except (aiohttp.ClientError, OSError) as exc:
                reason, why = "unreachable", f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug, not weather: say it loudly, retry, keep the source up
                reason, why = "error", f"{type(exc).__name__}: {clip(str(exc), 200)}"
                metrics.unexpected_error("source")
                if self._failing is None or why not in self._failing:  # the traceback once, not per retry
                    logger.opt(exception=exc).error("{}: unexpected error in the reflector (a bug in nra)",
                                                    self.resource.name)
            metrics.watch_restarted(self.resource.name, reason)
            self._failed(why, need_list, quiet=reason == "cut")
            if reason == "stalled":
                continue  # a silent stream is not an error of the server: reconnect at once
            await asyncio.sleep(self._backoff.next_delay())

    def relist_delay(self) -> float:
        """Full jitter before a relist: agents refused together do not list together."""
        return self._rng.uniform(0.0, self.timing.relist_jitter_s) if self.timing.relist_jitter_s > 0 else 0.0

    def _failed(self, why: str, listing: bool, quiet: bool = False) -> None:
        action = "list" if listing else "watch"
        message = f"{action} of {self.resource.name} failed: {why}; retrying"
        if message != self._failing:  # say it once per kind of failure, not once per retry
            logger.log("INFO" if quiet else "WARNING", message)
        else:
            logger.debug(message)
        self._failing = message

    @property
    def _denied_kind(self) -> str:
        return f"{DENIED}:{self.resource.name}"

    def _denied(self, exc: ApiError, listing: bool) -> None:
        """The API refuses us this resource: the source's problem until it works again."""
        if self.health is None:
            return
        who = "the API server does not accept nra's credentials" if exc.status == 401 else \
            f"RBAC does not let nra {'list' if listing else 'watch'} {self.resource.path.rsplit('/', 1)[-1]}"
        self.health.set(self._denied_kind, f"{who} ({exc}); keeping the last good configuration", "ERROR")

    def _recovered(self) -> None:
        if self.health is not None and self.health.has(self._denied_kind):
            self.health.clear(self._denied_kind, f"access to {self.resource.name} granted again")
        self._backoff.reset()
        if self._failing is not None:
            logger.info("{} of {} works again", "watch" if self.synced else "list", self.resource.name)
            self._failing = None
