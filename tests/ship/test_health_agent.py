"""The health endpoints of a real agent (the CLI as a daemon) programming a test namespace."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env
from tests.wait import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0  # a counter without samples yet


def test_ready_after_first_reconcile_and_drift_repair_counted(node_ns, tmp_path):
    config = tmp_path / "metallb.yaml"  # does not exist yet: the agent waits for it
    port = free_port()
    env = clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}", MAX_RECONCILE_WAIT="0")
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, env=env,
                    log_path=tmp_path / "nra.log")
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200 or daemon.proc.poll() is not None,
                 timeout=15, what="/healthz 200")
        assert daemon.proc.poll() is None, daemon.log()
        code, reason = get(port, "/readyz")
        assert code == 503 and "no configuration" in reason, daemon.log()
        assert node_ns.ip("-4 route show table 20", check=False) == ""

        config.write_text(TWO_PEERS_V4_V6)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=10, what="/readyz 200")
        assert "10.99.0.2" in " ".join(node_ns.routes("-4"))
        metrics = get(port, "/metrics")[1]
        assert sample(metrics, "nra_peers_in_route{family=\"ipv4\"}") == 2
        assert sample(metrics, "nra_rules_installed{family=\"ipv4\"}") == 2
        assert sample(metrics, "nra_config_loads_total") == 1
        repairs = sample(metrics, "nra_drift_repairs_total")

        node_ns.ip("route del default table 20")
        wait_for(lambda: sample(get(port, "/metrics")[1], "nra_drift_repairs_total") > repairs,
                 timeout=10, what="nra_drift_repairs_total to grow")
        wait_for(lambda: node_ns.routes("-4"), timeout=5, what="route put back")
        assert get(port, "/readyz")[0] == 200
        assert sample(get(port, "/metrics")[1], 'nra_operations_total{kind="replace_route"}') >= 2
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert get(port, "/healthz")[0] == 0, "the listener closes when the agent stops"
