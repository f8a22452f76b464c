"""Start fast and small: import only the parts of two large packages that nra uses.

pyroute2's package __init__ loads every netlink family it knows (conntrack, nftables,
wireguard, nl80211, NDB ...), about 0.2 s and 20 MB; kubernetes-asyncio's `client` package
loads all of its ~140 generated API classes and ~1,500 models, about 35 MB, though nra
only needs its credentials and HTTP configuration.

`install()` registers stand-ins for those packages whose submodules import as usual, and
a few names map to the submodule that defines them. Any other name asked of a stand-in
(`from pyroute2 import NDB`, `client.V1Pod`) runs the real __init__ on first use, so code
that wants the whole package still gets it: this changes what is loaded, never what works.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# package -> {name: module that defines it}
LAZY_PACKAGES: dict[str, dict[str, str]] = {
    "pyroute2": {},
    "kubernetes_asyncio": {},
    "kubernetes_asyncio.client": {
        "ApiClient": "kubernetes_asyncio.client.api_client",
        "Configuration": "kubernetes_asyncio.client.configuration",
    },
    "kubernetes_asyncio.client.models": {},
}


def _lazy_package(name: str, names: dict[str, str]) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    loaded = False

    def __getattr__(attr: str):
        nonlocal loaded
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in names:
            return getattr(importlib.import_module(names[attr]), attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        if not loaded:
            loaded = True
            del package.__getattr__
            spec.loader.exec_module(package)
            return getattr(package, attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    package.__getattr__ = __getattr__
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, package)


def install() -> None:
    """Call before anything imports these packages (the CLI does); a no-op for a package
    already imported."""
    for name, names in LAZY_PACKAGES.items():
        _lazy_package(name, names)
