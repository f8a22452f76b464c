"""Throwaway network namespaces for tests: the shared helpers of `testbed.netns`."""

from testbed.netns import NetNS, add_peer_link, add_veth, new_netns, sh

__all__ = ["NetNS", "add_peer_link", "add_veth", "new_netns", "sh"]
