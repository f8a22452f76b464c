"""glibc's allocator, kept small: fewer arenas, free pages handed back.

glibc gives each thread that allocates its own malloc arena (up to 8 per core), each keeping
the memory it freed for its next use. nra's few threads (the HTTP server's, asyncio's
executor, libnftables' calls) allocate little, so two arenas serve them; every arena beyond
costs RSS that an idle agent never gives back. `limit_arenas()` is called first thing in the
CLI, before any thread starts (mallopt only affects arenas made after it).

`release_free_memory()` hands the heap's free pages back to the kernel (malloc_trim(0)):
after the first reconcile, the parse of the configuration and the start-up imports have
freed memory the idle agent will not use again.

Both are no-ops where the C library is not glibc (musl, another platform).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: mallopt's parameter number for the arena limit (malloc.h)
M_ARENA_MAX = -8
#: at most this many arenas
ARENA_MAX = 2

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc = libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
        except OSError:
            _libc = None
    return _libc  # type: ignore[return-value]


def limit_arenas(arenas: int = ARENA_MAX) -> bool:
    """Limit glibc to `arenas` malloc arenas; whether it took."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc's malloc_trim(0)); whether any
    memory was released (False too where there is no malloc_trim)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))
