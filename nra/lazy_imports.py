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

The Kubernetes sources' client, the same way (~2.7 MB of RSS in all): kubernetes-asyncio's
ApiClient module imports dateutil's parser and multiprocessing's pool at the top (~0.8 MB)
for calls nra never makes (it reads the bodies itself, and makes no `async_req` calls):
they load when first called. frozenlist (aiohttp's client keeps its signals' callbacks in
FrozenLists) is its pure-Python class: the C++ extension loads libstdc++ (~0.9 MB). And the
ApiClient's TLS context for a server given without a CA gets the system's CA certificates
(~1 MB) when a connection first asks for it: never, for an `http://` server.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
import weakref
from importlib import _bootstrap

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


class _ModuleHook:
    """A meta path finder for one module, until it is loaded: the module's own loader
    creates it, and the subclass's exec_module runs it (through self._loader). (A lookup
    without a load, importlib.util.find_spec as a lazy package's __getattr__ makes, leaves
    the hook in place.)"""

    MODULE = ""
    _finding = False

    def find_spec(self, name, path, target=None):
        if name != self.MODULE or self._finding:
            return None
        self._finding = True  # (the lookup below asks this finder too)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            self._loader = spec.loader
            spec.loader = self
        return spec

    def create_module(self, spec):
        if self in sys.meta_path:  # loading now: once
            sys.meta_path.remove(self)
        return self._loader.create_module(spec)


class _LeanConnector(_ModuleHook):
    """aiohttp.connector builds two TLS client contexts at import, the verified one with the
    system's CA certificates (~1 MB each with those, most of aiohttp's import time). nra's
    requests (the API server's, TokenReviews) carry a context of their own, so neither is
    used: both are built here without certificates, and the verified one loads them when a
    request first asks for it (TCPConnector._get_ssl_context), as it would have at import.
    If that hook is missing (another aiohttp), they load at once: never a context without
    its CAs."""

    MODULE = "aiohttp.connector"

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
        _WITHOUT_DEFAULT_CERTS.add(verified)

        def _get_ssl_context(self, req):
            context = get_context(self, req)
            if context is not None and context in _WITHOUT_DEFAULT_CERTS:
                _WITHOUT_DEFAULT_CERTS.discard(context)
                context.load_default_certs()
            return context

        connector._get_ssl_context = _get_ssl_context
        global _certs_on_first_use
        _certs_on_first_use = True


#: TLS contexts whose default CA certificates load when a connection first asks for them
_WITHOUT_DEFAULT_CERTS: "weakref.WeakSet" = weakref.WeakSet()
#: whether aiohttp's connector loads them then (_LeanConnector hooked it)
_certs_on_first_use = False


class _DeferredCertsSSL:
    """kubernetes-asyncio's `ssl` (its rest module's): as the ssl module, but a default
    context for a server without a CA of its own (`create_default_context()` without
    cafile, capath or cadata) gets the system's CA certificates (~140, ~1 MB) when its
    first connection asks for it, through the connector's hook (_LeanConnector). A client
    of an `http://` API server (kubectl proxy, the benchmarks' stand-in) never loads
    them; one of an `https://` server loads them before its first handshake, as it would
    have when it was built; one with the cluster's CA (a pod's service account, a
    kubeconfig's certificate-authority) loads only that, as before."""

    def __getattr__(self, name: str):
        import ssl

        return getattr(ssl, name)

    @staticmethod
    def create_default_context(purpose=None, *, cafile=None, capath=None, cadata=None):
        import ssl

        purpose = ssl.Purpose.SERVER_AUTH if purpose is None else purpose
        importlib.import_module("aiohttp.connector")  # (the caller's next line needs it; its hook is then set)
        if cafile or capath or cadata or purpose != ssl.Purpose.SERVER_AUTH or not _certs_on_first_use:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        # what create_default_context(SERVER_AUTH) builds, but for load_default_certs()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (CERT_REQUIRED, check_hostname)
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and not sys.flags.ignore_environment and hasattr(context, "keylog_filename"):
            context.keylog_filename = keylog
        _WITHOUT_DEFAULT_CERTS.add(context)
        return context


