"""The fast-start imports load only what nra uses, and still serve the rest."""

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
