from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.netns import NetNS, add_peer_link, new_netns
from tests.realcluster import real_cluster  # noqa: F401  (the session's real kube-apiserver)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NRA_SHARED", REPO.parent / "shared"))


@pytest.fixture
def netns():
    """A fresh, empty network namespace (lo up), removed after the test."""
    ns = new_netns()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def node_ns(netns: NetNS) -> NetNS:
    """A namespace with a veth link carrying 10.99.0.1/24 and fd99::1/64, so peers in
    10.99.0.0/24 and fd99::/64 are on-link."""
    add_peer_link(netns)
    return netns


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
