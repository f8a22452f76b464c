"""Liveness tells the truth: a real agent (in this process) programming a throwaway
namespace, its /healthz read over HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest
from loguru import logger

from nra.daemon.agent import Agent
from nra.kernel import events
from nra.observe import metrics
from nra.settings import Settings
from nra.sources.static_file import StaticFileSource
from tests.agent.helpers import TWO_PEERS_V4_V6, http_status
from tests.netns import NetNS
from tests.ship.test_health_agent import free_port
from tests.wait import wait_for_async

pytestmark = pytest.mark.kernel


def healthz(port: int) -> int:
    return http_status(port, "/healthz", timeout=1)


def make_agent(node_ns: NetNS, tmp_path, stuck_after_s: float, **env: str) -> tuple[Agent, int]:
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    port = free_port()
    settings = Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS=f"127.0.0.1:{port}", MAX_RECONCILE_WAIT=0,
                        METALLB_STATIC_FILE=str(config), **env)
    return Agent(settings, StaticFileSource(str(config), None, 100), stuck_after_s=stuck_after_s), port


def test_the_daemon_reads_its_source_ready_for_edits(node_ns: NetNS, tmp_path):
    agent, _ = make_agent(node_ns, tmp_path, stuck_after_s=1.0)
    assert agent.source._yaml.record_first  # (its first edit patched, see YamlReloader)


async def test_a_hook_that_hangs_past_the_limit_fails_healthz_while_it_hangs(node_ns: NetNS, tmp_path):
    hook = tmp_path / "pre.sh"
    hook.write_text("#!/bin/sh\nsleep 2.5\n")
    hook.chmod(0o755)
    agent, port = make_agent(node_ns, tmp_path, stuck_after_s=1.0, PRE_RECONCILE_SCRIPT_PATH=str(hook))
    running = asyncio.create_task(agent.run())
    seen: list[tuple[float, int]] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 6 and not (agent.last_outcome and seen and seen[-1][1] == 200):
            seen.append((time.monotonic() - started, await asyncio.to_thread(healthz, port)))
            await asyncio.sleep(0.1)
        codes = [code for _, code in seen if code]
        # alive while the hook is young, failing once it hangs past 1 s, alive again after
        assert codes[0] == 200 and 503 in codes and codes[-1] == 200, seen
        first_failure = next(t for t, code in seen if code == 503)
        assert 0.9 < first_failure < 2.6, seen
        assert agent.last_outcome.ok and node_ns.routes("-4")
    finally:
        agent.stop()
        assert await asyncio.wait_for(running, 10) == 0


async def test_a_netlink_watcher_that_dies_ends_the_daemon_with_a_nonzero_code(node_ns: NetNS, tmp_path,
                                                                                monkeypatch):
    def bug(self, message, links):
        raise RuntimeError("injected bug in the event decoder")

    monkeypatch.setattr(events.KernelEvents, "_table_reason", bug)
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}\n{exception}")
    before = metrics.REGISTRY.get_sample_value("nra_unexpected_errors_total", {"component": "netlink-events"}) or 0
    agent, port = make_agent(node_ns, tmp_path, stuck_after_s=30)
    try:
        code = await asyncio.wait_for(agent.run(), 10)  # the link dump at start reaches the bug
    finally:
        logger.remove(sink)
    assert code == 1
    text = "".join(lines)
    assert "netlink-events died: RuntimeError: injected bug in the event decoder" in text
    assert "Traceback" in text  # a bug is logged with where it happened
    assert metrics.REGISTRY.get_sample_value("nra_unexpected_errors_total",
                                             {"component": "netlink-events"}) == before + 1
    assert healthz(port) == 0  # the health listener went with it


async def test_a_blocked_event_loop_fails_healthz_though_the_server_answers(node_ns: NetNS, tmp_path, monkeypatch):
    # The HTTP server has a thread of its own now: it must judge the daemon's loop, not its
    # own. A reconcile that blocks the loop (a call that never yields) for 3 s with a 1 s
    # limit: /healthz answers 503 meanwhile (the old server, in the loop, did not answer).
    from nra.daemon.reconciler import Reconciler

    real = Reconciler.compute_plan
    blocked = {"done": False}

    async def compute_plan(self, intent, resolve=False):
        if not blocked["done"]:
            blocked["done"] = True
            await asyncio.sleep(0.5)
            time.sleep(3.0)  # the loop stands still
        return await real(self, intent, resolve)

    monkeypatch.setattr(Reconciler, "compute_plan", compute_plan)
    agent, port = make_agent(node_ns, tmp_path, stuck_after_s=1.0)
    running = asyncio.create_task(agent.run())
    seen: list[tuple[float, int]] = []
    stop = False

    def poll() -> None:
        started = time.monotonic()
        while not stop and time.monotonic() - started < 10:
            seen.append((time.monotonic() - started, healthz(port)))
            time.sleep(0.1)

    poller = asyncio.create_task(asyncio.to_thread(poll))
    try:
        await wait_for_async(lambda: agent.last_outcome and agent.last_outcome.ok, 10, what="a good reconcile")
        await asyncio.sleep(0.5)
    finally:
        stop = True
        await poller
        agent.stop()
        assert await asyncio.wait_for(running, 10) == 0
    codes = [code for _, code in seen if code]
    assert 503 in codes and codes[-1] == 200, seen
    assert all(code in (200, 503) for _, code in seen[next(i for i, (_, c) in enumerate(seen) if c):]), seen
