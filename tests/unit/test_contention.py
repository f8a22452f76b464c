"""Recognising two writers fighting over the table: pure, with a hand-driven clock."""

from __future__ import annotations

from nra.daemon.contention import ContentionDetector

OURS, OTHER = "ip -4 route replace default table 20 nexthop via 10.99.0.2 weight 1", "ip -4 rule add ..."


def test_repeated_repairs_of_our_own_changes_are_a_fight_and_quiet_ends_it():
    d = ContentionDetector(window_s=30, repairs=3, quiet_s=60)
    assert d.reconciled(0.0, False, [OURS]) is None  # our change (configuration)
    assert d.reconciled(1.0, True, [OURS]) is None  # undone by someone, repaired: 1
    assert d.reconciled(2.0, True, [OURS]) is None  # 2
    assert d.reconciled(3.0, True, [OURS]) == "started"
    assert d.fight.startswith("3 of nra's own changes undone and repaired within 30 s (last: ip -4 route")
    assert d.reconciled(4.0, True, [OURS]) is None  # still fighting: said once
    assert d.reconciled(30.0, False, []) is None
    assert d.reconciled(65.0, False, []) == "ended" and d.fight == ""


def test_ordinary_drift_is_not_a_fight():
    d = ContentionDetector(window_s=30, repairs=3, quiet_s=60)
    # someone deletes a rule we made long ago, now and then: repaired, never a fight
    d.reconciled(0.0, False, [OTHER])
    for t in (100.0, 200.0, 300.0, 400.0):
        assert d.reconciled(t, True, [OTHER]) is None
    # repairs of things we did not just do are not undos of ours
    d2 = ContentionDetector(window_s=30, repairs=3, quiet_s=60)
    assert all(d2.reconciled(t, True, [f"op {t}"]) is None for t in (1.0, 2.0, 3.0, 4.0))
    # and our own changes without someone else's change in between are no repairs
    d3 = ContentionDetector(window_s=30, repairs=3, quiet_s=60)
    assert all(d3.reconciled(t, False, [OURS]) is None for t in (1.0, 2.0, 3.0, 4.0))
