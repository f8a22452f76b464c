"""The owner of nra's nftables table in one network namespace: reads it back, applies a
change, removes it, and reports when someone else touches it.

Reads are cheap when nothing happened: the kernel's ruleset generation id changes with every
nf_tables transaction, and the notification watcher records which transactions touched this
table and who made them. When no one but nra changed the table since it was last read or
written, the last known content stands (a node running kube-proxy changes other tables all
the time; that costs nothing here). Otherwise the table is read again in full, through
nf_tables dumps of nra's own (nra.kernel.nft_read; at 100,000 intervals a fraction of a
second; it only happens when someone else edited nra's table, or at start).

Changes: every change a packet can see is one transaction (see NftState.apply_blocking):
element changes (prefixes, links, routers), the table's flags and others' rules deleted by
handle as one nf_tables batch of nra's own (see nft_netlink: libnftables reads a whole
interval set back before it changes one element); repairs of chains in place through
libnftables; a rebuild as an inert table filled before one batch turns it on; the table's
removal as one nf_tables message.

Others' changes are followed from netfilter's notifications, object by object (see
_follow): the repair is of what they touched, with no listing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import threading
from typing import AsyncIterator

from nra.kernel import nft_netlink as nl
from nra.kernel import nft_read
from nra.kernel import nft_table as nft
from nra.kernel.libnft import Nft, NftError
from nra.kernel.marks import MarkField
from nra.kernel.socket import KernelRefused, NetlinkSocket, open_netlink

#: how long a batch may take the kernel (100,000 prefixes: well under a second)
BATCH_TIMEOUT_S = 30.0
#: the notification socket's buffer: a rebuild at 100,000 prefixes notifies every element
NOTIFICATION_RCVBUF = 32 << 20


class NftState:
    def __init__(self, netns: str | None = None, library_optional: bool = False):
        """library_optional: go on without libnftables (CLEANANDEXIT): the table is read,
        and removed, through nf_tables netlink alone; any other change raises NftError
        naming what is missing."""
        self.netns = netns
        self.missing_library = ""
        try:
            self.nft: Nft | None = Nft(netns)
        except OSError as exc:
            if not library_optional or "libnftables" not in str(exc):
                raise
            self.nft, self.missing_library = None, str(exc)
        # a batch of 100,000 prefixes takes the kernel a while: a longer wait than a dump's
        self._sock = NetlinkSocket(netns, timeout_s=BATCH_TIMEOUT_S, protocol=nl.NETLINK_NETFILTER)
        self._known: nft.NftTable | None = None  # what the table holds, when known
        self._known_generation: int | None = None
        self._foreign_touch = True  # someone else changed the table since it was known
        #: set while changes() runs with its socket bound: notifications say who touched the table
        self.watching = asyncio.Event()
        self.full_reads = 0  # how many times the whole table was read (for tests and figures)
        #: someone else changed the table's chains or rules (its elements are known): read those
        self._structure_stale = False
        self.structure_reads = 0  # how many times only the chains, rules and sets were read

    # -- reading --------------------------------------------------------------------------

    def generation(self) -> int:
        return self._sock.query(nl.encode_getgen, nl.decode_generation)

    def table_flags(self) -> int | None:
        """The table's flags as the kernel holds them (None: no table)."""
        return table_flags(self._sock)

    def read_blocking(self) -> nft.NftTable | None:
        """The table as the kernel holds it (None: absent), read in full through nf_tables
        dumps of nra's own (nft_read; libnftables is not needed) unless nothing but nra
        touched it since it was last known."""
        generation = self.generation()
        if not self._foreign_touch and self._known_generation is not None and (
                self.watching.is_set() or generation == self._known_generation):
            if not self._structure_stale:
                self._known_generation = generation
                return self._known
            # someone else changed chains or rules only: those are read, the elements kept
            # (followed from the notifications)
            table, generation = nft_read.read_table(self._sock, self._known)
            self.structure_reads += 1
        else:
            self._known, self._foreign_touch = None, True  # (not held while the new one is read)
            prefetched = take_prefetched(self.netns, generation)
            if prefetched is not None:
                table, generation = prefetched
            else:
                table, generation = nft_read.read_table(self._sock)
            self.full_reads += 1
        self._structure_stale = False
        # a read that kept being interrupted by others' transactions: read in full next time too
        self._known, self._known_generation, self._foreign_touch = table, generation, generation < 0
        return table

    async def read(self) -> nft.NftTable | None:
        return await self._run(self.read_blocking)

    async def _run(self, fn, *args):
        """In libnftables' thread, where nra's writes all happen (see changes())."""
        if self.nft is None:
            return await asyncio.to_thread(fn, *args)
        return await self.nft.run(fn, *args)

    def _library(self) -> Nft:
        if self.nft is None:
            raise NftError(f"this change needs libnftables: {self.missing_library}")
        return self.nft

    def forget(self) -> None:
        """Read the whole table next time (a notification was lost, or a change failed)."""
        self._foreign_touch = True

    # -- writing --------------------------------------------------------------------------

    def apply_blocking(self, change: nft.NftChange, desired: nft.NftTable | None, field: MarkField | None,
                       current: nft.NftTable | None) -> None:
        """Apply one planned change; on any error the table is read in full next time.

        Every change a packet can see is one transaction. Elements, the table's flags and
        others' rules deleted by handle: one nf_tables batch of nra's own. A repair in place
        (a chain not as nra wrote it, an object not nra's): one libnftables transaction,
        after the element changes (one batch) and the sets of nra's that were missing (made
        in a transaction before that): no chain written again meets its sets unfilled; a
        prefix set that only loses elements loses them in a batch after it (see below). A
        rebuild (the table missing): three transactions of which
        only the last touches a packet: the table with empty sets and its hooked chains
        without their jumps (their rules before the jump accept, as the policy does),
        then every element (one batch), then the hooked chains' jumps (one batch) turn it on
        whole. Not the elements and the jumps in one batch: the kernel (6.18 here) makes a
        transaction's rules live when its generation flips, but an interval set's new
        elements only when the set's commit step runs after every other change of the
        transaction (at 100,000 prefixes ~150 ms later): in one batch, connections arriving
        then met the new chains with lb4 empty and kept the "examined" mark for good (74-82
        of ~3,880 flows at 500 a second: tests/agent/test_rebuild_under_flows.py). (One
        libnftables transaction with 100,000 elements takes 2.3 s where the batch takes
        0.3 s, and would meet the same.)"""
        if self.nft is not None and threading.get_native_id() != self.nft.thread_id:
            return self.nft.call(self.apply_blocking, change, desired, field, current)
        if not change:
            return
        try:
            if change.remove:
                delete_table(self._sock)
            elif change.rebuild:
                assert desired is not None
                # an inert table first (no packet is touched by it), its elements next (still
                # inert), and only then the hooked chains' jumps turn it on: no packet meets
                # the table without its prefixes (not the elements and jumps in one batch:
                # see above)
                self._library().json_cmd(nft.skeleton_commands(desired, current is not None))
                ops, jumps = element_ops(change), nft.hooked_jumps(desired)
                self._sock.transaction(lambda seq: nl.batch(nft.TABLE, ops, seq), "nf_tables elements")
                self._sock.transaction(lambda seq: nl.batch(nft.TABLE, (), seq, jumps=jumps), "nf_tables hooks")
            elif change.rewrite or change.drop or change.remake_sets:
                assert desired is not None and current is not None
                # the missing sets and chains made (empty), and every element change made,
                # before the rules that use them are written (see rebuild above)
                first = nft.remake_commands(change, desired, current)
                if first:
                    self._library().json_cmd(first)
                ops = element_ops(change)
                # a prefix set that only loses elements loses them after the chains are written
                # again: a prefix it loses may have moved to a group map, and a chain being
                # repaired may not look there yet (someone else's edit of it): a connection in
                # between would be marked examined for good
                gaining = {op.set_name for op in ops if not op.delete}
                later = [op for op in ops if op.set_name in nft.PREFIX_SET_FAMILY and op.set_name not in gaining]
                ops = [op for op in ops if op.set_name not in nft.PREFIX_SET_FAMILY or op.set_name in gaining]
                if ops:
                    self._sock.transaction(lambda seq: nl.batch(nft.TABLE, ops, seq), "nf_tables element batch")
                self._library().json_cmd(nft.repair_commands(change, desired, current))
                if later:
                    self._sock.transaction(lambda seq: nl.batch(nft.TABLE, later, seq), "nf_tables element batch")
            else:  # elements, flags, others' rules deleted by handle: one batch of nra's
                ops = element_ops(change)
                self._sock.transaction(lambda seq: nl.batch(nft.TABLE, ops, seq, change.table_flags,
                                                            delete_rules=change.drop_rules),
                                       "nf_tables element batch")
        except BaseException:
            self.forget()
            raise
        self._known = None if change.remove else desired
        self._known_generation = self.generation()

    async def apply(self, change: nft.NftChange, desired: nft.NftTable | None, field: MarkField | None,
                    current: nft.NftTable | None) -> None:
        await self._run(self.apply_blocking, change, desired, field, current)

    # -- watching -------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[str]:
        """A reason each time a transaction of another process touches nra's table; a
        resync reason when notifications were lost (the table is then read in full)."""
        loop = asyncio.get_running_loop()
        sock = await asyncio.to_thread(open_netlink, self.netns, 1 << (nl.NFNLGRP_NFTABLES - 1),
                                       NOTIFICATION_RCVBUF, nl.NETLINK_NETFILTER)
        sock.setblocking(False)
        me = self._library().thread_id  # every write of nra's is made in that thread
        reader = nl.NotificationReader(ignore_pid=me)  # (nra's own elements are never decoded)
        self.watching.set()
        self.forget()  # what happened before the watch started is unknown
        try:
            while True:
                try:
                    data = await loop.sock_recv(sock, 1 << 20)
                except OSError as exc:  # ENOBUFS: notifications lost
                    self.forget()
                    yield f"nftables notifications lost ({exc.strerror}): resync"
                    continue
                for tx in reader.feed(data):
                    if (nft.TABLE in tx.tables or nl.ANY_TABLE in tx.tables) and tx.pid != me:
                        how = await self._run(self._follow, tx)
                        yield f"nftables table {nft.FAMILY} {nft.TABLE} changed by pid {tx.pid} ({how})"
        finally:
            self.watching.clear()
            sock.close()

    def _follow(self, tx: nl.Transaction) -> str:
        """Take someone else's transaction into what nra knows of its table, from the
        notifications themselves (no read), so that the repair is of the objects touched
        alone: the table deleted (`delete table`, `flush ruleset`) is known absent (made
        again); a rule added is known by its handle (deleted by it); a chain that lost rules
        or was made is known damaged or foreign (written again, dropped); element changes
        and flags as they are. A change of chains or rules that cannot be attributed (an
        object of another kind, a rule in a chain nra does not know) makes the next read read
        the chains, rules and sets' names again, not the elements; a set of nra's made or
        deleted, a table deleted and made again, or too many element changes, a read in full."""
        known = self._known
        if tx.elements_skipped:
            self.forget()
            return f"read in full: {tx.elements_skipped} element changes"
        if nft.TABLE in tx.deleted and not self._foreign_touch:
            self._known = None
            return "followed from its notifications: table deleted"
        if self._foreign_touch or known is None:
            self.forget()
            return "read in full"
        ignored: frozenset[str] = frozenset()
        structure_stale = False
        if nft.TABLE in tx.structure:
            objects = nft.with_objects(known, tx.objects)
            if objects is not None:
                known, ignored = objects
            elif nft.TABLE in tx.reshaped:
                self.forget()
                return "read in full"
            else:
                structure_stale = True
        followed = nft.with_notified(known, [c for c in tx.elements if c.set_name not in ignored])
        if followed is None:
            self.forget()
            return "read in full"
        if nft.TABLE in (tx.flags or {}):
            followed = dataclasses.replace(followed, flags=tx.flags[nft.TABLE])
        self._known = followed
        if structure_stale:
            self._structure_stale = True
            return "chains and rules read again"
        return "followed from its notifications"

    def close(self) -> None:
        if self.nft is not None:
            self.nft.close()
        self._sock.close()


