"""nf_tables netlink encoding (pure): interval elements byte for byte, the batch framing, and
notifications grouped into transactions."""

from __future__ import annotations

import struct

from nra.kernel import nft_netlink as nl
from nra.kernel.codec import attribute, messages


def test_an_ipv4_prefix_is_a_start_and_an_end_flagged_element():
    start, end = nl.interval_elements(0x0A500000, 0x0A50000F, 32)  # 10.80.0.0/28
    # LIST_ELEM(nested) > KEY(nested) > DATA_VALUE: 10.80.0.0
    assert start.hex() == "10000180" "0c000180" "08000100" "0a500000"
    # ... the address after the prefix, and FLAGS = INTERVAL_END (big endian)
    assert end.hex() == "18000180" "0c000180" "08000100" "0a500010" "08000300" "00000001"
    # the fast path gives what the general encoder gives
    assert [start, end] == [nl._element(bytes.fromhex("0a500000")),
                            nl._element(bytes.fromhex("0a500010"), nl.NFT_SET_ELEM_INTERVAL_END)]


def test_the_top_of_the_space_has_no_end_element():
    (only,) = nl.interval_elements(0xFFFFFF00, 0xFFFFFFFF, 32)
    assert nl.UDATA_INTERVAL_OPEN in only and bytes.fromhex("ffffff00") in only


def test_a_batch_is_begin_messages_end_and_acks_are_asked_for_the_messages():
    ops = nl.prefix_ops({4: [(1, 1)]}, {4: [(5, 9)]}, {4: "lb4", 6: "lb6"})
    assert [(op.set_name, op.delete, len(op.elements)) for op in ops] == [("lb4", True, 2), ("lb4", False, 3)]
    data, acked = nl.batch("nra", ops, 100)
    kinds = [m.kind for m in messages(data)]
    new, delete = (nl.NFNL_SUBSYS_NFTABLES << 8 | m for m in (nl.NFT_MSG_NEWSETELEM, nl.NFT_MSG_DELSETELEM))
    assert kinds == [nl.NFNL_MSG_BATCH_BEGIN, delete, new, nl.NFNL_MSG_BATCH_END]
    assert acked == [101, 102]


def _note(msg: int, attrs: bytes) -> bytes:
    return nl.message(nl.NFNL_SUBSYS_NFTABLES << 8 | msg, 0, 0, 1, attrs)


def test_notifications_become_transactions_with_their_tables_and_process():
    reader = nl.NotificationReader()
    data = (_note(nl.NFT_MSG_DELTABLE, attribute(1, b"nra\0")) + _note(nl.NFT_MSG_NEWSETELEM, attribute(1, b"other\0"))
            + _note(nl.NFT_MSG_NEWGEN, attribute(nl.NFTA_GEN_ID, struct.pack("!I", 7))
                    + attribute(nl.NFTA_GEN_PROC_PID, struct.pack("!I", 4242))))
    (tx,) = reader.feed(data)
    assert (tx.generation, tx.pid, tx.tables, tx.structure) == (7, 4242, frozenset({"nra", "other"}), {"nra"})
    assert tx.elements == (nl.ElementChange("other", "", False, ()),)
    assert tx.reshaped == {"nra"}  # (the table deleted: its elements are not known)
    assert reader.feed(_note(nl.NFT_MSG_NEWGEN, b"")) == [nl.Transaction(0, 0, frozenset(), flags={})]


def test_a_set_made_or_deleted_reshapes_its_table_a_rule_or_chain_does_not():
    reader = nl.NotificationReader()
    gen = _note(nl.NFT_MSG_NEWGEN, b"")
    (rules,) = reader.feed(_note(nl.NFT_MSG_NEWRULE, attribute(1, b"nra\0")) + _note(3, attribute(1, b"nra\0")) + gen)
    assert rules.structure == {"nra"} and not rules.reshaped
    for kind in (nl.NFT_MSG_NEWSET, nl.NFT_MSG_DELSET):
        (tx,) = reader.feed(_note(kind, attribute(1, b"nra\0")) + gen)
        assert tx.structure == tx.reshaped == {"nra"}


