"""Learned-route liveness with FRR as the node's BGP daemon (issue 17): FRR's zebra installs
what it learns through nexthop objects (`nhid`); at the namespace's nexthop_compat_mode 1 the
routes still list their gateways, at 0 they name only the object. Real zebra and bgpd in the
node's namespace, BIRD in the routers', the failover bench's topology (one router's BGP
daemon killed, its link left up: only the learned routes can tell)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("failover_mechanisms", REPO / "benchmarks" / "failover_mechanisms.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["failover_mechanisms"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

MAIN = 254  # zebra installs in the main table


@pytest.mark.parametrize("compat", [1, 0])
def test_a_router_whose_session_ends_is_left_out_through_frrs_nexthop_objects(tmp_path, compat):
    with bench.Topology(f"nra-frr-{int(time.time() * 1000) % 10**8}", tmp_path / "run") as topo:
        topo.sysctl("node", {"net.ipv4.nexthop_compat_mode": compat})
        topo.start_frr_node()
        topo.start_birds(roles=tuple(bench.ROUTERS), node_table=MAIN)
        installed = topo.ip("node", f"route show {bench.learned(4, 1)}")
        assert "nhid" in installed and ("via" in installed) == bool(compat), installed
        topo.start_nra("--learned-route-protos", "bgp")
        for family in (4, 6):
            table = topo.ip("node", f"-{family} route show table 20")
            assert all(bench.seg(family, i) + " " in table for i in bench.ROUTERS.values()), table
        cut = time.time()
        topo.cut("r1", "daemon")  # its link stays up: it still answers ARP/ND and forwards
        out = topo.out_of_table("r1", cut, timeout=8.0)  # FRR's hold time is 3 s
        assert None not in out.values(), (out, (tmp_path / "run" / "nra.log").read_text()[-2000:])
        assert bench.seg(4, 2) + " " in topo.ip("node", "-4 route show table 20")
