"""FRR-K8s's BGPSessionState objects of this node: an advisory, slow liveness signal.

FRR-K8s writes one object per BGP session of each node (labels frrk8s.metallb.io/node, /peer,
/vrf; status bgpStatus, bfdStatus) from its status exporter, which polls FRR at most its
`--poll-interval` apart (2 minutes by default): the signal can be minutes old, never BFD-fast. nra lists and watches this node's objects (label
selector on the node label) and hands nra.plan.peer_health, for each peer of the default VRF,
whether its session is reported up. A peer without an object is unknown, not down; so are
all of them while the watch has been failing for the hold time (the API down, say): stale
reports must not keep a live peer out.

RBAC: get/list/watch on bgpsessionstates.frrk8s.metallb.io in FRR-K8s's namespace.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from nra.config.intent import IPAddress
from nra.sources.kube.client import ApiClientFactory, KubeHTTP
from nra.sources.kube.reflector import ResourceKind, WatchTiming
from nra.sources.kube.watched_source import WatchedSource

GROUP, VERSION = "frrk8s.metallb.io", "v1beta1"
PLURAL = "bgpsessionstates"
NODE_LABEL = "frrk8s.metallb.io/node"
#: FRR's BFD peer status when down ("N/A" when BFD is not configured for the session)
BFD_DOWN = "down"


def session_up(objects: Iterable[dict], node_name: str) -> dict[IPAddress, bool]:
    """peer address -> whether its session is reported up (bgpStatus Established, BFD not
    down), from this node's objects of the default VRF. Objects that do not say (another node,
    another VRF, no or a bad peer address) are skipped; of two for one peer, down wins."""
    up: dict[IPAddress, bool] = {}
    for obj in objects:
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        if status.get("node") != node_name or status.get("vrf") not in (None, "", "default"):
            continue
        try:
            peer = ipaddress.ip_address(str(status.get("peer", "")).split("%")[0])
        except ValueError:
            continue
        reported = (status.get("bgpStatus") == "Established"
                    and str(status.get("bfdStatus", "")).lower() != BFD_DOWN)
        up[peer] = up.get(peer, True) and reported
    return up


class SessionStateWatch(WatchedSource):
    """List+watch of this node's BGPSessionStates; publishes session_up() on every change
    (never before the first complete list)."""

    name = PLURAL

    def __init__(self, api_client_factory: ApiClientFactory, namespace: str, node_name: str,
                 timing: WatchTiming | None = None, coalesce_s: float = 0.1):
        super().__init__(api_client_factory, namespace, node_name, 0, timing, coalesce_s)

    async def resources(self, http: KubeHTTP) -> list[ResourceKind]:
        return [ResourceKind(PLURAL, f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}",
                             f"{GROUP}/{VERSION}", "BGPSessionState", label_selector=f"{NODE_LABEL}={self.node_name}")]

    def compute(self, caches: dict[str, list[dict]]) -> dict[IPAddress, bool]:  # type: ignore[override]
        return session_up(caches.get(PLURAL) or [], self.node_name or "")


    @property
    def healthy(self) -> bool:
        return bool(self.reflectors) and all(r.healthy for r in self.reflectors)


class SessionStateFeed:
    """What the reconciler reads: the last published states, or None (all unknown) once the
    watch has been unhealthy for `hold_s`; a shorter failure (a routine stream cut) keeps
    them, so it does not flap any verdict."""

    def __init__(self, hold_s: float):
        self.hold_s = hold_s
        self.states: dict[IPAddress, bool] = {}
        self._unhealthy_since: float | None = None
        self._dropped = False

    def current(self) -> dict[IPAddress, bool] | None:
        return None if self._dropped else dict(self.states)

    def check(self, healthy: bool, now: float) -> bool:
        """Note the watch's health at `now`; True when current() changed because of it."""
        if healthy:
            self._unhealthy_since = None
            changed, self._dropped = self._dropped, False
            return changed
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        if not self._dropped and now - self._unhealthy_since >= self.hold_s:
            self._dropped = True
            return True
        return False
