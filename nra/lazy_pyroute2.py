"""Import pyroute2's parts without its package __init__, which loads every family it
supports (conntrack, nftables, wireguard, nl80211, NDB ...): about 0.2 s of a ONESHOT run
that needs only rtnetlink.

`install()` registers a stand-in for the `pyroute2` package whose submodules import as
usual. Any other name asked of the package (`from pyroute2 import NDB`) runs the real
__init__ on first use, so code that wants all of pyroute2 still gets it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    state = {"loaded": False}

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        if not state["loaded"]:
            state["loaded"] = True
            del package.__getattr__
            spec.loader.exec_module(package)
            return getattr(package, name)
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package
