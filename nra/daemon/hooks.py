"""Pre/post reconcile hook scripts: run without a shell, bounded in time and output, never fatal.

As in the Node.js agent, a hook is an executable run with one argument (`pre` or `post`) and
the agent's environment. Bounds, so that a hook cannot stall or flood the agent:
- it is killed, with its process group, after HOOK_TIMEOUT seconds;
- once the hook itself has exited, its output is read for EXIT_GRACE_S more at most: a
  child it left behind that still holds the output pipe (`setsid sleep 300 &`) would
  otherwise stall every reconcile until the timeout. Such leftovers, found by who holds
  the pipe, are killed; children that closed or redirected their output are left alone;
- at most MAX_OUTPUT_LINES lines and MAX_OUTPUT_BYTES bytes of output are kept and logged
  (each line cut to MAX_LINE_CHARS); the rest is read and counted, and one line says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from loguru import logger

from nra.config.yaml_loader import clip
from nra.observe import metrics

MAX_OUTPUT_BYTES = 64 * 1024
MAX_OUTPUT_LINES = 100
MAX_LINE_CHARS = 1000
EXIT_GRACE_S = 0.2
_CHUNK = 64 * 1024


class _Output:
    """The head of a hook's output, and how much there was in all."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.total_bytes = 0
        self.total_lines = 0

    async def drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_CHUNK):
            self.total_bytes += len(chunk)
            self.total_lines += chunk.count(b"\n")
            room = MAX_OUTPUT_BYTES - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def log(self, phase: str) -> None:
        text = self.kept.decode(errors="replace")
        lines = text.splitlines()
        if self.total_bytes and not text.endswith("\n"):
            self.total_lines += 1  # a last line without a newline
        for line in lines[:MAX_OUTPUT_LINES]:
            logger.info("{} hook: {}", phase, clip(line, MAX_LINE_CHARS))
        shown = min(len(lines), MAX_OUTPUT_LINES)
        if self.total_lines > shown or self.total_bytes > len(self.kept):
            logger.warning("{} hook output truncated: {} of {} lines shown ({:,} bytes in all; at most {} lines "
                           "and {:,} bytes are kept)", phase, shown, self.total_lines, self.total_bytes,
                           MAX_OUTPUT_LINES, MAX_OUTPUT_BYTES)


async def run_hook(path: str | None, phase: str, timeout_s: float = 10.0) -> bool:
    """Run one hook; log its output; return False (and warn) if it failed or timed out."""
    if not path:
        return True
    try:
        # inside the try: with no descriptor left (EMFILE) the hook fails, not the worker
        read_fd, write_fd = os.pipe()
    except OSError as exc:
        return _not_started(path, phase, exc)
    try:
        proc = await asyncio.create_subprocess_exec(
            path, phase,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            # its own process group, so a timeout kills what the hook started too
            start_new_session=True,
        )
    except OSError as exc:
        os.close(read_fd)
        return _not_started(path, phase, exc)
    finally:
        os.close(write_fd)
    pipe = os.fstat(read_fd).st_ino
    pipe_file = os.fdopen(read_fd, "rb", buffering=0)
    reader = asyncio.StreamReader()
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe_file)
    except BaseException as exc:
        # the output cannot be watched, or the agent stops meanwhile: the hook must not
        # outlive this call
        _kill_group(proc.pid)
        pipe_file.close()
        if not isinstance(exc, OSError):
            raise
        await proc.wait()
        return _not_started(path, phase, exc)
    output = _Output()
    draining = asyncio.create_task(output.drain(reader))
    try:
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        except asyncio.CancelledError:
            # the agent stops (SIGTERM) while the hook runs: take the hook and what it
            # started with it, then let the cancellation go on
            _kill_group(proc.pid)
            _kill_pipe_holders(pipe)
            raise
        try:
            await asyncio.wait_for(asyncio.shield(draining), EXIT_GRACE_S)
        except asyncio.TimeoutError:
            # The hook is gone but something it started still holds its output open.
            _kill_group(proc.pid)
            left = _kill_pipe_holders(pipe)
            logger.warning("{} hook {} exited but left {} holding its output open; killed {}", phase, path,
                           "a process" if len(left) == 1 else "processes", ", ".join(map(str, left)) or "its group")
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)
        transport.close()
    output.log(phase)
    if timed_out:
        logger.warning("{} hook {} killed after {:g} s timeout", phase, path, timeout_s)
        metrics.hook_ran(phase, "timeout")
        return False
    if proc.returncode != 0:
        logger.warning("{} hook {} exited with status {}", phase, path, proc.returncode)
        metrics.hook_ran(phase, "failed")
        return False
    metrics.hook_ran(phase, "ok")
    return True


def _not_started(path: str, phase: str, exc: OSError) -> bool:
    logger.warning("{} hook {} could not start: {}", phase, path, exc.strerror or exc)
    metrics.hook_ran(phase, "error")
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_pipe_holders(pipe_inode: int) -> list[int]:
    """Kill every other process that holds the pipe (a daemonised child in a session of its
    own, out of reach of killpg); return their pids."""
    target = f"pipe:[{pipe_inode}]"
    me = os.getpid()
    killed = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            holds = any(os.readlink(fd.path) == target for fd in os.scandir(f"{entry.path}/fd"))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        if holds:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
