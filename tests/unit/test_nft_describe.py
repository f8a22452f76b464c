"""How an nft change is described (nra.kernel.nft_table.NftChange.describe, ApplyNft): the
first four elements in address order and how many more, whatever the order given; an
ApplyNft's command, text and equality all from one description."""

from __future__ import annotations

import random

from nra.kernel import nft_table
from nra.kernel.nft_table import NftChange, interval_text
from nra.kernel.operations import ApplyNft


def intervals(n: int) -> list[tuple[int, int]]:
    base = 0x64400000
    return [(base + 8 * i, base + 8 * i + 3) for i in range(n)]


def test_the_first_four_in_order_and_how_many_more():
    elements = intervals(1000)
    shuffled = elements[:]
    random.Random(7).shuffle(shuffled)
    text = nft_table._elements_text(4, tuple(shuffled))
    assert text == ", ".join(interval_text(4, e) for e in elements[:4]) + ", ... (996 more)"
    assert nft_table._elements_text(4, tuple(shuffled[:3])) == ", ".join(
        interval_text(4, e) for e in sorted(shuffled[:3]))
    groups = [(low, high, i % 3) for i, (low, high) in enumerate(shuffled[:6])]
    assert nft_table._group_elements_text(4, frozenset(groups)).endswith(", ... (2 more)")


def test_an_operation_is_described_once(monkeypatch):
    change = NftChange(reason="elements differ", add_prefixes={4: tuple(intervals(10))})
    op = ApplyNft(change, None, None, None)
    calls = []
    real = NftChange.describe
    monkeypatch.setattr(NftChange, "describe", lambda self: calls.append(1) or real(self))
    first = op.command()
    assert str(op) == "\n".join(first.split("; ")) and hash(op) == hash(op) and op == op
    assert len(calls) == 1
    assert "(6 more)" in first
