"""A free TCP port on the loopback address (for servers the tests and benchmarks start).

The port is taken below the kernel's ephemeral range (net.ipv4.ip_local_port_range): a port
from that range, once its server stops (etcd or the API server restarted by a test), can be
given to any outgoing connection in the meantime, and the restarted server then fails with
"address already in use". Below the range, only another listener can take it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    top = _ephemeral_start() - 1
    if top > _LOWEST:
        for _ in range(200):
            port = random.randint(_LOWEST, top)
            if _bindable(port):
                return port
    with socket.socket() as sock:  # a crowded range: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
