"""nra.daemon.memory: the allocator's free memory given back after a large change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nra.daemon.memory import (
    LARGE_CHANGE_INTERVALS,
    TRIM_AGAIN_S,
    AfterReconcile,
    large_change,
    release_free_memory,
)
from nra.kernel import nft_table as nft
from nra.kernel.operations import ApplyNft, DeleteRule


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_pages_inside_the_heap_go_back_to_the_kernel():
    # 1 KB objects come from malloc (above pymalloc's 512 bytes); one in ten kept alive so the
    # heap cannot shrink from its top by itself: only malloc_trim returns the pages between
    blocks = [bytes(1000) + i.to_bytes(4, "little") for i in range(150_000)]
    kept = blocks[::10]
    del blocks
    before = rss_kib()
    assert release_free_memory() is True
    after = rss_kib()
    assert before - after > 60_000, (before, after)  # of ~130 MB freed inside the heap
    assert len(kept) == 15_000


def _nft(**change) -> ApplyNft:
    return ApplyNft(nft.NftChange(**change), None, None, None)


def test_a_large_change_is_a_rebuild_or_many_intervals():
    many = tuple((i * 4, i * 4 + 1) for i in range(LARGE_CHANGE_INTERVALS // 2))
    assert large_change([_nft(rebuild=True, reason="missing")])
    assert large_change([_nft(add_prefixes={4: many}, delete_prefixes={4: many})])
    assert large_change([_nft(add_groups={4: tuple((low, high, 4) for low, high in many) * 2})])
    assert not large_change([_nft(add_prefixes={4: many[:-1]}, delete_prefixes={4: many})])
    assert not large_change([_nft(add_prefixes={4: many})])
    assert not large_change([DeleteRule.__new__(DeleteRule)])
    assert not large_change([])


ARENAS_SCRIPT = """
import threading
from nra.daemon.memory import limit_arenas
assert limit_arenas()  # (the daemon's: the main arena alone)
# with one arena, a thread's allocations come from the main arena: no new 64 MB mapping, and
# what libnftables' thread frees is trimmed with the rest
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
print("ok")
"""


def test_the_daemons_one_arena_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_daemon_releases_after_its_first_reconcile_and_after_each_change_only():
    released = []
    after = AfterReconcile(lambda: released.append(1) or True)
    assert after.reconciled(changed=False) is True  # the first: start-up's imports and parse
    assert after.reconciled(changed=False) is False  # a timer's reconcile that changed nothing
    assert after.reconciled(changed=True) is True  # a change: its last intent and plan freed
    assert after.reconciled(changed=False) is False
    assert len(released) == 2


def test_the_collector_runs_before_the_trim_after_the_first_reconcile_and_a_large_change_only():
    done = []
    after = AfterReconcile(lambda: done.append("trim") or True, lambda: done.append("collect") or 0)
    after.reconciled(changed=True, large=True)  # the first (a first start writing 100,000 rules)
    assert done == ["collect", "trim"]
    after.reconciled(changed=True)  # a change of a few rules: no full collection
    assert done == ["collect", "trim", "trim"]
    after.reconciled(changed=True, large=True)
    assert done == ["collect", "trim", "trim", "collect", "trim"]
    after.reconciled(changed=False, large=False)
    assert len(done) == 5


def test_a_first_or_large_reconcile_trims_again_a_moment_later():
    done, scheduled = [], []
    after = AfterReconcile(lambda: done.append("trim") or True, lambda: 0,
                           lambda delay, release: scheduled.append((delay, release)))
    after.reconciled(changed=True, large=True)
    assert done == ["trim"] and [d for d, _ in scheduled] == [TRIM_AGAIN_S]
    scheduled[0][1]()
    assert done == ["trim", "trim"]
    after.reconciled(changed=True)  # a small change: one trim, none later
    assert len(scheduled) == 1 and done == ["trim"] * 3
