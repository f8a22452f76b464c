"""The `rules` return path: one multipath table (TABLE_WEIGHT) with a route per family via
the BGP peers, and one `ip rule from <prefix> lookup <table>` per LB prefix. Pure.

Its plan is the planner's steps on that one table: the route per family (table_routes),
the rule diff against one rule per prefix (rule_diff), in the planner's order.
"""

from __future__ import annotations

from typing import Any, Mapping

from nra.config.intent import Intent, IPAddress, IPNetwork
from nra.kernel.model import KernelReads, KernelState, rule_key
from nra.kernel.operations import AddRule, ApplyReport
from nra.plan.peer_health import Verdict, verdicts_from_states
from nra.plan.planner import (
    Plan,
    PlanSteps,
    RoutingPolicy,
    leftovers,
    rule_diff,
    rule_imposter_reason,
    table_routes,
)
from nra.plan.return_path.base import Counts, counts_after

#: key of a desired rule (model.rule_key) -> its prefix, by family
DesiredRules = Mapping[int, Mapping[tuple, IPNetwork]]


def desired_rules(intent: Intent, policy: RoutingPolicy) -> DesiredRules:
    """The rules the intent wants, per family, keyed like KernelRule.key(). 10,000 of them
    take milliseconds to build: a caller planning the same intent again may keep this and
    pass it to plan()."""
    by_family: dict[int, dict[tuple, IPNetwork]] = {4: {}, 6: {}}
    for prefix in intent.prefixes:
        key = rule_key(prefix.version, prefix, policy.priority, policy.table, policy.fwmark,
                       policy.effective_fwmask)
        by_family[prefix.version][key] = prefix
    return by_family


def plan(intent: Intent, state: KernelState, policy: RoutingPolicy,
         verdicts: Mapping[IPAddress, Verdict] | None = None, desired: DesiredRules | None = None) -> Plan:
    """The operations that make the kernel match the intent. `verdicts`: each peer's
    liveness (nra.plan.peer_health; absent: answers); None derives them from this read's
    neighbour states alone. `desired`: desired_rules(intent, policy), if the caller kept it."""
    if verdicts is None:
        verdicts = verdicts_from_states(state.neighbours)
    if desired is None:
        desired = desired_rules(intent, policy)
    steps = PlanSteps()
    families = table_routes(steps, intent, {v: len(desired[v]) for v in (4, 6)}, policy, state.routes, state,
                            verdicts)
    wanted: dict[tuple, IPNetwork] = {}
    for version in families:
        wanted.update(desired[version])
    fwmask = policy.fwmask if policy.fwmark is not None else None

    def add(prefix: IPNetwork) -> AddRule:
        return AddRule(prefix.version, prefix if prefix.prefixlen else None, policy.priority, policy.table,
                       policy.fwmark, fwmask, reason="missing")

    rule_diff(steps, state.rules, wanted, add, lambda rule: rule_imposter_reason(rule, policy, families))
    leftovers(steps, state)
    return steps.plan()


class RulesReturnPath:
    """The strategy (nra.plan.return_path.base.ReturnPath) for RETURN_PATH=rules."""

    name = "rules"
    reads = KernelReads()

    def __init__(self, policy: RoutingPolicy):
        self.policy = policy
        self._desired: tuple[Intent | None, DesiredRules] = (None, {})

    def plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        # A steady reconcile (the same intent object) does not rebuild 10,000 keys.
        if self._desired[0] is not intent:
            self._desired = (intent, desired_rules(intent, self.policy))
        return plan(intent, state, self.policy, verdicts, self._desired[1])

    def in_kernel(self, state: KernelState, report: ApplyReport) -> Counts:
        return counts_after(state, report, self.policy)

    def describe(self) -> dict[str, Any]:
        fwmark = None if self.policy.fwmark is None else f"{self.policy.fwmark:#x}/{self.policy.effective_fwmask:#x}"
        return {"mode": self.name, "table": self.policy.table, "rule_priority": self.policy.priority,
                "fwmark": fwmark}
