"""Host setup: the sysctl is read and set in the agent's namespace by a thread that joined
it, and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from nra.daemon.host import MULTIPATH_USE_NEIGH, read_and_set_sysctl
from tests.netns import NetNS, sh

pytestmark = pytest.mark.kernel
ROOT_VALUE = Path("/proc/sys/net/ipv4/fib_multipath_use_neigh")


def ns_value(ns: NetNS) -> str:
    return sh(f"ip netns exec {ns.name} sysctl -n {MULTIPATH_USE_NEIGH}").stdout.strip()


def test_multipath_use_neigh_is_set_in_the_namespace_only(netns: NetNS):
    sh(f"ip netns exec {netns.name} sysctl -qw {MULTIPATH_USE_NEIGH}=0")
    root_before = ROOT_VALUE.read_text()
    assert read_and_set_sysctl(netns.name, MULTIPATH_USE_NEIGH, "1", set_it=False) == ("0", "0")
    assert ns_value(netns) == "0"
    assert read_and_set_sysctl(netns.name, MULTIPATH_USE_NEIGH, "1", set_it=True) == ("0", "1")
    assert ns_value(netns) == "1"
    assert ROOT_VALUE.read_text() == root_before
