"""Two agents with different configurations on one table (issue 11 #12): they used to
replace each other's route about once a second, for ever, and neither said so."""

from __future__ import annotations

import pytest

from tests.agent.helpers import Daemon, clean_env
from tests.netns import NetNS
from tests.ship.test_health_agent import free_port, get, sample
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

CONFIG = """\
peers:
- peer-address: {peer}
address-pools:
- name: a
  protocol: bgp
  addresses: [198.51.100.0/26]
"""


def test_two_agents_on_one_table_say_they_fight(node_ns: NetNS, tmp_path):
    daemons, ports = [], []
    try:
        for name, peer in (("a", "10.99.0.2"), ("b", "10.99.0.3")):
            config = tmp_path / f"{name}.yaml"
            config.write_text(CONFIG.format(peer=peer))
            port = free_port()
            env = clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}", MAX_RECONCILE_WAIT="0")
            daemons.append(Daemon("--static-file", str(config), "--netns", node_ns.name, env=env,
                                  log_path=tmp_path / f"{name}.log"))
            ports.append(port)
        for daemon, port in zip(daemons, ports):
            wait_for(lambda: "another writer" in get(port, "/readyz")[1] or daemon.proc.poll() is not None,
                     timeout=20, what="/readyz to name the fight")
            assert daemon.proc.poll() is None, daemon.log()
            code, text = get(port, "/readyz")
            assert code == 503 and "of nra's own changes undone and repaired" in text
            # /metrics is the document the daemon rebuilt last (after a reconcile, else every 2 s)
            wait_for(lambda: sample(get(port, "/metrics")[1], "nra_table_contention") == 1, timeout=5,
                     what="the contention gauge")
            assert sample(get(port, "/metrics")[1], "nra_ready") == 0
            assert "another writer keeps undoing nra's changes to table 20" in daemon.log()
    finally:
        for daemon in daemons:
            daemon.stop()
