"""The re-resolution task's rate and stopping (the kernel side is tests/kernel/test_peer_neighbours.py
and test_silent_peer_gone.py)."""

from __future__ import annotations

import asyncio
import time
from ipaddress import ip_address

from nra.daemon.peer_resolution import PeerResolution
from tests.wait import holds_async, wait_for_async

A = ip_address("10.99.0.2")
INTERVAL = 0.1


async def test_silent_peers_are_resolved_at_most_once_per_interval_and_only_while_any_are_left():
    silent = {A: None}
    rounds: list[float] = []

    async def resolve(peers):
        rounds.append(time.monotonic())
        assert peers == {A: None}
        return []

    resolution = PeerResolution(lambda: silent, resolve, INTERVAL)
    task = asyncio.create_task(resolution.run())
    try:
        await holds_async(lambda: rounds == [], INTERVAL / 2, what="no round before a wake-up")  # nothing looked at
        started = time.monotonic()
        for _ in range(20):  # a burst of neighbour events
            resolution.wake()
        await wait_for_async(lambda: len(rounds) == 3, INTERVAL * 30, interval=INTERVAL / 10, what="three rounds")
        assert rounds[0] - started >= INTERVAL
        assert all(b - a >= INTERVAL for a, b in zip(rounds, rounds[1:]))  # however many wake-ups
        silent.clear()  # the peer answers again: no more rounds
        await holds_async(lambda: len(rounds) == 3, INTERVAL * 3, what="no more rounds")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_kernel_error_is_a_warning_and_the_next_round_tries_again():
    calls = 0

    async def resolve(peers):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(105, "No buffer space available")
        return []

    resolution = PeerResolution(lambda: {A: "FAILED"}, resolve, INTERVAL / 2)
    task = asyncio.create_task(resolution.run())
    try:
        resolution.wake()
        await wait_for_async(lambda: calls >= 2, INTERVAL * 30, interval=INTERVAL / 10, what="a second round")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_bug_ends_the_task_with_an_error_not_the_agent():
    async def resolve(peers):
        raise ValueError("a bug")

    resolution = PeerResolution(lambda: {A: None}, resolve, INTERVAL / 10)
    resolution.wake()
    await asyncio.wait_for(resolution.run(), INTERVAL * 30)  # returns: logged, counted
