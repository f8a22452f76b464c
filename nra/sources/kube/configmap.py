"""MetalLB's legacy ConfigMap (`config` key) as a source, plus this node's labels for the
legacy `node-selectors` of peers."""

from __future__ import annotations

from nra.config.intent import ParseResult
from nra.config.metallb import ConfigError, PoolEntries, parse_legacy_config
from nra.config.yaml_reload import YamlReloader
from nra.sources.kube.client import ApiClientFactory, KubeHTTP
from nra.sources.kube.reflector import ResourceKind, WatchTiming
from nra.sources.kube.watched_source import WatchedSource, node_resource

CONFIGMAP = "configmap"
CONFIG_KEY = "config"


class ConfigMapSource(WatchedSource):
    name = "configmap"

    def __init__(self, api_client_factory: ApiClientFactory, namespace: str, configmap_name: str,
                 node_name: str | None, default_weight: int, timing: WatchTiming | None = None,
                 coalesce_s: float = 0.1):
        super().__init__(api_client_factory, namespace, node_name, default_weight, timing, coalesce_s)
        self.configmap_name = configmap_name
        self.where = f"ConfigMap {namespace}/{configmap_name}"
        self._yaml = YamlReloader()  # an edit of a few address lines is patched, not re-parsed
        self._entries = PoolEntries(self._yaml)  # and only the pools it changed are parsed again

    def expect_edits(self) -> None:
        """A daemon's source: its first text is read ready for the edits to come (the
        YamlReloader's record_first)."""
        self._yaml.record_first = True

    async def resources(self, http: KubeHTTP) -> list[ResourceKind]:
        kinds = [ResourceKind(CONFIGMAP, f"/api/v1/namespaces/{self.namespace}/configmaps", "v1", "ConfigMap",
                              f"metadata.name={self.configmap_name}")]
        if self.node_name:
            kinds.append(node_resource(self.node_name))
        else:
            self.say_once("NODE_NAME is not set: legacy peers with node-selectors are matched "
                          "against no labels")
        return kinds

    def compute(self, caches: dict[str, list[dict]]) -> ParseResult | None:
        labels = self.node_labels(caches)
        if labels is None:
            return None
        configmaps = caches[CONFIGMAP]
        # Seen gone in a successful list or a DELETED event (maybe about to be re-created):
        # keep the last good state. A ConfigMap that says "no peers" is what cleans up.
        self.config_missing(not configmaps, f"{self.where} does not exist")
        if not configmaps:
            return None
        data = configmaps[0].get("data") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{self.where}: data is not a mapping")
        doc = data.get(CONFIG_KEY)
        try:
            return parse_legacy_config(doc, labels, self.default_weight, self._yaml.load, self._entries)
        except ConfigError as exc:
            raise ConfigError(f"{self.where} key {CONFIG_KEY!r}: {exc}") from None
