"""FRR-K8s's BGPSessionState.status.peer in its label form (labelFormatForNeighbor), read
back as the peer it names; and the session states of the configured peers."""

import ipaddress

import pytest

from nra.config.metallb import parse_objects
from nra.plan.peer_health import GRACEFUL_RESTART_S, peer_sessions, restart_holds
from nra.sources.kube.session_states import session_peer, session_up
from tests.unit.test_metallb import bgp_peer


@pytest.mark.parametrize("written, peer", [
    # the exact strings FRR-K8s writes: IPv4 as is; IPv6 expanded (netip's StringExpanded)
    # with '-' for ':'; an unnumbered session's interface name as is
    ("192.168.10.2", "192.168.10.2"),
    ("2001-0db8-0000-0000-0000-0000-0000-0001", "2001:db8::1"),
    ("fe80-0000-0000-0000-0a00-27ff-fe00-0002", "fe80::a00:27ff:fe00:2"),
    ("fd00-0000-0000-0000-0000-0000-0000-0100", "fd00::100"),
    ("0000-0000-0000-0000-0000-ffff-0a00-0001", "::ffff:a00:1"),
    ("eth1", "%eth1"),
    ("swp1.100", "%swp1.100"),
    # what an older writer or a hand-made object may hold
    ("2001:db8::1", "2001:db8::1"),
    ("fe80::2%eth0", "fe80::2"),
])
def test_the_label_form_is_read_back(written, peer):
    assert session_peer(written) == peer


@pytest.mark.parametrize("written", ["", None, 7, "not an address", "a/b", "x" * 16, "10.0.0.1/32"])
def test_neither_an_address_nor_an_interface_is_no_peer(written):
    assert session_peer(written) is None


def state(peer, bgp="Established", vrf=""):
    return {"status": {"node": "n1", "peer": peer, "vrf": vrf, "bgpStatus": bgp, "bfdStatus": "N/A"}}


def test_ipv6_and_unnumbered_sessions_reach_their_peers():
    intent = parse_objects([bgp_peer("v6", "2001:db8::1"), bgp_peer("v4", "10.0.0.1"),
                            bgp_peer("p2p", interface="eth1", labels={"metallb-nra/address": "fe80::2"}),
                            bgp_peer("red", "10.0.0.9", vrf="red")], {}, 5).intent
    sessions = session_up([state("2001-0db8-0000-0000-0000-0000-0000-0001", "Active"), state("10.0.0.1"),
                           state("eth1", "Idle"), state("10.0.0.9", vrf="red")], "n1")
    ip = ipaddress.ip_address
    # the VRF peer is not in the multipath table's peers (not routed yet): not judged here
    assert peer_sessions(intent, sessions) == {ip("2001:db8::1"): False, ip("10.0.0.1"): True, ip("fe80::2"): False}


def test_graceful_restart_peers_have_the_restart_time_as_hold():
    intent = parse_objects([bgp_peer("gr", "10.0.0.1", enableGracefulRestart=True), bgp_peer("no", "10.0.0.2")],
                           {}, 5).intent
    assert restart_holds(intent) == {ipaddress.ip_address("10.0.0.1"): GRACEFUL_RESTART_S}
