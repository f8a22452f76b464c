"""The HTTPS /metrics listener, served for real on 127.0.0.1 (METRICS_AUTH=none here; the
reviews against the real API server are tests/kube/test_metrics_https.py): the self-signed
certificate checks out against itself, only /metrics is served there, plain /metrics moves to
loopback, failed handshakes give their slot back, and changed certificate files are loaded."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from nra.observe import tls
from nra.observe.documents import Documents
from nra.observe.server import SecureMetrics, listeners, start_health_server, stop_health_server
from nra.observe.status import AgentStatus
from testbed.ports import free_port


def openssl_pair(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def served(request):
    cert_file, key_file = getattr(request, "param", (None, None))
    status = AgentStatus(source_name="static-file")
    documents = Documents(status)
    documents.refresh()
    health, port = free_port(), free_port()
    secure = SecureMetrics("127.0.0.1", port, tls.Certificates(cert_file, key_file, ["127.0.0.1"]), None)
    server = await start_health_server(f"127.0.0.1:{health}", status, documents=documents, secure=secure)
    assert server is not None
    try:
        yield server, health, port
    finally:
        await stop_health_server(server)


async def fetch(url: str, context: ssl.SSLContext | bool | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context if context is not None else False) as resp:
            return resp.status, await resp.text()


async def served_certificate(port: int, directory: Path) -> Path:
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=5)
    path = directory / "served.pem"
    path.write_text(pem)
    return path


async def test_self_signed_certificate_checks_out_against_itself(served, tmp_path):
    _, _, port = served
    served_pem = await served_certificate(port, tmp_path)
    # openssl, not nra, checks the signature, the key and the name
    done = subprocess.run(["openssl", "verify", "-CAfile", str(served_pem), "-verify_ip", "127.0.0.1",
                           "-purpose", "sslserver", str(served_pem)], capture_output=True, text=True)
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
    verified = ssl.create_default_context(cafile=str(served_pem))  # hostname 127.0.0.1 checked too
    code, body = await fetch(f"https://127.0.0.1:{port}/metrics", verified)
    assert code == 200 and "# TYPE nra_" in body, body[:300]


async def test_only_metrics_over_https_and_plain_metrics_on_loopback(served):
    _, health, port = served
    assert (await fetch(f"https://127.0.0.1:{port}/healthz"))[0] == 404
    assert (await fetch(f"https://127.0.0.1:{port}/status"))[0] == 404
    with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the HTTPS port
        await fetch(f"http://127.0.0.1:{port}/metrics")
    assert (await fetch(f"http://127.0.0.1:{health}/metrics"))[0] == 200  # the health listener is loopback
    assert (await fetch(f"http://127.0.0.1:{health}/healthz"))[0] == 200


def test_plain_metrics_stay_on_loopback_beside_the_https_listener():
    """On the node's address, the health listener gets a loopback twin (plain /metrics and
    /status are answered there only), whatever STATUS_ACCESS says."""
    assert listeners("10.0.0.5", 9101, "health", secure=True) == [("10.0.0.5", 9101), ("127.0.0.1", 9101)]
    assert listeners("10.0.0.5", 9101, "health", secure=False) == [("10.0.0.5", 9101)]
    assert listeners("0.0.0.0", 9101, "off", secure=True) == [("0.0.0.0", 9101)]


async def test_failed_handshakes_give_their_slot_back(served):
    server, _, port = served
    bounded = server.server
    for garbage in (b"GET /metrics HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""):
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if garbage:
                    conn.sendall(garbage)
                    conn.settimeout(5)
                    try:
                        conn.recv(100)  # the server's alert or close
                    except OSError:
                        pass
    for _ in range(100):  # (the closes are handled in the server's thread)
        if bounded._pending == 0 and not bounded._tracked:
            break
        await asyncio.sleep(0.05)
    assert bounded._pending == 0 and not bounded._tracked
    assert (await fetch(f"https://127.0.0.1:{port}/metrics"))[0] == 200


async def test_changed_certificate_files_are_loaded_and_a_broken_change_keeps_the_last(tmp_path, monkeypatch):
    first = openssl_pair(tmp_path, "first")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first[0].read_bytes())
    key.write_bytes(first[1].read_bytes())
    certificates = tls.Certificates(str(cert), str(key))
    status = AgentStatus(source_name="static-file")
    health, port = free_port(), free_port()
    server = await start_health_server(f"127.0.0.1:{health}", status, documents=Documents(status),
                                       secure=SecureMetrics("127.0.0.1", port, certificates, None))
    monkeypatch.setattr(tls, "RELOAD_CHECK_S", 0.0)
    try:
        assert "CN=first" in await subject(port)
        second = openssl_pair(tmp_path, "second")
        cert.write_bytes(second[0].read_bytes())
        key.write_bytes(second[1].read_bytes())
        await asyncio.sleep(0.01)
        await subject(port)  # (this connection sees the change and loads it for the next)
        assert "CN=second" in await subject(port)
        cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n")  # half-written: the last good one stays
        await subject(port)
        assert "CN=second" in await subject(port)
    finally:
        await stop_health_server(server)


async def subject(port: int) -> str:
    def ask() -> str:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as conn:
                der = conn.getpeercert(binary_form=True)
        text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                              capture_output=True).stdout.decode()
        return text.replace(" ", "")
    return await asyncio.to_thread(ask)
