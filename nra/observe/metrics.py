"""Prometheus metrics, named the way MetalLB names its own (prefix `nra_`).

The agent calls the small functions below; nothing else touches the collectors, so the
names live in one place. The alerts and the dashboard (charts/, deploy/monitoring/) are
written against exactly these names: rename one and they break.

Gauges that describe the kernel (`nra_peers_in_route`, `nra_rules_installed`) are set from
the kernel state read during a reconcile, never from the intent.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

INFO = Info("nra", "Version and mode of this agent", registry=REGISTRY)
RECONCILES = Counter(
    "nra_reconciles", "Reconciles run, by trigger", ["trigger"], registry=REGISTRY
)
RECONCILE_FAILURES = Counter(
    "nra_reconcile_failures", "Reconciles that failed, by trigger", ["trigger"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "nra_reconcile_duration_seconds", "Time a reconcile took (read, plan, apply; hooks included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
RECONCILE_DURATION = Gauge(
    "nra_last_reconcile_duration_seconds", "Duration of the last reconcile", registry=REGISTRY
)
RECONCILE_TIME = Gauge(
    "nra_last_reconcile_timestamp_seconds", "Unix time of the last reconcile", registry=REGISTRY
)
RECONCILE_OK = Gauge(
    "nra_last_reconcile_success", "1 when the last reconcile left the kernel as planned", registry=REGISTRY
)
OPERATIONS = Counter(
    "nra_operations", "Kernel operations applied, by kind", ["kind"], registry=REGISTRY
)
DRIFT_REPAIRS = Counter(
    "nra_drift_repairs",
    "Reconciles triggered by a change someone else made to the table or its rules that changed something",
    registry=REGISTRY,
)

def _by_family(name: str, text: str) -> Gauge:
    return Gauge(name, f"{text}, by address family", ["family"], registry=REGISTRY)


PEERS_IN_ROUTE = _by_family("nra_peers_in_route", "Nexthops of the managed route as the kernel holds it")
PEERS_CONFIGURED = _by_family("nra_peers_configured", "Peers in the desired state")
RULES_INSTALLED = _by_family("nra_rules_installed",
                             "Policy rules pointing at the managed table(s) as the kernel holds them")
PREFIXES = _by_family("nra_prefixes", "LoadBalancer prefixes in the desired state")
PEERS_LEFT_OUT = Gauge(
    "nra_peers_left_out",
    "Configured peers left out of the return path (off-link, link down, not answering ARP/ND, "
    "BGP session down), by address family and reason", ["family", "reason"], registry=REGISTRY,
)
CONFIG_ERRORS = Gauge(
    "nra_config_errors", "Bad entries skipped in the current configuration", registry=REGISTRY
)
CONFIG_LOADS = Counter(
    "nra_config_loads", "Configurations published by the source", registry=REGISTRY
)
CONFIG_REFUSED = Gauge(
    "nra_config_refused",
    "1 while the source's current configuration cannot be used at all (the last good one is kept)",
    registry=REGISTRY,
)
CONFIG_MISSING = Gauge(
    "nra_config_missing",
    "1 while the configuration is missing (ConfigMap deleted, every metallb.io object gone); "
    "the last good state is kept", registry=REGISTRY,
)
SOURCE_SYNCED = Gauge(
    "nra_source_synced", "1 when the source holds a complete, current view", ["source"], registry=REGISTRY
)
WATCH_RESTARTS = Counter(
    "nra_watch_restarts", "Watch streams restarted, by resource and reason", ["resource", "reason"], registry=REGISTRY
)
READY = Gauge(
    "nra_ready", "1 when /readyz answers 200", registry=REGISTRY
)
UNEXPECTED_ERRORS = Counter(
    "nra_unexpected_errors",
    "Exceptions that are bugs rather than expected faults (logged with their traceback), by component",
    ["component"], registry=REGISTRY,
)
CONTENTION = Gauge(
    "nra_table_contention",
    "1 while another writer keeps undoing nra's changes to its table or rules (two agents fighting)",
    registry=REGISTRY,
)
HOOK_RUNS = Counter(
    "nra_hook_runs", "Pre/post reconcile hooks run, by phase and outcome (ok, failed, timeout, error)",
    ["phase", "outcome"], registry=REGISTRY,
)


#: the single triggers of a daemon's reconciles (combined ones, "config+netlink", come as they happen)
TRIGGERS = ("config", "timer", "netlink", "link", "neighbour", "learned-route", "uplink", "retry", "sighup")


def agent_started(version: str, source: str, return_path: str = "rules") -> None:
    """The agent's info, and its reconcile counters at 0 for each trigger: a counter series
    that exists before its first increment lets rate() and the alerts see that increment."""
    INFO.info({"version": version, "source": source, "return_path": return_path})
    for trigger in TRIGGERS:
        RECONCILES.labels(trigger)
        RECONCILE_FAILURES.labels(trigger)


def reconcile_done(trigger: str, duration_s: float, ok: bool, op_kinds: Iterable[str], wall_time: float) -> None:
    RECONCILES.labels(trigger).inc()
    if not ok:
        RECONCILE_FAILURES.labels(trigger).inc()
    RECONCILE_SECONDS.observe(duration_s)
    RECONCILE_DURATION.set(duration_s)
    RECONCILE_TIME.set(wall_time)
    RECONCILE_OK.set(1 if ok else 0)
    for kind in op_kinds:
        OPERATIONS.labels(kind).inc()


def drift_repaired() -> None:
    DRIFT_REPAIRS.inc()


def kernel_state(peers_in_route: dict[int, int], rules: dict[int, int]) -> None:
    """What the kernel holds after a reconcile; peers/rules: family version (4 or 6) -> count."""
    for version in (4, 6):
        PEERS_IN_ROUTE.labels(f"ipv{version}").set(peers_in_route.get(version, 0))
        RULES_INSTALLED.labels(f"ipv{version}").set(rules.get(version, 0))


def desired_state(peers: dict[int, int], prefixes: dict[int, int]) -> None:
    """The intent's size; peers/prefixes: family version -> count."""
    for version in (4, 6):
        PEERS_CONFIGURED.labels(f"ipv{version}").set(peers.get(version, 0))
        PREFIXES.labels(f"ipv{version}").set(prefixes.get(version, 0))


