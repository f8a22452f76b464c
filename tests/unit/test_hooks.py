"""Hooks keep the Node.js agent's meaning (one argument, the agent's environment, killed after
a timeout) and cannot stall or flood the agent (issue 11, item 8)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from loguru import logger

from nra.daemon.hooks import MAX_OUTPUT_LINES, run_hook
from nra.observe import metrics
from tests.wait import wait_for, wait_for_async


def hook(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@contextlib.contextmanager
def log_lines():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), level="INFO", format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def outcomes(phase: str, outcome: str) -> float:
    return metrics.HOOK_RUNS.labels(phase, outcome)._value.get()


async def test_argument_environment_and_output(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NRA_HOOK_TEST", "from-the-agent")
    path = hook(tmp_path, 'echo "phase=$1 env=$NRA_HOOK_TEST"\n')
    with log_lines() as lines:
        assert await run_hook(path, "pre", 5) is True
    assert "INFO pre hook: phase=pre env=from-the-agent" in lines


async def test_failure_and_timeout_are_warnings_with_metrics(tmp_path: Path):
    before = outcomes("post", "timeout"), outcomes("post", "failed")
    assert await run_hook(hook(tmp_path, "exit 3\n"), "post", 5) is False
    started = time.monotonic()
    assert await run_hook(hook(tmp_path, "sleep 30\n"), "post", 0.5) is False
    assert time.monotonic() - started < 5
    assert (outcomes("post", "timeout"), outcomes("post", "failed")) == (before[0] + 1, before[1] + 1)


async def test_a_daemonised_child_holding_stdout_neither_stalls_nor_leaks(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    # The child is in a session of its own (out of reach of killpg) and keeps stdout open.
    path = hook(tmp_path, f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 301' &\n"
                          f"while [ ! -s {pidfile} ]; do sleep 0.01; done\necho started\nexit 0\n")
    with log_lines() as lines:
        started = time.monotonic()
        ok = await run_hook(path, "post", 10)
        took = time.monotonic() - started
    child = int(pidfile.read_text())
    try:
        assert ok is True and took < 3, (ok, took)  # the old code waited the whole timeout
        assert "INFO post hook: started" in lines
        assert any("left a process holding its output open" in line for line in lines), lines
        # (the daemonised child must not be left running: one would leak per reconcile)
        wait_for(lambda: not alive(child), 2, what="the daemonised child gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, 9)


async def test_a_background_child_that_closed_its_output_is_left_alone(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    path = hook(tmp_path, f"sh -c 'echo $$ > {pidfile}; exec sleep 30' >/dev/null 2>&1 &\n"
                          f"while [ ! -s {pidfile} ]; do sleep 0.01; done\n")
    assert await run_hook(path, "pre", 5) is True
    child = int(pidfile.read_text())
    try:
        assert alive(child)
    finally:
        os.kill(child, 9)


@pytest.mark.parametrize("command", ["yes 'a line of hook output' | head -n 2000000",  # 46 MB, 2 M lines
                                     "head -c 30000000 /dev/zero | tr '\\0' x"])  # 30 MB, one line
async def test_a_flood_of_output_is_capped_and_said(tmp_path: Path, command):
    tracemalloc.start()
    try:
        with log_lines() as lines:
            assert await run_hook(hook(tmp_path, command + "\n"), "pre", 60) is True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    hook_lines = [line for line in lines if "pre hook" in line]
    assert len(hook_lines) <= MAX_OUTPUT_LINES + 1
    assert "output truncated" in hook_lines[-1]
    assert all(len(line) < 1100 for line in hook_lines)
    assert peak < 20_000_000, peak  # the old code kept all of it (411 MB for 100 MB of output)


async def test_no_descriptor_left_is_a_hook_failure_not_a_dead_worker(tmp_path: Path):
    # Issue 20 point 1: with every descriptor taken (idle HTTP connections), os.pipe() raised
    # EMFILE out of run_hook and the worker died (nra exited 1).
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    before = outcomes("pre", "error")
    path = hook(tmp_path, "echo ran\n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with log_lines() as lines:
            with contextlib.suppress(OSError):
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            ok = await run_hook(path, "pre", 5)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert ok is False
    assert any("pre hook" in line and "could not start: Too many open files" in line for line in lines), lines
    assert outcomes("pre", "error") == before + 1


async def test_a_hook_running_when_the_agent_stops_is_killed_with_its_group(tmp_path: Path):
    # Issue 20 point 14: SIGTERM cancels the worker mid-hook; the hook (and what it started
    # in its group) ran on after nra had exited.
    pidfile, childfile = tmp_path / "hook.pid", tmp_path / "child.pid"
    path = hook(tmp_path, f"echo $$ > {pidfile}\nsh -c 'echo $$ > {childfile}; exec sleep 300' &\nsleep 300\n")
    running = asyncio.create_task(run_hook(path, "pre", 60))
    await wait_for_async(lambda: pidfile.exists() and childfile.exists() and childfile.read_text().strip(), 5,
                         what="the hook and its child started")
    pids = int(pidfile.read_text()), int(childfile.read_text())
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    try:
        await wait_for_async(lambda: not [p for p in pids if alive(p)], 2, what="the hook's processes gone")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
