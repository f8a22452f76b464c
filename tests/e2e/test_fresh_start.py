"""A node fresh from start (issue 16 point 6): no neighbour entry for its routers, no BGP
traffic yet, stateful routers, a Service's pod behind kube-proxy's nftables DNAT. nra in
conntrack mode, MAX_RECONCILE_WAIT at its default: every flow works from the first connection,
because nra has the kernel resolve every peer before its first plan (and a peer's entry
becoming valid, or its link-layer address changing, reconciles at once).

Before: nra started with "link-layer address unknown" for every peer, the first connections
got the generic mark and some of their replies left by the other router, which dropped them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed import lab as topo
from tests.e2e.conftest import FIGURES, lab_up, nra_daemon
from tests.e2e.test_return_path import CONNTRACK, assert_symmetric

pytestmark = pytest.mark.e2e

FLOWS = {4: 64, 6: 32}
SERVICE = {4: topo.SVC4, 6: topo.SVC6}


@pytest.fixture(scope="module")
def lab():
    with lab_up("fresh", stateful_routers=True) as lab:
        lab.silence_node_bgp()
        yield lab


def test_every_flow_works_from_the_first_connection(lab):
    for r in topo.R.values():  # nothing resolved yet (a router's link-local address may be: not a peer)
        for address in (r.seg4, r.seg6):
            assert lab.ip("node", f"neigh show {address} dev eth0").strip() == "", address
    lab.clear_flows()
    with nra_daemon(lab, *CONNTRACK):  # returns once table 20 holds its routes
        with ThreadPoolExecutor(2) as pool:  # both families at once: the first connections nra sees
            opened = {f: pool.submit(lab.tcp, f, FLOWS[f], timeout=1, target=SERVICE[f]) for f in (4, 6)}
            results = {f: (future.result(), lab.flows(f)) for f, future in opened.items()}
    for family, (result, seen) in results.items():
        assert_symmetric(result, seen, FLOWS[family])
    FIGURES["fresh start, conntrack, stateful routers: flows that worked, IPv4 / IPv6"] = \
        " / ".join(f"{results[f][0]['ok']}/{FLOWS[f]}" for f in (4, 6))
    log = (lab.run_dir / "nra.log").read_text()
    assert "link-layer address unknown" not in log, log
