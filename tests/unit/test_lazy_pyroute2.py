"""The fast-start import of pyroute2 loads only what nra uses, and still serves the rest."""

import subprocess
import sys

SCRIPT = """
import sys
from nra import lazy_pyroute2
lazy_pyroute2.install()
import nra.netlink
assert "pyroute2.ndb.main" not in sys.modules, "the package __init__ ran"
assert "pyroute2.conntrack" not in sys.modules
from pyroute2 import config  # a submodule, still no full load
assert "pyroute2.ndb.main" not in sys.modules
from pyroute2 import NDB  # a name only the real __init__ defines: loads it
assert "pyroute2.ndb.main" in sys.modules
print("ok")
"""


def test_lazy_pyroute2_in_a_fresh_interpreter():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
