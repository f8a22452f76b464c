"""The first read of a return path that declares nra's nft table and router tables reads
every router table while the nft table is read (both at start, the nft read the longest):
the same routes as a read that reads them after it, and an nft read that fails leaves no
route read behind."""

from __future__ import annotations

import asyncio

import pytest

from nra.kernel.adapter import KernelAdapter
from nra.kernel.model import KernelReads
from tests.kernel.test_leftovers import router_table
from tests.netns import NetNS

pytestmark = pytest.mark.kernel

TABLES = range(21, 24)


async def written(node_ns: NetNS) -> None:
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=TABLES)) as adapter:
        for i, table in enumerate(TABLES):
            await router_table(adapter, table, (i + 1) << 1)
    node_ns.ip("route add 10.0.0.0/8 via 10.99.0.2 table 23")  # someone else's: read too


async def test_the_first_read_of_the_router_tables_goes_on_with_the_nft_read(node_ns: NetNS):
    await written(node_ns)
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=TABLES)) as adapter:
        after = (await adapter.read_state([])).router_routes  # (no nft table: one after the other)
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=TABLES, nftables=True)) as adapter:
        reading = adapter._nft.read
        started: list[bool] = []

        async def nft_read():
            await asyncio.sleep(0.2)  # by then the route tables were read, if they go on with it
            started.append(adapter._route_tables_read)
            return await reading()

        adapter._nft.read = nft_read
        state = await adapter.read_state([])
        assert started == [True]
        assert state.router_routes == after and {r.table for r in after} == set(TABLES)
        assert len([r for r in after if r.table == 23]) == 2


async def test_an_nft_read_that_fails_leaves_no_route_read_behind(node_ns: NetNS):
    await written(node_ns)
    async with KernelAdapter(20, netns=node_ns.name, reads=KernelReads(route_tables=TABLES, nftables=True)) as adapter:
        async def nft_read():
            await asyncio.sleep(0)
            raise OSError("the read failed")

        adapter._nft.read = nft_read
        with pytest.raises(OSError, match="the read failed"):
            await adapter.read_state([])
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        assert not adapter._route_tables_read  # (cancelled: the next read reads every table)
