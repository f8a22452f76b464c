"""The fast-start imports load only what nra uses, and still serve the rest."""

import json
import os
import subprocess
import sys

SCRIPT = """
import sys
from nra import lazy_imports
lazy_imports.install()
import nra.daemon.agent, nra.sources.kube
loaded = lambda prefix: [m for m in sys.modules if m.startswith(prefix)]
assert "pyroute2.ndb.main" not in sys.modules, "pyroute2's __init__ ran"
assert not loaded("kubernetes_asyncio.client.models."), "kubernetes models were loaded"
assert not loaded("kubernetes_asyncio.client.api."), "kubernetes API classes were loaded"
from pyroute2 import config  # a submodule: still no full load
assert "pyroute2.ndb.main" not in sys.modules
from kubernetes_asyncio.client import ApiClient  # mapped to its module
assert not loaded("kubernetes_asyncio.client.models.")
# names only the real __init__ defines load it, once, and work
from pyroute2 import NDB
assert "pyroute2.ndb.main" in sys.modules
from kubernetes_asyncio.client import V1Pod
assert V1Pod(metadata=None).metadata is None
import kubernetes_asyncio.client.models as models
assert models.V1Node is not None
print("ok")
"""


def test_lazy_imports_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


WEB_SCRIPT = """
import sys
from nra import lazy_imports
lazy_imports.install()
import nra.daemon.agent, nra.observe.server, nra.sources.static_file
# the HTTP server without aiohttp's client (whose connector builds TLS contexts at import),
# and neither urllib3 nor unittest's runner
for name in ("aiohttp.client", "aiohttp.connector", "urllib3.poolmanager", "unittest.case",
             "prometheus_client.exposition"):
    assert name not in sys.modules, name + " was loaded"
import aiohttp
assert aiohttp.__version__  # (aiohttp.http asks for it)
import aiohttp.web as web  # a submodule as usual
assert "aiohttp.client" not in sys.modules or web.Application
# a name only the real __init__ defines loads it, and works
assert aiohttp.ClientTimeout(total=1).total == 1 and "aiohttp.connector" in sys.modules
# the connector's default TLS contexts were built without the CA certificates; the verified
# one loads them when a request first asks for it, the same ones create_default_context loads
import ssl
from aiohttp import connector
assert connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"] == 0
assert connector._SSL_CONTEXT_UNVERIFIED.verify_mode == ssl.CERT_NONE
class Request:
    ssl = True
    def is_ssl(self):
        return True
tcp = connector.TCPConnector.__new__(connector.TCPConnector)
tcp._ssl = True
context = tcp._get_ssl_context(Request())
assert context is connector._SSL_CONTEXT_VERIFIED
assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
assert context.cert_store_stats() == ssl.create_default_context().cert_store_stats()
assert ssl.create_default_context().cert_store_stats()["x509_ca"] > 0, "no CA certificates to compare"
import urllib3
assert urllib3.util.make_headers(basic_auth="a:b")["authorization"].startswith("Basic ")
from prometheus_client import generate_latest, REGISTRY  # the real __init__, on first use
assert b"python_info" in generate_latest(REGISTRY)
from unittest import TestCase  # the real unittest, on first use
assert TestCase.assertEqual
print("ok")
"""