# -- the read at start, in a thread ----------------------------------------------------------

#: the longest the first read waits for the prefetch before reading itself
PREFETCH_WAIT_S = 30.0

_prefetched: dict[str | None, concurrent.futures.Future] = {}
_prefetch_lock = threading.Lock()


def prefetch(netns: str | None) -> None:
    """Start reading nra's table of `netns` in a thread of its own (at start: the read, most of
    it the kernel's dump, overlaps the configuration's parse). The first full read of an
    NftState of that namespace takes it if nothing changed the ruleset since (the same
    generation); otherwise, or if it failed, reads again."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    with _prefetch_lock:
        if netns in _prefetched:
            return
        _prefetched[netns] = future

    def read() -> None:
        sock = None
        try:  # (the socket too: a future never set would hold the first reconcile for good)
            sock = NetlinkSocket(netns, protocol=nl.NETLINK_NETFILTER)
            future.set_result(nft_read.read_table(sock))
        except BaseException as exc:  # (taken as "read again")
            future.set_exception(exc)
        finally:
            if sock is not None:
                sock.close()

    threading.Thread(target=read, name="nft-prefetch", daemon=True).start()


def take_prefetched(netns: str | None, generation: int) -> tuple[nft.NftTable | None, int] | None:
    """The prefetched read of `netns` (waited for) if it was read at `generation`, the
    kernel's now; None otherwise. Taken once."""
    with _prefetch_lock:
        future = _prefetched.pop(netns, None)
    if future is None:
        return None
    try:
        table, read_at = future.result(PREFETCH_WAIT_S)
    except Exception:  # failed, or stuck: nra's own read instead
        return None
    return (table, read_at) if read_at == generation and read_at >= 0 else None


