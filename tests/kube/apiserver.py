"""A small Kubernetes API server stand-in on 127.0.0.1, real HTTP, for the kube source tests.

It serves what nra uses and nothing more: discovery, namespaced ConfigMaps, Nodes, the
metallb.io resources and FRR-K8s's BGPSessionStates; lists with a resourceVersion; watches
as newline-delimited JSON events from a given resourceVersion, with bookmarks,
timeoutSeconds, fieldSelector `metadata.name=` and labelSelector `key=value`; 410 Gone for a
compacted resourceVersion. Faults on demand: cut the
open streams, stall them (connection open, nothing sent), fail the next requests with a
JSON 500 Status, a plain-text 503, an HTTP 410 or a body that is not JSON, stop and start
again on the same port. Lists honour `limit` and answer in pages with `metadata.continue`;
`page_size` forces pages even when the client asks for none (as an API server behind an
aggregator may).
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web
from testbed.ports import free_port

TOKEN = "nra-test-token"
GROUP = "metallb.io"
FRRK8S_GROUP = "frrk8s.metallb.io"  # served without discovery: nra watches it by its known path

# plural -> (kind, namespaced, group or "" for core)
RESOURCES = {
    "configmaps": ("ConfigMap", True, ""),
    "nodes": ("Node", False, ""),
    "bgppeers": ("BGPPeer", True, GROUP),
    "ipaddresspools": ("IPAddressPool", True, GROUP),
    "bgpadvertisements": ("BGPAdvertisement", True, GROUP),
    "bgpsessionstates": ("BGPSessionState", True, FRRK8S_GROUP),
}
KIND_TO_PLURAL = {kind: plural for plural, (kind, _, _) in RESOURCES.items()}


def load_objects(path: Path) -> list[dict]:
    """The objects of a YAML file this server can hold (e.g. BFDProfiles are left out)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in KIND_TO_PLURAL]


@dataclass
class Fault:
    kind: str  # "json500", "text503", "gone", "garbage"
    match: str  # substring of the path
    verb: str  # "list", "watch", "get" (discovery) or "any"
    remaining: int


@dataclass(eq=False)
class Stream:
    plural: str
    selector: dict[str, str]
    request: web.Request
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    stalled: bool = False


