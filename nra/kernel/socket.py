"""The netlink socket of a network namespace: the one socket type nra speaks netlink through,
rtnetlink (rules, routes, neighbours, links) and nfnetlink (nf_tables) alike.

Modelled on Calico Felix's netlink handling: every request carries a fresh sequence number
and only replies with that number count (leftovers of an earlier, abandoned request are
dropped); the socket has a timeout, so a call never blocks for ever; after any error the
socket is closed and a new one opened; a dump is retried a bounded number of times.

The calls block; the kernel components run them in a worker thread (asyncio.to_thread). A
thread cannot be cancelled, so one lock keeps a call from starting while an abandoned one
still runs, and the timeout bounds how long that can be.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from itertools import islice
from typing import Callable, Iterable, Sequence, TypeVar

from nra.kernel.codec import (
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    Message,
    encode_dump_request,
    error_text,
    messages,
    request,
)

T = TypeVar("T")

#: no answer from the kernel for this long is an error (the socket is then reopened)
TIMEOUT_S = 5.0
#: a dump interrupted by a concurrent change, or failed, is redone up to this many times
DUMP_ATTEMPTS = 4
#: requests per write; their acks must fit the receive buffer
BATCH_CHUNK = 256
RCVBUF = 4 << 20
RECV_SIZE = 1 << 20
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(netns: str | None) -> None:
    """Move the calling thread into the named network namespace (or namespace file path);
    nothing when `netns` is None. A thread that stays there (libnftables' own) calls it once."""
    if not netns:
        return
    path = netns if "/" in netns else f"/var/run/netns/{netns}"
    with open(path) as ns_file:
        if _libc.setns(ns_file.fileno(), CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns {path}: {os.strerror(code)}")


def in_netns(netns: str | None, work: Callable[[], T]) -> T:
    """Run `work` in a short-lived thread that has joined the named network namespace (or a
    namespace file path); in this thread if `netns` is None. setns() moves only the calling
    thread, so the rest of the process stays where it is. Never creates a namespace. (Not
    pyroute2's netns= helper: it forks, and the child's exit signal reached asyncio's signal
    wakeup fd in the parent as if the agent got SIGTERM.)"""
    if not netns:
        return work()
    result: dict[str, object] = {}

    def run() -> None:
        try:
            enter_netns(netns)
            result["value"] = work()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def open_netlink(netns: str | None, groups: int = 0, rcvbuf: int = RCVBUF,
                 protocol: int = socket.NETLINK_ROUTE) -> socket.socket:
    """A bound netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER) in `netns`,
    listening to `groups`."""
    def make() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol)

    sock = in_netns(netns, make)
    try:
        try:  # force past net.core.rmem_max: we are root, and a burst must fit
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class KernelRefused(OSError):
    """The kernel answered a request with an error (the socket itself is fine)."""


class DumpInterrupted(Exception):
    """The kernel flagged the dump as inconsistent (a change came in between)."""


class NetlinkSocket:
    """Requests and dumps on one netlink socket of a namespace (see the module doc)."""

    def __init__(self, netns: str | None = None, timeout_s: float = TIMEOUT_S,
                 protocol: int = socket.NETLINK_ROUTE):
        self.netns = netns
        self.timeout_s = timeout_s
        self.protocol = protocol
        self._sock: socket.socket | None = None
        self._seq = 0
        self._lock = threading.Lock()
        #: how many times the socket was reopened after an error (for tests and logs)
        self.reopened = 0
        #: the open socket's netlink port id (0: none open): the kernel's notifications of a
        #: change this socket asked for carry it (nlmsg_pid), which is how nra.kernel.events
        #: tells nra's own rule changes' echoes from anyone else's
        self.portid = 0

    # -- the socket itself ---------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            self._ensure_open()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _ensure_open(self) -> socket.socket:
        if self._sock is None:
            sock = open_netlink(self.netns, protocol=self.protocol)
            try:  # dumps filtered by the kernel (since Linux 4.20; callers filter too)
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass
            sock.settimeout(self.timeout_s)
            self._sock = sock
            self.portid = sock.getsockname()[0]
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.portid = 0

    def _next_seq(self, count: int = 1) -> int:
        first = self._seq + 1
        self._seq = (self._seq + count) % 0x7FFFFFFF
        return first

    # -- dumps -------------------------------------------------------------------------

    def dump(self, kind: int, family: int, keep: Callable[[Message], T | None], selector: int = 0,
             interrupted_ok: bool = False, protocol: int = 0) -> list[T]:
        """Every object of a dump (rules or neighbours of one family), as `keep` turns each
        message into a value (None: skipped). A failed dump, or an interrupted one unless
        `interrupted_ok`, is redone, up to DUMP_ATTEMPTS times; the last error is raised."""
        return self.dump_request(lambda seq: encode_dump_request(kind, family, seq, selector, protocol), keep,
                                 interrupted_ok)

    def dump_request(self, build: Callable[[int], bytes], keep: Callable[[Message], T | None],
                     interrupted_ok: bool = False) -> list[T]:
        """dump() of the request `build(seq)` makes (an nf_tables dump, say)."""
        last: Exception | None = None
        with self._lock:
            for _ in range(DUMP_ATTEMPTS):
                try:
                    sock = self._ensure_open()
                    seq = self._next_seq()
                    sock.send(build(seq))
                    return self._read_dump(sock, seq, keep, interrupted_ok)
                except DumpInterrupted as exc:
                    last = exc  # the socket is clean (read up to DONE): just ask again
                except OSError as exc:  # includes the timeout
                    last = exc
                    self._drop()
                    self.reopened += 1
                except BaseException:
                    self._drop()  # a bug in `keep`: the socket may hold the rest of the dump
                    raise
        if isinstance(last, DumpInterrupted):
            raise OSError(errno.EINTR, "dump kept being interrupted by concurrent changes")
        raise last  # type: ignore[misc]

    def _read_dump(self, sock: socket.socket, seq: int, keep: Callable[[Message], T | None],
                   interrupted_ok: bool) -> list[T]:
        out: list[T] = []
        interrupted = False
        while True:
            for message in messages(sock.recv(RECV_SIZE)):
                if message.seq != seq:
                    continue  # a stale reply to an earlier request
                if message.kind == NLMSG_DONE:
                    # read to the end even when interrupted: nothing of this dump is left behind
                    if interrupted:
                        raise DumpInterrupted()
                    return out
                if message.kind == NLMSG_ERROR:
                    code = message.error_code()
                    raise OSError(code, f"dump: {error_text(code)}")
                if message.flags & NLM_F_DUMP_INTR and not interrupted_ok:
                    interrupted = True
                if not interrupted:
                    value = keep(message)
                    if value is not None:
                        out.append(value)

    # -- batched requests --------------------------------------------------------------

    def request_batch(self, kind: int, flags: int, bodies: Iterable[bytes]) -> list[int]:
        """Send many requests, BATCH_CHUNK per write (the kernel handles them in order), and
        return each one's errno from its ack (0 = done). A chunk whose acks do not all come
        gets ETIMEDOUT (or the socket error) for the missing ones, and the socket is reopened.
        `bodies` is read BATCH_CHUNK at a time (a generator's are made as they are sent: at
        100,000 rules no list of 100,000 messages is held at once)."""
        codes: list[int] = []
        bodies = iter(bodies)
        with self._lock:
            while chunk := list(islice(bodies, BATCH_CHUNK)):
                codes += self._request_chunk(kind, flags, chunk)
        return codes

    def _request_chunk(self, kind: int, flags: int, bodies: Sequence[bytes]) -> list[int]:
        results: dict[int, int] = {}
        try:
            sock = self._ensure_open()
            first = self._next_seq(len(bodies))
            sock.send(b"".join(request(kind, flags, first + i, body) for i, body in enumerate(bodies)))
            while len(results) < len(bodies):
                for message in messages(sock.recv(RECV_SIZE)):
                    index = message.seq - first
                    if message.kind == NLMSG_ERROR and 0 <= index < len(bodies):
                        results[index] = message.error_code()
        except OSError as exc:
            self._drop()
            self.reopened += 1
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.ETIMEDOUT
            return [results.get(i, code) for i in range(len(bodies))]
        return [results[i] for i in range(len(bodies))]

    # -- single queries and nfnetlink transactions ----------------------------------------

    def query(self, build: Callable[[int], bytes], keep: Callable[[Message], T | None]) -> T:
        """Send the request `build(seq)` makes and return the first reply `keep` turns into a
        value; an error reply raises OSError with its errno."""
        with self._lock:
            try:
                sock = self._ensure_open()
                seq = self._next_seq()
                sock.send(build(seq))
                while True:
                    for message in messages(sock.recv(RECV_SIZE)):
                        if message.seq != seq:
                            continue  # a stale reply to an earlier request
                        if message.kind == NLMSG_ERROR:
                            code = message.error_code()
                            raise KernelRefused(code, error_text(code))
                        value = keep(message)
                        if value is not None:
                            return value
            except KernelRefused:
                raise
            except OSError:  # the socket itself failed (or timed out): a fresh one next time
                self._drop()
                self.reopened += 1
                raise

    def transaction(self, build: Callable[[int], tuple[bytes, Sequence[int]]], what: str) -> None:
        """One nfnetlink batch, `build(first_seq)` -> (bytes from BATCH_BEGIN to BATCH_END, the
        sequence numbers whose acks to wait for): one datagram, which the kernel applies whole
        or not at all. The first error raises OSError naming `what` (nothing was applied); the
        socket is then reopened, so no ack of the aborted batch is read as another's."""
        with self._lock:
            sock = self._ensure_open()
            first = self._seq + 1
            data, acked = build(first)
            self._seq = (first + len(acked) + 2) % 0x7FFFFFFF  # BATCH_BEGIN, the messages, BATCH_END
            try:
                # a batch is one datagram: the send buffer must hold it (libnftables does the same)
                if len(data) > sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2:
                    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + (1 << 16))
                sock.send(data)
                waiting = set(acked)
                while waiting:
                    for message in messages(sock.recv(RECV_SIZE)):
                        if message.kind == NLMSG_ERROR and message.seq in waiting:
                            code = message.error_code()
                            if code:
                                raise OSError(code, f"{what}: {error_text(code)}")
                            waiting.discard(message.seq)
            except OSError:
                self._drop()
                self.reopened += 1
                raise

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (tests: leave a reply unread in the socket)."""
        with self._lock:
            self._ensure_open().send(data)

