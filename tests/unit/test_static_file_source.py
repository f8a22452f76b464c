"""The static file source follows its directory however it is replaced (issue 11, item 4),
re-reads on reload() (SIGHUP, timer), and reports what is wrong as its `problem`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import pytest

import nra.sources.static_file as static_file
from nra.observe import metrics
from nra.sources.static_file import StaticFileSource
from tests.wait import holds_async, wait_for_async

PEER_A = "peers: [{peer-address: 10.0.0.1}]\n"
PEER_B = "peers: [{peer-address: 10.0.0.2}]\n"
PEER_C = "peers: [{peer-address: 10.0.0.3}]\n"


class Published:
    def __init__(self) -> None:
        self.peers: list[set[str]] = []
        self.changed = asyncio.Event()

    def __call__(self, result) -> None:
        self.peers.append({str(p.address) for p in result.intent.peers})
        self.changed.set()

    async def wait_for(self, peers: set[str], timeout: float = 3.0) -> None:
        await wait_for_async(lambda: self.peers and self.peers[-1] == peers, timeout, what=f"peers {peers}",
                             wake=self.changed)


@contextlib.asynccontextmanager
async def watching(path: Path):
    source = StaticFileSource(str(path), None, 100)
    published = Published()
    task = asyncio.create_task(source.run(published))
    try:
        await published.wait_for({"10.0.0.1"})
        await asyncio.wait_for(source.watching.wait(), 3)
        yield source, published
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def slow_poll(monkeypatch):
    # The periodic check is a safety net; with it at 60 s these tests show that inotify
    # (or reload) alone follows each change.
    monkeypatch.setattr(static_file, "POLL_S", 60.0)


async def test_directory_deleted_and_recreated_is_followed(tmp_path: Path):
    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    async with watching(config) as (source, published):
        shutil.rmtree(config.parent)
        await wait_for_async(lambda: "does not exist" in (source.problem or ""), what="the directory missed")
        write(config, PEER_B)
        await published.wait_for({"10.0.0.2"})
        config.write_text(PEER_C)  # and it keeps following the new directory
        await published.wait_for({"10.0.0.3"})


async def test_directory_replaced_by_mv_is_followed(tmp_path: Path):
    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    write(tmp_path / "staged" / "metallb.yaml", PEER_B)
    async with watching(config) as (_, published):
        os.rename(tmp_path / "conf", tmp_path / "old")
        os.rename(tmp_path / "staged", tmp_path / "conf")
        await published.wait_for({"10.0.0.2"})
        config.write_text(PEER_C)
        await published.wait_for({"10.0.0.3"})


async def test_directory_symlink_swap_is_followed(tmp_path: Path):
    write(tmp_path / "v1" / "metallb.yaml", PEER_A)
    write(tmp_path / "v2" / "metallb.yaml", PEER_B)
    os.symlink("v1", tmp_path / "current")
    async with watching(tmp_path / "current" / "metallb.yaml") as (_, published):
        os.symlink("v2", tmp_path / "tmp")  # ln -s v2 tmp && mv -T tmp current
        os.rename(tmp_path / "tmp", tmp_path / "current")
        await published.wait_for({"10.0.0.2"})
        (tmp_path / "v2" / "metallb.yaml").write_text(PEER_C)
        await published.wait_for({"10.0.0.3"})


async def test_reload_rereads_what_inotify_cannot_see(tmp_path: Path):
    # A symlink swapped two levels up: no watched directory sees it; reload() (SIGHUP) does.
    write(tmp_path / "r1" / "conf" / "metallb.yaml", PEER_A)
    write(tmp_path / "r2" / "conf" / "metallb.yaml", PEER_B)
    os.symlink("r1", tmp_path / "root")
    async with watching(tmp_path / "root" / "conf" / "metallb.yaml") as (source, published):
        os.symlink("r2", tmp_path / "tmp")
        os.rename(tmp_path / "tmp", tmp_path / "root")
        await holds_async(lambda: published.peers[-1] == {"10.0.0.1"}, 0.3, what="the old file's peers")
        source.reload()
        await published.wait_for({"10.0.0.2"})


async def test_problem_reports_an_unusable_file_until_it_is_fixed(tmp_path: Path):
    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    async with watching(config) as (source, published):
        assert source.problem is None
        config.write_text("peers: not-a-list\n")
        await wait_for_async(lambda: "type: peers must be a list" in (source.problem or ""), what="the refusal")
        assert metrics.CONFIG_REFUSED._value.get() == 1
        config.unlink()
        await wait_for_async(lambda: "does not exist" in (source.problem or ""), what="the file missed")
        config.write_text(PEER_B)
        await published.wait_for({"10.0.0.2"})
        assert source.problem is None and metrics.CONFIG_REFUSED._value.get() == 0
    assert published.peers == [{"10.0.0.1"}, {"10.0.0.2"}]


async def test_a_parser_bug_is_logged_with_its_traceback_and_counted(tmp_path: Path, monkeypatch, capfd):
    from loguru import logger

    def broken(*_args):
        raise KeyError("bug")

    sink = logger.add(lambda m: print(m, end=""), level="ERROR")
    try:
        config = write(tmp_path / "metallb.yaml", PEER_A)
        monkeypatch.setattr(static_file, "parse_static_document", broken)
        before = metrics.UNEXPECTED_ERRORS.labels("source")._value.get()
        source = StaticFileSource(str(config), None, 100)
        assert source.load() is None
        assert "a bug in nra" in source.problem
        assert metrics.UNEXPECTED_ERRORS.labels("source")._value.get() == before + 1
        assert "Traceback" in capfd.readouterr().out
    finally:
        logger.remove(sink)


async def test_readiness_fails_with_the_source_problem(tmp_path: Path):
    from nra.daemon.agent import Agent
    from nra.settings import load_settings

    config = write(tmp_path / "metallb.yaml", "peers: 10.0.0.1\n")
    source = StaticFileSource(str(config), None, 100)
    agent = Agent(load_settings(health_address="off"), source)
    agent.status.config_loaded = agent.status.in_sync = True  # as after a good reconcile
    assert agent.status.readiness() == (True, "ok")
    source.load()
    ready, reason = agent.status.readiness()
    assert not ready and "type: peers must be a list" in reason


@contextlib.contextmanager
def unblocked_after(fifo: Path, seconds: float):
    """Open the FIFO for writing after `seconds`, so code that blocks reading it (the old
    code did) is released and the test fails instead of hanging."""
    import threading

    def release() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(seconds, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()


async def test_a_fifo_as_the_file_is_refused_at_once_for_a_one_off_run(tmp_path: Path):
    # Issue 20 point 13: ONESHOT with a FIFO as METALLB_STATIC_FILE hung until a writer came.
    import time

    fifo = tmp_path / "metallb.yaml"
    os.mkfifo(fifo)
    source = StaticFileSource(str(fifo), None, 100)
    with unblocked_after(fifo, 3.0):
        started = time.monotonic()
        result = await asyncio.to_thread(source.read_now)
        took = time.monotonic() - started
    assert result is None and took < 1.0, took
    assert source.problem == f"{fifo} is a FIFO, not a regular file: refused; keeping the last good configuration"


async def test_a_fifo_renamed_over_the_watched_file_never_blocks_the_event_loop(tmp_path: Path):
    # Issue 20 point 13: the source read the FIFO in the event loop, which stalled (and with
    # it /healthz and every reconcile) until something wrote to the FIFO.
    import time

    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    async with watching(config) as (source, published):
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beating = asyncio.create_task(heartbeat())
        fifo = tmp_path / "conf" / "new.fifo"
        os.mkfifo(fifo)
        with unblocked_after(config, 3.0):
            os.rename(fifo, config)
            await wait_for_async(lambda: source.problem, 2, what="the FIFO refused")
            beating.cancel()
        assert source.problem is not None and "is a FIFO, not a regular file: refused" in source.problem
        assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.1f} s"
        assert published.peers == [{"10.0.0.1"}]  # the last good configuration is kept
        os.unlink(config)
        write(config, PEER_B)  # a regular file again: followed as before
        await published.wait_for({"10.0.0.2"})
        assert source.problem is None


async def test_a_quiet_file_is_not_read_and_an_editors_burst_is_read_once(tmp_path: Path, monkeypatch):
    # Issue 19: nothing is done while nothing changes (the watch is the kernel's inotify,
    # read from the loop; watchfiles' watcher woke 200 times a second), and a burst of
    # writes within QUIET_S of each other is one read.
    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    async with watching(config) as (source, published):
        reads = []
        load = source.load
        monkeypatch.setattr(source, "load", lambda: reads.append(1) or load())
        (tmp_path / "conf" / "other-file").write_text("not ours")  # another name in the directory
        await holds_async(lambda: reads == [], 1.0, what="no read while the file is quiet")
        with open(config, "w") as file:  # truncate, then write in pieces, as an editor may
            for line in (PEER_A, PEER_B):
                file.write(line)
                file.flush()
        await wait_for_async(lambda: reads, 2, what="the burst read")
        await holds_async(lambda: len(reads) == 1, 0.3, what="one read for the burst")


async def test_without_inotify_the_file_is_still_followed(tmp_path: Path, monkeypatch):
    # No inotify instance left (fs.inotify.max_user_instances reached): the periodic stat
    # check follows the file, slower, and says so.
    def no_instances() -> None:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(static_file, "Inotify", no_instances)
    monkeypatch.setattr(static_file, "POLL_S", 0.1)
    config = write(tmp_path / "conf" / "metallb.yaml", PEER_A)
    async with watching(config) as (_source, published):
        config.write_text(PEER_B + "# longer, so the size moves\n")
        await published.wait_for({"10.0.0.2"})


def test_a_daemons_first_edit_is_patched_and_parses_as_a_fresh_read(tmp_path: Path):
    """expect_edits (the daemon's Agent calls it): the first text is read ready for edits, so
    the first edit of an address list is a patch (at 100,000 prefixes ~30 ms, not ~100)."""
    lines = ["peers:", "- peer-address: 10.0.0.1", "address-pools:", "- name: p", "  protocol: bgp",
             "  addresses:"] + [f"  - 10.{i // 256}.{i % 256}.0/24" for i in range(300)]
    config = write(tmp_path / "metallb.yaml", "\n".join(lines) + "\n")
    source = StaticFileSource(str(config), None, 100)
    source.expect_edits()
    assert source.load() is not None
    write(config, "\n".join(lines + ["  - 10.200.0.0/24"]) + "\n")
    edited = source.load()
    assert source._yaml.patched == 1 and source._entries.steps["patched"] == 1
    assert edited == StaticFileSource(str(config), None, 100).load()
