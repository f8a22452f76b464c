"""Prometheus metrics, named the way MetalLB names its own (prefix `nra_`).

The agent calls the small functions below; nothing else touches the collectors, so the
names live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "nra_reconciles", "Reconciles run, by trigger", ["trigger"], registry=REGISTRY
)
RECONCILE_FAILURES = Counter(
    "nra_reconcile_failures", "Reconciles that failed, by trigger", ["trigger"], registry=REGISTRY
)
RECONCILE_DURATION = Gauge(
    "nra_last_reconcile_duration_seconds", "Duration of the last reconcile", registry=REGISTRY
)
RECONCILE_TIME = Gauge(
    "nra_last_reconcile_timestamp_seconds", "Unix time of the last reconcile", registry=REGISTRY
)
OPERATIONS = Counter(
    "nra_operations", "Kernel operations applied, by kind", ["kind"], registry=REGISTRY
)
DRIFT_REPAIRS = Counter(
    "nra_drift_repairs",
    "Reconciles triggered by a change someone else made to the table or its rules that changed something",
    registry=REGISTRY,
)
PEERS_IN_ROUTE = Gauge(
    "nra_peers_in_route", "Nexthops in the managed route, by address family", ["family"], registry=REGISTRY
)
RULES_INSTALLED = Gauge(
    "nra_rules_installed", "Policy rules pointing at the managed table, by address family", ["family"], registry=REGISTRY
)
CONFIG_ERRORS = Gauge(
    "nra_config_errors", "Bad entries skipped in the current configuration", registry=REGISTRY
)
CONFIG_LOADS = Counter(
    "nra_config_loads", "Configurations published by the source", registry=REGISTRY
)
SOURCE_SYNCED = Gauge(
    "nra_source_synced", "1 when the source holds a complete, current view", ["source"], registry=REGISTRY
)
WATCH_RESTARTS = Counter(
    "nra_watch_restarts", "Watch streams restarted, by resource and reason", ["resource", "reason"], registry=REGISTRY
)


def reconcile_done(trigger: str, duration_s: float, ok: bool, op_kinds: Iterable[str], wall_time: float) -> None:
    RECONCILES.labels(trigger).inc()
    if not ok:
        RECONCILE_FAILURES.labels(trigger).inc()
    RECONCILE_DURATION.set(duration_s)
    RECONCILE_TIME.set(wall_time)
    for kind in op_kinds:
        OPERATIONS.labels(kind).inc()


def drift_repaired() -> None:
    DRIFT_REPAIRS.inc()


def kernel_state(peers: dict[int, int], rules: dict[int, int]) -> None:
    """peers/rules: address family version (4 or 6) -> count."""
    for version in (4, 6):
        PEERS_IN_ROUTE.labels(f"ipv{version}").set(peers.get(version, 0))
        RULES_INSTALLED.labels(f"ipv{version}").set(rules.get(version, 0))


def config_loaded(problems: int) -> None:
    CONFIG_LOADS.inc()
    CONFIG_ERRORS.set(problems)


def source_synced(source: str, synced: bool) -> None:
    SOURCE_SYNCED.labels(source).set(1 if synced else 0)


def watch_restarted(resource: str, reason: str) -> None:
    WATCH_RESTARTS.labels(resource, reason).inc()