class _LeanRest(_ModuleHook):
    """kubernetes_asyncio.client.rest, its `ssl` a _DeferredCertsSSL."""

    MODULE = "kubernetes_asyncio.client.rest"

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        if getattr(module, "ssl", None) is not None:
            module.ssl = _DeferredCertsSSL()


#: module -> {a module it imports names from: those names, which it only calls}
DEFERRED_FROM_IMPORTS: dict[str, dict[str, tuple[str, ...]]] = {
    # the parser deserialises dates of typed models (nra reads the bodies itself), the pool
    # serves `async_req=True` calls (nra makes none)
    "kubernetes_asyncio.client.api_client": {
        "dateutil.parser": ("parse",),
        "multiprocessing.pool": ("ThreadPool",),
    },
}


def _deferred(module: str, name: str):
    """What stands for `from module import name` when the name is only called: the call
    imports the module (once) and calls the real one."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported when first called (nra.lazy_imports)"
    return call


class _DeferredFromImports(_ModuleHook):
    """Runs a module whose `from X import name` lines take `_deferred` stand-ins, X not
    imported. While the module runs, each X is a stand-in in sys.modules, marked as being
    initialised and under X's import lock: another thread importing X meanwhile waits, and
    then imports the real X (the stand-ins are removed when the module has run)."""

    def __init__(self, module: str, deferred: dict[str, tuple[str, ...]]) -> None:
        self.MODULE = module
        self.deferred = deferred

    def exec_module(self, module) -> None:
        get_lock = getattr(_bootstrap, "_get_module_lock", None)  # (CPython's importlib)
        stand_ins: dict[str, types.ModuleType] = {}
        locks = []
        try:
            for name, names in self.deferred.items():
                if get_lock is None or name in sys.modules:  # already there: nothing to save
                    continue
                lock = get_lock(name)
                lock.acquire()
                locks.append(lock)
                if name in sys.modules:
                    continue
                stand_in = types.ModuleType(name)
                stand_in.__spec__ = importlib.util.spec_from_loader(name, None)
                stand_in.__spec__._initializing = True
                for attr in names:
                    setattr(stand_in, attr, _deferred(name, attr))
                sys.modules[name] = stand_in
                stand_ins[name] = stand_in
            self._loader.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
            for lock in reversed(locks):
                lock.release()


class _PureFrozenList:
    """frozenlist's C++ extension loads libstdc++ (~0.9 MB of RSS, the Kubernetes sources'
    largest single import); aiohttp's client holds a few callbacks in FrozenLists (its
    signals). Refused, frozenlist falls back to its pure-Python FrozenList (same class
    and behaviour; `FROZENLIST_NO_EXTENSIONS` does the same)."""

    MODULE = "frozenlist._frozenlist"

    def find_spec(self, name, path, target=None):
        if name != self.MODULE:
            return None
        sys.meta_path.remove(self)
        raise ImportError(f"{name}: nra uses frozenlist's pure-Python FrozenList (nra.lazy_imports)", name=name)


def _hook(finder) -> None:
    if finder.MODULE not in sys.modules and not any(
            type(f) is type(finder) and f.MODULE == finder.MODULE for f in sys.meta_path):
        sys.meta_path.insert(0, finder)


def install() -> None:
    """Call before anything imports these packages (the CLI does); a no-op for a package
    already imported."""
    for name, names in LAZY_PACKAGES.items():
        _lazy_package(name, names)
    _hook(_LeanConnector())
    _hook(_LeanRest())
    for module, deferred in DEFERRED_FROM_IMPORTS.items():
        _hook(_DeferredFromImports(module, deferred))
    if "frozenlist" not in sys.modules:
        _hook(_PureFrozenList())
