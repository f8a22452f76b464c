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
    message did not change since the last read is not decoded again, so a full read of
    10,000 rules is a dump and dictionary look-ups. Between full reads, `kept` holds them as
    the kernel's notifications change them (see KeptRules)."""

    def __init__(self, sock: NetlinkSocket, table: int, also: Container[int] = ()):
        self.sock = sock
        self.table = table
        self.also = also  # more tables whose rules are ours (the conntrack return path's)
        self._known: dict[bytes, KernelRule] = {}
        self._leftover: set[bytes] = set()  # bodies of nra's rules pointing elsewhere
        #: nra's rules pointing at tables not named by the settings, as of the last read
        self.leftovers: list[KernelRule] = []
        self.kept = KeptRules(self)
        #: how many times all rules were dumped (each read, unless `kept` could answer)
        self.full_reads = 0

    def classify(self, body: bytes) -> tuple[KernelRule, bool] | None:
        """(the rule, whether it is a leftover: nra's, pointing at a table the settings no
        longer name) of one rule message body; None for anyone else's rule elsewhere."""
        rule = self._known.get(body)
        if rule is not None:
            return None if rule is _FOREIGN else (rule, body in self._leftover)
        table, protocol = rule_owner(body)
        if table != self.table and table not in self.also and protocol != NRA_PROTOCOL:
            return None
        rule = self._known[body] = decode_rule(body)  # (until the next full read, or its delete)
        leftover = table != self.table and table not in self.also
        if leftover:
            self._leftover.add(body)
        return rule, leftover

    def forget_decoded(self, body: bytes) -> None:
        self._known.pop(body, None)
        self._leftover.discard(body)

    async def read(self) -> list[KernelRule]:
        """Every rule of the table (and `also`): a full dump; `leftovers` too."""
        known: dict[bytes, KernelRule] = {}
        previous, was_leftover = self._known, self._leftover
        leftover: set[bytes] = set()
        leftovers: list[KernelRule] = []

        def keep(message: Message) -> KernelRule | None:
            if message.kind != RTM_NEWRULE:
                return None
            body = message.body_bytes()
            rule = previous.get(body)
            if rule is not None and rule is not _FOREIGN:
                body = rule.wire  # (the same bytes: one copy kept, 100,000 at scale)
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
            if rule is _FOREIGN:
                return None
            if body in leftover:  # (collected here: no second pass over 10,000 rules)
                leftovers.append(rule)
                return None
            return rule

        rules: list[KernelRule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            rules += await asyncio.to_thread(self.sock.dump, RTM_GETRULE, family, keep)
        self._known, self._leftover = known, leftover  # only what the kernel holds now
        self.leftovers = leftovers
        self.full_reads += 1
        return rules

    async def current(self) -> tuple[tuple[KernelRule, ...], tuple[KernelRule, ...]]:
        """(the rules, the leftovers): from `kept` when it is in step with the kernel, else
        a full read (which puts `kept` in step again, if the notifications are listened to)."""
        if self.kept.valid:
            return self.kept.snapshot()
        started = self.kept.full_read_started()
        rules = await self.read()
        self.kept.full_read_done(started, rules, self.leftovers)
        return tuple(rules), tuple(self.leftovers)

    async def add(self, ops: Sequence[AddRule]) -> list[int]:
        """errno of each add; EEXIST counts as done (the kernel already has it)."""
        bodies = [encode_rule(op.family, op.src, op.priority, op.table, op.fwmark, op.fwmask) for op in ops]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_NEWRULE,
                                        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, bodies)
        if errno.EEXIST in codes:
            self.kept.forget("a rule it lacked was already there")
        return [0 if code == errno.EEXIST else code for code in codes]

    async def delete(self, rules: Sequence[KernelRule]) -> list[int]:
        """errno of each delete, of exactly the listed rule (its own bytes are sent back);
        ENOENT counts as done (already gone)."""
        bodies = [rule.wire or encode_rule(rule.family, rule.src, rule.priority, rule.table,
                                           rule.fwmark, rule.fwmask) for rule in rules]
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, bodies)
        if errno.ENOENT in codes:
            self.kept.forget("a rule it held was already gone")
        return [0 if code == errno.ENOENT else code for code in codes]


