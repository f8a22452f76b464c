"""One reconcile: read the kernel, judge the peers, plan against the intent through the
return path, apply, with hooks around it; then the status and the gauges from what the
kernel holds.

The Reconciler is driven by one worker (nra.daemon.worker), so two reconciles never overlap. It
holds one return path (nra.plan.return_path: it never asks which), talks to the kernel
through nra.kernel.protocol.Kernel, and keeps what lives between reconciles: the peers'
liveness (nra.plan.peer_health). It needs no Settings: nra.daemon.wiring builds its
ReconcileConfig from them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from loguru import logger

from nra.config.intent import Intent, IPAddress
from nra.config.uplinks import NodeFacts, needs_lookup, resolve_intent
from nra.daemon.hooks import run_hook
from nra.daemon.memory import large_change, release_free_memory
from nra.kernel.model import UNRESOLVED, KernelState
from nra.kernel.operations import ApplyReport, Operation
from nra.kernel.protocol import KERNEL_ERRORS, Kernel
from nra.observe import metrics
from nra.observe.logs import VERBOSE, log_operations, peer_field
from nra.observe.status import AgentStatus
from nra.plan.peer_health import PeerHealth, peer_sessions, restart_holds
from nra.plan.planner import Plan
from nra.plan.return_path.base import ReturnPath


@dataclass(frozen=True)
class ReconcileConfig:
    """What one reconcile needs to know, beyond the intent: the return path, and the hooks."""

    return_path: ReturnPath
    pre_hook: str | None = None  # PRE_RECONCILE_SCRIPT_PATH
    post_hook: str | None = None  # POST_RECONCILE_SCRIPT_PATH
    hook_timeout: float = 10.0
    #: how long FRR-K8s's "session down" is believed before it counts (BGP_SESSION_HOLD)
    bgp_session_hold: float = 3.0
    #: after a large change of the nft table, give the allocator's free memory back to the
    #: kernel (nra.daemon.memory): the daemon's; a one-off run exits instead
    release_memory: bool = False


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
    #: the kernel's state the plan was made from (the read before applying)
    state: KernelState | None = None
    #: reconcile again in this many seconds: a liveness hold time runs out then
    recheck_in_s: float | None = None
    #: the intent the plan was made for, its multihop and unnumbered peers resolved
    intent: Intent | None = None

    def shed(self) -> None:
        """Let go of what only the reconcile needed, once it is recorded: the worker keeps the
        last outcome for /status (counts, warnings, the resolved intent, the plan's uplinks
        and left-out peers), and the plan's operations and the state read held the desired
        and the current nft tables (100,000 intervals each, and the table before through its
        delta) until the next reconcile."""
        self.state, self.applied_ops = None, []
        if self.plan is not None and (self.plan.operations or self.plan.rule_members):
            self.plan = replace(self.plan, operations=(), rule_members=())

    def describe(self) -> str:
        if self.skipped:
            return self.skipped
        text = f"{self.applied} change(s) applied"
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(self.failed)
        if self.remaining:
            text += "; still different after applying: " + "; ".join(self.remaining)
        return text


#: triggers (nra.daemon.worker joins them with "+") whose reconcile reads the whole kernel
#: state again instead of the view the kernel side keeps from its notifications
#: (nra.kernel.rules.KeptRules): the timer (the periodic resync), SIGHUP, and the retry
#: after a failed reconcile
FULL_READ_TRIGGERS = frozenset({"timer", "sighup", "retry"})

#: how long a reconcile waits for the entries of peers it sees for the first time: an ARP or
#: ND answer takes milliseconds on a live link; a dead router costs this once
FRESH_RESOLVE_WAIT_S = 1.0

class Reconciler:
    def __init__(self, kernel: Kernel, config: ReconcileConfig, status: AgentStatus | None = None):
        self.kernel = kernel
        self.config = config
        self.return_path = config.return_path
        self.status = status if status is not None else AgentStatus()
        self.health = PeerHealth()
        #: FRR-K8s's session states of this node (PeerSpec key -> reported up; None: all
        #: unknown), from the agent's watch; None when that signal is off
        self.session_states: Callable[[], Mapping[str, bool] | None] | None = None
        self._recheck_at: float | None = None
        #: the on-link peers of the last read (see _fresh_peers)
        self._seen: set[IPAddress] = set()
        self._last_warnings: tuple[str, ...] = ()
        #: (intent, facts, resolved intent) of the last resolution: the same resolved object
        #: while nothing changed, so the return path's per-intent caches hold
        self._resolved: tuple[Intent, NodeFacts, Intent] | None = None
        #: the intent the last plan was made for, its peers resolved (`nra plan`, /status)
        self.resolved_intent: Intent | None = None

    async def resolve(self, intent: Intent) -> Intent:
        """The intent with its multihop and unnumbered peers resolved to their next hops from
        what the node's tables say now (nra.config.uplinks.resolve_intent); itself when it has
        none."""
        if not any(needs_lookup(s) for s in intent.specs):
            return intent
        facts = await self.kernel.uplink_facts(intent.specs)
        kept = self._resolved
        if kept is not None and kept[0] is intent and kept[1] == facts:
            return kept[2]
        resolved = resolve_intent(intent, facts)
        self._resolved = (intent, facts, resolved)
        return resolved

    async def compute_plan(self, intent: Intent, resolve: bool = False) -> tuple[KernelState, Plan]:
        """The kernel's state and the plan. `resolve` (a reconcile, never `nra plan`): when the
        return path tells routers by their link-layer address (conntrack), peers seen for the
        first time without a valid neighbour entry are resolved first; in rules mode their
        first resolution is left to traffic, as before (a peer that never answers is then
        kept until something sends to it)."""
        intent = self.resolved_intent = await self.resolve(intent)
        state = await self.kernel.read_state(p.address for p in intent.peers)
        if resolve and self.return_path.reads.peer_links and (fresh := self._fresh_peers(state)):
            for warning in await self.kernel.resolve_fresh_peers(fresh, FRESH_RESOLVE_WAIT_S):
                logger.warning(warning)
            state = await self.kernel.read_state(p.address for p in intent.peers)
        self.health.observe_neighbours(state.links, state.neighbours, state.lladdrs)
        if state.learned is not None:
            self.health.observe_learned_routes((p.address for p in intent.peers), state.learned)
        if self.session_states is not None:
            self._recheck_at = self.health.observe_session_states(
                [p.address for p in intent.peers], peer_sessions(intent, self.session_states() or {}),
                time.monotonic(), self.config.bgp_session_hold, restart_holds(intent))
        the_plan = self.return_path.plan(intent, state, self.health.verdicts())
        waiting = tuple(f"peer {r.name}: {r.how}; no next hop until it resolves"
                        for r in intent.resolved if r.kind == "waiting" and not r.vrf)
        return state, replace(the_plan, warnings=the_plan.warnings + waiting) if waiting else the_plan

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
        if FULL_READ_TRIGGERS.intersection(trigger.split("+")):
            self.kernel.resync()
        if hooks:
            await run_hook(self.config.pre_hook, "pre", self.config.hook_timeout)
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
            await run_hook(self.config.post_hook, "post", self.config.hook_timeout)
        level = "INFO" if outcome.applied or outcome.failed or outcome.remaining else VERBOSE
        logger.log(level, "reconcile ({}) done in {:.1f} ms: {}", trigger, duration * 1000, outcome.describe())
        return outcome

    def _fresh_peers(self, state: KernelState) -> list[IPAddress]:
        """On-link peers seen for the first time (or again after leaving) with no entry, or
        one not resolved yet; each is listed once (a FAILED one is nra.daemon.peer_resolution's)."""
        self._seen &= state.links.keys()
        fresh = [a for a in state.links if a not in self._seen
                 and state.neighbours.get(a, "NONE") in UNRESOLVED]
        self._seen |= state.links.keys()
        return fresh

    async def _converge(self, intent: Intent, trigger: str, outcome: Outcome, verify: bool) -> list[str]:
        state, the_plan = await self.compute_plan(intent, resolve=True)
        set_up = tuple(await self.kernel.set_up_peer_neighbours(state))
        outcome.plan, outcome.state, outcome.intent = the_plan, state, self.resolved_intent
        outcome.warnings = the_plan.warnings + set_up
        self._log_warnings(outcome.warnings, [p.address for p in intent.peers])
        outcome.degraded = bool(the_plan.unusable_peers)
        log_operations(the_plan.operations, trigger)
        # more time before liveness fails: per operation, and per prefix of a change to the nft table
        nft_prefixes = sum(intent.prefix_counts.values()) if any(op.kind == "nft" for op in the_plan.operations) else 0
        self.status.applying(len(the_plan.operations) + nft_prefixes)
        report = ApplyReport()
        if the_plan.operations:
            report = await self.kernel.apply(the_plan.operations)
            if the_plan.rule_members and report.applied:
                self.kernel.adopt_rule_members(the_plan.rule_members)
            outcome.applied = len(report.applied)
            outcome.applied_ops = report.applied
            outcome.failed = [f"{op}: {err}" for op, err in report.failed]
            for line in outcome.failed:
                logger.error("failed: {}", line)
            if self.config.release_memory and large_change(report.applied):
                await asyncio.to_thread(release_free_memory)
        if verify and the_plan.operations:
            state, again = await self.compute_plan(intent)
            outcome.remaining = [str(op) for op in again.operations]
            peers, rules = self.return_path.in_kernel(state, ApplyReport())
        else:
            peers, rules = self.return_path.in_kernel(state, report)
        outcome.ok = not outcome.failed and not outcome.remaining
        if self._recheck_at is not None:
            outcome.recheck_in_s = max(0.0, self._recheck_at - time.monotonic())
        self._export_gauges(intent, the_plan, peers, rules)
        return [op.kind for op in report.applied]

    def _log_warnings(self, warnings: tuple[str, ...], peers: list[IPAddress]) -> None:
        # Say each warning when it first appears, not on every timer tick.
        for warning in warnings:
            if warning not in self._last_warnings:
                logger.bind(**peer_field(warning, peers)).warning(warning)
        self._last_warnings = warnings

    def _export_gauges(self, intent: Intent, the_plan: Plan, peers: dict[int, int], rules: dict[int, int]) -> None:
        metrics.kernel_state(peers, rules)
        metrics.desired_state({v: len(intent.peers_of(v)) for v in (4, 6)}, intent.prefix_counts)
        left_out: dict[tuple[int, str], int] = {}
        for address, reason in the_plan.left_out.items():
            left_out[(address.version, reason)] = left_out.get((address.version, reason), 0) + 1
        metrics.peers_left_out(left_out)
