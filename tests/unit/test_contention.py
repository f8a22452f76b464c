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


def test_the_window_keeps_no_operation_alive_and_counts_equal_ones_as_one():
    # an nft change holds the desired and current tables (100,000 intervals at scale): the
    # detector remembers its command, not the operation, so nothing of it outlives its reconcile
    import gc
    import ipaddress
    import weakref

    from nra.kernel import nft_table as nft
    from nra.kernel.marks import MarkField
    from nra.kernel.operations import ApplyNft

    field = MarkField(0x2, 0x3E)
    key = ("eth0", b"\x02\x00\x00\x00\x00\x02")

    def change() -> ApplyNft:
        want = nft.desired_table([ipaddress.ip_network("10.80.0.0/28")], ["eth0"], {key: 1}, field)
        return ApplyNft(nft.diff(want, None), want, field, None)

    d = ContentionDetector(window_s=30, repairs=3, quiet_s=60)
    op = change()
    gone = weakref.ref(op.desired)
    assert d.reconciled(0.0, False, [op]) is None
    del op
    gc.collect()
    assert gone() is None, "the detector kept the nft change's table alive"
    # each reconcile's operation is a new object: equal ones are still the same change
    assert d.reconciled(1.0, True, [change()]) is None
    assert d.reconciled(2.0, True, [change()]) is None
    assert d.reconciled(3.0, True, [change()]) == "started"
    assert "(last: nft -f <table inet nra" in d.fight
