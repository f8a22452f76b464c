"""Issue 11 on the real agent: hostile files and settings against `nra` programming a
throwaway namespace. The state stays, the log says where in one line, /readyz says why."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env, run_nra
from tests.agent.test_cli import route_gateways, rule_sources, write
from tests.kube.apiserver import free_port
from tests.unit.test_bad_config import alias_bomb
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

HOSTILE = {
    "alias bomb": (alias_bomb(), "alias expansion"),
    "deep nesting": ("peers: " + "[" * 100_000 + "]" * 100_000 + "\n", "depth"),
    "peers a string": (TWO_PEERS_V4_V6.replace("peers:\n- peer-address: 10.99.0.2\n- peer-address: 10.99.0.3\n"
                                               "- peer-address: fd99::2\n", "peers: 10.99.0.2\n"),
                       "type: peers must be a list"),
    "address-pools a mapping": ("peers: [{peer-address: 10.99.0.2}]\naddress-pools: {name: a, protocol: bgp}\n",
                                "type: address-pools must be a list"),
}


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "metallb.yaml"
    path.write_text(TWO_PEERS_V4_V6)
    return path


def test_hostile_files_keep_the_state_and_readyz_says_why(node_ns, config, tmp_path):
    port = free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name,
                    env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}"), log_path=tmp_path / "nra.log")
    try:
        wait_for(lambda: len(rule_sources(node_ns)) == 2, 10, what="first reconcile")
        wait_for(lambda: readyz(port)[0] == 200, 10, what="ready")
        good = (rule_sources(node_ns), route_gateways(node_ns))
        for name, (text, needle) in HOSTILE.items():
            started = time.monotonic()
            write(config, text)
            wait_for(lambda: needle in daemon.log(), 5, what=f"{name}: the refusal")
            took = time.monotonic() - started
            status, reason = readyz(port)
            assert status == 503 and needle in reason, (name, status, reason)
            assert (rule_sources(node_ns), route_gateways(node_ns)) == good, name
            assert daemon.proc.poll() is None, f"{name}: the agent died ({daemon.proc.returncode})"
            assert took < 3, (name, took)
            refusals = [line for line in daemon.log().splitlines() if needle in line]
            assert len(refusals) == 1 and len(refusals[0]) < 500, refusals
            write(config, TWO_PEERS_V4_V6)
            wait_for(lambda: readyz(port)[0] == 200, 5, what=f"{name}: ready again")
        assert len(daemon.log()) < 100_000
    finally:
        daemon.kill()


def test_directory_swapped_through_a_symlink_is_followed(node_ns, tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "metallb.yaml").write_text(TWO_PEERS_V4_V6)
    (tmp_path / "v2" / "metallb.yaml").write_text(TWO_PEERS_V4_V6.replace("198.51.100.0/26", "198.51.100.64/26"))
    (tmp_path / "current").symlink_to("v1")
    daemon = Daemon("--static-file", str(tmp_path / "current" / "metallb.yaml"), "--netns", node_ns.name,
                    env=clean_env(), log_path=tmp_path / "nra.log")
    try:
        wait_for(lambda: "198.51.100.0/26" in rule_sources(node_ns), 10, what="first reconcile")
        (tmp_path / "tmp").symlink_to("v2")  # ln -s v2 tmp && mv -T tmp current
        (tmp_path / "tmp").rename(tmp_path / "current")
        wait_for(lambda: "198.51.100.64/26" in rule_sources(node_ns), 3, what="the swapped directory's file")
    finally:
        daemon.kill()


@pytest.mark.parametrize("env,needle", [
    ({"HOOK_TIMEOUT": "inf"}, "invalid HOOK_TIMEOUT"),
    ({"HOOK_TIMEOUT": "nan"}, "invalid HOOK_TIMEOUT"),
    ({"SOURCE_START_TIMEOUT": "nan"}, "invalid SOURCE_START_TIMEOUT"),
    ({"HEALTH_ADDRESS": "metrics.example.com:9101"}, "invalid HEALTH_ADDRESS"),
])
def test_non_finite_timeouts_and_host_names_exit_2_at_start(env, needle, tmp_path):
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    proc = run_nra("--oneshot", "--static-file", str(config), env=clean_env(**env))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert needle in proc.stderr and "Traceback" not in proc.stderr
