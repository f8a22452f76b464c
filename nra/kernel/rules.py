"""The rules pointing at the managed table: read them, add and delete them."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Container, Sequence

from nra.kernel.codec import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_DELRULE,
    RTM_GETRULE,
    RTM_NEWRULE,
    Message,
    decode_rule,
    encode_rule,
    rule_table,
)
from nra.kernel.model import KernelRule
from nra.kernel.operations import AddRule
from nra.kernel.socket import NetlinkSocket

# Stands, in the cache of decoded rules, for a rule that points at another table.
_FOREIGN = KernelRule(family=0, src=None, priority=0, table=0)


class Rules:
    """Owns the rules of one table. Reads are cached by the kernel's bytes: a rule whose
    message did not change since the last read is not decoded again, so a steady read of
    10,000 rules is a dump and dictionary look-ups."""

    def __init__(self, sock: NetlinkSocket, table: int, also: Container[int] = ()):
        self.sock = sock
        self.table = table
        self.also = also  # more tables whose rules are ours (the conntrack return path's)
        self._known: dict[bytes, KernelRule] = {}

    async def read(self) -> list[KernelRule]:
        known: dict[bytes, KernelRule] = {}
        previous = self._known

        def keep(message: Message) -> KernelRule | None:
            if message.kind != RTM_NEWRULE:
                return None
            body = message.body_bytes()
            rule = previous.get(body)
            if rule is None:
                table = rule_table(body)
                rule = decode_rule(body) if table == self.table or table in self.also else _FOREIGN
            known[body] = rule
            return None if rule is _FOREIGN else rule

        rules: list[KernelRule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            rules += await asyncio.to_thread(self.sock.dump, RTM_GETRULE, family, keep)
        self._known = known  # only what the kernel holds now: the cache never outgrows it
        return rules

    async def add(self, ops: Sequence[AddRule]) -> list[int]:
        """errno of each add; EEXIST counts as done (the kernel already has it)."""
        bodies = [encode_rule(op.family, op.src, op.priority, op.table, op.fwmark, op.fwmask) for op in ops]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_NEWRULE,
                                        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, bodies)
        return [0 if code == errno.EEXIST else code for code in codes]

    async def delete(self, rules: Sequence[KernelRule]) -> list[int]:
        """errno of each delete, of exactly the listed rule (its own bytes are sent back);
        ENOENT counts as done (already gone)."""
        bodies = [rule.wire or encode_rule(rule.family, rule.src, rule.priority, rule.table,
                                           rule.fwmark, rule.fwmask) for rule in rules]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, bodies)
        return [0 if code == errno.ENOENT else code for code in codes]
