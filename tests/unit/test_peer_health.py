"""The one owner of the "peer does not answer" hysteresis: pure, no kernel."""

from __future__ import annotations

from ipaddress import ip_address

from nra.peer_health import Liveness, PeerHealth, Verdict, verdicts_from_states

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
    assert health.observe_neighbour_change(A, None) == "neighbour 10.99.0.2: entry removed (silent -> answers)"
    # an address that is not a watched peer never wakes anyone
    assert health.observe_neighbour_change(B, "FAILED") is None


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
