"""A dead router whose neighbour entry the kernel collects stays out of the route, and comes
back once it answers again: the nra daemon against the real kernel. The node faces a router
namespace holding both peers' addresses (the `lan` of test_neighbours); nothing else on the
node sends to the peers (no BGP speaker), so only nra's own re-resolution can find a router
that is back."""

from __future__ import annotations

import time

import pytest

from nra.daemon.peer_resolution import RESOLVE_INTERVAL_S
from tests.agent.helpers import Daemon, clean_env
from tests.kernel.test_neighbours import lan, neigh_state, resolve, wait_neigh  # noqa: F401
from tests.wait import holds, wait_for

pytestmark = pytest.mark.kernel

CONFIG = """\
peers:
- peer-address: 10.99.0.2
- peer-address: 10.99.0.3
- peer-address: fd99::2
- peer-address: fd99::3
address-pools:
- name: pool
  protocol: bgp
  addresses: [198.51.100.0/26, 2001:db8:100::/120]
"""
GONE, KEPT = ("10.99.0.2", "fd99::2"), ("10.99.0.3", "fd99::3")


def table_gateways(node) -> set[str]:
    """The gateways of table 20's routes, both families (none before nra made the table)."""
    words = " ".join(node.ip(f"{family} route show table 20", check=False) for family in ("-4", "-6")).split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


def test_a_dead_router_whose_entry_is_collected_stays_out_and_comes_back(lan, tmp_path):  # noqa: F811
    node, router = lan
    router.ip("addr add 10.99.0.2/24 dev eth0")
    router.ip("-6 addr add fd99::2/64 dev eth0 nodad")
    config = tmp_path / "metallb.yaml"
    config.write_text(CONFIG)
    # no timer: the kernel's events, the worker's retries and the re-resolution act alone
    daemon = Daemon("--static-file", str(config), "--netns", node.name, log_path=tmp_path / "nra.log",
                    env=clean_env(MAX_RECONCILE_WAIT="0", LOG_LEVEL="debug"))
    try:
        wait_for(lambda: table_gateways(node) == {*GONE, *KEPT}, 10, what="both routers in table 20")
        for address in (*GONE, *KEPT):
            assert resolve(node, address)  # every peer answers

        # r1 dies; its entries expire and the next resolution fails: left out
        router.ip("addr del 10.99.0.2/24 dev eth0")
        router.ip("-6 addr del fd99::2/64 dev eth0")
        for address in GONE:
            node.ip(f"neigh del {address} dev eth0")
            assert not resolve(node, address, wait="0.5")
            wait_neigh(node, address, "FAILED")
        wait_for(lambda: table_gateways(node) == set(KEPT), 3, what="the dead router left out")

        # the kernel's GC collects the FAILED entries (nothing refers to them any more)
        for address in GONE:
            node.ip(f"neigh del {address} dev eth0")
        holds(lambda: not table_gateways(node) & set(GONE), RESOLVE_INTERVAL_S + 2, interval=0.25,
              what="the failed peers kept out")
        # meanwhile nra resolved them again (nothing else sends to them), and they failed again
        for address in GONE:
            wait_neigh(node, address, "FAILED", timeout=RESOLVE_INTERVAL_S)

        # r1 is back: the next resolution finds it, and it is back in the route
        router.ip("addr add 10.99.0.2/24 dev eth0")
        router.ip("-6 addr add fd99::2/64 dev eth0 nodad")
        started = time.monotonic()
        wait_for(lambda: table_gateways(node) == {*GONE, *KEPT}, RESOLVE_INTERVAL_S + 3, interval=0.1,
                 what="the router back in table 20")
        assert time.monotonic() - started <= RESOLVE_INTERVAL_S + 3
        log = daemon.log()
        assert "resolving silent peers again: 10.99.0.2, fd99::2" in log
        assert "neighbour 10.99.0.2: REACHABLE (silent -> answers)" in log
        assert "ERROR" not in log and "Traceback" not in log, log
        assert daemon.stop() == 0
    finally:
        daemon.kill()
