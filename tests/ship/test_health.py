"""The health/metrics endpoints, served for real on 127.0.0.1, driven by an AgentStatus."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import threading
import time

import aiohttp
import pytest

from nra.config.intent import Intent, Peer
from nra.observe import connections, metrics
from nra.observe import server as server_module
from nra.observe.documents import REFRESH_S, STATUS_PREFIXES, Documents
from nra.observe.server import (
    PARKED,
    HealthAddressError,
    parse_address,
    start_health_server,
    stop_health_server,
)
from nra.observe.status import AgentStatus
from nra.observe.status_report import StatusDetails
from testbed.ports import free_port
from tests.wait import holds_async, wait_for_async


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def served_documents():
    status = AgentStatus(source_name="static-file")
    documents = Documents(status)
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, stuck_after_s=5, documents=documents)
    assert server is not None
    try:
        yield status, port, documents
    finally:
        await stop_health_server(server)


@pytest.fixture
async def served(served_documents):
    status, port, _ = served_documents
    yield status, port


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


async def test_metrics_expose_every_name_and_follow_each_build(served_documents):
    _, port, documents = served_documents
    metrics.reconcile_done("ship-test", 0.25, False, ["add_rule", "add_rule"], 1_700_000_000.0)
    metrics.kernel_state({4: 2, 6: 1}, {4: 3})
    metrics.source_synced("ship-test-source", True)
    metrics.watch_restarted("ship-test-resource", "expired")
    metrics.config_loaded(problems=2)
    documents.refresh()  # what the daemon does after each reconcile and load
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
    # served as built: a request never builds (the daemon does, off the request path)
    assert _sample((await get(port, "/metrics"))[1], 'nra_drift_repairs_total') == before
    documents.refresh()
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


# -- the server apart from the reconciler (issue 20 points 1, 2, 3) ---------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_silent_connections_wait_in_the_kernel_and_never_block_healthz():
    # Issue 20: a crowd of connections that send nothing is not handed to the server at all
    # (TCP_DEFER_ACCEPT): no descriptor, no slot; a probe among them is answered at once.
    status = AgentStatus(source_name="static-file")
    port = free_port()
    before = open_fds()
    server = await start_health_server(f"127.0.0.1:{port}", status, cap=32)
    silent: list[socket.socket] = []
    try:
        for _ in range(400):
            silent.append(socket.create_connection(("127.0.0.1", port)))
        started = time.monotonic()
        assert await get(port, "/healthz") == (200, "ok\n")
        assert time.monotonic() - started < 2
        stats = server.server.stats
        await holds_async(lambda: stats.evicted + stats.refused == 0 and open_fds() - before - len(silent) <= 8,
                          0.5, what="no silent connection taken by the server")
    finally:
        for sock in silent:
            sock.close()
        await stop_health_server(server)


async def test_idle_connections_are_capped_and_never_block_healthz():
    # The old server took every connection (20,500 idle ones took the descriptor a hook
    # needed) and kept it forever. (These send a first byte, so the kernel hands them over.)
    status = AgentStatus(source_name="static-file")
    port = free_port()
    before = open_fds()
    server = await start_health_server(f"127.0.0.1:{port}", status, cap=32)
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            idle[-1].sendall(b"G")  # and never the rest of its request
        stats = server.server.stats
        await wait_for_async(lambda: stats.open + stats.evicted + stats.refused >= 400, 5,
                             what="the server's thread has taken all 400")
        # the cap, the waiting room of newcomers, and a few of the server's own (once the
        # evicted ones' closes, scheduled by their aborts, have run)
        await wait_for_async(lambda: open_fds() - before - len(idle) <= 32 + PARKED + 8, 5,
                             what="the server's descriptors within the cap and the waiting room")
        started = time.monotonic()
        assert await get(port, "/healthz") == (200, "ok\n")
        assert time.monotonic() - started < 2
        assert stats.evicted + stats.refused >= 400 - 32, stats
    finally:
        for sock in idle:
            sock.close()
        await stop_health_server(server)


async def test_a_client_that_never_finishes_its_headers_is_closed(monkeypatch):
    monkeypatch.setattr(connections, "IDLE_TIMEOUT_S", 0.5)
    status = AgentStatus()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
            started = time.monotonic()
            assert await asyncio.to_thread(slow.recv, 100) == b""  # closed by the server
            assert time.monotonic() - started < 3
    finally:
        await stop_health_server(server)


async def test_healthz_judges_the_daemons_loop_not_its_own():
    # The server answers from its own thread; while the daemon's loop is blocked (here: this
    # test's loop, in time.sleep) /healthz must fail, not say ok because the server runs.
    status = AgentStatus()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, stuck_after_s=1.0)
    codes: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        import urllib.error
        import urllib.request
        started = time.monotonic()
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    codes.append((time.monotonic() - started, resp.status))
            except urllib.error.HTTPError as exc:
                codes.append((time.monotonic() - started, exc.code))
            except OSError:
                codes.append((time.monotonic() - started, 0))
            time.sleep(0.05)

    loop = asyncio.get_running_loop()
    status.ask = lambda: loop.call_soon_threadsafe(status.loop_ran)  # as the daemon does
    status.loop_ran()
    poller = threading.Thread(target=poll)
    try:
        poller.start()
        await wait_for_async(lambda: codes, 5, what="a first answer")
        time.sleep(2.5)  # the daemon's loop blocked (a call that does not return)
        blocked = len(codes)
        await wait_for_async(lambda: len(codes) > blocked and codes[-1][1] == 200, 5,
                             what="an answer after the loop ran again")
    finally:
        stop.set()
        poller.join(5)
        await stop_health_server(server)
    answered = [code for _, code in codes]
    assert answered[0] == 200 and 503 in answered and answered[-1] == 200, codes
    assert 0 not in answered, codes  # always answered
    status.asked_at = time.monotonic() - 2  # a question open for 2 s
    assert status.liveness(1.0) == (False, "the agent's event loop has not run for 2 s (limit 1 s)")
    by_itself = AgentStatus(loop_beat=time.monotonic() - 2)  # a loop that beats without being asked
    assert by_itself.liveness(1.0) == (False, "the agent's event loop has not run for 2 s (limit 1 s)")


async def test_an_agent_nobody_asks_is_never_woken_by_the_server():
    # Issue 19: the daemon's loop beat every 0.5 s and rebuilt its documents every 2 s for a
    # server nobody asked. Now the server asks only when asked, at most once per question.
    status = AgentStatus()
    loop = asyncio.get_running_loop()
    asked: list[float] = []

    def ask() -> None:
        asked.append(time.monotonic())
        loop.call_soon_threadsafe(status.loop_ran)

    status.ask = ask
    documents = Documents(status)
    scheduled: list[object] = []
    documents.schedule = lambda callback: (scheduled.append(callback), loop.call_soon_threadsafe(callback))
    status.loop_ran()
    documents.refresh()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, documents=documents)
    try:
        await holds_async(lambda: not asked and not scheduled, 2.5, interval=0.1, what="nothing asked while idle")
        first = documents.snapshot
        status.loop_beat = time.monotonic() - 5  # as if the last answer were old
        assert (await get(port, "/healthz"))[0] == 200
        assert len(asked) == 1
        await wait_for_async(lambda: status.asked_at is None, 2, what="the question answered")
        # /metrics with documents older than REFRESH_S: rebuilt once, in this loop, and served
        assert (await get(port, "/metrics"))[0] == 200
        assert len(scheduled) == 1 and documents.snapshot is not first
        assert (await get(port, "/metrics"))[0] == 200
        assert len(scheduled) == 1, "fresh documents are not rebuilt"
        # during a reconcile the request is answered with the last documents, none built
        documents._built_monotonic -= REFRESH_S
        status.reconcile_started()
        built = documents.snapshot
        assert (await get(port, "/metrics"))[0] == 200
        assert len(scheduled) == 2 and documents.snapshot is built
        status.reconcile_finished()
    finally:
        await stop_health_server(server)


async def test_status_is_bounded_and_the_full_list_comes_on_request():
    prefixes = frozenset(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(1000)) | \
        frozenset(ipaddress.ip_network(f"2001:db8:{i:x}::/48") for i in range(300))
    intent = Intent(peers=frozenset({Peer(ipaddress.ip_address("10.99.0.2"), 100, "")}), prefixes=prefixes)
    status = AgentStatus(source_name="static-file", config_loaded=True)
    status.details = lambda: StatusDetails(intent=intent)
    documents = Documents(status, status.details)
    documents.refresh()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, documents=documents)
    try:
        code, text = await get(port, "/status")
        doc = json.loads(text)
        assert code == 200 and doc["prefix_counts"] == {"ipv4": 1000, "ipv6": 300}
        assert len(doc["prefixes"]["ipv4"]) == len(doc["prefixes"]["ipv6"]) == STATUS_PREFIXES
        assert doc["prefixes"]["ipv4"][:2] == ["10.0.0.0/24", "10.0.1.0/24"] and doc["prefixes_complete"] is False
        assert doc["ready"] is False and doc["live"] is True
        code, text = await get(port, "/status?prefixes=all")
        full = json.loads(text)
        assert code == 200 and full["prefixes_complete"] is True
        assert full["prefixes"]["ipv4"] == [str(p) for p in sorted(p for p in prefixes if p.version == 4)]
        assert len(full["prefixes"]["ipv6"]) == 300
        assert {k: v for k, v in full.items() if k not in ("prefixes", "prefixes_complete")} == \
            {k: v for k, v in doc.items() if k not in ("prefixes", "prefixes_complete")}
    finally:
        await stop_health_server(server)


async def test_bad_requests_are_one_rate_limited_warning_each():
    # aiohttp logged each bad request as nine traceback lines at ERROR, whatever LOG_LEVEL.
    import logging

    from loguru import logger

    from nra.observe.logs import LIBRARY_BURST, route_library_logs

    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in ("aiohttp", "asyncio")}
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{level} {message}")
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", AgentStatus())
    try:
        route_library_logs("INFO")
        for _ in range(60):
            answer = await asyncio.to_thread(raw_request, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n")
            assert answer.split(b" ", 2)[1] == b"400"
        route_library_logs("ERROR")  # LOG_LEVEL=error: a client's bad request is not an error of nra's
        quiet = len(lines)
        for _ in range(5):
            await asyncio.to_thread(raw_request, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n")
        assert len(lines) == quiet
    finally:
        await stop_health_server(server)
        logger.remove(sink)
        for name, (handlers, propagate, level) in saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
            logging.getLogger(name).setLevel(level)
    bad = [line for line in lines if "bad request" in line]
    assert 1 <= len(bad) <= LIBRARY_BURST + 2, bad
    assert all(line.startswith("WARNING http: bad request: from 127.0.0.1") and "\n" not in line.strip()
               for line in bad), bad
    assert not any("Traceback" in line for line in lines)


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


def test_a_question_the_closed_loop_cannot_take_is_not_left_open():
    # The daemon's loop closed (the agent stopping): the question was never scheduled, so it
    # must not count as unanswered and fail liveness 30 s later.
    status = AgentStatus(loop_beat=time.monotonic() - 5)

    def closed() -> None:
        raise RuntimeError("Event loop is closed")

    status.ask = closed
    status.ask_loop()
    assert status.asked_at is None and status.liveness(1.0) == (True, "ok")


# -- the server holds back while the daemon works on a change (issue 20: the 2x target) -------

async def test_while_the_daemon_works_probes_are_answered_and_the_rest_waits(served_documents):
    # The server's thread shares Python's GIL with the daemon: while a configuration is
    # loaded or reconciled (AgentStatus.working), /status and /metrics wait, on a new
    # connection or on one kept alive, and /healthz and /readyz are answered at once.
    status, port, documents = served_documents
    documents.refresh()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:  # (a kept-alive connection)
            assert resp.status == 200
            await resp.read()

        async def ask(path: str) -> int:
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                await resp.read()
                return resp.status

        status.reconcile_started()
        try:
            metrics_kept_alive = asyncio.create_task(ask("/metrics"))
            status_new = asyncio.create_task(asyncio.to_thread(raw_request, port, b"GET /status HTTP/1.0\r\n\r\n"))
            started = time.monotonic()
            assert await get(port, "/healthz") == (200, "ok\n")
            assert (await get(port, "/readyz"))[0] == 503  # (no configuration: answered, not held)
            assert time.monotonic() - started < 1
            await holds_async(lambda: not metrics_kept_alive.done() and not status_new.done(), 0.5,
                              what="/status and /metrics held while the daemon works")
        finally:
            status.reconcile_finished()
        assert await asyncio.wait_for(metrics_kept_alive, 5) == 200
        assert (await asyncio.wait_for(status_new, 5)).startswith(b"HTTP/1.0 200")


def test_working_is_a_load_or_a_reconcile():
    status = AgentStatus()
    assert not status.working
    with status.loading():  # (the static file source, around its read and parse)
        assert status.working
    assert not status.working
    status.reconcile_started()
    assert status.working
    status.reconcile_finished()
    assert not status.working


async def test_a_hold_is_bounded(served_documents, monkeypatch):
    # A reconcile that runs long (hooks, a first one at 100,000 prefixes) holds requests at
    # most HOLD_MAX_S: then they are served all the same.
    monkeypatch.setattr(server_module, "HOLD_MAX_S", 0.5)
    status, port, documents = served_documents
    documents.refresh()
    status.reconcile_started()
    try:
        started = time.monotonic()
        code, _ = await get(port, "/status")
        took = time.monotonic() - started
    finally:
        status.reconcile_finished()
    assert code == 200
    assert 0.4 < took < 3, took


async def deferring_server(monkeypatch):
    """A server whose listener defers accepting for 1 s (TCP_DEFER_ACCEPT), cap 32."""
    monkeypatch.setattr(server_module, "DEFER_ACCEPT_S", 1)
    status = AgentStatus(source_name="static-file")
    port = free_port()
    return status, port, await start_health_server(f"127.0.0.1:{port}", status, cap=32)


async def test_connections_silent_through_the_deferral_are_closed_at_once(monkeypatch):
    # A connection the kernel hands over after TCP_DEFER_ACCEPT without a byte has been idle
    # as long as the idle timeout: it waits for its request in the waiting room, nothing built
    # for it and no slot taken, and is closed after PARK_WAIT_S (before: taken in and kept
    # until the idle timeout).
    status, port, server = await deferring_server(monkeypatch)
    silent: list[socket.socket] = []
    try:
        for _ in range(40):
            silent.append(socket.create_connection(("127.0.0.1", port)))
        stats = server.server.stats
        await wait_for_async(lambda: stats.timed_out >= 40, 15, what="the 40 silent connections closed")
        assert stats.open == 0 and stats.evicted == 0 and stats.refused == 0, stats
        for sock in silent:
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed by the server
        assert await get(port, "/healthz") == (200, "ok\n")
    finally:
        for sock in silent:
            sock.close()
        await stop_health_server(server)


# -- the server's thread sleeps while the daemon works, and is woken when it is done ---------

def _thread_stat(tid: int) -> tuple[int, int]:
    """(voluntary context switches: its wake-ups, ns on a core) of a thread of this process."""
    with open(f"/proc/self/task/{tid}/status") as f:
        switches = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        ran = int(f.read().split()[0])
    return switches, ran


async def test_the_server_thread_is_named_nra_http_for_the_kernel():
    # top -H, ps -L and /proc/<pid>/task/<tid>/schedstat tell the server's thread from the
    # daemon's loop by this name (http_load_bench's per-thread figures need it).
    status = AgentStatus(source_name="static-file")
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, cap=32)
    try:
        tid = server._thread.native_id
        with open(f"/proc/self/task/{tid}/comm") as f:
            assert f.read().strip() == "nra-http"
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            assert f.read().strip() != "nra-http"  # (the caller's thread keeps its name)
    finally:
        await stop_health_server(server)


async def test_a_held_request_costs_no_wakeups_until_the_daemon_is_done(monkeypatch):
    # While a change is reconciled, a /status request waits for it. The server's thread
    # sleeps meanwhile (before: it looked every 5 ms, 200 wake-ups a second taking the GIL
    # and a core from the reconcile), and the daemon's end of the change wakes it: the
    # request is answered then, not at HOLD_MAX_S.
    monkeypatch.setattr(server_module, "HOLD_MAX_S", 30.0)
    status = AgentStatus(source_name="static-file")
    documents = Documents(status)
    documents.refresh()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", status, documents=documents, cap=32)
    try:
        tid = server._thread.native_id
        status.reconcile_started()
        try:
            held = asyncio.create_task(asyncio.to_thread(raw_request, port, b"GET /status HTTP/1.0\r\n\r\n", 40))
            await asyncio.sleep(0.5)  # accepted, held; the accept pause (ACCEPT_PAUSE_S) over
            switches, ran = _thread_stat(tid)
            await holds_async(lambda: not held.done(), 1.0, what="/status held while the daemon works")
            woken, ran_more = (now - then for now, then in zip(_thread_stat(tid), (switches, ran)))
            assert woken <= 5, f"the server's thread woke {woken} times in 1 s with a request held"
            assert ran_more < 20e6, f"the server's thread ran {ran_more / 1e6:.1f} ms in 1 s"
        finally:
            finished = time.monotonic()
            status.reconcile_finished()
        answer = await asyncio.wait_for(held, 5)
        assert answer.startswith(b"HTTP/1.0 200")
        assert time.monotonic() - finished < 1.0, "answered when the change ended, not at HOLD_MAX_S"
    finally:
        await stop_health_server(server)


async def test_a_loaded_configuration_holds_requests_until_its_reconcile_ends(tmp_path):
    # A configuration the static file source loaded is part of the change until the reconcile
    # that programs it ends: a /status request arriving in between (the worker about to
    # start) waits, and is answered once that reconcile is over, not while it runs (before:
    # answered in the gap, taking the GIL and a core as the reconcile started).
    from nra.config.intent import ParseResult
    from nra.daemon.agent import Agent
    from nra.daemon.reconciler import Outcome
    from nra.settings import load_settings
    from nra.sources.static_file import StaticFileSource

    config = tmp_path / "metallb.yaml"
    config.write_text("")
    agent = Agent(load_settings(health_address="off"), StaticFileSource(str(config), None, 100))

    class Queued:  # the worker: the reconcile is queued, the test runs it
        def __init__(self) -> None:
            self.triggers: list[str] = []
            self.last_outcome = None

        def trigger(self, why: str) -> None:
            self.triggers.append(why)

    agent.worker = Queued()  # type: ignore[assignment]
    agent.documents.refresh()
    port = free_port()
    server = await start_health_server(f"127.0.0.1:{port}", agent.status, documents=agent.documents, cap=32)
    try:
        agent.publish(ParseResult(intent=Intent(peers=frozenset({Peer(ipaddress.ip_address("10.99.0.2"), 100, "")}),
                                                prefixes=frozenset({ipaddress.ip_network("192.0.2.0/24")}))))
        assert agent.worker.triggers == ["config"]
        asked = asyncio.create_task(asyncio.to_thread(raw_request, port, b"GET /status HTTP/1.0\r\n\r\n", 10))
        await holds_async(lambda: not asked.done(), 0.5, what="/status held: a configuration waits for its reconcile")
        reconciled: list[float] = []

        class Reconciler:
            async def reconcile(self, intent, trigger):
                await holds_async(lambda: not asked.done(), 0.3, what="/status held during the reconcile")
                reconciled.append(time.monotonic())
                return Outcome(ok=True)

        assert (await agent._reconcile(Reconciler(), "config")).ok
        assert not agent.status.working
        assert (await asyncio.wait_for(asked, 5)).startswith(b"HTTP/1.0 200")
        assert reconciled
    finally:
        await stop_health_server(server)


async def test_the_waiting_room_is_not_swept_while_the_daemon_works(monkeypatch):
    # Newcomers silent through TCP_DEFER_ACCEPT wait in the waiting room at most PARK_WAIT_S;
    # closing them is the server's work too, so it waits for the change's end (the room is
    # bounded by PARKED meanwhile). Before: each had a timer of its own, firing mid-change.
    status, port, server = await deferring_server(monkeypatch)
    silent: list[socket.socket] = []
    try:
        stats = server.server.stats
        status.reconcile_started()
        try:
            for _ in range(10):
                silent.append(socket.create_connection(("127.0.0.1", port)))
            await wait_for_async(lambda: len(server._parked) == 10, 10, what="the 10 silent newcomers parked")
            await holds_async(lambda: stats.timed_out == 0 and len(server._parked) == 10,
                              server_module.PARK_WAIT_S + 0.5, what="the waiting room kept while the daemon works")
        finally:
            status.reconcile_finished()
        await wait_for_async(lambda: stats.timed_out == 10, 3, what="the waiting room swept after the change")
        assert await get(port, "/healthz") == (200, "ok\n")
    finally:
        for sock in silent:
            sock.close()
        await stop_health_server(server)
