"""TLS for the HTTPS /metrics listener (METRICS_ADDRESS): a server context from the
certificate and key files of METRICS_TLS_CERT_FILE / METRICS_TLS_KEY_FILE, read again when
they change (a renewed Secret), or, when none are given, from a self-signed certificate made
in memory at start.

The self-signed certificate needs no crypto library: an ECDSA P-256 key (a random scalar and
its point), the certificate's DER written here and signed with that key. OpenSSL (Python's ssl)
does the TLS itself; the certificate only carries the key. Nobody can verify it against a CA,
so scrapers skip verification (Prometheus: `tlsConfig: {insecureSkipVerify: true}`, MetalLB's
chart's default) or pin it; give certificate files for anything better.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import ssl
import time
from collections.abc import Iterable

from loguru import logger

#: how often (at most) a new connection looks whether the certificate files changed
RELOAD_CHECK_S = 30.0
#: validity of the self-signed certificate (made again at each start)
SELF_SIGNED_DAYS = 3650
SELF_SIGNED_NAME = "nra-metrics"

# -- P-256 (SEC 2, FIPS 186-4) ---------------------------------------------------------------------

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)

Point = tuple[int, int, int] | None  # Jacobian (X, Y, Z); None is the point at infinity


def _double(p: Point) -> Point:
    if p is None or p[1] == 0:
        return None
    x, y, z = p
    yy = y * y % P
    s = 4 * x * yy % P
    zz = z * z % P
    m = 3 * (x - zz) * (x + zz) % P  # a = -3
    x3 = (m * m - 2 * s) % P
    return x3, (m * (s - x3) - 8 * yy * yy) % P, 2 * y * z % P


def _add(p: Point, q: Point) -> Point:
    if p is None:
        return q
    if q is None:
        return p
    x1, y1, z1 = p
    x2, y2, z2 = q
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p) if s1 == s2 else None
    h, r = (u2 - u1) % P, (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    return x3, (r * (v - x3) - s1 * hhh) % P, h * z1 * z2 % P


def _multiply(k: int, point: tuple[int, int]) -> tuple[int, int]:
    """k * point, in affine coordinates (k in 1..N-1)."""
    result: Point = None
    addend: Point = (point[0], point[1], 1)
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _double(addend)
        k >>= 1
    assert result is not None
    x, y, z = result
    zinv = pow(z, -1, P)
    return x * zinv * zinv % P, y * zinv * zinv * zinv % P


def _on_curve(point: tuple[int, int]) -> bool:
    x, y = point
    return (y * y - (x * x * x + A * x + B)) % P == 0


def _sign(d: int, message: bytes) -> tuple[int, int]:
    """ECDSA with SHA-256: (r, s), a fresh random nonce each time."""
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    while True:
        k = secrets.randbelow(N - 1) + 1
        r = _multiply(k, G)[0] % N
        s = pow(k, -1, N) * (e + r * d) % N
        if r and s:
            return r, s


# -- DER ---------------------------------------------------------------------------------------------

def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _bits(data: bytes) -> bytes:
    return _tlv(0x03, b"\x00" + data)


def _time(when: datetime.datetime) -> bytes:
    if when.year < 2050:
        return _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


EC_PUBLIC_KEY = "1.2.840.10045.2.1"
PRIME256V1 = "1.2.840.10045.3.1.7"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def _name(common_name: str) -> bytes:
    return _seq(_tlv(0x31, _seq(_oid("2.5.4.3"), _tlv(0x0C, common_name.encode()))))


def _alt_names(hosts: Iterable[str]) -> bytes:
    names = b""
    for host in hosts:
        try:
            names += _tlv(0x87, ipaddress.ip_address(host).packed)  # iPAddress [7]
        except ValueError:
            names += _tlv(0x82, host.encode("ascii"))  # dNSName [2]
    return names


def self_signed(hosts: Iterable[str] = ("localhost",), days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    """A new P-256 key and a certificate for it signed by itself, naming `hosts` (addresses
    or names) as subject alternative names: (certificate PEM, key PEM)."""
    d = secrets.randbelow(N - 1) + 1
    public = _multiply(d, G)
    assert _on_curve(public)
    point = b"\x04" + public[0].to_bytes(32, "big") + public[1].to_bytes(32, "big")
    algorithm = _seq(_oid(ECDSA_SHA256))
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    extensions = _seq(
        _seq(_oid("2.5.29.19"), _tlv(0x04, _seq())),  # basicConstraints: not a CA
        _seq(_oid("2.5.29.15"), _tlv(0x01, b"\xff"), _tlv(0x04, _tlv(0x03, b"\x07\x80"))),  # digitalSignature
        _seq(_oid("2.5.29.37"), _tlv(0x04, _seq(_oid("1.3.6.1.5.5.7.3.1")))),  # serverAuth
        _seq(_oid("2.5.29.17"), _tlv(0x04, _tlv(0x30, _alt_names(hosts)))),
    )
    tbs = _seq(
        _tlv(0xA0, _int(2)),  # v3
        _int(int.from_bytes(secrets.token_bytes(16), "big") >> 1 | 1),
        algorithm,
        _name(SELF_SIGNED_NAME),
        _seq(_time(now - datetime.timedelta(hours=1)), _time(now + datetime.timedelta(days=days))),
        _name(SELF_SIGNED_NAME),
        _seq(_seq(_oid(EC_PUBLIC_KEY), _oid(PRIME256V1)), _bits(point)),
        _tlv(0xA3, extensions),
    )
    r, s = _sign(d, tbs)
    certificate = _seq(tbs, algorithm, _bits(_seq(_int(r), _int(s))))
    key = _seq(_int(1), _tlv(0x04, d.to_bytes(32, "big")), _tlv(0xA0, _oid(PRIME256V1)), _tlv(0xA1, _bits(point)))
    return _pem("CERTIFICATE", certificate), _pem("EC PRIVATE KEY", key)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


# -- server contexts -----------------------------------------------------------------------------------

def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def context_from_memory(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context from PEM bytes, never written to a file system (ssl reads files
    only: an anonymous memory file, read through /proc/self/fd)."""
    fds = []
    try:
        for name, data in (("cert", cert_pem), ("key", key_pem)):
            fd = os.memfd_create(f"nra-metrics-{name}", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
        return server_context(*(f"/proc/self/fd/{fd}" for fd in fds))
    finally:
        for fd in fds:
            os.close(fd)


class Certificates:
    """The listener's TLS context: from the files (looked at again at most every
    RELOAD_CHECK_S when a connection comes: a changed pair is loaded, a broken one logged
    and the last good kept), or self-signed for `hosts`."""

    def __init__(self, cert_file: str | None, key_file: str | None, hosts: Iterable[str] = ()) -> None:
        self.files = (cert_file, key_file) if cert_file and key_file else None
        self.checked_at = time.monotonic()
        if self.files is None:
            names = [h for h in hosts if h not in ("0.0.0.0", "::")] + ["localhost"]
            self.context = context_from_memory(*self_signed(names))
            self.stamp: tuple = ()
            self.what = "a self-signed certificate (made at start)"
        else:
            self.stamp = self._stamp()
            self.context = server_context(*self.files)
            self.what = f"the certificate {self.files[0]}"

    def _stamp(self) -> tuple:
        assert self.files is not None
        out = []
        for path in self.files:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def current(self) -> ssl.SSLContext:
        if self.files is not None and time.monotonic() - self.checked_at >= RELOAD_CHECK_S:
            self.checked_at = time.monotonic()
            stamp = self._stamp()
            if stamp != self.stamp:
                try:
                    self.context = server_context(*self.files)
                    self.stamp = stamp
                    logger.info("metrics TLS: loaded the changed certificate {}", self.files[0])
                except (ssl.SSLError, OSError) as exc:  # half-written; next check tries again
                    logger.warning("metrics TLS: cannot load the changed certificate {} ({}); the last one stays",
                                   self.files[0], getattr(exc, "reason", None) or exc)
        return self.context
