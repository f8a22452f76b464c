"""inotify, read from the event loop: a directory's changes arrive as events on a file
descriptor, and nothing wakes while nothing changes.

Why not watchfiles: its watcher wakes every `step` ms to look for changes and for its stop
event; at the 5 ms step that kept a file change under 50 ms that cost 0.48 CPU-s a minute
of an idle agent (11,000 wake-ups a minute, benchmarks/idle_bench.py), and 0.1 CPU-s at the
default 50 ms step with changes then taking ~85 ms. The kernel's own interface, registered
with the loop (`add_reader`), costs nothing between changes and delivers each at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

#: a name in a watched directory created, written, removed, renamed or its metadata changed
ENTRY_CHANGES = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
#: the watched directory itself removed or renamed (its watch then ends: IN_IGNORED)
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (name follows)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


@dataclass(frozen=True)
class Event:
    #: the watch it belongs to (-1: the queue overflowed, events were lost)
    wd: int
    mask: int
    #: the entry's name inside the watched directory ("" for the directory itself)
    name: str


class Inotify:
    """One inotify instance: non-blocking, closed on exec; `fd` is for the event loop."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def watch_directory(self, path: str, mask: int = ENTRY_CHANGES | GONE) -> int:
        """Watch a directory's entries (symlinks to it followed); returns the watch id."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}", path)
        return wd

    def read(self) -> list[Event]:
        """The events queued now (none if there are none)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset:offset + length].split(b"\0", 1)[0]
            offset += length
            events.append(Event(wd, mask, os.fsdecode(name)))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