class FakeApiServer:
    def __init__(self, bgppeer_versions: tuple[str, ...] = ("v1beta2", "v1beta1"),
                 bookmark_interval_s: float = 0.5, gone_as_event: bool = True):
        self.bgppeer_versions = bgppeer_versions
        self.bookmark_interval_s = bookmark_interval_s
        self.gone_as_event = gone_as_event
        self.rv = 1000
        self.compacted_rv = 0
        self.objects: dict[str, dict[tuple[str, str], dict]] = {p: {} for p in RESOURCES}
        self.history: dict[str, list[tuple[int, str, dict]]] = {p: [] for p in RESOURCES}
        self.streams: set[Stream] = set()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (verb, path, query)
        self.port = free_port()
        self.page_size: int | None = None  # pages of at most this many items, asked or not
        self.events: list[dict] = []  # core/v1 Events created (POST), in order
        self.refuse_events: int = 0  # answer this many Event creations 403 Forbidden
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self._create_event)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        """The API server goes away: open streams are reset, the port stops listening."""
        self.cut_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    # -- data -----------------------------------------------------------------------------

    def put(self, *objects: dict) -> None:
        """Create or update objects (each change gets a new resourceVersion and an event)."""
        for obj in objects:
            plural = KIND_TO_PLURAL[obj["kind"]]
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", "") if RESOURCES[plural][1] else "", meta["name"])
            if not RESOURCES[plural][1]:
                meta.pop("namespace", None)
            kind = "MODIFIED" if key in self.objects[plural] else "ADDED"
            self._record(plural, key, kind, obj)

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        plural = KIND_TO_PLURAL[kind]
        key = (namespace if RESOURCES[plural][1] else "", name)
        obj = self.objects[plural][key]
        self._record(plural, key, "DELETED", copy.deepcopy(obj))

    def get(self, kind: str, name: str, namespace: str = "") -> dict:
        plural = KIND_TO_PLURAL[kind]
        return copy.deepcopy(self.objects[plural][(namespace if RESOURCES[plural][1] else "", name)])

    def _record(self, plural: str, key: tuple[str, str], kind: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            del self.objects[plural][key]
        else:
            self.objects[plural][key] = obj
        self.history[plural].append((self.rv, kind, obj))
        for stream in self.streams:
            if stream.plural == plural and _matches(obj, stream.selector):
                stream.queue.put_nowait((kind, obj))

    def compact(self) -> None:
        """Forget history: a watch from any resourceVersion seen so far gets 410 Gone."""
        self.compacted_rv = self.rv
        for plural in self.history:
            self.history[plural] = []

    # -- faults ---------------------------------------------------------------------------

    def fail_next(self, count: int, kind: str = "json500", match: str = "", verb: str = "any") -> None:
        self.faults.append(Fault(kind, match, verb, count))

    def cut_streams(self, match: str = "") -> int:
        """Reset the connections of open watches (like a load balancer dropping them)."""
        cut = 0
        for stream in list(self.streams):
            if match in stream.request.path and stream.request.transport is not None:
                stream.request.transport.abort()
                cut += 1
        return cut

    def end_streams(self, match: str = "") -> None:
        """End open watches cleanly (like timeoutSeconds expiring)."""
        for stream in list(self.streams):
            if match in stream.request.path:
                stream.queue.put_nowait(("END", None))

    def stall_streams(self, match: str = "") -> int:
        """Open watches go silent: nothing more is sent, the connection stays open."""
        stalled = 0
        for stream in self.streams:
            if match in stream.request.path:
                stream.stalled = True
                stalled += 1
        return stalled

    def gone_streams(self, match: str = "") -> None:
        """Open watches get an ERROR event 410 (the server dropped their history)."""
        for stream in list(self.streams):
            if match in stream.request.path:
                stream.queue.put_nowait(("GONE", None))

    def count(self, verb: str, match: str = "") -> int:
        return sum(1 for v, path, _ in self.requests if v == verb and match in path)

    def open_streams(self, match: str = "") -> int:
        return sum(1 for s in self.streams if match in s.request.path and not s.stalled)

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        query = dict(request.query)
        route = self._route(path)
        watching = query.get("watch") in ("true", "1")
        verb = "get" if route is None else ("watch" if watching else "list")
        self.requests.append((verb, path, query))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "no or wrong bearer token")
        fault = self._take_fault(path, verb)
        if fault is not None and fault.kind != "garbage":
            return _fault_response(fault.kind)
        if route is None:
            return self._discovery(path, fault is not None)
        plural, version, namespace = route
        selector = _parse_selector(query.get("fieldSelector", ""))
        selector.update({f"label:{k}": v for k, v in _parse_selector(query.get("labelSelector", "")).items()})
        if namespace is not None:
            selector["metadata.namespace"] = namespace
        if fault is not None:  # garbage
            if not watching:
                return web.Response(status=200, text="<html>not json</html>", content_type="text/html")
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b"this is not json\n")
            await resp.write_eof()
            return resp
        if watching:
            return await self._watch(request, plural, version, selector, query)
        return self._list(plural, version, selector, query)

    async def _create_event(self, request: web.Request) -> web.Response:
        """POST of a core/v1 Event: checked like the API server would, kept in `events`."""
        self.requests.append(("create", request.path, dict(request.query)))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "no or wrong bearer token")
        if self.refuse_events > 0:
            self.refuse_events -= 1
            return _status(403, "Forbidden", 'events is forbidden: cannot create resource "events"')
        event = await request.json()
        namespace = request.match_info["namespace"]
        meta = event.get("metadata", {})
        missing = [f for f in ("reason", "message", "type", "involvedObject") if not event.get(f)]
        if event.get("kind") != "Event" or missing or meta.get("namespace", namespace) != namespace \
                or not (meta.get("name") or meta.get("generateName")):
            return _status(422, "Invalid", f"Event is invalid: missing {missing or 'kind/name/namespace'}")
        if not (event.get("involvedObject") or {}).get("namespace") and namespace not in ("default", "kube-system"):
            # the API server's rule for an Event about a cluster-scoped object (a Node)
            return _status(422, "Invalid", f'Event is invalid: involvedObject.namespace: Invalid value: "": '
                                           f'does not match event.namespace ({namespace})')
        self.rv += 1
        meta.setdefault("name", f"{meta.get('generateName', '')}{self.rv}")
        meta.update(namespace=namespace, resourceVersion=str(self.rv))
        self.events.append(event)
        return web.json_response(event, status=201)

    def _take_fault(self, path: str, verb: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.match in path and fault.verb in ("any", verb):
                fault.remaining -= 1
                return fault
        self.faults = [f for f in self.faults if f.remaining > 0]
        return None

    def _route(self, path: str) -> tuple[str, str, str | None] | None:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            rest, version = parts[2:], "v1"
        elif len(parts) >= 3 and parts[0] == "apis" and parts[1] in (GROUP, FRRK8S_GROUP):
            rest, version = parts[3:], parts[2]
        else:
            return None
        namespace = None
        if len(rest) == 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if len(rest) != 1 or rest[0] not in RESOURCES:
            return None
        return rest[0], version, namespace

    def _served(self, plural: str, version: str) -> bool:
        group = RESOURCES[plural][2]
        if not group:
            return version == "v1"
        if plural == "bgppeers":
            return version in self.bgppeer_versions
        return version == "v1beta1"

    def _api_version(self, plural: str, version: str) -> str:
        group = RESOURCES[plural][2]
        return f"{group}/{version}" if group else version

    def _present(self, obj: dict, plural: str, version: str, in_list: bool) -> dict:
        out = copy.deepcopy(obj)
        if RESOURCES[plural][2]:
            out["apiVersion"] = self._api_version(plural, version)
            out["kind"] = RESOURCES[plural][0]
        elif in_list:  # core list items come without kind/apiVersion, as from a real server
            out.pop("apiVersion", None)
            out.pop("kind", None)
        return out

    def _list(self, plural: str, version: str, selector: dict[str, str], query: dict[str, str]) -> web.Response:
        if not self._served(plural, version):
            return _status(404, "NotFound", "the server could not find the requested resource")
        items = [self._present(o, plural, version, True) for o in self.objects[plural].values() if _matches(o, selector)]
        sizes = [n for n in (self.page_size, int(query.get("limit") or 0)) if n]
        start = int(query.get("continue") or 0)
        end = start + min(sizes) if sizes else len(items)
        metadata = {"resourceVersion": str(self.rv)}
        if end < len(items):
            metadata["continue"] = str(end)
        return web.json_response({
            "kind": RESOURCES[plural][0] + "List", "apiVersion": self._api_version(plural, version),
            "metadata": metadata, "items": items[start:end],
        })

    async def _watch(self, request: web.Request, plural: str, version: str, selector: dict[str, str],
                     query: dict[str, str]) -> web.StreamResponse:
        if not self._served(plural, version):
            return _status(404, "NotFound", "the server could not find the requested resource")
        since = query.get("resourceVersion")
        start = int(since) if since and since != "0" else None
        too_old = start is not None and start < self.compacted_rv
        if too_old and not self.gone_as_event:
            return _status(410, "Expired", f"too old resource version: {start} ({self.compacted_rv})")
        # Register and collect the backlog with no await in between: nothing is missed.
        stream = Stream(plural, selector, request)
        self.streams.add(stream)
        if start is None:
            backlog = [("ADDED", o) for o in self.objects[plural].values() if _matches(o, selector)]
        else:
            backlog = [(k, o) for rv, k, o in self.history[plural] if rv > start and _matches(o, selector)]
        bookmarks = query.get("allowWatchBookmarks") == "true"
        timeout = float(query.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await resp.prepare(request)
            if too_old:
                await self._send(resp, {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
                    "message": f"too old resource version: {start} ({self.compacted_rv})"}})
                await resp.write_eof()
                return resp
            for kind, obj in backlog:
                await self._send(resp, {"type": kind, "object": self._present(obj, plural, version, False)})
            while loop.time() < deadline:
                if stream.stalled:
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    await asyncio.sleep(0.02)
                    continue
                wait = min(self.bookmark_interval_s, deadline - loop.time())
                try:
                    kind, obj = await asyncio.wait_for(stream.queue.get(), max(wait, 0.001))
                except asyncio.TimeoutError:
                    if bookmarks and not stream.stalled:
                        await self._send(resp, {"type": "BOOKMARK", "object": {
                            "kind": RESOURCES[plural][0], "apiVersion": self._api_version(plural, version),
                            "metadata": {"resourceVersion": str(self.rv)}}})
                    continue
                if stream.stalled:
                    continue
                if kind == "END":
                    break
                if kind == "GONE":
                    await self._send(resp, {"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                        "reason": "Expired", "message": "too old resource version"}})
                    break
                await self._send(resp, {"type": kind, "object": self._present(obj, plural, version, False)})
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass  # the client went away or the stream was cut
        finally:
            self.streams.discard(stream)
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, event: dict) -> None:
        await resp.write(json.dumps(event).encode() + b"\n")

    def _discovery(self, path: str, _garbage: bool) -> web.Response:
        if _garbage:
            return web.Response(status=200, text="<html>not json</html>", content_type="text/html")
        versions = [v for v in ("v1beta2", "v1beta1") if v in self.bgppeer_versions or v == "v1beta1"]
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/api/v1":
            return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "configmaps", "namespaced": True, "kind": "ConfigMap", "verbs": ["get", "list", "watch"]},
                {"name": "nodes", "namespaced": False, "kind": "Node", "verbs": ["get", "list", "watch"]},
            ]})
        group = {"name": GROUP, "versions": [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in versions],
                 "preferredVersion": {"groupVersion": f"{GROUP}/{versions[0]}", "version": versions[0]}}
        if path == "/apis":
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})
        if path == f"/apis/{GROUP}":
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
        for version in versions:
            if path == f"/apis/{GROUP}/{version}":
                resources = [{"name": p, "namespaced": True, "kind": k, "verbs": ["get", "list", "watch"]}
                             for p, (k, _, g) in RESOURCES.items() if g and self._served(p, version)]
                return web.json_response({"kind": "APIResourceList", "groupVersion": f"{GROUP}/{version}",
                                          "resources": resources})
        return _status(404, "NotFound", "the server could not find the requested resource")


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code}, status=code)


def _fault_response(kind: str) -> web.Response:
    if kind == "json500":
        return _status(500, "InternalError", "etcdserver: request timed out")
    if kind == "text503":
        return web.Response(status=503, text="upstream connect error or disconnect/reset before headers\n",
                            content_type="text/plain")
    if kind == "gone":
        return _status(410, "Expired", "too old resource version")
    raise ValueError(kind)


def _parse_selector(text: str) -> dict[str, str]:
    selector = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        selector[key.strip()] = value.strip().lstrip("=")
    return selector


def _matches(obj: dict, selector: dict[str, str]) -> bool:
    meta = obj.get("metadata") or {}
    for key, value in selector.items():
        if key == "metadata.name" and meta.get("name") != value:
            return False
        if key == "metadata.namespace" and meta.get("namespace", "") != value:
            return False
        if key.startswith("label:") and (meta.get("labels") or {}).get(key[len("label:"):]) != value:
            return False
    return True
