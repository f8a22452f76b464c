"""The connection-mark field of the `conntrack` return path: which bits are nra's, and what
each value in them means. Pure arithmetic, no I/O.

A field is a mask M (nra's bits of the packet and connection mark; every other bit belongs to
someone else and is never changed) and a value V inside it, the "external" mark: a
connection that came in from a BGP peer's link, from a sender that is not a known peer.
The bits of M outside V number the routers: router i (1..capacity) is V | i spread over
those bits. So every mark of nra's has V's bits set, and one routing rule `fwmark V/V`
catches any of them whose router's own table has no route (the router is unusable).

The default (0x2/0x3e: bits 1-5, 15 routers) is the region no datapath nra supports uses:
kube-proxy owns 0x4000/0x8000, CNI portmap 0x2000, Calico its whole mask (0xffff0000: single
bits from the bottom, then the rest for endpoint marks), Cilium 0x0f00 (plus identity bits
on packets carrying its 0x0f00 magic), AWS VPC CNI 0x80, Antrea and OpenShift SDN bit 0;
Flannel uses no mark. See the README ("Choosing the mark").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

U32 = 0xFFFFFFFF

DEFAULT_MARK_TEXT = "0x2/0x3e"
HEX, DECIMAL = re.compile("0[xX][0-9a-fA-F]+"), re.compile("[0-9]+")  # ASCII only


def _bits(mask: int) -> list[int]:
    return [1 << b for b in range(32) if mask >> b & 1]


@dataclass(frozen=True)
class MarkField:
    value: int  # the external mark; set in every mark of nra's
    mask: int  # nra's bits

    def __post_init__(self) -> None:
        if not 0 < self.mask <= U32:
            raise ValueError(f"mask {self.mask:#x} must be a non-zero 32-bit number")
        if not self.value:
            raise ValueError("the value must not be 0 (0 is every unmarked connection)")
        if self.value & ~self.mask:
            raise ValueError(f"value {self.value:#x} has bits outside mask {self.mask:#x}")
        if not self.index_bits:
            raise ValueError(f"mask {self.mask:#x} leaves no bit beside the value {self.value:#x} to number the routers")

    @property
    def index_bits(self) -> int:
        """The bits of the mask that number the routers."""
        return self.mask & ~self.value

    @property
    def examined(self) -> int:
        """The mark of a connection classify looked at and found not to be LoadBalancer
        traffic from a peer (the index bits without the value's): its later packets cost one
        look-up. Routing never matches it (the value's bits are clear)."""
        return self.index_bits

    @property
    def capacity(self) -> int:
        """How many routers the field can tell apart."""
        return (1 << bin(self.index_bits).count("1")) - 1

    def router(self, index: int) -> int:
        """The mark of router `index` (1..capacity): the value, and the index's bits spread
        over the index bits from the lowest up."""
        if not 1 <= index <= self.capacity:
            raise ValueError(f"router index {index} is outside 1..{self.capacity}")
        mark = self.value
        for i, bit in enumerate(_bits(self.index_bits)):
            if index >> i & 1:
                mark |= bit
        return mark

    def index_of(self, mark: int) -> int | None:
        """The router index a mark stands for; 0 for the external mark; None when the mark is
        not one of nra's (the value's bits not all set)."""
        if mark & self.value != self.value:
            return None
        return sum(1 << i for i, bit in enumerate(_bits(self.index_bits)) if mark & bit)

    def keep_others(self, mark: int) -> int:
        """The AND operand of `x & A | mark` that sets nra's bits of x to `mark` and keeps
        every other bit, in the form nftables lists it (mark's bits folded in)."""
        return (~self.mask | mark) & U32

    def set_bits(self, current: int, mark: int) -> int:
        """What `current & keep_others(mark) | mark` gives: nra's bits replaced, others kept."""
        return current & self.keep_others(mark) | mark

    def text(self) -> str:
        return f"{self.value:#x}/{self.mask:#x}"


def parse_number(text: str, what: str) -> int:
    """`0x14` or `20` -> a number of 32 bits. ASCII only: int(text, 0) would also take other
    scripts' digits, underscores, octal and binary, none of which a mark is written in."""
    text = text.strip()
    if HEX.fullmatch(text):
        number = int(text, 16)
    elif DECIMAL.fullmatch(text):
        number = int(text, 10)
    else:
        raise ValueError(f"{what} {text[:24]!r} is not a number such as 0x14 or 20 (ASCII digits)")
    if number > U32:
        raise ValueError(f"{what} {number:#x} is not a 32-bit number")
    return number


def parse_mark_field(text: str) -> MarkField:
    """`VALUE/MASK`, each hexadecimal (0x...) or decimal; ValueError with the reason."""
    value_text, sep, mask_text = text.strip().partition("/")
    if not sep:
        raise ValueError(f"expected VALUE/MASK such as {DEFAULT_MARK_TEXT}, got {text[:24]!r}")
    if not all(HEX.fullmatch(t.strip()) or DECIMAL.fullmatch(t.strip()) for t in (value_text, mask_text)):
        raise ValueError(f"expected VALUE/MASK such as {DEFAULT_MARK_TEXT}, got {text[:24]!r}")
    return MarkField(parse_number(value_text, "value"), parse_number(mask_text, "mask"))
