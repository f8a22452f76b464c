"""Throwaway network namespaces for tests: the shared helpers of `testbed.netns`."""

from testbed.netns import NetNS, add_peer_link, add_veth, new_netns, sh  # noqa: F401
