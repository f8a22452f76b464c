"""libnftables, the official nftables library (Debian `libnftables1`), through ctypes.

One context lives in one thread of its own, which first enters the target network
namespace (setns() moves only the calling thread), so every call runs there; the asyncio
side hands it work with `await run(...)`. A command list given as JSON is one transaction:
libnftables sends it as one netlink batch, which the kernel applies whole or not at all.

Why the library and not the `nft` binary (what kube-proxy's knftables drives): in process,
a read or a change costs no fork/exec (a reconcile reads the table every time), errors come
back as text for the log, and the JSON schema is the documented machine interface of the
same library the binary is a thin front-end of. Go cannot load it without cgo; Python can.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import queue
import threading
from typing import Any, Callable

from nra.kernel.socket import enter_netns

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
LIBRARY_NAMES = ("libnftables.so.1", "libnftables.so")
#: its thread's name for the kernel (Python's names it by namespace)
THREAD_NAME = "libnftables"


class NftError(RuntimeError):
    """libnftables refused a command; the message is its own error text."""


def load_library() -> ctypes.CDLL:
    errors = []
    for name in (*LIBRARY_NAMES, ctypes.util.find_library("nftables")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
            continue
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        return lib
    raise OSError("libnftables not found (Debian: apt-get install libnftables1): " + "; ".join(errors))


class Nft:
    """A libnftables context in its own thread, in `netns` (or the current namespace)."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._jobs: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"libnftables-{netns or 'self'}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    def _serve(self) -> None:
        try:  # named for the kernel too (top -H, ps -L; nra.daemon.threads says why)
            with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
                comm.write(THREAD_NAME)
        except OSError:
            pass
        try:
            enter_netns(self.netns)
            lib = load_library()
            ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
            if not ctx:
                raise OSError("nft_ctx_new failed")
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._lib, self._ctx = lib, ctx
        self.thread_id = threading.get_native_id()
        self._ready.set()
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                fn, done = job
                job = None
                try:
                    ok, value = True, fn(lib, ctx)
                except BaseException as exc:  # handed to the caller
                    ok, value = False, exc
                # the job let go before its caller hears back, not kept while waiting for the
                # next: its arguments (an apply's change and two tables: MBs at 100,000
                # prefixes) are the caller's
                fn = None
                done(ok, value)
                done = value = None
        finally:
            lib.nft_ctx_free(ctx)

    def _call(self, fn: Callable[[Any, Any], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn(self._lib, self._ctx)
        result: dict[str, Any] = {}
        finished = threading.Event()

        def done(ok: bool, value: Any) -> None:
            result["ok"], result["value"] = ok, value
            finished.set()

        self._jobs.put((fn, done))
        finished.wait()
        if not result["ok"]:
            raise result["value"]
        return result["value"]

    def cmd(self, text: str) -> str:
        """Run commands (nft syntax or a JSON document); their output (JSON), or NftError."""
        def work(lib, ctx) -> str:
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode().strip()
            if rc != 0:
                raise NftError(err or f"libnftables returned {rc}")
            return out
        return self._call(work)

    def json_cmd(self, commands: list[dict]) -> str:
        """A JSON command list as one transaction."""
        return self.cmd(json.dumps({"nftables": commands}))

    def list_table(self, family: str, name: str) -> list[dict] | None:
        """`list table` as the JSON `nftables` list; None when there is no such table."""
        try:
            out = self.cmd(f"list table {family} {name}")
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        return json.loads(out)["nftables"] if out.strip() else None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) in this context's thread (where nra's nftables writes all happen,
        so that notifications of them carry its thread id, `thread_id`)."""
        return self._call(lambda lib, ctx: fn(*args))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`call` without blocking the event loop: the job goes straight to this context's
        thread, which hands the result back to the loop (no executor thread waiting between)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if future.cancelled():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def done(ok: bool, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop closed meanwhile: nobody waits for it
                pass

        self._jobs.put((lambda lib, ctx: fn(*args), done))
        return await future

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(5)

    def __enter__(self) -> "Nft":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
