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
                   request_timeout_s=2.0)
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
