"""The rules pointing at the managed table: read them, add and delete them; and nra's own
rules (NRA_PROTOCOL) left pointing at tables the settings no longer name."""

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
    rule_owner,
)
from nra.kernel.model import NRA_PROTOCOL, KernelRule
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
        self._leftover: set[bytes] = set()  # bodies of nra's rules pointing elsewhere
        #: nra's rules pointing at tables not named by the settings, as of the last read
        self.leftovers: list[KernelRule] = []

    async def read(self) -> list[KernelRule]:
        known: dict[bytes, KernelRule] = {}
        previous, was_leftover = self._known, self._leftover
        leftover: set[bytes] = set()

        def keep(message: Message) -> KernelRule | None:
            if message.kind != RTM_NEWRULE:
                return None
            body = message.body_bytes()
            rule = previous.get(body)
            if rule is None:
                table, protocol = rule_owner(body)
                if table == self.table or table in self.also:
                    rule = decode_rule(body)
                elif protocol == NRA_PROTOCOL:
                    rule = decode_rule(body)
                    leftover.add(body)
                else:
                    rule = _FOREIGN
            elif body in was_leftover:
                leftover.add(body)
            known[body] = rule
            return None if rule is _FOREIGN else rule

        rules: list[KernelRule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            rules += await asyncio.to_thread(self.sock.dump, RTM_GETRULE, family, keep)
        self._known, self._leftover = known, leftover  # only what the kernel holds now
        self.leftovers = [r for r in rules if r.wire in leftover]
        return [r for r in rules if r.wire not in leftover]

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
