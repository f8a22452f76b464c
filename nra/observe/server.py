"""Health and metrics over HTTP: /healthz (liveness), /readyz (readiness), /metrics, and
/status (what `nra status` shows).

The answers are AgentStatus's own (liveness, readiness), testable without a server; the
aiohttp app only serves them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from loguru import logger
from prometheus_client.exposition import choose_encoder

from nra.observe.metrics import REGISTRY
from nra.observe.status import STUCK_AFTER_S, AgentStatus
from nra.observe.status_report import StatusDetails, status_document
from nra.settings import parse_health_address

STATUS_KEY: web.AppKey[AgentStatus] = web.AppKey("status", AgentStatus)
STUCK_KEY: web.AppKey[float] = web.AppKey("stuck_after_s", float)


class HealthAddressError(ValueError):
    """health_address is not host:port; str() is the one line shown to the user."""


def parse_address(address: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101`, `[::1]:9101`, `:9101` (all interfaces) -> (host, port); None if disabled.
    The rules are the settings' (nra.settings.parse_health_address), which refuse a bad
    address at start; this only turns their error into HealthAddressError."""
    try:
        return parse_health_address(address)
    except ValueError as exc:
        raise HealthAddressError(f"health address: {exc}") from None


def _answer(ok_reason: tuple[bool, str]) -> web.Response:
    ok, reason = ok_reason
    return web.Response(status=200 if ok else 503, text=reason + "\n")


async def _healthz(request: web.Request) -> web.Response:
    return _answer(request.app[STATUS_KEY].liveness(request.app[STUCK_KEY]))


async def _readyz(request: web.Request) -> web.Response:
    return _answer(request.app[STATUS_KEY].readiness())


async def _metrics(request: web.Request) -> web.Response:
    # Plain Prometheus text (generate_latest) unless the scraper asks for OpenMetrics.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    # aiohttp refuses a content_type with parameters; set the header as-is.
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})


def build_app(status: AgentStatus, stuck_after_s: float = STUCK_AFTER_S) -> web.Application:
    app = web.Application()
    app[STATUS_KEY] = status
    app[STUCK_KEY] = stuck_after_s
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", status_handler_for())
    return app


async def start_health_server(
    address: str, status: AgentStatus, stuck_after_s: float = STUCK_AFTER_S
) -> web.AppRunner | None:
    """Serve the endpoints on `address`; None when disabled ('' or 'off').

    Stop it with `await stop_health_server(runner)` (or `await runner.cleanup()`).
    """
    where = parse_address(address)
    if where is None:
        logger.info("health endpoints disabled")
        return None
    host, port = where
    runner = web.AppRunner(build_app(status, stuck_after_s), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise HealthAddressError(f"health address {address}: cannot listen: {exc.strerror or exc}") from None
    logger.info("health endpoints on http://{}:{}/ (healthz, readyz, metrics, status)", host, port)
    return runner


async def stop_health_server(runner: web.AppRunner | None) -> None:
    if runner is not None:
        await runner.cleanup()


def status_handler_for(details: Callable[[], StatusDetails] | None = None):
    """An aiohttp handler for GET /status; the app holds AgentStatus under
    STATUS_KEY. `details` (else the AgentStatus's own `details` attribute, a
    callable the agent sets) is called on every request."""
    async def handler(request: web.Request) -> web.Response:
        status = request.app[STATUS_KEY]
        provider = details or getattr(status, "details", None)
        return web.json_response(status_document(status, provider() if provider else None))

    return handler
