"""The health endpoints of a real agent (the CLI as a daemon) programming a test namespace."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env
from testbed.ports import free_port
from tests.wait import wait_for


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


ASK = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as resp:
        print(resp.status, resp.read().decode()[:200])
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode()[:200])
"""


def test_status_stays_on_loopback_when_health_is_on_the_nodes_address(node_ns, tmp_path):
    # The chart's setting (HEALTH_ADDRESS=$(HOST_IP):9101, no STATUS_ACCESS), run in the
    # namespace with 10.99.0.1 as the node's address: the probes and /metrics answer there,
    # /status only on loopback, where `nra status` in the pod asks (issue 18 point 5).
    import subprocess
    import sys

    from tests.agent.helpers import NRA, REPO

    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    env = clean_env(HEALTH_ADDRESS="10.99.0.1:9101", MAX_RECONCILE_WAIT="0")
    log = open(tmp_path / "nra.log", "w")
    proc = subprocess.Popen([*node_ns.exec_prefix(), *NRA, "--static-file", str(config)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def ask(url: str) -> str:
        return node_ns.exec([sys.executable, "-c", ASK, url], check=False).stdout.strip()

    try:
        wait_for(lambda: ask("http://10.99.0.1:9101/readyz").startswith("200") or proc.poll() is not None,
                 timeout=20, what="/readyz 200 on the node's address")
        assert proc.poll() is None, (tmp_path / "nra.log").read_text()
        assert ask("http://10.99.0.1:9101/healthz").startswith("200 ok")
        assert ask("http://10.99.0.1:9101/metrics").startswith("200 # HELP")
        assert ask("http://10.99.0.1:9101/status").startswith("404 /status is served on the loopback address only")
        assert ask("http://127.0.0.1:9101/status").startswith('200 {"ready":true')
        done = node_ns.exec([sys.executable, "-m", "nra.observe.status_report"], check=False,
                            env={**env, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0 and ": ready (ok)" in done.stdout, done.stderr
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, (tmp_path / "nra.log").read_text()
        log.close()
