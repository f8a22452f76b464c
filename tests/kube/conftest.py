from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from nra.config.intent import ParseResult
from nra.sources.kube import api_client_factory
from nra.sources.kube.reflector import WatchTiming
from tests.kube.apiserver import FakeApiServer
from tests.wait import wait_for_async

# Short enough that every retry path runs in a fraction of a second.
FAST = WatchTiming(backoff_min_s=0.02, backoff_max_s=0.2, stall_timeout_s=0.6, watch_timeout_s=30,
                   request_timeout_s=2.0, relist_jitter_s=0.05)
COALESCE_S = 0.05


@pytest.fixture
async def apiserver():
    server = FakeApiServer(bookmark_interval_s=0.2)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def factory(kubeconfig: Path):
    return api_client_factory(str(kubeconfig))


class Recorder:
    """The publish callback: keeps every published result, lets a test wait for one."""

    def __init__(self) -> None:
        self.results: list[ParseResult] = []
        self._changed = asyncio.Event()

    def __call__(self, result: ParseResult) -> None:
        self.results.append(result)
        self._changed.set()

    @property
    def last(self) -> ParseResult:
        return self.results[-1]

    async def wait_for(self, predicate: Callable[[ParseResult], bool], timeout: float = 3.0) -> ParseResult:
        return await wait_for_async(lambda: self.results and predicate(self.results[-1]) and self.results[-1],
                                    timeout, what="a matching publication", wake=self._changed)

    async def wait_count(self, n: int, timeout: float = 3.0) -> None:
        await wait_for_async(lambda: len(self.results) >= n, timeout, what=f"{n} publications", wake=self._changed)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@contextlib.asynccontextmanager
async def running(source, publish):
    task = asyncio.create_task(source.run(publish))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- one fixture, two backends ---------------------------------------------------------------------

class RealBackend:
    """The real kube-apiserver (tests/realcluster.py) behind the stand-in's put/delete: objects
    applied as admin with server-side apply (the server validates them against the CRDs) and
    removed after the test, so tests that use fixed names share the session's server."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self._made: dict[tuple[str, str, str], None] = {}  # (kind, namespace, name), in order

    def put(self, *objects: dict) -> None:
        from tests.realcluster import apply, create_namespace

        for ns in sorted({o["metadata"].get("namespace") for o in objects if o["kind"] != "Node"} - {None}):
            if ("Namespace", "", ns) not in self._made:
                create_namespace(self.cluster, ns)
        apply(self.cluster, *objects)
        for obj in objects:
            meta = obj["metadata"]
            self._made[(obj["kind"], "" if obj["kind"] == "Node" else meta.get("namespace", ""), meta["name"])] = None

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        self.cluster.kubectl("delete", kind.lower(), name, *(["-n", namespace] if namespace else []), "--wait=false")

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(self.cluster.kubeconfig.read_text())
        return path

    def cleanup(self) -> None:
        for kind, ns, name in reversed(self._made):
            self.cluster.kubectl("delete", kind.lower(), name, *(["-n", ns] if ns else []), "--ignore-not-found",
                                 "--wait=false", check=False)


@pytest.fixture(params=["stand-in", "real"])
async def backend(request):
    """The API server stand-in or the real kube-apiserver, for tests that need no injected
    fault: put(), delete(), write_kubeconfig() on either."""
    if request.param == "stand-in":
        server = FakeApiServer(bookmark_interval_s=0.2)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
    else:
        real = RealBackend(request.getfixturevalue("real_cluster"))
        try:
            yield real
        finally:
            real.cleanup()


@pytest.fixture
def backend_kubeconfig(backend, tmp_path: Path) -> Path:
    return backend.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def backend_factory(backend_kubeconfig: Path):
    return api_client_factory(str(backend_kubeconfig))
