"""The static file source: a MetalLB configuration on disk, watched with inotify (nra.sources.inotify).

The file's directory and that directory's parent are watched rather than the file, so these
are all seen as a change of the file: editors that write a new file and rename it over the
old one; Kubernetes' ConfigMap volume `..data` symlink swaps; the directory deleted and
re-created, replaced by `mv`, or swapped through a directory symlink (`ln -s v2 tmp && mv -T
tmp current`). Every POLL_S the directory's identity and the file's stat are checked too, as
a net for what inotify cannot see (a symlink swapped further up the path); SIGHUP and the
timer call `reload()`, which re-reads at once.

A missing, unreadable, empty (truncated mid-write), oversized or invalid file, or a path that
is not a regular file (a FIFO, a device: refused without reading, which could block), publishes
nothing: the agent keeps the last good intent, the reason is logged once and is the
source's `problem` (so /readyz fails with it) until the file is usable again.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from loguru import logger

from nra.config.intent import ParseResult
from nra.config.metallb import ConfigError, PoolEntries, parse_static_document
from nra.config.yaml_loader import MAX_CONFIG_BYTES
from nra.config.yaml_reload import YamlReloader
from nra.observe import metrics
from nra.sources.base import REFUSED, UNREADABLE, Publish, SourceHealth
from nra.sources.inotify import GONE, Inotify

#: after an event, read once no other has come for QUIET_S (an editor's write burst is one
#: change), and at most BURST_S after the first: a change reaches the kernel in milliseconds
QUIET_S = 0.005
BURST_S = 0.05
#: how often the directory's identity and the file's stat are checked (two stat calls): the
#: net for what inotify cannot see, and the watch itself when inotify is unavailable
POLL_S = 5.0
#: how often a missing directory is looked for (there is nothing to watch meanwhile)
MISSING_POLL_S = 0.25

_KEEPING = "keeping the last good configuration"


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when a path (symlinks followed) is replaced or rewritten; None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class NotRegularFile(OSError):
    """The path names a FIFO, a device or a socket: reading it could block forever."""


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file. Opened non-blocking and checked before any
    read: a FIFO renamed over the file would otherwise block the event loop (and ONESHOT)
    until something writes to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise NotRegularFile(f"{path} is {kind}, not a regular file: refused")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit)
    finally:
        os.close(fd)


class StaticFileSource:
    name = "static-file"

    def __init__(self, path: str, node_name: str | None, default_weight: int):
        self.path = Path(path).absolute()
        self.node_name = node_name
        self.default_weight = default_weight
        self.health = SourceHealth(self.name)
        self._last_text: str | None = None
        self._wake: asyncio.Event | None = None
        # set while the directory's inotify watch is in place: a change made now is seen
        self.watching = asyncio.Event()
        # an edit of a few address lines is patched into the last documents, not re-parsed
        self._yaml = YamlReloader()
        self._entries = PoolEntries(self._yaml)  # and only the pools it changed are parsed again
        #: a context around each read and parse in the daemon (AgentStatus.loading: the HTTP
        #: server holds what can wait meanwhile)
        self.loading: Callable[[], AbstractContextManager] = nullcontext

    @property
    def problem(self) -> str | None:
        return self.health.problem

    def expect_edits(self) -> None:
        """A daemon's source: its first text is read ready for the edits to come (the
        YamlReloader's record_first)."""
        self._yaml.record_first = True

    def reload(self) -> None:
        """Re-read the file now (SIGHUP, timer) and re-check what is being watched."""
        if self._wake is not None:
            self._wake.set()

    def read_now(self) -> ParseResult | None:
        """One read for a one-off run (ONESHOT, `nra plan`): the file is usable now or not,
        and waiting for a change would only delay the failure."""
        return self.load()

    def load(self) -> ParseResult | None:
        """Read and parse the file; None (after saying why, once) when it cannot be used."""
        try:
            data = _read_regular_file(self.path, MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            return self._unreadable(f"{self.path} does not exist")
        except NotRegularFile as exc:
            return self._unreadable(str(exc))
        except OSError as exc:
            return self._unreadable(f"cannot read {self.path}: {exc.strerror or exc}")
        self.health.clear(UNREADABLE, f"{self.path} is readable again")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._refused(f"{self.path} is not UTF-8 text")
        if len(data) > MAX_CONFIG_BYTES:
            return self._refused(f"{self.path}: refused, size: over the limit of {MAX_CONFIG_BYTES:,} bytes")
        if text == self._last_text and not self.health.has(REFUSED):
            return None  # touched, not changed
        try:
            result = parse_static_document(text, self.node_name, self.default_weight, self._yaml.load,
                                           self._entries)
        except ConfigError as exc:
            return self._refused(f"{self.path}: {exc}")
        except Exception as exc:  # a parser bug, not a user mistake: say so loudly, keep going
            logger.opt(exception=exc).error("static-file: unexpected error parsing {} (a bug in nra)", self.path)
            metrics.unexpected_error("source")
            return self._refused(f"{self.path}: cannot be parsed ({type(exc).__name__}, a bug in nra)")
        self._last_text = text
        self.health.clear(REFUSED, f"{self.path} is usable again")
        return result

    def _unreadable(self, why: str) -> None:
        self.health.clear(REFUSED)  # what was refused is gone; this is the trouble now
        self.health.set(UNREADABLE, f"{why}; {_KEEPING}")
        self._last_text = None
        return None

    def _refused(self, why: str) -> None:
        self.health.set(REFUSED, f"{why}; {_KEEPING}")
        self._last_text = None
        return None

    async def run(self, publish: Publish) -> None:
        self._wake = asyncio.Event()
        self._publish_if_loaded(publish)
        loop = asyncio.get_running_loop()
        while True:
            directory = self.path.parent
            watched = _identity(directory)
            if watched is None:
                self._unreadable(f"directory {directory} does not exist")
                await self._sleep_or_wake(MISSING_POLL_S)
                self._publish_if_loaded(publish)
                continue
            changed = asyncio.Event()
            try:
                notify = Inotify()
            except OSError as exc:  # out of inotify instances: the poll below still follows the file
                logger.warning("static-file: cannot watch {} ({}); checking it every {:g} s", directory, exc, POLL_S)
                notify = None
            try:
                if notify is not None:
                    watches = self._watch(notify, directory)
                    loop.add_reader(notify.fd, self._on_events, notify, watches, changed)
                # the watch is in place: read once more, so a change made between the read
                # above and the watch is not missed
                self._publish_if_loaded(publish)
                seen = _identity(self.path)
                self.watching.set()
                while True:
                    woken = await self._wait_for_change(changed)
                    current = _identity(directory)
                    if current is None or current[:2] != watched[:2]:
                        logger.info("static-file: directory {} was replaced or removed; watching it again",
                                    directory)
                        break
                    now = _identity(self.path)
                    if woken or now != seen:  # a change, a reload, or the stat moved
                        self._publish_if_loaded(publish)
                    seen = now
            finally:
                self.watching.clear()
                if notify is not None:
                    loop.remove_reader(notify.fd)
                    notify.close()
            self._publish_if_loaded(publish)
            await asyncio.sleep(0.1)  # a watch that fails at once must not become a busy loop

    def _watch(self, notify: Inotify, directory: Path) -> dict[int, str | None]:
        """Watch the file's directory (every entry whose change may change the file) and its
        parent (only the directory's own name there). Watch id -> the name that concerns us
        in it (None: the file's directory)."""
        watches: dict[int, str | None] = {notify.watch_directory(str(directory)): None}
        if directory.parent != directory:
            try:
                watches[notify.watch_directory(str(directory.parent))] = directory.name
            except PermissionError:  # an unreadable parent: the directory's own watch and the poll remain
                pass
        return watches

    def _on_events(self, notify: Inotify, watches: dict[int, str | None], changed: asyncio.Event) -> None:
        for event in notify.read():
            if event.wd not in watches:  # the queue overflowed (-1): anything may have changed
                changed.set()
                continue
            concerns = watches[event.wd]
            if concerns is None:
                # ConfigMap volumes swap a `..data` symlink: any change there may change our file
                if event.mask & GONE or event.name == self.path.name or event.name.startswith(".."):
                    changed.set()
            elif event.name == concerns:
                changed.set()

    async def _wait_for_change(self, changed: asyncio.Event) -> bool:
        """Until an event (then until the burst it starts is over: QUIET_S without another
        one, at most BURST_S), a reload, or POLL_S. True for an event or a reload."""
        assert self._wake is not None
        waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        woken = self._wake.is_set()
        self._wake.clear()
        if changed.is_set():
            # an editor's save is several events (truncate, write, rename): read after the last
            deadline = asyncio.get_running_loop().time() + BURST_S
            while True:
                changed.clear()
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), min(QUIET_S, left))
                except asyncio.TimeoutError:
                    break
            return True
        return woken

    async def _sleep_or_wake(self, seconds: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    def _publish_if_loaded(self, publish: Publish) -> None:
        with self.loading():
            result = self.load()
            if result is not None:
                publish(result)
