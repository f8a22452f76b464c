"""One reconcile: read the kernel, plan against the intent, apply, with hooks around it.

The Reconciler is driven by the Agent's single worker, so two reconciles never overlap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from loguru import logger

from nra import metrics
from nra.hooks import run_hook
from nra.intent import Intent
from nra.netlink import KernelAdapter
from nra.planner import KernelState, Plan, RoutingPolicy, plan
from nra.settings import Settings
from nra.status import AgentStatus


@dataclass
class Outcome:
    ok: bool
    applied: int = 0
    failed: list[str] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    skipped: str = ""  # why nothing was done, if so
    #: some desired peers could not be used as nexthops (off-link, link down)
    degraded: bool = False

    def describe(self) -> str:
        if self.skipped:
            return self.skipped
        text = f"{self.applied} change(s) applied"
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(self.failed)
        return text


def policy_from_settings(settings: Settings) -> RoutingPolicy:
    fwmark, fwmask = settings.fwmark
    return RoutingPolicy(
        table=settings.table,
        priority=settings.rule_priority,
        fwmark=fwmark,
        fwmask=fwmask,
        destinations=settings.destinations,
    )


class Reconciler:
    def __init__(self, adapter: KernelAdapter, settings: Settings, status: AgentStatus):
        self.adapter = adapter
        self.settings = settings
        self.policy = policy_from_settings(settings)
        self.status = status
        self._last_warnings: tuple[str, ...] = ()

    async def compute_plan(self, intent: Intent) -> tuple[KernelState, Plan]:
        state = await self.adapter.read_state(intent.peers)
        return state, plan(intent, state, self.policy)

    async def reconcile(self, intent: Intent | None, trigger: str) -> Outcome:
        if intent is None:
            # Never act before the first successful load: an empty table is not the same
            # as "we do not know yet".
            logger.info("reconcile ({}) skipped: no configuration loaded yet", trigger)
            return Outcome(ok=True, skipped="no configuration loaded yet")
        started = time.perf_counter()
        logger.log("VERBOSE", "reconcile started ({})", trigger)
        await run_hook(self.settings.pre_reconcile_script_path, "pre", self.settings.hook_timeout)
        outcome = Outcome(ok=False)
        the_plan: Plan | None = None
        kinds: list[str] = []
        try:
            _, the_plan = await self.compute_plan(intent)
            self._log_warnings(the_plan.warnings)
            outcome.warnings = the_plan.warnings
            outcome.degraded = bool(the_plan.unusable_peers)
            for op in the_plan.operations:
                logger.info("{} ({})", op, trigger)
            if the_plan.operations:
                report = await self.adapter.apply(the_plan.operations)
                outcome.applied = len(report.applied)
                kinds = [op.kind for op in report.applied]
                outcome.failed = [f"{op}: {err}" for op, err in report.failed]
                for line in outcome.failed:
                    logger.error("failed: {}", line)
            outcome.ok = not outcome.failed
        except Exception as exc:  # a kernel/netlink failure must not kill the daemon
            logger.error("reconcile failed: {}: {}", type(exc).__name__, exc)
            outcome.failed.append(str(exc))
        finally:
            duration = time.perf_counter() - started
            metrics.reconcile_done(trigger, duration, outcome.ok, kinds, time.time())
            self.status.last_reconcile_ok = outcome.ok
            self.status.last_reconcile_at = time.time()
            self.status.in_sync = outcome.ok
        if outcome.ok and the_plan is not None:
            self._export_state(intent, the_plan)
        await run_hook(self.settings.post_reconcile_script_path, "post", self.settings.hook_timeout)
        level = "INFO" if outcome.applied or outcome.failed else "VERBOSE"
        logger.log(level, "reconcile ({}) done in {:.1f} ms: {}", trigger, duration * 1000, outcome.describe())
        return outcome

    def _log_warnings(self, warnings: tuple[str, ...]) -> None:
        # Say each warning when it first appears, not on every timer tick.
        for warning in warnings:
            if warning not in self._last_warnings:
                logger.warning(warning)
        self._last_warnings = warnings

    def _export_state(self, intent: Intent, the_plan: Plan) -> None:
        peers = {}
        rules = {}
        for version in (4, 6):
            family_peers = intent.peers_of(version)
            peers[version] = sum(1 for p in family_peers if p.address not in the_plan.unusable_peers)
            rules[version] = len(intent.prefixes_of(version)) if family_peers else 0
        metrics.kernel_state(peers, rules)
