"""CLEANANDEXIT in conntrack mode without libnftables (the loader made not to find it):
nra's nft table goes through nf_tables netlink, its router tables through rtnetlink, and it
exits 0; before, it exited 1 having removed nothing. And with new settings, what the old
ones owned goes too."""

from __future__ import annotations

import ctypes.util
import ipaddress
import json

import pytest

from nra.daemon.modes import clean_and_exit
from nra.kernel import libnft
from nra.kernel import nft_table as nft
from nra.kernel.adapter import KernelAdapter
from nra.kernel.marks import parse_mark_field
from nra.kernel.model import KernelReads
from nra.kernel.nft import NftState
from nra.settings import Settings
from tests.kernel.test_leftovers import router_table

FIELD = parse_mark_field("0x2/0x3e")


def settings(ns, **more) -> Settings:
    return Settings(**{"NRA_NETNS": ns.name, "HEALTH_ADDRESS": "off", "CLEANANDEXIT": "1", "RETURN_PATH": "conntrack",
                       "RETURN_PATH_MARK": "0x2/0x3e", "RETURN_PATH_TABLES": "21-23", **more})


async def conntrack_state(ns, tables=range(21, 24)) -> None:
    """nra's nft table (with libnftables) and its router tables, as a conntrack run leaves them."""
    owner = NftState(ns.name)
    try:
        want = nft.desired_table([ipaddress.ip_network("10.80.0.0/28")], ["eth0"], {("eth0", "02:00:00:00:00:01"): 1},
                                 FIELD)
        owner.apply_blocking(nft.diff(want, None), want, FIELD, None)
    finally:
        owner.close()
    async with KernelAdapter(20, netns=ns.name, reads=KernelReads(route_tables=tables)) as adapter:
        for i, table in enumerate(tables):
            await router_table(adapter, table, (i + 1) << 1)


def nft_tables(ns) -> list[str]:
    listed = json.loads(ns.exec(["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return [t["table"]["name"] for t in listed if "table" in t]


async def test_clean_without_libnftables_removes_the_table_and_router_tables(node_ns, monkeypatch):
    await conntrack_state(node_ns)
    monkeypatch.setattr(libnft, "LIBRARY_NAMES", ("libnftables-not-here.so.1",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(OSError, match="libnftables not found"):
        NftState(node_ns.name)  # the loader really does not find it
    assert await clean_and_exit(settings(node_ns)) == 0
    assert "nra" not in nft_tables(node_ns)
    for table in range(21, 24):
        assert node_ns.rules("-4", table=table) == [] and node_ns.routes("-4", table=table) == []


async def test_clean_with_new_settings_removes_what_the_old_ones_owned(node_ns):
    await conntrack_state(node_ns)
    # a new range and rules mode: tables 21-23 are no longer named
    assert await clean_and_exit(settings(node_ns, RETURN_PATH_TABLES="31-32")) == 0
    assert await clean_and_exit(Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off", CLEANANDEXIT="1")) == 0
    for table in range(21, 24):
        assert node_ns.rules("-4", table=table) == [] and node_ns.routes("-4", table=table) == []