class KeptRules:
    """The rules of Rules (and its leftovers) kept between full reads, changed by the kernel's
    own notifications (RTM_NEWRULE/RTM_DELRULE, fed by nra.kernel.events on the loop
    thread), so that a reconcile at 10,000 rules does not dump and walk them all again.

    In step (`valid`) only from a full read that began while the notifications were
    listened to, up to anything that may have lost one: the socket closed or reopened, an
    overflow (ENOBUFS), a message nobody can attribute, a write whose answer contradicts
    the view (EEXIST on an add, ENOENT on a delete), or forget() (the periodic resync).
    Notifications processed while a full read runs are replayed on top of its result.

    A rule is present or absent by its message body: each notification sets or clears it,
    which is the same whether it came before or after the dump saw the rule (a kernel
    notification and the dump carry the same bytes), so replaying is safe. nra's own
    writes are not applied here: their notifications are queued on the listening socket
    before the kernel acknowledges the write, so the next read sees them, in the kernel's
    own bytes (what an exact delete sends back). Duplicates of one rule are one entry here:
    a full read shows them; deleting one shows as gone, and the add that follows finds it
    there (EEXIST), which makes the next read a full one."""

    def __init__(self, rules: Rules):
        self._rules = rules
        self._ours: dict[bytes, KernelRule] = {}
        self._leftover: dict[bytes, KernelRule] = {}
        self._snapshot: tuple[tuple[KernelRule, ...], tuple[KernelRule, ...]] | None = None
        self.valid = False
        #: whether the notifications are listened to (nra.kernel.events sets it)
        self.listening = False
        #: why the next read is a full one (the last forget()'s reason)
        self.stale_reason = "not read yet"
        self._generation = 0
        self._log: list[tuple[bool, bytes]] | None = None

    def forget(self, reason: str) -> None:
        """The view may be out of step: the next read is a full one."""
        self.valid = False
        self.stale_reason = reason
        self._generation += 1
        self._log = None

    def notified(self, added: bool, body: bytes) -> tuple[KernelRule, bool] | None:
        """Apply one rule notification (added: RTM_NEWRULE); returns classify()'s answer."""
        if self._log is not None:
            self._log.append((added, body))
        return self._apply(added, body)

    def _apply(self, added: bool, body: bytes) -> tuple[KernelRule, bool] | None:
        found = self._rules.classify(body)
        if found is not None:
            where = self._leftover if found[1] else self._ours
            if added:
                where[found[0].wire] = found[0]  # (equal to body: the bytes the rule holds, once)
            else:
                where.pop(body, None)
                self._rules.forget_decoded(body)
            self._snapshot = None
        return found

    def full_read_started(self) -> int | None:
        """Called before a full read's dump; its answer goes to full_read_done()."""
        if not self.listening:
            return None
        self._log = []
        return self._generation

    def full_read_done(self, started: int | None, rules: list[KernelRule], leftovers: list[KernelRule]) -> None:
        log, self._log = self._log, None
        if started is None or started != self._generation or log is None:
            return  # not listened to all along: the view stays stale
        self._ours = {r.wire: r for r in rules}
        self._leftover = {r.wire: r for r in leftovers}
        self._snapshot = None
        for added, body in log:
            self._apply(added, body)
        self.valid = True
        self.stale_reason = ""

    def snapshot(self) -> tuple[tuple[KernelRule, ...], tuple[KernelRule, ...]]:
        """(the rules, the leftovers), built again only after a change."""
        if self._snapshot is None:
            self._snapshot = (tuple(self._ours.values()), tuple(self._leftover.values()))
        return self._snapshot
