"""MetalLB static-file documents the kernel and agent tests share."""

from __future__ import annotations


def two_uplinks(peer_a: str, peer_b: str) -> str:
    """Two BGPPeers (ra, rb), each announcing its own pool (a: 10.80.0.0/28, b: 10.81.0.0/28)."""
    return f"""\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: ra, namespace: m}}
spec: {{myASN: 1, peerASN: 2, peerAddress: {peer_a}}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: rb, namespace: m}}
spec: {{myASN: 1, peerASN: 2, peerAddress: {peer_b}}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: a, namespace: m}}
spec: {{addresses: [10.80.0.0/28]}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: b, namespace: m}}
spec: {{addresses: [10.81.0.0/28]}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: to-a, namespace: m}}
spec: {{ipAddressPools: [a], peers: [ra]}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: to-b, namespace: m}}
spec: {{ipAddressPools: [b], peers: [rb]}}
"""


#: a legacy ConfigMap's config: two peers, the second only on nodes labelled zone=b
LEGACY_ZONED_PEER = """\
peers:
- peer-address: 10.99.0.2
- peer-address: 10.99.0.3
  node-selectors:
  - match-labels: {zone: b}
address-pools:
- name: lb
  protocol: bgp
  addresses: [198.51.100.0/28]
"""
