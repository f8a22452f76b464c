"""The one owner of the "peer does not answer" hysteresis: pure, no kernel."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from nra.plan.peer_health import Liveness, PeerHealth, Verdict, verdicts_from_states

A, B = ip_address("10.99.0.2"), ip_address("fd99::2")


def test_failed_is_silent_and_stays_silent_through_the_incomplete_retries():
    health = PeerHealth()
    health.observe_neighbours([A], {A: "FAILED"})
    for nud in ("INCOMPLETE", "FAILED", "INCOMPLETE"):
        health.observe_neighbours([A], {A: nud})
        assert health.verdict(A) == Verdict(Liveness.SILENT, "no-arp")
    health.observe_neighbours([A], {A: "REACHABLE"})
    assert health.verdict(A).liveness is Liveness.ANSWERS


def test_a_first_incomplete_is_unsure_and_no_entry_answers():
    health = PeerHealth()
    health.observe_neighbours([A, B], {A: "INCOMPLETE"})
    assert health.verdict(A).liveness is Liveness.UNSURE
    assert health.verdict(B) == Verdict(Liveness.ANSWERS)
    assert health.verdicts() == {A: Verdict(Liveness.UNSURE)}


def test_notifications_wake_only_when_the_liveness_changes():
    health = PeerHealth()
    health.observe_neighbours([A], {A: "REACHABLE"})
    assert health.observe_neighbour_change(A, "STALE") is None
    assert health.observe_neighbour_change(A, "FAILED") == "neighbour 10.99.0.2: FAILED (answers -> silent)"
    assert health.observe_neighbour_change(A, "INCOMPLETE") is None  # a retry of a silent peer
    assert health.observe_neighbour_change(A, None) is None  # collected by the kernel: still silent
    assert health.observe_neighbour_change(A, "REACHABLE") == "neighbour 10.99.0.2: REACHABLE (silent -> answers)"
    # an address that is not a watched peer never wakes anyone
    assert health.observe_neighbour_change(B, "FAILED") is None


def test_a_failed_entry_that_is_gone_stays_silent_until_the_entry_is_valid_again():
    # the kernel's neighbour GC drops an unreferenced FAILED entry: not an answer
    health = PeerHealth()
    health.observe_neighbours([A], {A: "REACHABLE"})
    health.observe_neighbours([A], {A: "FAILED"})
    health.observe_neighbours([A], {})
    assert health.verdict(A) == Verdict(Liveness.SILENT, "no-arp")
    assert health.observe_neighbour_change(A, None) is None
    health.observe_neighbours([A], {A: "INCOMPLETE"})  # resolved again, no answer yet
    assert health.verdict(A).liveness is Liveness.SILENT
    health.observe_neighbours([A], {})
    assert health.verdict(A).liveness is Liveness.SILENT
    health.observe_neighbours([A], {A: "REACHABLE"})
    assert health.verdict(A) == Verdict(Liveness.ANSWERS) and health.verdicts() == {}


@pytest.mark.parametrize("valid", ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"])
def test_a_gone_peer_answers_again_with_any_valid_entry(valid):
    health = PeerHealth()
    health.observe_neighbours([A], {A: "FAILED"})
    assert health.observe_neighbour_change(A, None) is None
    assert health.observe_neighbour_change(A, valid) == f"neighbour 10.99.0.2: {valid} (silent -> answers)"
    assert health.verdicts() == {}


def test_a_fresh_peer_without_an_entry_answers():
    health = PeerHealth()
    health.observe_neighbours([A, B], {})
    assert health.verdict(A) == health.verdict(B) == Verdict(Liveness.ANSWERS)
    assert health.verdicts() == {} and health.to_resolve() == {}
    # an entry removed before it ever failed (an UNSURE first resolution, a valid one): answers
    health.observe_neighbours([A, B], {A: "INCOMPLETE", B: "STALE"})
    assert health.observe_neighbour_change(A, None) == "neighbour 10.99.0.2: entry removed (unsure -> answers)"
    assert health.observe_neighbour_change(B, None) is None
    assert health.verdicts() == {}


def test_silent_peers_that_nothing_resolves_are_to_be_resolved():
    health = PeerHealth()
    health.observe_neighbours([A, B], {A: "FAILED", B: "FAILED"})
    assert health.to_resolve() == {A: "FAILED", B: "FAILED"}
    health.observe_neighbour_change(A, None)  # collected
    health.observe_neighbour_change(B, "INCOMPLETE")  # being resolved: nothing to do
    assert health.to_resolve() == {A: None}
    health.observe_neighbour_change(A, "REACHABLE")
    health.observe_neighbour_change(B, "FAILED")
    assert health.to_resolve() == {B: "FAILED"}
    # bgp-down alone is not an ARP/ND matter; B, no longer on-link, is forgotten
    health.observe_learned_routes([A], {A: 1})
    health.observe_learned_routes([A], {})
    health.observe_neighbours([A], {})
    assert health.verdict(A).reason == "bgp-down" and health.to_resolve() == {}


def test_peers_no_longer_on_link_are_forgotten():
    health = PeerHealth()
    health.observe_neighbours([A], {A: "FAILED"})
    health.observe_neighbours([], {})
    assert health.verdicts() == {}
    health.observe_neighbours([A], {A: "INCOMPLETE"})
    assert health.verdict(A).liveness is Liveness.UNSURE  # no history left


def test_verdicts_from_one_read_have_no_history():
    assert verdicts_from_states({A: "FAILED", B: "INCOMPLETE"}) == {
        A: Verdict(Liveness.SILENT, "no-arp"), B: Verdict(Liveness.UNSURE)}


# -- learned-route liveness (LEARNED_ROUTE_PROTOS) --------------------------------------------

def test_a_peer_never_seen_with_a_learned_route_is_not_judged_by_them():
    health = PeerHealth()
    for _ in range(3):
        health.observe_learned_routes([A, B], {})
    assert health.verdict(A) == Verdict(Liveness.ANSWERS) and health.verdicts() == {}


def test_learned_routes_gone_is_bgp_down_and_back_is_at_once():
    health = PeerHealth()
    health.observe_learned_routes([A, B], {A: 2, B: 1})
    assert health.verdicts() == {}
    health.observe_learned_routes([A, B], {B: 1})  # A's session dropped: the daemon withdrew its routes
    assert health.verdict(A) == Verdict(Liveness.SILENT, "bgp-down")
    assert health.verdicts() == {A: Verdict(Liveness.SILENT, "bgp-down")}
    health.observe_learned_routes([A, B], {B: 1})  # stays down while nothing is learned via it
    assert health.verdict(A).reason == "bgp-down"
    health.observe_learned_routes([A, B], {A: 1, B: 1})  # no hold-down: the daemon already debounced
    assert health.verdicts() == {}


def test_bgp_down_while_the_peer_still_answers_arp_leaves_it_out():
    health = PeerHealth()
    health.observe_neighbours([A], {A: "REACHABLE"})
    health.observe_learned_routes([A], {A: 1})
    health.observe_learned_routes([A], {})
    assert health.verdict(A) == Verdict(Liveness.SILENT, "bgp-down")


def test_a_failed_neighbour_is_reported_as_no_arp_even_when_bgp_is_down_too():
    health = PeerHealth()
    health.observe_learned_routes([A], {A: 1})
    health.observe_learned_routes([A], {})
    health.observe_neighbours([A], {A: "FAILED"})
    assert health.verdict(A) == Verdict(Liveness.SILENT, "no-arp")
    health.observe_neighbours([A], {A: "REACHABLE"})  # ARP answers again, BGP is still down
    assert health.verdict(A) == Verdict(Liveness.SILENT, "bgp-down")


def test_a_peer_removed_from_the_configuration_loses_its_learned_history():
    health = PeerHealth()
    health.observe_learned_routes([A], {A: 1})
    health.observe_learned_routes([], {})
    health.observe_learned_routes([A], {})
    assert health.verdict(A) == Verdict(Liveness.ANSWERS)  # back as a new peer: not judged


# -- FRR-K8s BGPSessionState (advisory, with a hold time both ways) ----------------------------

HOLD = 3.0


def test_a_session_down_for_the_hold_time_is_bgp_down_and_up_for_it_again_answers():
    health = PeerHealth()
    assert health.observe_session_states([A, B], {A: True, B: True}, 100.0, HOLD) is None
    assert health.observe_session_states([A, B], {A: False, B: True}, 101.0, HOLD) == 104.0
    assert health.verdicts() == {}  # not yet: a report may be a blip
    assert health.observe_session_states([A, B], {A: False, B: True}, 103.9, HOLD) == 104.0
    assert health.observe_session_states([A, B], {A: False, B: True}, 104.0, HOLD) is None
    assert health.verdicts() == {A: Verdict(Liveness.SILENT, "bgp-down")}
    # up again: kept out for the hold time too (hysteresis), then back
    assert health.observe_session_states([A, B], {A: True, B: True}, 110.0, HOLD) == 113.0
    assert health.verdict(A).reason == "bgp-down"
    assert health.observe_session_states([A, B], {A: True, B: True}, 113.0, HOLD) is None
    assert health.verdicts() == {}


def test_a_blip_shorter_than_the_hold_changes_nothing():
    health = PeerHealth()
    health.observe_session_states([A], {A: True}, 0.0, HOLD)
    health.observe_session_states([A], {A: False}, 1.0, HOLD)
    assert health.observe_session_states([A], {A: True}, 2.0, HOLD) is None
    health.observe_session_states([A], {A: True}, 10.0, HOLD)
    assert health.verdicts() == {}


def test_a_missing_session_state_is_unknown_not_down():
    health = PeerHealth()
    health.observe_session_states([A], {A: False}, 0.0, HOLD)
    health.observe_session_states([A], {A: False}, 5.0, HOLD)
    assert health.verdict(A).reason == "bgp-down"
    assert health.observe_session_states([A], {}, 6.0, HOLD) is None  # the object is gone
    assert health.verdicts() == {}
    health.observe_session_states([A], {A: False}, 7.0, HOLD)  # a new report starts a new hold
    assert health.verdicts() == {}


def test_a_graceful_restart_peer_reported_down_is_held_for_its_restart_time():
    health = PeerHealth()
    restart = {A: 120.0}
    health.observe_session_states([A, B], {A: True, B: True}, 0.0, HOLD, restart)
    # both reported down at 10 s: B after the hold, A (graceful restart) only after 120 s
    assert health.observe_session_states([A, B], {A: False, B: False}, 10.0, HOLD, restart) == 10.0 + HOLD
    assert health.observe_session_states([A, B], {A: False, B: False}, 10.0 + HOLD, HOLD, restart) == 130.0
    assert health.verdict(B).liveness is Liveness.SILENT and health.verdict(A).liveness is Liveness.ANSWERS
    assert health.observe_session_states([A, B], {A: False, B: False}, 129.9, HOLD, restart) == 130.0
    assert health.verdict(A).liveness is Liveness.ANSWERS
    assert health.observe_session_states([A, B], {A: False, B: False}, 130.0, HOLD, restart) is None
    assert health.verdict(A) == Verdict(Liveness.SILENT, "bgp-down")
    # back up: the ordinary hold, not the restart time
    assert health.observe_session_states([A, B], {A: True, B: False}, 131.0, HOLD, restart) == 131.0 + HOLD
    health.observe_session_states([A, B], {A: True, B: False}, 131.0 + HOLD, HOLD, restart)
    assert health.verdict(A).liveness is Liveness.ANSWERS


def test_a_graceful_restart_session_back_within_its_restart_time_never_drops_the_peer():
    health = PeerHealth()
    health.observe_session_states([A], {A: True}, 0.0, HOLD, {A: 120.0})
    health.observe_session_states([A], {A: False}, 1.0, HOLD, {A: 120.0})
    for t in (5.0, 60.0, 110.0):
        health.observe_session_states([A], {A: False}, t, HOLD, {A: 120.0})
        assert health.verdict(A).liveness is Liveness.ANSWERS
    assert health.observe_session_states([A], {A: True}, 111.0, HOLD, {A: 120.0}) is None
    assert health.verdict(A).liveness is Liveness.ANSWERS


MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def test_an_entry_becoming_valid_is_a_reason_to_reconcile_at_once():
    health = PeerHealth()
    health.observe_neighbours([A, B], {})  # a node fresh from start: no entries
    assert health.observe_neighbour_change(A, "REACHABLE", MAC1) == f"neighbour {A}: REACHABLE at {MAC1} (was no entry)"
    assert health.observe_neighbour_change(A, "STALE", MAC1) is None  # the usual ageing: nothing
    assert health.observe_neighbour_change(A, "DELAY", MAC1) is None
    # IPv6 too, through a first resolution
    assert health.observe_neighbour_change(B, "INCOMPLETE") is not None  # answers -> unsure
    assert health.observe_neighbour_change(B, "REACHABLE", MAC2) is not None  # unsure -> answers


def test_a_mac_change_is_a_reason_to_reconcile_at_once():
    health = PeerHealth()
    health.observe_neighbours([A], {A: "REACHABLE"}, {A: MAC1})
    assert health.observe_neighbour_change(A, "STALE", MAC1) is None
    assert health.observe_neighbour_change(A, "REACHABLE", MAC2.upper()) == \
        f"neighbour {A}: link-layer address {MAC1} -> {MAC2}"
    assert health.observe_neighbour_change(A, "REACHABLE", MAC2) is None
    # a read without link-layer addresses (rules mode) keeps the last one known
    health.observe_neighbours([A], {A: "STALE"})
    assert health.observe_neighbour_change(A, "REACHABLE", MAC1) is not None
