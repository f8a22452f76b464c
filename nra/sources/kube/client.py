"""The connection to the Kubernetes API: credentials, namespace, and raw JSON requests.

kubernetes-asyncio does the credentials (service account with token refresh, or a
kubeconfig with its auth plugins) and owns the aiohttp session. Requests go through its
`ApiClient.call_api` with `_preload_content=False`, so we read the bodies ourselves: a list
is one JSON document, a watch is newline-delimited JSON events, and any reply that is not
what the API promises (an HTTP error, a body that is not JSON) becomes an `ApiError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import (
    ConfigException,
    load_incluster_config,
    load_kube_config,
)

from nra.config.yaml_loader import clip

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "metallb-system"
DEFAULT_KUBECONFIG = Path("~/.kube/config").expanduser()

ApiClientFactory = Callable[[], Awaitable[ApiClient]]


#: ApiError.reason of a watch event longer than aiohttp's line limit (4 MiB)
TOO_LARGE = "too-large"


class KubeSourceError(ValueError):
    """A setting the Kubernetes sources cannot work with; str() is one line for the user."""


@dataclass
class ApiError(Exception):
    """An API reply we cannot use: an HTTP error, an ERROR event, or a body that is not JSON."""

    status: int  # HTTP status or Status.code; 0 when the body was unusable
    reason: str  # short machine-ish word: "Gone", "NotFound", "bad-response", ...
    message: str = ""

    def __str__(self) -> str:
        text = f"{self.status} {self.reason}" if self.status else self.reason
        return f"{text}: {self.message}" if self.message else text

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def needs_relist(self) -> bool:
        """410 Gone, or an event too big to read: only a fresh list gets past it."""
        return self.gone or self.reason == TOO_LARGE


def resolve_namespace(explicit: str | None, sa_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """METALLB_NAMESPACE, else the pod's own namespace, else MetalLB's default."""
    if explicit and explicit.strip():
        return explicit.strip()
    try:
        text = sa_file.read_text().strip()
    except OSError:
        text = ""
    return text or DEFAULT_NAMESPACE


NO_CREDENTIALS = ("no Kubernetes credentials: not running in a pod (KUBERNETES_SERVICE_HOST unset), no "
                  f"KUBECONFIG/--kubeconfig given and no {DEFAULT_KUBECONFIG}")


def has_credentials(kubeconfig: str | None) -> bool:
    """Whether api_client_factory has any credentials to try (a KUBECONFIG, the service
    account, ~/.kube/config); whether they work is only known by trying."""
    return bool(kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST") or DEFAULT_KUBECONFIG.is_file())


def api_client_factory(kubeconfig: str | None) -> ApiClientFactory:
    """How to build the ApiClient, decided now, executed per connection.

    kubernetes-asyncio reads $KUBECONFIG only when it is imported, so the path is always
    passed explicitly: the setting first, then the service account, then ~/.kube/config.
    """

    async def make() -> ApiClient:
        configuration = Configuration()
        try:
            if kubeconfig:
                await load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                       persist_config=False)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                load_incluster_config(client_configuration=configuration)
            elif DEFAULT_KUBECONFIG.is_file():
                await load_kube_config(config_file=str(DEFAULT_KUBECONFIG), client_configuration=configuration,
                                       persist_config=False)
            else:
                raise KubeSourceError(NO_CREDENTIALS)
        except ConfigException as exc:
            where = kubeconfig or "the service account"
            raise KubeSourceError(f"cannot load Kubernetes credentials from {where}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        except OSError as exc:
            raise KubeSourceError(f"cannot read Kubernetes credentials: {exc.strerror or exc}: "
                                  f"{getattr(exc, 'filename', '') or ''}") from None
        except KubeSourceError:
            raise
        except Exception as exc:  # the loader trips over malformed files in many ways
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise KubeSourceError(f"cannot load Kubernetes credentials from {kubeconfig or DEFAULT_KUBECONFIG}: "
                                  f"malformed ({type(exc).__name__}{': ' + first if first else ''})") from None
        return ApiClient(configuration)

    return make


def _status_error(status: Any, fallback_code: int) -> ApiError:
    """A Kubernetes Status object (an error reply's body, an ERROR event's object) as an error."""
    code = status.get("code")
    return ApiError(code if isinstance(code, int) and code else fallback_code,
                    clip(str(status.get("reason") or "Error"), 60), clip(str(status.get("message") or ""), 300))


def _error_from_body(status: int, body: bytes) -> ApiError:
    """A failed reply: a JSON Status names reason and message; anything else is quoted short."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        return _status_error(doc, status)
    text = body.decode("utf-8", "replace").strip().splitlines()
    return ApiError(status, "HTTPError", (clip(text[0], 200) if text else "(empty body)"))


class KubeHTTP:
    """Thin adapter: GET a JSON document, or stream a watch, through one ApiClient."""

    def __init__(self, api: ApiClient, request_timeout_s: float = 30.0):
        self.api = api
        self.request_timeout_s = request_timeout_s

    async def _get(self, path: str, query: dict[str, Any], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        return await self.api.call_api(
            path, "GET", query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
        )

    async def get_json(self, path: str, **query: Any) -> dict:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        resp = await self._get(path, query, timeout)
        try:
            body = await resp.read()
        finally:
            resp.release()
        if resp.status != 200:
            raise _error_from_body(resp.status, body)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(0, "bad-response", f"GET {path} answered {len(body)} bytes that are not JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(0, "bad-response", f"GET {path} answered JSON that is not an object")
        return doc

    async def watch(self, path: str, read_timeout_s: float, on_open: Callable[[], None] = lambda: None,
                    **query: Any) -> AsyncIterator[dict]:
        """Yield watch events until the server ends the stream; `on_open` once it is accepted.

        A watch has no total timeout (it is meant to last): the server ends it after
        timeoutSeconds, and the socket read timeout catches a stream that went silent.
        An ERROR event is raised as ApiError, as is a line that is not a JSON event.
        """
        timeout = aiohttp.ClientTimeout(total=None, connect=self.request_timeout_s,
                                        sock_connect=self.request_timeout_s, sock_read=read_timeout_s)
        resp = await self._get(path, {**query, "watch": "true"}, timeout)
        try:
            if resp.status != 200:
                raise _error_from_body(resp.status, await resp.read())
            on_open()
            while True:
                try:
                    line = await resp.content.readline()
                except LineTooLong:
                    raise ApiError(0, TOO_LARGE, f"watch {path} sent an event over the 4 MiB line limit") from None
                if not line:
                    return  # the server closed the stream
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):
                    raise ApiError(0, "bad-response", f"watch {path} sent a line that is not JSON: "
                                   f"{line[:80].decode('utf-8', 'replace')!r}") from None
                if not isinstance(event, dict) or "type" not in event or not isinstance(event.get("object"), dict):
                    if isinstance(event, dict) and event.get("kind") == "Status":
                        raise _status_error(event, 0)
                    raise ApiError(0, "bad-response", f"watch {path} sent JSON that is not an event")
                if event["type"] == "ERROR":
                    raise _status_error(event["object"], 0)
                yield event
        finally:
            resp.close()  # a watch connection is never reused