def test_element_notifications_are_decoded_to_their_keys_flags_and_verdicts():
    start, end = nl.interval_elements(0x0A500000, 0x0A50000F, 32)
    body = (attribute(nl.NFTA_SET_ELEM_LIST_TABLE, b"nra\0") + attribute(nl.NFTA_SET_ELEM_LIST_SET, b"lb4\0")
            + nl.nested(nl.NFTA_SET_ELEM_LIST_ELEMENTS, start, end, nl.goto_element(bytes.fromhex("020000000001"), "save_2")))
    (tx,) = nl.NotificationReader().feed(_note(nl.NFT_MSG_DELSETELEM, body) + _note(nl.NFT_MSG_NEWGEN, b""))
    (change,) = tx.elements
    assert (change.table, change.set_name, change.delete) == ("nra", "lb4", True)
    assert change.elements == (nl.Element(bytes.fromhex("0a500000")),
                               nl.Element(bytes.fromhex("0a500010"), nl.NFT_SET_ELEM_INTERVAL_END),
                               nl.Element(bytes.fromhex("020000000001"), 0, "save_2"))
    assert not tx.structure


def test_an_element_batch_can_carry_the_tables_flags_first():
    data, acked = nl.batch("nra", [nl.ElementOp("links", (nl.ifname_element("eth0"),))], 10, table_flags=0)
    found = list(messages(data))
    assert [m.kind for m in found] == [nl.NFNL_MSG_BATCH_BEGIN, nl.NFNL_SUBSYS_NFTABLES << 8 | nl.NFT_MSG_NEWTABLE,
                                      nl.NFNL_SUBSYS_NFTABLES << 8 | nl.NFT_MSG_NEWSETELEM, nl.NFNL_MSG_BATCH_END]
    assert acked == [11, 12]
    table = nl.message_attributes(found[1])
    assert table == {nl.NFTA_TABLE_NAME: b"nra\0", nl.NFTA_TABLE_FLAGS: bytes(4)}


def test_a_router_element_is_its_link_and_link_layer_address_and_a_goto():
    from nra.kernel import nft_table as nft

    key = nft.router_key_bytes(("eth1", "02:00:00:00:00:0A"))
    # ifname NUL-padded to 16 bytes, the MAC padded to a 32-bit register: the kernel's key of
    # `ifname . ether_addr`
    assert key == b"eth1" + bytes(12) + bytes.fromhex("02000000000a") + bytes(2)
    assert nft.router_key_of(key) == ("eth1", "02:00:00:00:00:0a")
    element = nl.goto_element(key, "save_3")
    assert key in element and b"save_3\0" in element
    assert struct.pack("!i", nl.NFT_GOTO) in element
    assert nl.goto_element(key, None) == nl._element(key)


def test_a_group_interval_is_a_start_with_its_goto_and_a_flagged_end():
    start, end = nl.interval_goto_elements(0x0A500000, 0x0A5000FF, 32, "save_4")
    assert bytes.fromhex("0a500000") in start and b"save_4\0" in start
    assert end == nl.interval_elements(0x0A500000, 0x0A5000FF, 32)[1]
    # a delete names the keys alone
    assert nl.interval_goto_elements(0x0A500000, 0x0A5000FF, 32, None)[0] == nl.interval_elements(0x0A500000, 0x0A5000FF, 32)[0]


def test_chain_rule_and_set_notifications_are_decoded_and_a_deleted_table_is_named():
    rule = (attribute(nl.NFTA_RULE_TABLE, b"nra\0") + attribute(nl.NFTA_RULE_CHAIN, b"save\0")
            + attribute(nl.NFTA_RULE_HANDLE, struct.pack("!Q", 42)))
    anonymous = (attribute(1, b"nra\0") + attribute(nl.NFTA_SET_NAME, b"__set0\0")
                 + attribute(nl.NFTA_SET_FLAGS, struct.pack("!I", nl.NFT_SET_ANONYMOUS)))
    gen = _note(nl.NFT_MSG_NEWGEN, b"")
    (tx,) = nl.NotificationReader().feed(_note(nl.NFT_MSG_NEWSET, anonymous) + _note(nl.NFT_MSG_NEWRULE, rule)
                                         + _note(nl.NFT_MSG_DELCHAIN, attribute(1, b"nra\0")
                                                 + attribute(nl.NFTA_CHAIN_NAME, b"extra\0"))
                                         + _note(18, attribute(1, b"nra\0")) + gen)  # NEWOBJ: not followed
    assert tx.objects == (nl.ObjectChange("set", False, "nra", "__set0", flags=nl.NFT_SET_ANONYMOUS),
                          nl.ObjectChange("rule", False, "nra", chain="save", handle=42),
                          nl.ObjectChange("chain", True, "nra", "extra"), None)
    assert not tx.deleted
    # a table deleted last is named; deleted then made again is not
    (gone, again) = nl.NotificationReader().feed(
        _note(nl.NFT_MSG_DELRULE, rule) + _note(nl.NFT_MSG_DELTABLE, attribute(1, b"nra\0")) + gen
        + _note(nl.NFT_MSG_DELTABLE, attribute(1, b"nra\0")) + _note(nl.NFT_MSG_NEWTABLE, attribute(1, b"nra\0")) + gen)
    assert gone.deleted == {"nra"} and not again.deleted


