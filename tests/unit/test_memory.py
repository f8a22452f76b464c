"""glibc's arena limit and malloc_trim through ctypes (nra.daemon.memory)."""

import subprocess
import sys

from nra.daemon import memory

SCRIPT = """
import threading
from nra.daemon.memory import limit_arenas, release_free_memory
assert limit_arenas(1)
# with one arena, a thread's allocations come from the main arena: no new 64 MB mapping
def vm_kib():
    return int(open("/proc/self/status").read().split("VmSize:")[1].split()[0])
before = vm_kib()
done = threading.Event()
def allocate():
    blocks = [bytearray(1000) for _ in range(1000)]
    done.set()
threading.Thread(target=allocate).start()
done.wait(5)
grown = vm_kib() - before
assert grown < 32 * 1024, f"the thread's arena: VmSize +{grown} KiB"
# freed heap is handed back: a big heap of small blocks, freed, then trimmed
blocks = [bytes(200) for _ in range(200_000)]
del blocks
assert release_free_memory() is True
print("ok")
"""


def test_one_arena_and_trim_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_no_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_libc", None)
    assert memory.limit_arenas() is False
    assert memory.release_free_memory() is False
