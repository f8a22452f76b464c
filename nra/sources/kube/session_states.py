"""FRR-K8s's BGPSessionState objects of this node: an advisory, slow liveness signal.

FRR-K8s writes one object per BGP session of each node (labels frrk8s.metallb.io/node, /peer,
/vrf; status bgpStatus, bfdStatus) from its status exporter, which polls FRR at most its
`--poll-interval` apart (2 minutes by default): the signal can be minutes old, never BFD-fast. nra lists and watches this node's objects (label
selector on the node label) and hands nra.plan.peer_health, for each peer of the default VRF,
whether its session is reported up. A peer without an object is unknown, not down; so are
all of them while the watch has been failing for the hold time (the API down, say): stale
reports must not keep a live peer out.

`status.peer` is in FRR-K8s's label form (a label value may hold no ':'): an IPv4 address as
is, an IPv6 address written out in full with '-' for ':' (`2001-0db8-0000-...-0001`), the
interface name for an unnumbered session. Sessions are keyed as nra.config.intent.PeerSpec.key
(`10.0.0.1`, `fd00::1`, `%eth1`, `...@vrf` outside the default VRF).

RBAC: get/list/watch on bgpsessionstates.frrk8s.metallb.io in FRR-K8s's namespace.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from nra.sources.kube.client import ApiClientFactory, KubeHTTP
from nra.sources.kube.reflector import ResourceKind, WatchTiming
from nra.sources.kube.watched_source import WatchedSource

GROUP, VERSION = "frrk8s.metallb.io", "v1beta1"
PLURAL = "bgpsessionstates"
NODE_LABEL = "frrk8s.metallb.io/node"
#: FRR's BFD peer status when down ("N/A" when BFD is not configured for the session)
BFD_DOWN = "down"


#: an IPv6 address in label form: eight groups of hex digits joined by '-'
_LABEL_IPV6 = re.compile(r"[0-9a-fA-F]{1,4}(?:-[0-9a-fA-F]{1,4}){7}")
#: what FRR-K8s leaves as is when it is not an address: an interface name (IFNAMSIZ)
_INTERFACE = re.compile(r"[^\s/:%]{1,15}")


def session_peer(text: object) -> str | None:
    """The peer of a `status.peer` in label form (see the module doc) as a PeerSpec key
    without VRF, or None when it is neither an address nor an interface name."""
    if not isinstance(text, str) or not text:
        return None
    bare = text.split("%")[0]  # a zone, if a writer ever leaves one
    if _LABEL_IPV6.fullmatch(bare):
        bare = bare.replace("-", ":")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    return f"%{text}" if _INTERFACE.fullmatch(text) else None


def session_up(objects: Iterable[dict], node_name: str) -> dict[str, bool]:
    """session (PeerSpec key) -> whether it is reported up (bgpStatus Established, BFD not
    down), from this node's objects. Objects that do not say (another node, no or a bad
    peer) are skipped; of two for one peer, down wins."""
    up: dict[str, bool] = {}
    for obj in objects:
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        peer = session_peer(status.get("peer"))
        if status.get("node") != node_name or peer is None:
            continue
        vrf = status.get("vrf")
        if vrf not in (None, "", "default"):
            peer = f"{peer}@{vrf}"
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

    def compute(self, caches: dict[str, list[dict]]) -> dict[str, bool]:  # type: ignore[override]
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
        self.states: dict[str, bool] = {}
        self._unhealthy_since: float | None = None
        self._dropped = False

    def current(self) -> dict[str, bool] | None:
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