def table_flags(sock: NetlinkSocket) -> int | None:
    """nra's table's flags, by one GETTABLE (the table is not listed; no libnftables); None:
    no table."""
    try:
        return sock.query(lambda seq: nl.encode_gettable(nft.TABLE, seq), nl.decode_table_flags)
    except KernelRefused as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def delete_table(sock: NetlinkSocket) -> None:
    """nra's table removed, whatever it holds: one nf_tables transaction (DELTABLE)."""
    sock.transaction(lambda seq: nl.delete_table(nft.TABLE, seq), "nf_tables delete table")


class LeftoverTable:
    """nra's nft table seen by a return path that does not own it (rules mode: the table is
    the conntrack mode's, left by an earlier run or settings): whether it is there (one
    GETTABLE) and its removal (one DELTABLE), through nf_tables netlink alone. The table is
    never listed, libnftables never loaded, and notifications never watched: the caller asks
    on its full reads only."""

    def __init__(self, netns: str | None = None):
        self._sock = NetlinkSocket(netns, protocol=nl.NETLINK_NETFILTER)

    def present(self) -> bool:
        return table_flags(self._sock) is not None

    def remove(self) -> None:
        """Removed (already gone counts as done)."""
        try:
            delete_table(self._sock)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def close(self) -> None:
        self._sock.close()


