"""The changes the planner asks of the kernel, each rendered as the `ip` command it amounts
to (for logs and `nra plan`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from nra.intent import IPNetwork
from nra.kernel.model import DEFAULT_METRIC, FULL_MASK, KernelRoute, KernelRule, Nexthop

FAMILY_FLAG = {4: "-4", 6: "-6"}


def _dst_text(dst: IPNetwork) -> str:
    return "default" if dst.prefixlen == 0 else str(dst)


def _mark_text(fwmark: int | None, fwmask: int | None) -> str:
    if fwmark is None:
        return ""
    if fwmask is None or fwmask == FULL_MASK:
        return f" fwmark {fwmark:#x}"
    return f" fwmark {fwmark:#x}/{fwmask:#x}"


def _nexthop_text(nh: Nexthop) -> str:
    return f" nexthop via {nh.gateway} weight {nh.weight}"


class _Described:
    reason: str

    def command(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.command()}  # {self.reason}" if self.reason else self.command()


@dataclass(frozen=True)
class ReplaceRoute(_Described):
    family: int
    dst: IPNetwork
    table: int
    metric: int
    nexthops: tuple[Nexthop, ...]
    reason: str = field(default="", compare=False)
    kind: str = field(default="replace_route", init=False)

    def command(self) -> str:
        text = f"ip {FAMILY_FLAG[self.family]} route replace {_dst_text(self.dst)} table {self.table}"
        if self.metric != DEFAULT_METRIC[self.family]:
            text += f" metric {self.metric}"
        return text + "".join(_nexthop_text(nh) for nh in self.nexthops)

    def sort_key(self) -> tuple:
        return (self.family, self.dst, self.metric)


@dataclass(frozen=True)
class DeleteRoute(_Described):
    route: KernelRoute
    reason: str = field(default="", compare=False)
    kind: str = field(default="delete_route", init=False)

    def command(self) -> str:
        r = self.route
        text = f"ip {FAMILY_FLAG[r.family]} route del"
        if r.type != "unicast":
            text += f" {r.type}"
        text += f" {_dst_text(r.dst)} table {r.table}"
        if r.tos:
            text += f" tos {r.tos:#x}"
        if r.metric != DEFAULT_METRIC[r.family]:
            text += f" metric {r.metric}"
        return text

    def sort_key(self) -> tuple:
        r = self.route
        return (r.family, r.dst, r.metric, r.tos, r.type)


@dataclass(frozen=True)
class AddRule(_Described):
    family: int
    src: IPNetwork | None
    priority: int
    table: int
    fwmark: int | None = None  # None: no fwmark selector
    fwmask: int | None = None  # None: no mask given (the kernel lists 0xffffffff)
    reason: str = field(default="", compare=False)
    kind: str = field(default="add_rule", init=False)

    def command(self) -> str:
        src = str(self.src) if self.src is not None else "all"
        return (f"ip {FAMILY_FLAG[self.family]} rule add from {src}"
                f"{_mark_text(self.fwmark, self.fwmask)} lookup {self.table} priority {self.priority}")

    def sort_key(self) -> tuple:
        return (self.family, self.priority, self.src is not None, self.src)


@dataclass(frozen=True)
class DeleteRule(_Described):
    rule: KernelRule
    reason: str = field(default="", compare=False)
    kind: str = field(default="delete_rule", init=False)

    def command(self) -> str:
        r = self.rule
        src = str(r.src) if r.src is not None else "all"
        extra = "".join(f" {e}" for e in r.extra)
        return (f"ip {FAMILY_FLAG[r.family]} rule del priority {r.priority} from {src}"
                f"{_mark_text(r.fwmark, r.fwmask)}{extra} lookup {r.table}")

    def sort_key(self) -> tuple:
        r = self.rule
        return (r.family, r.priority, r.src is not None, r.src, r.fwmark or 0, r.fwmask or 0, r.extra)


Operation = Union[ReplaceRoute, DeleteRoute, AddRule, DeleteRule]