LEFT_OUT_REASONS = ("off-link", "no-arp", "bgp-down", "invalid")


def peers_left_out(counts: dict[tuple[int, str], int]) -> None:
    """(family version, reason) -> how many configured peers are left out for that reason;
    reasons are LEFT_OUT_REASONS, every series is set (0 when absent)."""
    for version in (4, 6):
        for reason in LEFT_OUT_REASONS:
            PEERS_LEFT_OUT.labels(f"ipv{version}", reason).set(counts.get((version, reason), 0))


def config_loaded(problems: int) -> None:
    CONFIG_LOADS.inc()
    CONFIG_ERRORS.set(problems)


def config_refused(refused: bool) -> None:
    CONFIG_REFUSED.set(1 if refused else 0)


def config_missing(missing: bool) -> None:
    CONFIG_MISSING.set(1 if missing else 0)


def source_synced(source: str, synced: bool) -> None:
    SOURCE_SYNCED.labels(source).set(1 if synced else 0)


def watch_restarted(resource: str, reason: str) -> None:
    WATCH_RESTARTS.labels(resource, reason).inc()


def ready(is_ready: bool) -> None:
    READY.set(1 if is_ready else 0)


def unexpected_error(component: str) -> None:
    UNEXPECTED_ERRORS.labels(component).inc()


def contention(fighting: bool) -> None:
    CONTENTION.set(1 if fighting else 0)


def hook_ran(phase: str, outcome: str) -> None:
    HOOK_RUNS.labels(phase, outcome).inc()
