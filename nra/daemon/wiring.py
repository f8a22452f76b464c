"""From Settings to the parts of a reconcile: the return path (the one place that reads
RETURN_PATH), the kernel façade reading what it declares, the reconcile's configuration.
Every run mode and the daemon build them here."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from nra.settings import Settings

if TYPE_CHECKING:
    from nra.daemon.reconciler import ReconcileConfig, Reconciler
    from nra.kernel.adapter import KernelAdapter
    from nra.observe.status import AgentStatus
    from nra.plan.planner import RoutingPolicy
    from nra.plan.return_path.base import ReturnPath

# The parts are imported where they are built, not here: the CLI imports this module first
# to start prefetch_kernel's read, which then overlaps those imports (~0.2 s: pyroute2,
# the reconciler, the return paths).


def routing_policy(settings: Settings) -> RoutingPolicy:
    """The multipath table (TABLE_WEIGHT) and its rules as the settings render them."""
    from nra.plan.planner import RoutingPolicy

    fwmark, fwmask = settings.fwmark
    return RoutingPolicy(table=settings.table, priority=settings.rule_priority, fwmark=fwmark, fwmask=fwmask,
                         destinations=settings.destinations)


def return_path(settings: Settings) -> ReturnPath:
    """The strategy RETURN_PATH names."""
    policy = routing_policy(settings)
    if settings.return_path == "conntrack":
        from nra.plan.return_path.conntrack import ConntrackReturnPath, ReturnPathPolicy

        return ConntrackReturnPath(policy, ReturnPathPolicy(settings.return_path_mark,
                                                            settings.router_tables, settings.table,
                                                            settings.rule_priority))
    from nra.plan.return_path.rules import RulesReturnPath

    return RulesReturnPath(policy, settings.uplink_table_range)


def reconcile_config(settings: Settings, path: ReturnPath | None = None,
                     release_memory: bool = False) -> ReconcileConfig:
    from nra.daemon.reconciler import ReconcileConfig

    return ReconcileConfig(path or return_path(settings), pre_hook=settings.pre_reconcile_script_path,
                           post_hook=settings.post_reconcile_script_path, hook_timeout=settings.hook_timeout,
                           bgp_session_hold=settings.bgp_session_hold, release_memory=release_memory)


def kernel_adapter(settings: Settings, path: ReturnPath, cleaning: bool = False) -> KernelAdapter:
    """The kernel façade for these settings (use as `async with`): reading what the return
    path declares; learned routes, managed neighbours and link timers when set. `cleaning`
    (CLEANANDEXIT): goes on without libnftables."""
    from nra.kernel.adapter import KernelAdapter

    return KernelAdapter(settings.table, netns=settings.netns, reads=path.reads,
                         learned_protos=settings.learned_protos, managed_neighbours=settings.managed_neighbours,
                         neigh_timers=settings.neigh_timers, nft_library_optional=cleaning)


def prefetch_kernel(settings: Settings) -> None:
    """Start reading what the first reconcile reads longest in a thread, so that it overlaps
    the imports of the daemon's modules (the CLI calls it as soon as it has the settings),
    the datapath check and the configuration's parse: nra's nft table in conntrack mode
    (0.4 s at 100,000 intervals, most of it the kernel's dump). Called again (modes.run),
    it starts nothing more."""
    if settings.return_path == "conntrack":
        from nra.kernel.nft import prefetch

        prefetch(settings.netns)


@asynccontextmanager
async def reconciler(settings: Settings, status: AgentStatus | None = None,
                     cleaning: bool = False, daemon: bool = False) -> AsyncIterator[Reconciler]:
    """A Reconciler on the kernel these settings name, open for the `async with` block.
    `daemon`: the long-lived one (memory given back after a large change)."""
    from nra.daemon.reconciler import Reconciler

    path = return_path(settings)
    async with kernel_adapter(settings, path, cleaning) as adapter:
        yield Reconciler(adapter, reconcile_config(settings, path, release_memory=daemon), status)
