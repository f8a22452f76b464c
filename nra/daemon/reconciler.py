"""One reconcile: read the kernel, judge the peers, plan against the intent, apply, with
hooks around it; then the status and the gauges from what the kernel holds.

The Reconciler is driven by one worker (nra.daemon.worker), so two reconciles never overlap. It
keeps what lives between reconciles: the peers' liveness (nra.plan.peer_health) and the desired
rules of the current intent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from loguru import logger

from nra.config.intent import Intent, IPAddress
from nra.daemon.hooks import run_hook
from nra.kernel.adapter import KERNEL_ERRORS, ApplyReport, KernelAdapter
from nra.kernel.model import KernelState
from nra.kernel.nft_table import DesiredTables
from nra.kernel.operations import (
    AddRule,
    DeleteRoute,
    DeleteRule,
    Operation,
    ReplaceRoute,
)
from nra.observe import metrics
from nra.observe.logs import VERBOSE
from nra.observe.status import AgentStatus
from nra.plan.peer_health import PeerHealth
from nra.plan.planner import (
    DesiredRules,
    Plan,
    RoutingPolicy,
    desired_rules,
    managed_route,
    plan,
)
from nra.plan.return_path import ReturnPathPolicy, plan_conntrack
from nra.settings import Settings


@dataclass
class Outcome:
    ok: bool
    applied: int = 0
    #: the operations applied
    applied_ops: list[Operation] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: the plan's warnings (each peer left out, and why); read by /status
    warnings: tuple[str, ...] = ()
    skipped: str = ""  # why nothing was done, if so
    #: some desired peers could not be used as nexthops (off-link, link down, silent)
    degraded: bool = False
    #: what a check read after applying still found different (verify=True)
    remaining: list[str] = field(default_factory=list)
    plan: Plan | None = None
    #: reconcile again in this many seconds: a liveness hold time runs out then
    recheck_in_s: float | None = None

    def describe(self) -> str:
        if self.skipped:
            return self.skipped
        text = f"{self.applied} change(s) applied"
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(self.failed)
        if self.remaining:
            text += "; still different after applying: " + "; ".join(self.remaining)
        return text


def policy_from_settings(settings: Settings) -> RoutingPolicy:
    fwmark, fwmask = settings.fwmark
    return RoutingPolicy(table=settings.table, priority=settings.rule_priority, fwmark=fwmark, fwmask=fwmask,
                         destinations=settings.destinations)


def return_path_policy(settings: Settings) -> ReturnPathPolicy | None:
    """The conntrack return path's policy; None in rules mode."""
    if settings.return_path != "conntrack":
        return None
    return ReturnPathPolicy(settings.return_path_mark, settings.router_tables, settings.table,
                            settings.rule_priority)


def kernel_adapter(settings: Settings) -> KernelAdapter:
    """The kernel façade for these settings (use as `async with`): with the router tables and
    nft in conntrack mode, learned routes, managed neighbours and link timers when set."""
    return KernelAdapter(settings.table, netns=settings.netns,
                         router_tables=settings.router_tables if settings.return_path == "conntrack" else None,
                         learned_protos=settings.learned_protos, managed_neighbours=settings.managed_neighbours,
                         neigh_timers=settings.neigh_timers)


def kernel_after(state: KernelState, report: ApplyReport, policy: RoutingPolicy) -> tuple[dict[int, int], dict[int, int]]:
    """(nexthops of the managed route, rules pointing at the table), by family, as the
    kernel holds them after `report`'s operations were applied to `state`."""
    peers: dict[int, int] = {}
    rules: dict[int, int] = {}
    for version in (4, 6):
        route = managed_route(state, policy, version)
        peers[version] = len(route.nexthops) if route else 0
        rules[version] = sum(1 for r in state.rules if r.family == version)
    dropped = {id(op): len(gateways) for op, gateways in report.dropped}
    for op in report.applied:
        if isinstance(op, ReplaceRoute) and op.dst == policy.destination_of(op.family):
            peers[op.family] = len(op.nexthops) - dropped.get(id(op), 0)
        elif isinstance(op, DeleteRoute) and op.route == managed_route(state, policy, op.route.family):
            peers[op.route.family] = 0
        elif isinstance(op, AddRule):
            rules[op.family] += 1
        elif isinstance(op, DeleteRule):
            rules[op.rule.family] -= 1
    return peers, rules


