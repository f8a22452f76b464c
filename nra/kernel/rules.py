"""The rules pointing at the managed table: read them, add and delete them; and nra's own
rules (NRA_PROTOCOL) left pointing at tables the settings no longer name."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import AbstractSet, Container, Sequence

from nra.kernel.codec import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_DELRULE,
    RTM_GETRULE,
    RTM_NEWRULE,
    Message,
    encode_rule,
)
from nra.kernel.model import KernelRule
from nra.kernel.operations import AddRule
from nra.kernel.rule_set import RuleBook, RuleSet, Shape
from nra.kernel.socket import NetlinkSocket


class Rules:
    """Owns the rules of one table (and `also`): a full read dumps them into a RuleBook
    (nra.kernel.rule_set: each rule its template and member, decoded only when asked for);
    between full reads, `kept` holds them as the kernel's notifications change them (see
    KeptRules)."""

    def __init__(self, sock: NetlinkSocket, table: int, also: Container[int] = ()):
        self.sock = sock
        self.table = table
        self.also = also  # more tables whose rules are ours (the conntrack return path's)
        self.kept = KeptRules(self)
        #: how many times all rules were dumped (each read, unless `kept` could answer)
        self.full_reads = 0

    def book(self) -> RuleBook:
        return RuleBook(self.table, self.also)

    async def read_book(self) -> RuleBook:
        """Every rule of the table (and `also`) and nra's leftovers elsewhere: a full dump."""
        book = self.book()
        for family in (socket.AF_INET, socket.AF_INET6):
            book.merge(await asyncio.to_thread(self._dump, family))
        self.full_reads += 1
        return book

    def _dump(self, family: int) -> RuleBook:
        """One family's rules, put in a book as they are received (no list of 100,000
        messages' bytes first). An interrupted dump is asked again (NetlinkSocket.dump),
        with a new sequence number: what the first attempt put in is dropped."""
        book, seq = self.book(), None

        def keep(message: Message) -> None:
            nonlocal book, seq
            if message.seq != seq:
                book, seq = self.book(), message.seq
            if message.kind == RTM_NEWRULE:
                book.add(message.body_bytes(), dumped=True)
            return None

        self.sock.dump(RTM_GETRULE, family, keep)
        return book

    async def read(self) -> list[KernelRule]:
        """Every rule of the table (and `also`), decoded: a full dump (tests and tools)."""
        return list((await self.read_book()).snapshot()[0])

    async def current(self) -> tuple[RuleSet, tuple[KernelRule, ...]]:
        """(the rules, the leftovers): from `kept` when it is in step with the kernel, else
        a full read (which puts `kept` in step again, if the notifications are listened to)."""
        if self.kept.valid:
            return self.kept.snapshot()
        started = self.kept.full_read_started()
        book = await self.read_book()
        self.kept.full_read_done(started, book)
        return book.snapshot()


    async def add(self, ops: Sequence[AddRule]) -> list[int]:
        """errno of each add; EEXIST counts as done (the kernel already has it)."""
        if ops:  # (the view's shape and group of these rules made before the write: RuleBook.expect)
            op = ops[0]
            self.kept.expect(encode_rule(op.family, op.src, op.priority, op.table, op.fwmark, op.fwmask))
        # (encoded as they are sent, BATCH_CHUNK at a time: not 100,000 bodies held at once)
        bodies = (encode_rule(op.family, op.src, op.priority, op.table, op.fwmark, op.fwmask) for op in ops)
        codes = await asyncio.to_thread(self.sock.request_batch, RTM_NEWRULE,
                                        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, bodies)
        if errno.EEXIST in codes:
            self.kept.forget("a rule it lacked was already there")
        return [0 if code == errno.EEXIST else code for code in codes]

    async def delete(self, rules: Sequence[KernelRule]) -> list[int]:
        """errno of each delete, of exactly the listed rule (its own bytes are sent back);
        ENOENT counts as done (already gone)."""
        bodies = (rule.wire or encode_rule(rule.family, rule.src, rule.priority, rule.table,
                                           rule.fwmark, rule.fwmask) for rule in rules)
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

    A rule is present or absent by its message body (RuleBook): each notification sets or
    clears it, which is the same whether it came before or after the dump saw the rule (a
    kernel notification and the dump carry the same bytes), so replaying is safe. While a
    full read runs the notifications go to the view in use and are replayed on the new one. nra's own
    writes are not applied here: their notifications are queued on the listening socket
    before the kernel acknowledges the write, so the next read sees them, in the kernel's
    own bytes (what an exact delete sends back). Duplicates of one rule are one member here,
    and the second copies a full read found are listed apart (RuleSet.duplicates): a
    notified delete of that rule takes a listed copy first."""

    def __init__(self, rules: Rules):
        self._rules = rules
        self.book = rules.book()
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

    def notified(self, added: bool, body: bytes) -> tuple[Shape, int] | None:
        """Apply one rule notification (added: RTM_NEWRULE); its template's shape and its
        member, None for anyone else's rule elsewhere."""
        if self._log is not None:
            self._log.append((added, body))
        return self.book.add(body) if added else self.book.discard(body)

    def full_read_started(self) -> int | None:
        """Called before a full read's dump; its answer goes to full_read_done()."""
        if not self.listening:
            return None
        self._log = []
        return self._generation

    def full_read_done(self, started: int | None, book: RuleBook) -> None:
        log, self._log = self._log, None
        if started is None or started != self._generation or log is None:
            return  # not listened to all along: the view stays stale
        for added, body in log:
            book.add(body) if added else book.discard(body)
        self.book = book
        self.valid = True
        self.stale_reason = ""

    def snapshot(self) -> tuple[RuleSet, tuple[KernelRule, ...]]:
        """(the rules, the leftovers), built again only after a change."""
        return self.book.snapshot()

    def expect(self, wire: bytes) -> None:
        """RuleBook.expect on the view: the shape and group of the rules about to be written
        (one of them encoded), made before the write rather than at its first notification."""
        self.book.expect(wire)

    def adopt(self, members: AbstractSet[int]) -> bool:
        """RuleBook.adopt on the view (the writes' notifications applied first: the caller
        drains them)."""
        return self.book.adopt(members)
