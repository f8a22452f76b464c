"""The daemon's worker threads, named for the kernel too.

Python 3.11 names only its own Thread objects: the kernel shows every thread under the
process's name (`python`), so top -H, ps -L, /proc/<pid>/task/<tid>/comm and
benchmarks/idle_bench.py's wake-ups by thread could not tell a worker from the HTTP
server's thread (`nra-http`, observe/server.py) or libnftables' (`libnftables`,
kernel/libnft.py). The default executor (asyncio.to_thread: the kernel's reads and writes,
the sysctl, certificate and neighbour reads) is asyncio's own, the same number of
workers, its threads named `nra-worker_N`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

WORKER_PREFIX = "nra-worker"


def name_for_kernel(name: str | None = None) -> None:
    """Give the calling thread `name` (default: its Python name) in the kernel too; the
    kernel keeps 15 bytes of it."""
    name = name or threading.current_thread().name
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:  # (not Linux, or no /proc): only the Python name then
        pass


def default_executor() -> ThreadPoolExecutor:
    """What asyncio's loop makes on its first run_in_executor(None, ...), its threads named."""
    return ThreadPoolExecutor(thread_name_prefix=WORKER_PREFIX, initializer=name_for_kernel)
