"""A TCP relay from inside a network namespace to the root namespace's loopback.

The lab's node namespace cannot reach 127.0.0.1 of the root namespace, where the test
cluster's kube-apiserver listens; kube-proxy and MetalLB's speaker must run inside the node
namespace. This process, started in the root namespace, creates its listening socket inside
the namespace (setns for the bind only; a socket keeps the namespace it was made in), then
accepts there and connects, for each client, to the root namespace's loopback port.

    python3 testbed/nsrelay.py NETNS LISTEN_PORT TARGET_PORT

prints `listening` once the socket is bound. Standard library only (ctypes for setns).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port inside `netns` (this thread comes back home)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            # the namespace's loopback may still be down in a fresh namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return sock


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(client: socket.socket, target_port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
    _pipe(client, upstream)
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    netns, listen_port, target_port = argv[0], int(argv[1]), int(argv[2])
    listener = listen_in(netns, listen_port)
    print("listening", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, target_port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
