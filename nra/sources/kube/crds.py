"""MetalLB's metallb.io custom resources as a source: BGPPeers (with nodeSelectors matched
against this node's labels), IPAddressPools and BGPAdvertisements, plus this Node."""

from __future__ import annotations

from nra.config.intent import ParseResult
from nra.config.metallb import parse_objects
from nra.sources.kube.client import (
    ApiClientFactory,
    ApiError,
    KubeHTTP,
    KubeSourceError,
)
from nra.sources.kube.reflector import ResourceKind, WatchTiming
from nra.sources.kube.watched_source import NODE, WatchedSource, node_resource

GROUP = "metallb.io"
# BGPPeer: v1beta2 is current, v1beta1 what older MetalLB releases serve.
BGPPEER_VERSIONS = ("v1beta2", "v1beta1")
# (plural, kind, versions we understand in order of preference)
RESOURCES = (
    ("bgppeers", "BGPPeer", BGPPEER_VERSIONS),
    ("ipaddresspools", "IPAddressPool", ("v1beta1",)),
    ("bgpadvertisements", "BGPAdvertisement", ("v1beta1",)),
)


def choose_versions(served: dict[str, set[str]]) -> dict[str, str]:
    """served: version -> plurals it serves. Returns plural -> version, or raises
    ApiError naming what is missing (CRDs not installed, or too old/new)."""
    chosen: dict[str, str] = {}
    for plural, kind, versions in RESOURCES:
        version = next((v for v in versions if plural in served.get(v, set())), None)
        if version is None:
            raise ApiError(404, "NotFound", f"{GROUP} does not serve {kind} in {' or '.join(versions)} "
                                            f"(served: {', '.join(sorted(served)) or 'nothing'}); "
                                            "are MetalLB's CRDs installed?")
        chosen[plural] = version
    return chosen


class CRDSource(WatchedSource):
    name = "crds"

    def __init__(self, api_client_factory: ApiClientFactory, namespace: str, node_name: str | None,
                 default_weight: int, timing: WatchTiming | None = None, coalesce_s: float = 0.1):
        if not node_name:
            raise KubeSourceError("NODE_NAME must be set with METALLB_USE_CRDS: BGPPeer nodeSelectors are "
                                  "matched against this node's labels")
        super().__init__(api_client_factory, namespace, node_name, default_weight, timing, coalesce_s)
        self.versions: dict[str, str] = {}

    async def discover(self, http: KubeHTTP) -> dict[str, str]:
        try:
            group = await http.get_json(f"/apis/{GROUP}")
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, "NotFound", f"the API has no {GROUP} group; are MetalLB's CRDs installed?") from None
            raise
        names = [str(v.get("version")) for v in group.get("versions") or [] if isinstance(v, dict)]
        served: dict[str, set[str]] = {}
        for version in names:
            if version not in {v for _, _, vs in RESOURCES for v in vs}:
                continue
            listing = await http.get_json(f"/apis/{GROUP}/{version}")
            served[version] = {str(r.get("name")) for r in listing.get("resources") or [] if isinstance(r, dict)}
        return choose_versions(served)

    async def resources(self, http: KubeHTTP) -> list[ResourceKind]:
        self.versions = await self.discover(http)
        kinds = [
            ResourceKind(plural, f"/apis/{GROUP}/{self.versions[plural]}/namespaces/{self.namespace}/{plural}",
                         f"{GROUP}/{self.versions[plural]}", kind)
            for plural, kind, _ in RESOURCES
        ]
        assert self.node_name is not None
        return kinds + [node_resource(self.node_name)]

    def compute(self, caches: dict[str, list[dict]]) -> ParseResult | None:
        labels = self.node_labels(caches)
        if labels is None:
            return None
        objects = [obj for name, items in caches.items() if name != NODE for obj in items]
        # Every metallb.io object gone (maybe about to be re-created): keep the last good state.
        self.config_missing(not objects, f"no BGPPeer, IPAddressPool or BGPAdvertisement in {self.namespace}")
        if not objects:
            return None
        return parse_objects(objects, labels, self.default_weight)
