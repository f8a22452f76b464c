"""Start fast and small: import only the parts of two large packages that nra uses.

pyroute2's package __init__ loads every netlink family it knows (conntrack, nftables,
wireguard, nl80211, NDB ...), about 0.2 s and 20 MB; kubernetes-asyncio's `client` package
loads all of its ~140 generated API classes and ~1,500 models, about 35 MB, though nra
only needs its credentials and HTTP configuration. aiohttp's __init__ loads its client (and
the client's two TLS contexts with the system's CA certificates) when the HTTP server needs
only the low-level server; urllib3 and unittest come in for names nra never uses.

`install()` registers stand-ins for those packages whose submodules import as usual, and
a few names map to the submodule that defines them. Any other name asked of a stand-in
(`from pyroute2 import NDB`, `client.V1Pod`) runs the real __init__ on first use, so code
that wants the whole package still gets it: this changes what is loaded, never what works.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
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
    # aiohttp's __init__ loads its client, whose connector builds two TLS contexts with the
    # system's CA certificates at import (~2 MB): the HTTP server needs neither
    "aiohttp": {},
    # kubernetes-asyncio's Configuration imports urllib3 for a helper nra never calls
    "urllib3": {},
    # pyroute2 imports unittest.mock (a Mock at import); unittest's __init__ loads the runner,
    # loader and case machinery besides
    "unittest": {},
    # prometheus_client's __init__ imports its exposition module (HTTP servers, push gateway,
    # WSGI: http.server, urllib.request, wsgiref, email); nra.observe.exposition encodes
    "prometheus_client": {
        "CollectorRegistry": "prometheus_client.registry",
        "Counter": "prometheus_client.metrics",
        "Gauge": "prometheus_client.metrics",
        "Histogram": "prometheus_client.metrics",
        "Info": "prometheus_client.metrics",
    },
}


def _lazy_package(name: str, names: dict[str, str]) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    loaded = False
    if spec.origin:  # its submodules may ask for __version__ (aiohttp.http does)
        with open(spec.origin, encoding="utf-8") as source:
            found = re.search(r'^__version__ = "([^"]+)"', source.read(), re.MULTILINE)
        if found:
            package.__version__ = found.group(1)

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


class _LeanConnector:
    """aiohttp.connector builds two TLS client contexts at import, the verified one with the
    system's CA certificates (~1 MB each with those, most of aiohttp's import time). nra's
    requests (the API server's, TokenReviews) carry a context of their own, so neither is
    used: both are built here without certificates, and the verified one loads them when a
    request first asks for it (TCPConnector._get_ssl_context), as it would have at import.
    If that hook is missing (another aiohttp), they load at once: never a context without
    its CAs."""

    MODULE = "aiohttp.connector"

    def find_spec(self, name, path, target=None):  # (a meta path finder)
        if name != self.MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            loader = spec.loader
            spec.loader = self
            self._loader = loader
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        import ssl

        created: list[ssl.SSLContext] = []

        def bare_context(*_args, **_kwargs) -> ssl.SSLContext:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (CERT_REQUIRED, check_hostname)
            created.append(context)
            return context

        create_default_context, default_paths = ssl.create_default_context, ssl.SSLContext.set_default_verify_paths
        ssl.create_default_context = bare_context
        ssl.SSLContext.set_default_verify_paths = lambda self: None
        try:
            self._loader.exec_module(module)
        finally:
            ssl.create_default_context = create_default_context
            ssl.SSLContext.set_default_verify_paths = default_paths
        verified = getattr(module, "_SSL_CONTEXT_VERIFIED", None)
        connector = getattr(module, "TCPConnector", None)
        get_context = getattr(connector, "_get_ssl_context", None)
        if verified not in created or get_context is None:
            for context in created:
                context.load_default_certs()
            return
        loaded = False

        def _get_ssl_context(self, req):
            nonlocal loaded
            context = get_context(self, req)
            if context is verified and not loaded:
                loaded = True
                verified.load_default_certs()
            return context

        connector._get_ssl_context = _get_ssl_context


def install() -> None:
    """Call before anything imports these packages (the CLI does); a no-op for a package
    already imported."""
    for name, names in LAZY_PACKAGES.items():
        _lazy_package(name, names)
    if _LeanConnector.MODULE not in sys.modules and not any(isinstance(f, _LeanConnector) for f in sys.meta_path):
        sys.meta_path.insert(0, _LeanConnector())
