"""Learned-route liveness with real daemons: BIRD 2 with BGP and BFD in a router and node
namespace pair (the failover benchmark's topology), the real nra CLI. A router whose BGP
daemon dies while it still forwards and answers ARP is left out with LEARNED_ROUTE_PROTOS
and kept without: only the BGP signal can tell."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
if shutil.which("bird") is None:
    pytest.skip("BIRD 2 (Debian bird2) is not installed", allow_module_level=True)
_spec = importlib.util.spec_from_file_location("failover_mechanisms", REPO / "benchmarks" / "failover_mechanisms.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["failover_mechanisms"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


@pytest.mark.parametrize("flags,left_out", [(("--learned-route-protos", "bird"), True), ((), False)])
def test_a_router_whose_bgp_daemon_dies_is_left_out_only_with_learned_routes(tmp_path, flags, left_out):
    with bench.Topology(f"nra-lrb-{int(time.time() * 1000) % 10**8}", tmp_path / "run") as topo:
        topo.start_nra(*flags)
        topo.start_birds()
        time.sleep(1.0)  # nra has seen the learned routes (an event each)
        for family in (4, 6):
            assert bench.seg(family, 1) + " " in topo.ip("node", f"-{family} route show table 20")
        cut = time.time()
        topo.cut("r1", "daemon")  # its link stays up: it still answers ARP/ND and forwards
        out = topo.out_of_table("r1", cut, timeout=5.0 if left_out else 3.0)
        if left_out:
            assert None not in out.values(), out
        else:
            assert out == {4: None, 6: None}
        assert bench.seg(4, 2) + " " in topo.ip("node", "-4 route show table 20")
