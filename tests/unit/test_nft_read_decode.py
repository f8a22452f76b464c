"""nft_read's element decoder (pure): a dump message whose elements are all in nra's
interval layouts is read by one regex pass, which gives what the element loop gives,
whatever the message; and the read's merge of intervals."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nra.kernel import nft_netlink as nl
from nra.kernel.codec import Message, messages


def _element_message(elements: list[bytes], set_name: str = "lb4", table: str = "nra") -> Message:
    from nra.kernel.codec import NLA_HDR, attribute
    from nra.kernel.nft_read import NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE

    body = (attribute(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + attribute(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + NLA_HDR.pack(4 + sum(map(len, elements)), NFTA_SET_ELEM_LIST_ELEMENTS) + b"".join(elements))
    data = nl.message(nl._nft_type(nl.NFT_MSG_NEWSETELEM), 0, 1, nl.NFPROTO_INET, body)
    (msg,) = messages(data)
    return msg


def _elements(kind: str, key: int, width: int) -> bytes:
    """One element as the kernel dumps it: a start or an end in nra's layouts, or a start
    that carries user data or an end with other flags (read by the attribute walk)."""
    from nra.kernel.codec import NLA_HDR, attribute
    from nra.kernel.nft_read import _LAYOUTS

    raw = key.to_bytes(width, "big")
    start, end, end_flags = _LAYOUTS[width]
    if kind == "start":
        return start + raw
    if kind == "end":
        return end + raw + end_flags
    value = attribute(nl.NFTA_SET_ELEM_KEY, attribute(nl.NFTA_DATA_VALUE, raw))
    extra = attribute(nl.NFTA_SET_ELEM_USERDATA, b"\x01\x02\x03") if kind == "udata" else \
        attribute(nl.NFTA_SET_ELEM_FLAGS, nl.BE32.pack(nl.NFT_SET_ELEM_INTERVAL_END | 2))
    inner = value + extra
    return NLA_HDR.pack(4 + len(inner), nl.NFTA_LIST_ELEM) + inner


def _decoded(msg, width, tiled, set_name="lb4"):
    from nra.kernel.nft_read import element_decoder

    out = element_decoder(set_name, width, tiled=tiled)(msg)
    return None if out is None else (out.starts, out.ends, out.chains, out.others)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.sampled_from([4, 16]), st.lists(st.tuples(st.sampled_from(["start", "end", "start", "end", "udata", "flags"]),
                                                    st.integers(0, 2**32 - 1)), max_size=40),
       st.sampled_from(["", "tail", "short"]))
def test_the_regex_pass_reads_elements_as_the_loop_does(width, elements, odd):
    body = [_elements(kind, key, width) for kind, key in elements]
    if odd == "tail":
        body.append(b"\x08\x00\x01\x00\x00\x00\x00\x00")  # an attribute that is no element of nra's layouts
    elif odd == "short":
        body.append(b"\x00\x00")
    msg = _element_message(body)
    got, want = _decoded(msg, width, True), _decoded(msg, width, False)
    assert got == want
    if not odd and all(kind in ("start", "end") for kind, _ in elements):
        assert got[0] == [key for kind, key in elements if kind == "start"]
        assert got[1] == [key for kind, key in elements if kind == "end"]


def test_the_regex_pass_reads_only_nra_sets_elements():
    msg = _element_message([_elements("start", 10, 4)], set_name="other")
    assert _decoded(msg, 4, True) is None is _decoded(msg, 4, False)
    msg = _element_message([_elements("start", 10, 4), _elements("end", 20, 4)])
    assert _decoded(msg, 4, True) == ([10], [20], [], [])


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5)), max_size=12))
@example([(0, 2), (3, 2)])  # touching: one interval
@example([(0, 2), (4, 2), (10, 0)])  # apart
@example([(0, 5), (3, 1)])  # inside another
def test_merged_keeps_the_tuples_of_intervals_that_do_not_touch(pairs):
    """nft_read._merged: the same frozenset of the same tuples when no interval touches or
    overlaps the next, else nft_table.merge's."""
    from nra.kernel import nft_table as nft
    from nra.kernel.nft_read import _merged

    intervals = tuple(sorted((low, low + size) for low, size in pairs))
    apart = all(high + 1 < low for (_, high), (low, _) in zip(intervals, intervals[1:]))
    got = _merged(intervals)
    assert got == (frozenset(intervals) if apart else nft.merge(intervals))
    if apart:
        assert {id(i) for i in got} == {id(i) for i in intervals}