def test_a_batch_deletes_others_rules_by_handle_first():
    data, acked = nl.batch("nra", [], 5, delete_rules=[("save", 42)])
    found = list(messages(data))
    assert [m.kind for m in found] == [nl.NFNL_MSG_BATCH_BEGIN, nl.NFNL_SUBSYS_NFTABLES << 8 | nl.NFT_MSG_DELRULE,
                                      nl.NFNL_MSG_BATCH_END]
    assert acked == [6]
    assert nl.message_attributes(found[1]) == {nl.NFTA_RULE_TABLE: b"nra\0", nl.NFTA_RULE_CHAIN: b"save\0",
                                               nl.NFTA_RULE_HANDLE: struct.pack("!Q", 42)}


def test_a_transaction_of_too_many_elements_is_named_not_decoded():
    element = _note(nl.NFT_MSG_DELSETELEM, attribute(nl.NFTA_SET_ELEM_LIST_TABLE, b"nra\0")
                    + attribute(nl.NFTA_SET_ELEM_LIST_SET, b"lb4\0"))
    gen = _note(nl.NFT_MSG_NEWGEN, attribute(nl.NFTA_GEN_PROC_PID, struct.pack("!I", 7)))
    (tx,) = nl.NotificationReader().feed(element * (nl.FOLLOW_ELEMENTS_MAX + 1) + gen)
    assert tx.elements == () and tx.elements_skipped == nl.FOLLOW_ELEMENTS_MAX + 1 and nl.ANY_TABLE in tx.tables
    # nra's own transactions are never decoded, however many
    (own,) = nl.NotificationReader(ignore_pid=7).feed(element * 3 + gen)
    assert own.elements == () and not own.elements_skipped


def test_a_large_transaction_keeps_a_bounded_number_of_messages():
    """A rebuild's 200,000 element notifications: counted, the first FOLLOW_ELEMENTS_MAX + 1
    kept (none is decoded beyond that), whether they come in one read or many."""
    element = _note(nl.NFT_MSG_NEWSETELEM, attribute(nl.NFTA_SET_ELEM_LIST_TABLE, b"nra\0")
                    + attribute(nl.NFTA_SET_ELEM_LIST_SET, b"lb4\0"))
    gen = _note(nl.NFT_MSG_NEWGEN, attribute(nl.NFTA_GEN_PROC_PID, struct.pack("!I", 7)))
    total = nl.FOLLOW_ELEMENTS_MAX * 2 + 3
    reader = nl.NotificationReader()
    for chunk in (nl.FOLLOW_ELEMENTS_MAX - 1, nl.FOLLOW_ELEMENTS_MAX + 4):
        assert reader.feed(element * chunk) == []
    assert len(reader._elements) == nl.FOLLOW_ELEMENTS_MAX + 1
    (tx,) = reader.feed(gen)
    assert tx.elements == () and tx.elements_skipped == total and nl.ANY_TABLE in tx.tables
    assert reader._elements == [] and reader.feed(element + gen)[0].elements[0].table == "nra"


def test_interval_elements_pair_up_or_are_refused():
    """nft_read.pair_intervals: starts and ends (the address after an interval) in any order,
    nft's floor at 0 ignored, the last start open to the top; unpaired ones refused."""
    from nra.kernel.nft_read import pair_intervals
    assert pair_intervals([30, 10], [20, 0, 40], 32) == [(10, 19), (30, 39)]
    assert pair_intervals([10, 20], [20], 32) == [(10, 19), (20, (1 << 32) - 1)]  # adjacent, then open
    assert pair_intervals([], [0], 128) == []
    assert pair_intervals([10, 12], [20, 30], 32) is None  # two starts in a row
    assert pair_intervals([10], [5], 32) is None  # an end before its start
    assert pair_intervals([10], [20, 30], 32) is None