def test_http_server_without_aiohttp_client_urllib3_or_unittest():
    proc = subprocess.run([sys.executable, "-c", WEB_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


KUBE_SCRIPT = """
import sys
from nra import lazy_imports
lazy_imports.install()
import nra.sources.kube, nra.sources.kube.configmap, nra.sources.kube.crds, nra.sources.kube.client
# kubernetes-asyncio's ApiClient module without dateutil's parser or multiprocessing's pool,
# aiohttp's client without frozenlist's C++ extension (libstdc++)
for name in ("dateutil", "dateutil.parser", "multiprocessing.pool", "frozenlist._frozenlist"):
    assert name not in sys.modules, name + " was loaded"
import frozenlist
assert frozenlist.FrozenList is frozenlist.PyFrozenList
signals = frozenlist.FrozenList([len])
signals.freeze()
assert signals.frozen and signals[0] is len
from kubernetes_asyncio.client import api_client
# the deferred names work when called, and import the real modules then
when = api_client.parse("2024-01-02T03:04:05Z")
assert "dateutil.parser" in sys.modules
from dateutil.parser import parse, isoparse
assert when == parse("2024-01-02T03:04:05Z") == isoparse("2024-01-02T03:04:05Z")
pool = api_client.ThreadPool(1)
from multiprocessing.pool import ThreadPool
assert isinstance(pool, ThreadPool) and pool.apply(sum, ([1, 2],)) == 3
pool.close()
pool.join()
# and the ApiClient's own uses of them
client = api_client.ApiClient.__new__(api_client.ApiClient)
assert client._ApiClient__deserialize_datetime("2024-01-02T03:04:05Z") == when
print("ok")
"""


def test_kube_client_without_dateutil_multiprocessing_pool_or_frozenlist_extension():
    proc = subprocess.run([sys.executable, "-c", KUBE_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# An API server on 127.0.0.1 (plain HTTP, or HTTPS with a certificate given as a file) that
# answers every request with one JSON document; a kubeconfig naming it without a CA; then
# what nra's client does with it, printed as JSON: the CAs its TLS context holds before the
# first request and after it, and the answer or the error.
TLS_SCRIPT = """
import asyncio, json, ssl, sys
from pathlib import Path
from nra import lazy_imports
lazy_imports.install()
from nra.sources.kube.client import KubeHTTP, api_client_factory

scheme, cert, key, kubeconfig = sys.argv[1:5]
BODY = json.dumps({"kind": "APIVersions", "versions": ["v1"]}).encode()

async def answer(reader, writer):
    while (await reader.readline()).strip():
        pass
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
                 b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))
    await writer.drain()
    writer.close()

async def main():
    tls = None
    if scheme == "https":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    Path(kubeconfig).write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"{scheme}://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    api = await api_client_factory(kubeconfig)()
    context = api.rest_client.pool_manager.connector._ssl
    out = {"before": context.cert_store_stats()["x509"]}
    try:
        out["answer"] = await KubeHTTP(api, 10).get_json("/api")
    except Exception as exc:
        out["error"] = type(exc).__name__ + ": " + str(exc)
    out["after"] = context.cert_store_stats()["x509"]
    await api.close()
    server.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def _client_of(tmp_path, scheme: str, cert_file: str | None) -> dict:
    """TLS_SCRIPT in a fresh interpreter; the system's CA certificates are `cert_file`
    (SSL_CERT_FILE, where OpenSSL's default paths look) or none at all."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=nra-test",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    empty = tmp_path / "no-cas"
    empty.mkdir(exist_ok=True)
    (tmp_path / "none.pem").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "KUBECONFIG")}
    env.update(SSL_CERT_FILE=str(cert) if cert_file == "cert" else str(tmp_path / "none.pem"), SSL_CERT_DIR=str(empty))
    proc = subprocess.run([sys.executable, "-c", TLS_SCRIPT, scheme, str(cert), str(key), str(tmp_path / "kubeconfig")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_an_https_api_server_without_a_ca_is_checked_against_the_systems_cas(tmp_path):
    # no CA in the kubeconfig: the system's, loaded when the first connection asks for them
    # (not when the client is built); the server's certificate is one of them here
    trusted = _client_of(tmp_path, "https", "cert")
    assert trusted["before"] == 0
    assert trusted.get("answer") == {"kind": "APIVersions", "versions": ["v1"]}, trusted
    assert trusted["after"] == 1
    # and when it is not, the handshake fails as it always did
    untrusted = _client_of(tmp_path, "https", None)
    assert "answer" not in untrusted and "certificate verify failed" in untrusted["error"], untrusted


def test_a_plain_http_api_server_never_loads_the_systems_cas(tmp_path):
    plain = _client_of(tmp_path, "http", "cert")
    assert plain.get("answer") == {"kind": "APIVersions", "versions": ["v1"]}, plain
    assert plain["before"] == plain["after"] == 0


DEFERRED_CONTEXT_SCRIPT = """
import ssl
from nra import lazy_imports
lazy_imports.install()
from kubernetes_asyncio.client import rest
import aiohttp.connector
deferred, default = rest.ssl.create_default_context(), ssl.create_default_context()
assert deferred.cert_store_stats()["x509"] == 0 < default.cert_store_stats()["x509"]
for attr in ("protocol", "verify_mode", "check_hostname", "options", "verify_flags", "minimum_version",
             "maximum_version", "post_handshake_auth", "keylog_filename"):
    assert getattr(deferred, attr) == getattr(default, attr), attr
class Request:
    ssl = True
    def is_ssl(self):
        return True
tcp = aiohttp.connector.TCPConnector.__new__(aiohttp.connector.TCPConnector)
tcp._ssl = deferred
assert tcp._get_ssl_context(Request()) is deferred
assert deferred.cert_store_stats() == default.cert_store_stats()
assert deferred.get_ca_certs() == default.get_ca_certs()
# a CA of its own: only that, at once, as before
one = ssl.DER_cert_to_PEM_cert(default.get_ca_certs(binary_form=True)[0])
assert rest.ssl.create_default_context(cadata=one).cert_store_stats()["x509_ca"] == 1
assert rest.ssl.CERT_NONE is ssl.CERT_NONE
print("ok")
"""


def test_the_deferred_context_is_the_default_one():
    proc = subprocess.run([sys.executable, "-c", DEFERRED_CONTEXT_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
