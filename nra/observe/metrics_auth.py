"""Who may scrape the HTTPS /metrics (METRICS_AUTH=kubernetes): the API server says.

What controller-runtime's metrics filter and kube-rbac-proxy do, in the HTTP server's own
loop: the scraper's bearer token goes to a TokenReview (authentication.k8s.io/v1: whose is
it?), its user to a SubjectAccessReview (authorization.k8s.io/v1: may it `get` the
non-resource URL /metrics?). 401 without a token or with one the API server does not
accept, 403 when not allowed, 503 when the API server cannot be asked (the scraper tries
again; nothing else waits).

The answers are kept (TokenCache: ALLOW_TTL_S for an allowed token, DENY_TTL_S for a refused
one, MAX_ENTRIES tokens, the least recently used dropped first), keyed by the token's SHA-256:
the token itself is never stored, logged or shown. Concurrent scrapes with one token share
one review; at most REVIEW_RATE reviews a second are sent (a crowd of made-up tokens costs
the API server that, no more), more are answered 503.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from loguru import logger

#: an allowed token's answer is kept this long
ALLOW_TTL_S = 30.0
#: a refused token's (unauthenticated or forbidden) answer is kept this long
DENY_TTL_S = 10.0
#: tokens whose answers are kept, at most
MAX_ENTRIES = 256
#: one review (TokenReview and SubjectAccessReview each) waits this long for the API server
REVIEW_TIMEOUT_S = 5.0
#: reviews sent a second, at most (a token not in the cache costs one)
REVIEW_RATE = 20.0
#: a token longer than this is refused without asking (service account tokens are ~1 KB)
MAX_TOKEN_BYTES = 16 * 1024
#: the SubjectAccessReview's question
METRICS_PATH, METRICS_VERB = "/metrics", "get"
#: a warning about the API server repeats at most this often
WARN_EVERY_S = 60.0


class Verdict(enum.Enum):
    ALLOWED = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


class ReviewUnavailable(Exception):
    """The API server could not be asked (down, slow, refused nra's own request); str() is
    one line for the scraper and the log (never the token)."""


class TokenCache:
    """Verdicts by token digest, each for its time, at most `max_entries` (least recently
    used dropped first)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Verdict, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Verdict | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        verdict, until = entry
        if self.clock() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verdict

    def put(self, key: bytes, verdict: Verdict, ttl_s: float) -> None:
        self._entries[key] = (verdict, self.clock() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token


class _Rate:
    """At most `rate` a second, with a burst of one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


ApiFactory = Callable[[], Awaitable[Any]]  # -> kubernetes_asyncio ApiClient


class KubernetesReviewer:
    """TokenReview + SubjectAccessReview through nra's own ApiClient (made by `api_factory`
    in the loop that reviews: the server's)."""

    def __init__(self, api_factory: ApiFactory, cache: TokenCache | None = None,
                 timeout_s: float = REVIEW_TIMEOUT_S, rate: float = REVIEW_RATE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api_factory = api_factory
        self.cache = cache if cache is not None else TokenCache(clock=clock)
        self.timeout_s = timeout_s
        self.rate = _Rate(rate, clock)
        self._api: Any = None
        self._pending: dict[bytes, asyncio.Future] = {}
        self._warned_at = -WARN_EVERY_S
        self.reviews = 0  # sent to the API server (each a TokenReview, and maybe a SubjectAccessReview)

    async def review(self, token: str) -> Verdict:
        """The verdict for this token (cached, or asked); ReviewUnavailable when the API
        server could not be asked."""
        key = digest(token)
        verdict = self.cache.get(key)
        if verdict is not None:
            return verdict
        pending = self._pending.get(key)
        if pending is not None:  # the same token is being reviewed: that answer is ours
            return await asyncio.shield(pending)
        if not self.rate.take():
            raise ReviewUnavailable(f"more than {REVIEW_RATE:g} new tokens a second to review; try again")
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            verdict = await self._ask(token)
        except ReviewUnavailable as exc:
            future.set_exception(exc)
            future.exception()  # (retrieved: a lone reviewer leaves no "never retrieved" warning)
            raise
        finally:
            del self._pending[key]
        future.set_result(verdict)
        self.cache.put(key, verdict, ALLOW_TTL_S if verdict is Verdict.ALLOWED else DENY_TTL_S)
        return verdict

    async def _ask(self, token: str) -> Verdict:
        self.reviews += 1
        status = await self._post("/apis/authentication.k8s.io/v1/tokenreviews",
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                   "spec": {"token": token}})
        user = status.get("user") if isinstance(status.get("user"), dict) else {}
        if status.get("authenticated") is not True or not user.get("username"):
            return Verdict.UNAUTHENTICATED
        spec: dict[str, Any] = {"user": user["username"],
                                "nonResourceAttributes": {"path": METRICS_PATH, "verb": METRICS_VERB}}
        for field in ("uid", "groups", "extra"):
            if user.get(field):
                spec[field] = user[field]
        status = await self._post("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                  {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                   "spec": spec})
        return Verdict.ALLOWED if status.get("allowed") is True else Verdict.FORBIDDEN

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a review, return its status; ReviewUnavailable for anything but an answer."""
        what = path.rsplit("/", 1)[-1]
        try:
            if self._api is None:
                self._api = await self.api_factory()
            resp = await self._api.call_api(
                path, "POST", body=body,
                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            try:
                data = await resp.read()
            finally:
                resp.release()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._unavailable(f"cannot reach the API server for a {what[:-1]}: "
                                    f"{type(exc).__name__}{': ' + str(exc).splitlines()[0][:120] if str(exc) else ''}")
        except Exception as exc:  # credentials that do not load (KubeSourceError), a client bug: one line
            raise self._unavailable(f"cannot ask the API server for a {what[:-1]}: {str(exc)[:160] or type(exc).__name__}")
        if resp.status == 401:  # nra's own token expired or was revoked: a new client next time
            await self._drop_api()
        if resp.status not in (200, 201):
            reason = ""
            try:
                doc = json.loads(data)
                reason = str(doc.get("message", ""))[:160] if isinstance(doc, dict) else ""
            except (ValueError, RecursionError):
                pass
            hint = (f" (nra's identity needs `create` on {what})" if resp.status == 403 else "")
            raise self._unavailable(f"the API server answered {resp.status} to a {what[:-1]}{hint}"
                                    f"{': ' + reason if reason else ''}")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("status", {}), dict):
            raise self._unavailable(f"the API server's {what[:-1]} answer is not a review")
        return doc.get("status", {})

    def _unavailable(self, line: str) -> ReviewUnavailable:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning("metrics: {}; scrapes are answered 503", line)
        return ReviewUnavailable(line)

    async def _drop_api(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            try:
                await api.close()
            except Exception:  # (closing a broken session)
                pass

    async def close(self) -> None:
        await self._drop_api()
