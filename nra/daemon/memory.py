"""The process's memory: what the C allocator keeps after a large change, given back.

glibc's malloc keeps the pages of freed small objects in its heap (they are reused, not
returned); after a rebuild of nra's nft table at 100,000 prefixes, or a change of many
intervals, the parse, the plan and the nf_tables batch leave tens of MB free inside the
heap. `malloc_trim(0)` returns the free pages to the kernel (madvise), so the steady RSS is
what the daemon holds, not its high-water mark. Elsewhere (musl, macOS) it does nothing.

glibc also gives each thread that allocates its own malloc arena (up to 8 per core), each
keeping what it freed; `limit_arenas()` (first thing in the CLI, before any thread starts:
mallopt only affects arenas made after it) keeps one. A second arena's free top is never
trimmed (malloc_trim trims the main arena's alone): libnftables' thread encodes each
nf_tables batch, and at 100,000 prefixes a delete of half grew its arena by ~3.5 MB of
free pages that stayed resident. nra's threads allocate under the GIL, so one arena's lock
is hardly ever contended.
The daemon also trims after its first reconcile (the start's imports and first parse freed
memory the idle agent does not reuse) and after every reconcile that changed the kernel
(`AfterReconcile`): by then the change's last intent, plan and documents are freed, and at
100,000 prefixes three edits in a row left ~25 MB of free heap that the next change may not
reuse. A trim of a heap that size takes a millisecond or two; a reconcile that changed
nothing trims nothing (an idle daemon does not pay for it). After the first reconcile and a
large one the cyclic collector runs before the trim: what sits in reference cycles is only
freed by it, and freed after the trim it stays resident until the next one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Callable, Iterable

#: a change of this many intervals or more (added plus deleted) is followed by a trim
LARGE_CHANGE_INTERVALS = 10_000
#: a reconcile that applied this many operations or more runs the cyclic collector before
#: its trim (AfterReconcile): a full collection at 100,000 prefixes takes a fraction of a
#: second, against the seconds to minutes such a change took
LARGE_CHANGE_OPERATIONS = 10_000
#: ... and trims again this long after it: at 100,000 rules written, a trim two seconds after
#: the first reconcile still gave back ~7 MiB that the one at its end had not (freed after
#: it; by what, not found: not reference cycles, the collector had run)
TRIM_AGAIN_S = 1.0

_trim: Callable[[int], int] | None = None
_looked_up = False


def _libc_function(name: str):
    """A function of the C library by name; None when it has none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        trim = _libc_function("malloc_trim")
        if trim is None:
            return None
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        _trim = trim
    return _trim


def release_free_memory() -> bool:
    """Give the allocator's free pages back to the kernel (glibc's malloc_trim(0); the GIL
    is released during the call). True when something was returned; False when nothing
    was, or the C library has no malloc_trim."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def large_change(operations: Iterable[object]) -> bool:
    """Whether these operations hold a change of nra's nft table worth a trim after it: a
    rebuild, or LARGE_CHANGE_INTERVALS intervals or more added and deleted."""
    for op in operations:
        change = getattr(op, "change", None)
        if change is None:
            continue
        if change.rebuild:
            return True
        count = sum(len(v) for v in change.add_prefixes.values()) + sum(len(v) for v in change.delete_prefixes.values())
        count += sum(len(v) for v in change.add_groups.values()) + sum(len(v) for v in change.delete_groups.values())
        if count >= LARGE_CHANGE_INTERVALS:
            return True
    return False


class AfterReconcile:
    """When the daemon gives its free heap back: after its first reconcile, and after each
    one that applied a change to the kernel (see the module doc). After the first and after
    a large one (LARGE_CHANGE_OPERATIONS), the cyclic collector runs first: what the change
    left in reference cycles is freed before the trim, not after it (a first start in rules
    mode writes 100,000 rules over minutes; a trim before the collector had run left ~7 MiB
    of free heap resident until the next change's trim)."""

    def __init__(self, release: Callable[[], bool] = release_free_memory,
                 collect: Callable[[], int] = gc.collect,
                 later: Callable[[float, Callable[[], bool]], object] | None = None) -> None:
        """later(delay, release): schedules the second trim of a first or large reconcile
        (the daemon's loop.call_later; None: none)."""
        self._release = release
        self._collect = collect
        self._later = later
        self._first = True

    def reconciled(self, changed: bool, large: bool = False) -> bool:
        """Record one finished reconcile (`changed`: it applied operations; `large`: at
        least LARGE_CHANGE_OPERATIONS); whether the free memory was released now."""
        if not (self._first or changed):
            return False
        again = self._first or large
        if again:
            self._collect()
        self._first = False
        self._release()
        if again and self._later is not None:
            self._later(TRIM_AGAIN_S, self._release)
        return True


#: mallopt's parameter number for the arena limit (malloc.h)
M_ARENA_MAX = -8
#: at most this many arenas (the main one: see the module doc)
ARENA_MAX = 1


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Limit glibc to `arenas` malloc arenas; whether it took (False without glibc)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
