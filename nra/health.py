"""Health and metrics over HTTP: /healthz (liveness), /readyz (readiness), /metrics.

The answers are pure functions of AgentStatus (liveness_of, readiness_of) so they can be
tested without a server; the aiohttp app is a thin adapter around them.
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger
from prometheus_client.exposition import choose_encoder

from nra.metrics import REGISTRY
from nra.settings import parse_health_address
from nra.status import AgentStatus

# The agent's loop beats every second (nra.agent.HEARTBEAT_S); if it has not beaten for
# this long, the loop is stuck and the kubelet should restart the pod.
WEDGED_AFTER_S = 30.0

STATUS_KEY: web.AppKey[AgentStatus] = web.AppKey("status", AgentStatus)
WEDGED_KEY: web.AppKey[float] = web.AppKey("wedged_after_s", float)


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


def liveness_of(status: AgentStatus, wedged_after_s: float = WEDGED_AFTER_S) -> tuple[bool, str]:
    if status.wedged(wedged_after_s):
        return False, f"agent loop has not run for more than {wedged_after_s:g} s"
    return True, "ok"


def readiness_of(status: AgentStatus) -> tuple[bool, str]:
    problem = status.source_problem()
    if not status.config_loaded:
        why = f": {problem}" if problem else ""
        return False, f"no configuration loaded yet from {status.source_name or 'the source'}{why}"
    if problem:
        return False, problem
    if not status.in_sync:
        if status.last_reconcile_ok is None:
            return False, "configuration loaded, first reconcile not done yet"
        return False, "kernel not in sync: the last reconcile failed"
    return True, "ok"


def _answer(ok_reason: tuple[bool, str]) -> web.Response:
    ok, reason = ok_reason
    return web.Response(status=200 if ok else 503, text=reason + "\n")


async def _healthz(request: web.Request) -> web.Response:
    return _answer(liveness_of(request.app[STATUS_KEY], request.app[WEDGED_KEY]))


async def _readyz(request: web.Request) -> web.Response:
    return _answer(readiness_of(request.app[STATUS_KEY]))


async def _metrics(request: web.Request) -> web.Response:
    # Plain Prometheus text (generate_latest) unless the scraper asks for OpenMetrics.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    # aiohttp refuses a content_type with parameters; set the header as-is.
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})


def build_app(status: AgentStatus, wedged_after_s: float = WEDGED_AFTER_S) -> web.Application:
    app = web.Application()
    app[STATUS_KEY] = status
    app[WEDGED_KEY] = wedged_after_s
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def start_health_server(
    address: str, status: AgentStatus, wedged_after_s: float = WEDGED_AFTER_S
) -> web.AppRunner | None:
    """Serve the endpoints on `address`; None when disabled ('' or 'off').

    Stop it with `await stop_health_server(runner)` (or `await runner.cleanup()`).
    """
    where = parse_address(address)
    if where is None:
        logger.info("health endpoints disabled")
        return None
    host, port = where
    runner = web.AppRunner(build_app(status, wedged_after_s), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise HealthAddressError(f"health address {address}: cannot listen: {exc.strerror or exc}") from None
    logger.info("health endpoints on http://{}:{}/ (healthz, readyz, metrics)", host, port)
    return runner


async def stop_health_server(runner: web.AppRunner | None) -> None:
    if runner is not None:
        await runner.cleanup()