def element_ops(change: nft.NftChange) -> list[nl.ElementOp]:
    """A change of elements as the batch's operations, set by set: a set's deletes before its
    adds (a router whose link-layer address moved to another index is deleted, then added;
    an interval's old piece, then its new one), and the sets that gain elements before the
    sets that only lose some. The kernel makes an interval set's changes visible set by set,
    in the order the batch first touched them, after the generation flips: a prefix moving
    from a group map to the prefix sets (or back) is then in both for a moment, never in
    neither (whose packet would be marked examined for good)."""
    ops = _element_ops(change)
    by_set: dict[str, list[nl.ElementOp]] = {}
    for op in ops:
        by_set.setdefault(op.set_name, []).append(op)
    gaining = [name for name, some in by_set.items() if any(not op.delete for op in some)]
    losing = [name for name in by_set if name not in gaining]
    return [op for name in gaining + losing for op in by_set[name]]


def _element_ops(change: nft.NftChange) -> list[nl.ElementOp]:
    """element_ops(), every delete before any add."""
    width = {4: 32, 6: 128}
    gone, new = nft.prefix_pieces(change)
    # (the prefix sets' elements encoded as the batch takes them, not all at once)
    deletes = [nl.ElementOp(name, nl.IntervalElements(pieces, width[nft.PREFIX_SET_FAMILY[name]]), True)
               for name, pieces in gone.items()]
    adds = [nl.ElementOp(name, nl.IntervalElements(pieces, width[nft.PREFIX_SET_FAMILY[name]],
                                                   nl.interval_floor(nft.PREFIX_SET_FAMILY[name])))
            for name, pieces in new.items()]
    if change.delete_links:
        deletes.append(nl.ElementOp(nft.LINKS_SET, tuple(map(nl.ifname_element, change.delete_links)), True))
    if change.delete_routers:
        deletes.append(nl.ElementOp(nft.ROUTERS_MAP, tuple(nl.goto_element(nft.router_key_bytes(m), None)
                                                           for m in change.delete_routers), True))
    groups_gone, groups_new = nft.group_pieces(change)
    for name, elements in groups_gone.items():
        family = nft.GROUP_MAP_FAMILY[name]
        deletes.append(nl.ElementOp(name, tuple(e for low, high, _ in elements
                                                for e in nl.interval_goto_elements(low, high, width[family], None)),
                                    True))
    for name, elements in groups_new.items():
        family = nft.GROUP_MAP_FAMILY[name]
        adds.append(nl.ElementOp(name, (nl.interval_floor(family), *(
            e for low, high, i in elements
            for e in nl.interval_goto_elements(low, high, width[family], nft.group_chain(i))))))
    if change.add_links:
        adds.append(nl.ElementOp(nft.LINKS_SET, tuple(map(nl.ifname_element, change.add_links))))
    if change.set_routers:
        adds.append(nl.ElementOp(nft.ROUTERS_MAP, tuple(nl.goto_element(nft.router_key_bytes(m), nft.save_chain(i))
                                                        for m, i in sorted(change.set_routers.items()))))
    return deletes + adds
