"""Pre/post reconcile hook scripts: run without a shell, bounded in time, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from loguru import logger


async def run_hook(path: str | None, phase: str, timeout_s: float = 10.0) -> bool:
    """Run one hook; log its output; return False (and warn) if it failed or timed out."""
    if not path:
        return True
    try:
        proc = await asyncio.create_subprocess_exec(
            path, phase,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # its own process group, so a timeout kills what the hook started too
            start_new_session=True,
        )
    except OSError as exc:
        logger.warning("{} hook {} could not start: {}", phase, path, exc)
        return False
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        logger.warning("{} hook {} killed after {:.0f} s timeout", phase, path, timeout_s)
        return False
    for line in out.decode(errors="replace").splitlines():
        logger.info("{} hook: {}", phase, line)
    if proc.returncode != 0:
        logger.warning("{} hook {} exited with status {}", phase, path, proc.returncode)
        return False
    return True
