"""Health and metrics over HTTP: /healthz (liveness), /readyz (readiness), /metrics.

The answers are AgentStatus's own (liveness, readiness), testable without a server; the
aiohttp app only serves them.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from loguru import logger
from prometheus_client.exposition import choose_encoder

from nra.metrics import REGISTRY
from nra.status import STUCK_AFTER_S, AgentStatus

DISABLED = {"", "off", "0", "false", "no"}

STATUS_KEY: web.AppKey[AgentStatus] = web.AppKey("status", AgentStatus)
STUCK_KEY: web.AppKey[float] = web.AppKey("stuck_after_s", float)


class HealthAddressError(ValueError):
    """health_address is not host:port; str() is the one line shown to the user."""


def parse_address(address: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101`, `[::1]:9101`, `:9101` (all interfaces) -> (host, port); None if disabled."""
    text = address.strip()
    if text.lower() in DISABLED:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HealthAddressError(f"health address {address!r}: expected host:port such as 127.0.0.1:9101, or 'off'")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise HealthAddressError(f"health address {address!r}: {host!r} is not an IP address") from None
    return host, int(port_text)


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
    logger.info("health endpoints on http://{}:{}/ (healthz, readyz, metrics)", host, port)
    return runner


async def stop_health_server(runner: web.AppRunner | None) -> None:
    if runner is not None:
        await runner.cleanup()
