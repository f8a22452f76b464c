"""The daemon's worker threads carry their names for the kernel too (top -H, ps -L, and
idle_bench's wake-ups by thread)."""

from __future__ import annotations

import asyncio
import threading

from nra.daemon import modes
from nra.daemon.threads import default_executor
from nra.settings import load_settings
from nra.sources.kube import client


def kernel_name() -> str:
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
        return comm.read().strip()


def test_the_default_executors_workers_are_named_for_the_kernel():
    executor = default_executor()
    try:
        assert executor.submit(kernel_name).result(10) == "nra-worker_0"
    finally:
        executor.shutdown()
    assert kernel_name() != "nra-worker_0"  # (the caller's thread keeps its own)


def test_the_daemons_loop_runs_its_threads_in_it(monkeypatch):
    # modes.run sets it first: even a run refused at once leaves it on the loop
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(client, "DEFAULT_KUBECONFIG", client.Path("/nonexistent/kubeconfig"))
    settings = load_settings(metallb_static_file="/nonexistent/config.yaml", health_address="127.0.0.1:1",
                             metrics_address="127.0.0.1:2", metrics_auth="kubernetes")

    async def run() -> tuple[int, str]:
        code = await modes.run(settings)  # (refused: no credentials for the scrapers' reviews)
        return code, await asyncio.to_thread(kernel_name)

    assert asyncio.run(run()) == (2, "nra-worker_0")
