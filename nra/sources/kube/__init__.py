"""Kubernetes sources: MetalLB's legacy ConfigMap or its metallb.io CRDs, by list+watch.

RBAC the agent needs (nothing else): get/list/watch on configmaps (ConfigMap mode) or on
bgppeers, ipaddresspools and bgpadvertisements of metallb.io (CRD mode) in MetalLB's
namespace, and get/list/watch on nodes (cluster scope, for this node's labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nra.sources.kube.client import (
    ApiClientFactory,
    KubeSourceError,
    api_client_factory,
    resolve_namespace,
)
from nra.sources.kube.configmap import ConfigMapSource
from nra.sources.kube.crds import CRDSource
from nra.sources.kube.reflector import WatchTiming
from nra.sources.kube.watched_source import WatchedSource

if TYPE_CHECKING:
    from nra.settings import Settings

__all__ = ["ConfigMapSource", "CRDSource", "KubeSourceError", "WatchTiming", "make_kube_source",
           "api_client_factory", "resolve_namespace", "ApiClientFactory"]


def make_kube_source(settings: "Settings") -> WatchedSource:
    """The ConfigMap or CRD source the settings ask for. Raises KubeSourceError (a
    ValueError) with one line when a setting makes that impossible."""
    kubeconfig = getattr(settings, "kubeconfig", None)
    if kubeconfig:
        for path in kubeconfig.split(":"):
            if path and not _readable(path):
                raise KubeSourceError(f"KUBECONFIG {path} is not a readable file")
    factory = api_client_factory(kubeconfig)
    namespace = resolve_namespace(settings.metallb_namespace)
    if settings.metallb_use_crds:
        return CRDSource(factory, namespace, settings.node_name, settings.peer_weight)
    return ConfigMapSource(factory, namespace, settings.metallb_configmap_name, settings.node_name,
                           settings.peer_weight)


def _readable(path: str) -> bool:
    import os

    return os.path.isfile(path) and os.access(path, os.R_OK)
