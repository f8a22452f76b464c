"""The collector paused for a change (nra.daemon.gc_pause): held until released, never longer
than MAX_HOLD_S, and left alone when it was not running."""

from __future__ import annotations

import asyncio
import gc

import pytest

from nra.daemon import gc_pause


@pytest.fixture(autouse=True)
def collector_back_on():
    yield
    gc_pause.release()
    gc.enable()


def test_hold_pauses_until_release():
    async def run():
        gc_pause.hold()
        assert not gc.isenabled() and gc_pause.held()
        gc_pause.hold()  # (held once)
        gc_pause.release()
        assert gc.isenabled() and not gc_pause.held()
    asyncio.run(run())


def test_a_hold_ends_by_itself(monkeypatch):
    monkeypatch.setattr(gc_pause, "MAX_HOLD_S", 0.05)

    async def run():
        gc_pause.hold()
        assert not gc.isenabled()
        await asyncio.sleep(0.2)
        assert gc.isenabled() and not gc_pause.held()
    asyncio.run(run())


def test_a_collector_paused_by_someone_else_stays_paused():
    gc.disable()
    gc_pause.hold()
    gc_pause.release()
    assert not gc.isenabled()
