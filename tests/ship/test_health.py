"""The health/metrics endpoints, served for real on 127.0.0.1, driven by an AgentStatus."""

from __future__ import annotations

import socket
import time

import aiohttp
import pytest

from nra.observe import metrics
from nra.observe.server import (
    HealthAddressError,
    parse_address,
    start_health_server,
    stop_health_server,
)
from nra.observe.status import AgentStatus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def served():
    status = AgentStatus(source_name="static-file")
    port = free_port()
    runner = await start_health_server(f"127.0.0.1:{port}", status, stuck_after_s=5)
    assert runner is not None
    try:
        yield status, port
    finally:
        await stop_health_server(runner)


async def test_readyz_only_after_config_loaded_and_in_sync(served):
    status, port = served
    code, text = await get(port, "/readyz")
    assert (code, "no configuration" in text) == (503, True)

    status.config_loaded = True
    code, text = await get(port, "/readyz")
    assert (code, "first reconcile" in text) == (503, True)

    status.last_reconcile_ok, status.in_sync = False, False
    code, text = await get(port, "/readyz")
    assert (code, "failed" in text) == (503, True)

    status.last_reconcile_ok, status.in_sync = True, True
    assert await get(port, "/readyz") == (200, "ok\n")

    # Drifting out of sync again (a failed reconcile) takes the pod out of readiness.
    status.in_sync = False
    assert (await get(port, "/readyz"))[0] == 503


async def test_healthz_fails_while_one_reconcile_runs_too_long(served):
    status, port = served
    assert await get(port, "/healthz") == (200, "ok\n")
    status.reconcile_started()
    assert (await get(port, "/healthz"))[0] == 200  # busy, but not for long
    status.busy_since = time.monotonic() - 6  # longer than stuck_after_s=5
    code, text = await get(port, "/healthz")
    assert code == 503 and "has been running for 6 s" in text
    status.reconcile_finished()
    assert (await get(port, "/healthz"))[0] == 200


async def test_healthz_does_not_depend_on_readiness(served):
    status, port = served
    assert not status.ready
    assert (await get(port, "/healthz"))[0] == 200


EXPECTED_METRICS = [
    "nra_reconciles_total", "nra_reconcile_failures_total", "nra_last_reconcile_duration_seconds",
    "nra_last_reconcile_timestamp_seconds", "nra_operations_total", "nra_drift_repairs_total",
    "nra_peers_in_route", "nra_rules_installed", "nra_config_errors", "nra_config_loads_total",
    "nra_source_synced", "nra_watch_restarts_total",
]


async def test_metrics_expose_every_name_and_follow_updates(served):
    _, port = served
    metrics.reconcile_done("ship-test", 0.25, False, ["add_rule", "add_rule"], 1_700_000_000.0)
    metrics.kernel_state({4: 2, 6: 1}, {4: 3})
    metrics.source_synced("ship-test-source", True)
    metrics.watch_restarted("ship-test-resource", "expired")
    metrics.config_loaded(problems=2)
    code, text = await get(port, "/metrics")
    assert code == 200
    missing = [name for name in EXPECTED_METRICS if name not in text]
    assert missing == []
    assert 'nra_reconcile_failures_total{trigger="ship-test"} 1.0' in text
    assert 'nra_peers_in_route{family="ipv4"} 2.0' in text
    assert 'nra_rules_installed{family="ipv6"} 0.0' in text
    assert 'nra_source_synced{source="ship-test-source"} 1.0' in text
    assert "nra_config_errors 2.0" in text
    before = _sample(text, 'nra_drift_repairs_total')
    metrics.drift_repaired()
    after = _sample((await get(port, "/metrics"))[1], 'nra_drift_repairs_total')
    assert after == before + 1


async def test_metrics_content_type_follows_accept(served):
    _, port = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with session.get(f"http://127.0.0.1:{port}/metrics", headers=openmetrics) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).rstrip().endswith("# EOF")


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics output")


@pytest.mark.parametrize("address", ["", "off", "OFF", " 0 "])
async def test_disabled_address_starts_nothing(address):
    assert await start_health_server(address, AgentStatus()) is None


@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)),
    ("[::1]:9101", ("::1", 9101)),
    (":9101", ("0.0.0.0", 9101)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9101", "127.0.0.1:", "127.0.0.1:70000", "host.example:9101", "1.2.3.4:x"])
def test_bad_address_is_one_line_error(address):
    with pytest.raises(HealthAddressError) as info:
        parse_address(address)
    assert "\n" not in str(info.value) and address in str(info.value)


async def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(HealthAddressError, match="cannot listen"):
            await start_health_server(f"127.0.0.1:{port}", AgentStatus())


def test_pure_answers():
    status = AgentStatus(config_loaded=True, in_sync=True, last_reconcile_ok=True)
    assert status.readiness() == (True, "ok")
    assert status.liveness(30)[0]
    status.busy_since = time.monotonic() - 31
    assert not status.liveness(30)[0]
    status.contention = "priority 20 rules replaced 3 times in 10 s"
    assert status.readiness() == (False, "another writer keeps undoing our changes: "
                                         "priority 20 rules replaced 3 times in 10 s")


def test_a_long_first_reconcile_is_work_not_a_hang():
    """40,000 operations get 30 s + 200 s before liveness fails; with no operations, 30 s."""
    status = AgentStatus(config_loaded=True)
    status.reconcile_started()
    status.applying(40_000)
    status.busy_since = time.monotonic() - 60  # 55 s was measured for 40,000 rules under load
    assert status.liveness(30) == (True, "ok")
    status.busy_since = time.monotonic() - 231
    alive, why = status.liveness(30)
    assert not alive and "limit 230 s for 40,000 operations" in why
    status.reconcile_finished()
    status.reconcile_started()  # the next reconcile starts from no allowance
    status.busy_since = time.monotonic() - 31
    assert not status.liveness(30)[0]