class Reconciler:
    def __init__(self, adapter: KernelAdapter, settings: Settings, status: AgentStatus):
        self.adapter = adapter
        self.settings = settings
        self.policy = policy_from_settings(settings)
        self.return_path = return_path_policy(settings)
        self._nft_tables = DesiredTables()
        self.status = status
        self.health = PeerHealth()
        #: FRR-K8s's session states of this node's peers (peer -> reported up; None: all
        #: unknown), from the agent's watch; None when that signal is off
        self.session_states: Callable[[], Mapping[IPAddress, bool] | None] | None = None
        self._recheck_at: float | None = None
        self._desired: tuple[Intent | None, DesiredRules] = (None, {})
        self._last_warnings: tuple[str, ...] = ()

    def _desired_rules(self, intent: Intent) -> DesiredRules:
        # A steady reconcile (the same intent object) does not rebuild 10,000 keys.
        if self._desired[0] is not intent:
            self._desired = (intent, desired_rules(intent, self.policy))
        return self._desired[1]

    async def compute_plan(self, intent: Intent) -> tuple[KernelState, Plan]:
        state = await self.adapter.read_state(p.address for p in intent.peers)
        self.health.observe_neighbours(state.links, state.neighbours)
        if state.learned is not None:
            self.health.observe_learned_routes((p.address for p in intent.peers), state.learned)
        if self.session_states is not None:
            self._recheck_at = self.health.observe_session_states(
                [p.address for p in intent.peers], self.session_states() or {}, time.monotonic(),
                self.settings.bgp_session_hold)
        if self.return_path is not None:
            return state, plan_conntrack(intent, state, self.policy, self.return_path, self.health.verdicts(),
                                         self._nft_tables)
        return state, plan(intent, state, self.policy, self.health.verdicts(), self._desired_rules(intent))

    async def reconcile(self, intent: Intent | None, trigger: str, *, hooks: bool = True,
                        verify: bool = False) -> Outcome:
        """Make the kernel match `intent`. `verify`: read the kernel again afterwards and fail
        if anything still differs (the one-off modes, which cannot retry)."""
        if intent is None:
            # Never act before the first successful load: an empty table is not the same
            # as "we do not know yet".
            logger.info("reconcile ({}) skipped: no configuration loaded yet", trigger)
            return Outcome(ok=True, skipped="no configuration loaded yet")
        started = time.perf_counter()
        logger.log(VERBOSE, "reconcile started ({})", trigger)
        if hooks:
            await run_hook(self.settings.pre_reconcile_script_path, "pre", self.settings.hook_timeout)
        outcome = Outcome(ok=False)
        kinds: list[str] = []
        try:
            kinds = await self._converge(intent, trigger, outcome, verify)
        except KERNEL_ERRORS as exc:  # the kernel refused or timed out: retried later
            logger.error("reconcile failed: {}", exc)
            outcome.failed.append(str(exc))
        except Exception as exc:  # a bug: say where, keep the daemon (and the kernel) as they are
            logger.opt(exception=exc).error("reconcile failed on an unexpected error: {}: {}",
                                            type(exc).__name__, exc)
            metrics.unexpected_error("reconciler")
            outcome.failed.append(f"{type(exc).__name__}: {exc}")
        duration = time.perf_counter() - started
        metrics.reconcile_done(trigger, duration, outcome.ok, kinds, time.time())
        self.status.last_reconcile_ok = outcome.ok
        self.status.last_reconcile_at = time.time()
        self.status.in_sync = outcome.ok
        metrics.ready(self.status.ready)
        if hooks:
            await run_hook(self.settings.post_reconcile_script_path, "post", self.settings.hook_timeout)
        level = "INFO" if outcome.applied or outcome.failed or outcome.remaining else VERBOSE
        logger.log(level, "reconcile ({}) done in {:.1f} ms: {}", trigger, duration * 1000, outcome.describe())
        return outcome

    async def _converge(self, intent: Intent, trigger: str, outcome: Outcome, verify: bool) -> list[str]:
        state, the_plan = await self.compute_plan(intent)
        set_up = tuple(await self.adapter.set_up_peer_neighbours(state))
        outcome.plan = the_plan
        outcome.warnings = the_plan.warnings + set_up
        self._log_warnings(outcome.warnings)
        outcome.degraded = bool(the_plan.unusable_peers)
        for op in the_plan.operations:
            logger.info("{} ({})", op, trigger)
        report = ApplyReport()
        if the_plan.operations:
            report = await self.adapter.apply(the_plan.operations)
            outcome.applied = len(report.applied)
            outcome.applied_ops = report.applied
            outcome.failed = [f"{op}: {err}" for op, err in report.failed]
            for line in outcome.failed:
                logger.error("failed: {}", line)
        if verify and the_plan.operations:
            state, again = await self.compute_plan(intent)
            outcome.remaining = [str(op) for op in again.operations]
            peers, rules = kernel_after(state, ApplyReport(), self.policy)
        else:
            peers, rules = kernel_after(state, report, self.policy)
        outcome.ok = not outcome.failed and not outcome.remaining
        if self._recheck_at is not None:
            outcome.recheck_in_s = max(0.0, self._recheck_at - time.monotonic())
        self._export_gauges(intent, the_plan, peers, rules)
        return [op.kind for op in report.applied]

    def _log_warnings(self, warnings: tuple[str, ...]) -> None:
        # Say each warning when it first appears, not on every timer tick.
        for warning in warnings:
            if warning not in self._last_warnings:
                logger.warning(warning)
        self._last_warnings = warnings

    def _export_gauges(self, intent: Intent, the_plan: Plan, peers: dict[int, int], rules: dict[int, int]) -> None:
        metrics.kernel_state(peers, rules)
        if self.return_path is None:
            prefixes = {v: len(rules) for v, rules in self._desired_rules(intent).items()}
        else:  # (no rule per prefix to build in conntrack mode)
            prefixes = intent.prefix_counts
        metrics.desired_state({v: len(intent.peers_of(v)) for v in (4, 6)}, prefixes)
        left_out: dict[tuple[int, str], int] = {}
        for address, reason in the_plan.left_out.items():
            left_out[(address.version, reason)] = left_out.get((address.version, reason), 0) + 1
        metrics.peers_left_out(left_out)
