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
