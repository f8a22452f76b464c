#!/usr/bin/env python3
"""Traffic for the lab, run inside its namespaces as a script (standard library only):

    traffic.py echo ADDR [ADDR ...] [--port P]        TCP + UDP echo server on these addresses
    traffic.py tcp TARGET [--port P --flows N]         N TCP connections, one line echoed on each
    traffic.py udp TARGET [--port P --flows N ...]     round-robin UDP probes over N source ports

Clients print one JSON object. `tcp` reports each flow's local port and whether it worked,
so a test can compare, flow by flow, what the routers counted.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

DEFAULT_PORT = 7007


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def serve_echo(addresses: list[str], port: int = DEFAULT_PORT) -> None:
    import asyncio

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def tcp(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        for addr in addresses:
            await asyncio.start_server(tcp, addr, port)
            await loop.create_datagram_endpoint(Udp, local_addr=(addr, port))
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def tcp_flows(target: str, flows: int, timeout: float, port: int = DEFAULT_PORT,
              hold: float = 0.0) -> dict:
    """Open `flows` TCP connections at once (each its own source port, in its own thread)
    and echo a line on each; with `hold`, keep them all open that long and echo once more
    at the end (connections that must survive something happening meanwhile). At once, so
    32 flows that all time out cost one timeout, not 32."""

    def echo(s: socket.socket, msg: bytes) -> None:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        if got != msg:
            raise OSError("echo mismatch")

    def flow(i: int) -> tuple[int | None, OSError | None]:
        s = socket.socket(_family(target), socket.SOCK_STREAM)
        local = None
        try:
            s.settimeout(timeout)
            s.bind(("", 0))
            local = s.getsockname()[1]
            s.connect((target, port))
            echo(s, f"flow {i}\n".encode())
            if hold:
                time.sleep(hold)
                echo(s, b"still there\n")
            return local, None
        except OSError as exc:
            return local, exc
        finally:
            s.close()

    ok = failed = 0
    errors: dict[str, int] = {}
    ports: dict[int, bool] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(flows, 64))) as pool:
        for local, exc in pool.map(flow, range(flows)):
            if exc is None:
                ok += 1
            else:
                failed += 1
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if local:
                ports[local] = exc is None
    return {"ok": ok, "failed": failed, "errors": errors, "ports": ports}


def udp_probe(target: str, flows: int, duration: float, interval: float = 0.01,
              reply_timeout: float = 0.5, port: int = DEFAULT_PORT) -> dict:
    """Round-robin UDP probes over `flows` sockets (source ports) every `interval` seconds;
    each probe is (wall-clock send time, replied within reply_timeout)."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(flows):
        s = socket.socket(_family(target), socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((target, port))
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    sent: dict[int, float] = {}
    replied: set[int] = set()
    seq = 0
    start = time.monotonic()
    wall0 = time.time()
    next_send = start
    while True:
        now = time.monotonic()
        if now - start < duration and now >= next_send:
            try:
                socks[seq % flows].send(seq.to_bytes(8, "big"))
            except OSError:
                pass  # e.g. no route for a moment: counts as lost
            sent[seq] = wall0 + (now - start)
            seq += 1
            next_send += interval
        elif now - start >= duration + reply_timeout:
            break
        for key, _ in sel.select(timeout=max(0.0, min(interval, next_send - time.monotonic()))):
            try:
                while True:
                    data = key.fileobj.recv(64)
                    n = int.from_bytes(data[:8], "big")
                    if n in sent and time.time() - sent[n] <= reply_timeout:
                        replied.add(n)
            except (BlockingIOError, ConnectionRefusedError, OSError):
                pass
    probes = [(t, n in replied) for n, t in sorted(sent.items())]
    return {"sent": len(probes), "replied": len(replied), "probes": probes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["echo", "tcp", "udp"])
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "echo":
        serve_echo(args.addresses, args.port)
        return 0
    if args.command == "tcp":
        result = tcp_flows(args.addresses[0], args.flows, args.timeout, args.port, args.hold)
    else:
        result = udp_probe(args.addresses[0], args.flows, args.duration, port=args.port)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
