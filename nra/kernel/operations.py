"""The changes the planner asks of the kernel, each rendered as the `ip` command it amounts
to (for logs and `nra plan`), and what came of applying them (ApplyReport)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Union

from nra.config.intent import IPAddress, IPNetwork
from nra.kernel.marks import MarkField
from nra.kernel.model import DEFAULT_METRIC, FULL_MASK, KernelRoute, KernelRule, Nexthop
from nra.kernel.nft_table import NftChange, NftTable

FAMILY_FLAG = {4: "-4", 6: "-6"}


def _dst_text(dst: IPNetwork) -> str:
    return "default" if dst.prefixlen == 0 else str(dst)


def _mark_text(fwmark: int | None, fwmask: int | None) -> str:
    if fwmark is None:
        return ""
    if fwmask is None or fwmask == FULL_MASK:
        return f" fwmark {fwmark:#x}"
    return f" fwmark {fwmark:#x}/{fwmask:#x}"


def _nexthop_text(nh: Nexthop, family: int) -> str:
    """One hop as `ip route` takes it: `via inet6 fe80::1` for an IPv6 hop of an IPv4 route."""
    via = f"inet6 {nh.gateway}" if nh.gateway is not None and nh.gateway.version != family else f"{nh.gateway}"
    return f" nexthop via {via} weight {nh.weight}"


def _route_selector(r: KernelRoute) -> str:
    """What names exactly this route to `ip route del`."""
    text = f" {r.type}" if r.type != "unicast" else ""
    text += f" {_dst_text(r.dst)} table {r.table}"
    if r.tos:
        text += f" tos {r.tos:#x}"
    if r.metric != DEFAULT_METRIC[r.family]:
        text += f" metric {r.metric}"
    return text


# (slots: a first start in rules mode plans 100,000 AddRules; without slots each had a dict)
@dataclass(frozen=True, slots=True)
class _Operation:
    #: why the planner wants it (logs only: not part of what the operation is)
    reason: str = field(default="", compare=False, kw_only=True)
    kind: ClassVar[str]

    def command(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()


@dataclass(frozen=True, slots=True)
class ReplaceRoute(_Operation):
    family: int
    dst: IPNetwork
    table: int
    metric: int
    nexthops: tuple[Nexthop, ...]
    kind: ClassVar[str] = "replace_route"

    def command(self) -> str:
        text = f"ip {FAMILY_FLAG[self.family]} route replace {_dst_text(self.dst)} table {self.table}"
        if self.metric != DEFAULT_METRIC[self.family]:
            text += f" metric {self.metric}"
        return text + "".join(_nexthop_text(nh, self.family) for nh in self.nexthops)

    def sort_key(self) -> tuple:
        return (self.family, self.dst, self.metric, self.table)


@dataclass(frozen=True, slots=True)
class DeleteRoute(_Operation):
    route: KernelRoute
    kind: ClassVar[str] = "delete_route"

    def command(self) -> str:
        return f"ip {FAMILY_FLAG[self.route.family]} route del{_route_selector(self.route)}"

    def sort_key(self) -> tuple:
        r = self.route
        return (r.family, r.dst, r.metric, r.tos, r.type, r.table)


@dataclass(frozen=True, slots=True)
class AddRule(_Operation):
    family: int
    src: IPNetwork | None
    priority: int
    table: int
    fwmark: int | None = None  # None: no fwmark selector
    fwmask: int | None = None  # None: no mask given (the kernel lists 0xffffffff)
    kind: ClassVar[str] = "add_rule"

    def command(self) -> str:
        src = str(self.src) if self.src is not None else "all"
        return (f"ip {FAMILY_FLAG[self.family]} rule add from {src}"
                f"{_mark_text(self.fwmark, self.fwmask)} lookup {self.table} priority {self.priority}")

    def sort_key(self) -> tuple:
        return (self.family, self.priority, self.src is not None, self.src, self.table, self.fwmark or 0)


@dataclass(frozen=True, slots=True)
class DeleteRule(_Operation):
    rule: KernelRule
    kind: ClassVar[str] = "delete_rule"

    def command(self) -> str:
        r = self.rule
        src = str(r.src) if r.src is not None else "all"
        extra = "".join(f" {e}" for e in r.extra)
        return (f"ip {FAMILY_FLAG[r.family]} rule del priority {r.priority} from {src}"
                f"{_mark_text(r.fwmark, r.fwmask)}{extra} lookup {r.table}")

    def sort_key(self) -> tuple:
        r = self.rule
        return (r.family, r.priority, r.src is not None, r.src, r.fwmark or 0, r.fwmask or 0, r.extra, r.table)


@dataclass(frozen=True, eq=False)
class ApplyNft:
    """The operation: one planned change of nra's nft table (what `current` was read as,
    what `desired` is), applied by NftState."""

    change: NftChange
    desired: NftTable | None
    marks: MarkField | None
    current: NftTable | None = field(compare=False)
    reason: str = field(default="", compare=False, kw_only=True)
    kind: ClassVar[str] = "nft"

    @cached_property
    def _lines(self) -> tuple[str, ...]:
        # described once: the operation's equality, hash, log line and report all ask
        return tuple(self.change.describe())

    def command(self) -> str:
        return "; ".join(self._lines)

    # the same change is the same operation (nra.daemon.contention counts repeats of an operation)
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApplyNft) and other.command() == self.command()

    def __hash__(self) -> int:
        return hash(("nft", self.command()))

    def __str__(self) -> str:
        return "\n".join(self._lines)

    def sort_key(self) -> tuple:
        return ()


Operation = Union[ApplyNft, ReplaceRoute, DeleteRoute, AddRule, DeleteRule]


@dataclass
class ApplyReport:
    """What came of applying operations: each one applied or failed (with the kernel's
    error text), in order."""

    applied: list[Operation] = field(default_factory=list)
    failed: list[tuple[Operation, str]] = field(default_factory=list)
    #: route replaces that went in without some nexthops the kernel refused
    dropped: list[tuple[Operation, tuple[IPAddress, ...]]] = field(default_factory=list)
