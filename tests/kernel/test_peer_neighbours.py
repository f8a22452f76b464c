"""Managed neighbour entries and the peers' link timers (MANAGED_NEIGHBOURS, PEER_NEIGH_TIMERS)
against the real kernel: the node faces a router namespace that holds only the live peers'
addresses (the `lan` of test_neighbours), and nothing sends the peers any traffic."""

from __future__ import annotations

import pytest

from nra.kernel.adapter import KernelAdapter
from nra.settings import NEIGH_TIMER_PRESETS
from tests.kernel.test_neighbours import (  # noqa: F401
    DEAD4,
    DEAD6,
    LIVE4,
    LIVE6,
    lan,
    neigh_state,
    wait_neigh,
)
from tests.netns import sh
from tests.wait import holds, wait_for_async

pytestmark = pytest.mark.kernel

PEERS = [LIVE4, DEAD4, LIVE6, DEAD6]
FAST = NEIGH_TIMER_PRESETS["fast"]


def managed(node, address) -> bool:
    return "managed" in node.ip(f"-d neigh show {address} dev eth0").split()


async def set_up(adapter: KernelAdapter, peers=PEERS) -> list[str]:
    return await adapter.set_up_peer_neighbours(await adapter.read_state(peers))


async def test_managed_entries_are_kept_resolved_by_the_kernel_without_traffic(lan):  # noqa: F811
    node, _ = lan
    async with KernelAdapter(20, netns=node.name) as adapter:  # off (the default): nothing made
        assert await set_up(adapter) == []
        holds(lambda: all(neigh_state(node, a) == "" for a in PEERS), 0.3, what="no neighbour entry made")
    async with KernelAdapter(20, netns=node.name, managed_neighbours=True) as adapter:
        assert await set_up(adapter) == []
        assert all(managed(node, a) for a in PEERS)
        # no packet for them anywhere: the kernel resolves the live peers and fails the dead ones
        for address in (LIVE4, LIVE6):
            wait_neigh(node, address, "REACHABLE")
        for address in (DEAD4, DEAD6):
            wait_neigh(node, address, "FAILED")

        # a peer that goes: the entry nra marked goes with it (the kernel makes a plain one on use)
        assert await set_up(adapter, [LIVE4, LIVE6, DEAD6]) == []
        assert neigh_state(node, DEAD4) == "" and managed(node, DEAD6)

        # a link flap flushes the link's entries: marked again at the next reconcile (the IPv6
        # address stays over the flap, as a node's network manager keeps it)
        sh(f"ip netns exec {node.name} sysctl -qw net.ipv6.conf.eth0.keep_addr_on_down=1")
        node.ip("link set dev eth0 down")
        node.ip("link set dev eth0 up")

        async def marked_again() -> bool:
            if all(managed(node, a) for a in (LIVE4, LIVE6, DEAD6)):
                return True
            await set_up(adapter, [LIVE4, LIVE6, DEAD6])
            return False

        await wait_for_async(marked_again, 5, interval=0.1, what="the entries marked managed again")
        wait_neigh(node, LIVE4, "REACHABLE")

        # an entry set by hand stays the operator's
        node.ip(f"-6 neigh replace {LIVE6} lladdr 02:00:00:00:00:06 dev eth0 nud permanent")
        await set_up(adapter, [LIVE4, LIVE6, DEAD6])
        assert neigh_state(node, LIVE6) == "PERMANENT" and not managed(node, LIVE6)


async def test_link_timers_are_set_through_netlink_for_both_families(lan):  # noqa: F811
    node, _ = lan
    before = node.ip("ntable show dev eth0 name arp_cache")
    assert "retrans 100 " in before and "ucast_probes 2 mcast_probes 2" in before  # the fixture's sysctls
    async with KernelAdapter(20, netns=node.name, neigh_timers=FAST) as adapter:
        assert await set_up(adapter) == []
    for table in ("arp_cache", "ndisc_cache"):
        out = " ".join(node.ip(f"ntable show dev eth0 name {table}").split())
        assert "base_reachable 1000 retrans 200" in out, out
        assert "delay_probe 200" in out and "ucast_probes 3 mcast_probes 3" in out, out
    # the other links keep the kernel's
    assert "base_reachable 30000" in " ".join(node.ip("ntable show dev lo name arp_cache").split())


async def test_a_silent_peers_entry_that_went_is_made_managed_again_by_its_resolution(lan):  # noqa: F811
    node, _ = lan
    async with KernelAdapter(20, netns=node.name, managed_neighbours=True) as adapter:
        assert await set_up(adapter) == []
        wait_neigh(node, DEAD4, "FAILED")
        node.ip(f"neigh del {DEAD4} dev eth0")  # collected (or flushed) between two reconciles
        assert await adapter.resolve_peers({DEAD4: None}) == []
        assert managed(node, DEAD4)  # marked again, so the kernel keeps re-probing it
        wait_neigh(node, DEAD4, "FAILED")
    async with KernelAdapter(20, netns=node.name) as adapter:  # off: a plain entry, resolved now
        await adapter.read_state(PEERS)
        for address in (DEAD6, LIVE6):
            node.ip(f"neigh del {address} dev eth0")
        assert await adapter.resolve_peers({DEAD6: None, LIVE6: None}) == []
        wait_neigh(node, LIVE6, "REACHABLE")
        wait_neigh(node, DEAD6, "FAILED")
        assert not managed(node, DEAD6) and not managed(node, LIVE6)
