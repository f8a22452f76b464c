"""The owner of nra's nftables table in one network namespace: reads it back, applies a
change, removes it, and reports when someone else touches it.

Reads are cheap when nothing happened: the kernel's ruleset generation id changes with every
nf_tables transaction, and the notification watcher records which transactions touched this
table and who made them. When no one but nra changed the table since it was last read or
written, the last known content stands (a node running kube-proxy changes other tables all
the time; that costs nothing here). Otherwise the table is listed again (at 100,000 prefixes
that takes seconds; it only happens when someone else edited nra's table, or at start).

Changes: the chains and small sets through libnftables (one JSON transaction); the prefix
elements, in bulk, as one netlink batch of their own (see nft_netlink).
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

from nra.kernel import nft_netlink as nl
from nra.kernel import nft_table as nft
from nra.kernel.libnft import Nft
from nra.kernel.marks import MarkField
from nra.kernel.socket import in_netns


class NftState:
    def __init__(self, netns: str | None = None):
        self.netns = netns
        self.nft = Nft(netns)
        self._sock = in_netns(netns, nl.open_socket)
        self._seq = 0
        self._known: nft.NftTable | None = None  # what the table holds, when known
        self._known_generation: int | None = None
        self._foreign_touch = True  # someone else changed the table since it was known
        #: set while changes() runs with its socket bound: notifications say who touched the table
        self.watching = asyncio.Event()
        self.full_reads = 0  # how many times the whole table was listed (for tests and figures)

    def _next_seq(self, count: int = 1) -> int:
        self._seq += count
        return self._seq - count + 1

    # -- reading --------------------------------------------------------------------------

    def generation(self) -> int:
        return nl.generation(self._sock, self._next_seq())

    def read_blocking(self) -> nft.NftTable | None:
        """The table as the kernel holds it (None: absent)."""
        generation = self.generation()
        if not self._foreign_touch and self._known_generation is not None and (
                self.watching.is_set() or generation == self._known_generation):
            self._known_generation = generation
            return self._known
        table = nft.parse_listing(self.nft.list_table(nft.FAMILY, nft.TABLE) or [])
        self.full_reads += 1
        self._known, self._known_generation, self._foreign_touch = table, generation, False
        return table

    async def read(self) -> nft.NftTable | None:
        return await self.nft.run(self.read_blocking)

    def forget(self) -> None:
        """Read the whole table next time (a notification was lost, or a change failed)."""
        self._foreign_touch = True

    # -- writing --------------------------------------------------------------------------

    def apply_blocking(self, change: nft.NftChange, desired: nft.NftTable | None, field: MarkField | None,
                       current: nft.NftTable | None) -> None:
        """Apply one planned change; on any error the table is read in full next time."""
        if threading.get_native_id() != self.nft.thread_id:
            return self.nft.call(self.apply_blocking, change, desired, field, current)
        if not change:
            return
        try:
            if change.remove or change.rebuild:
                # the skeleton (and the small sets) in one transaction, prefixes after
                skeleton = nft.NftChange(rebuild=change.rebuild, remove=change.remove, reason=change.reason,
                                         add_links=change.add_links, set_routers=change.set_routers)
                self.nft.json_cmd(nft.commands(skeleton, desired, field, current is not None))
                prefix_ops = nl.prefix_ops(change.add_prefixes, {}, nft.PREFIX_SETS)
            else:
                small = nft.NftChange(add_links=change.add_links, delete_links=change.delete_links,
                                      set_routers=change.set_routers, delete_routers=change.delete_routers)
                if small:
                    self.nft.json_cmd(nft.commands(small, desired, field, True))
                prefix_ops = nl.prefix_ops(change.add_prefixes, change.delete_prefixes, nft.PREFIX_SETS)
            if prefix_ops:
                data, acked = nl.batch(nft.TABLE, prefix_ops, self._next_seq(0))
                self._seq += len(acked) + 2
                nl.send_batch(self._sock, data, acked)
        except BaseException:
            self.forget()
            raise
        self._known = None if change.remove else desired
        self._known_generation = self.generation()

    async def apply(self, change: nft.NftChange, desired: nft.NftTable | None, field: MarkField | None,
                    current: nft.NftTable | None) -> None:
        await self.nft.run(self.apply_blocking, change, desired, field, current)

    # -- watching -------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[str]:
        """A reason each time a transaction of another process touches nra's table; a
        resync reason when notifications were lost (the table is then read in full)."""
        loop = asyncio.get_running_loop()
        sock = await asyncio.to_thread(in_netns, self.netns, lambda: nl.open_socket(1 << (nl.NFNLGRP_NFTABLES - 1)))
        sock.setblocking(False)
        reader = nl.NotificationReader()
        me = self.nft.thread_id  # every write of nra's is made in that thread
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
                    if nft.TABLE in tx.tables and tx.pid != me:
                        self.forget()
                        yield f"nftables table {nft.FAMILY} {nft.TABLE} changed by pid {tx.pid}"
        finally:
            self.watching.clear()
            sock.close()

    def close(self) -> None:
        self.nft.close()
        self._sock.close()
