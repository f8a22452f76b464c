"""The `rules` return path: one multipath table (TABLE_WEIGHT) with a route per family via
the BGP peers, and one `ip rule from <prefix> lookup <table>` per LB prefix. Pure.

Its plan is the planner's steps on that one table: the route per family (table_routes),
the rule diff against one rule per prefix (rule_set_diff: the kernel's rules as templates
and members, nra.kernel.rule_set, against the desired members, one int per prefix; the
planner's rule_diff over decoded rules is the reference it is tested against), in the
planner's order.

Uplink groups (nra.config.uplinks, docs/uplinks.md): when pools are announced to different
sets of peers, each set's pools get their own table of UPLINK_TABLES, planned with the same
steps against that table's routes and rules, with a route via that set's peers only; the set
of every peer keeps TABLE_WEIGHT. Wired so far: addressed peers of the default VRF (a VRF
group is not programmed yet). Uplink tables no group uses any more are emptied.
"""

from __future__ import annotations

from dataclasses import replace
from typing import AbstractSet, Any, Iterable, Mapping

from nra.config.intent import Intent, IPAddress, IPNetwork
from nra.config.uplinks import NodeFacts, build_model, merge_peers
from nra.kernel.model import KernelReads, KernelRule, KernelState, rule_key
from nra.kernel.operations import (
    AddRule,
    ApplyNft,
    ApplyReport,
    DeleteRoute,
    DeleteRule,
    ReplaceRoute,
)
from nra.plan.peer_health import Verdict, verdicts_from_states
from nra.plan.planner import (
    Plan,
    PlanSteps,
    RoutingPolicy,
    imposter_reason,
    leftovers,
    table_routes,
)
from nra.kernel.rule_set import NO_MEMBERS, Members, RuleSet, member_of, prefix_of
from nra.plan.return_path.base import Counts, counts_after

#: the desired rules' members, by family
DesiredRules = Mapping[int, Members]
#: rule_set_diff returns the intent's own prefixes when this many rules or more are missing
OWN_PREFIXES_MIN = 1024


def desired_rules(intent: Intent, policy: RoutingPolicy | None = None) -> dict[int, Members]:
    """The members of the rules the intent wants, per family: one per prefix. The table,
    priority and marks are the policy's, compared once per template (rule_set_diff), so a
    member is the prefix alone. 100,000 of them take tens of milliseconds: a caller
    planning the same intent again keeps this and passes it to plan()."""
    by_family: dict[int, set[int]] = {4: set(), 6: set()}
    for prefix in intent.prefixes:
        by_family[prefix.version].add(member_of(prefix))
    return {family: Members(members) for family, members in by_family.items()}


def updated_rules(desired: DesiredRules, before: frozenset[IPNetwork], after: frozenset[IPNetwork],
                  ) -> dict[int, Members]:
    """desired_rules() of an intent whose prefixes are `after`, from `desired`, those of
    `before`: only the prefixes that came or went are keyed, over the same base sets."""
    gone, came = before - after, after - before
    if len(gone) + len(came) > len(after) // 4:
        return desired_rules(Intent(frozenset(), after))
    by_family = dict(desired)
    for version in {p.version for p in gone} | {p.version for p in came}:
        by_family[version] = by_family[version].changed({member_of(p) for p in gone if p.version == version},
                                                        {member_of(p) for p in came if p.version == version})
    return by_family


def shared_desired(desired: DesiredRules, rules: RuleSet, policy: RoutingPolicy) -> DesiredRules:
    """`desired`, with a family's members based on the kernel view's set when they are equal
    (the one template of the policy's shape holding exactly the desired members): at
    100,000 rules one set of members is held, not two equal ones. The view never changes a
    set anyone else holds (nra.kernel.rule_set.RuleBook copies it first)."""
    wanted: dict[int, list[Members]] = {}
    for shape, members in rules.groups():
        if _wanted_template(shape.rule, policy, (4, 6)):
            wanted.setdefault(shape.rule.family, []).append(members)
    if rules.duplicates or rules.loose:
        return desired
    adopted = dict(desired)
    for family, found in wanted.items():
        mine = desired.get(family)
        if len(found) == 1 and mine is not None and found[0].base is not mine.base \
                and len(found[0]) == len(mine) and not mine.missing_from(found[0]):
            adopted[family] = found[0]  # (equal: the view's overlay, over its base)
    return adopted


def _wanted_template(rule: KernelRule, policy: RoutingPolicy, families: AbstractSet[int]) -> bool:
    """Whether a template's rules (`rule`: the template decoded, no source) are the policy's."""
    return rule.family in families and rule.identity is not None and rule.identity == rule_key(
        rule.family, None, policy.priority, policy.table, policy.fwmark, policy.effective_fwmask)


def rule_set_diff(steps: PlanSteps, rules: RuleSet, desired: DesiredRules, policy: RoutingPolicy,
                  families: AbstractSet[int], prefixes: Iterable[IPNetwork] = ()) -> list[IPNetwork]:
    """rule_diff for a RuleSet: the members of each template that is the policy's against
    the desired ones, as set operations over ints (no rule decoded but those that go); every
    rule of any other template goes, with its imposter reason. Returns the prefixes of the
    desired members the kernel lacks: when OWN_PREFIXES_MIN or more are, those of
    `prefixes` (the intent's, whose members `desired` holds) themselves, not a copy of each
    (a first start at 100,000 made 100,000 new networks to write them)."""
    seen: dict[int, AbstractSet[int] | Members] = {}
    going: list[KernelRule] = []
    for shape, members in sorted(rules.groups(), key=lambda g: g[0].template):
        family = shape.rule.family
        if not _wanted_template(shape.rule, policy, families):
            going += map(shape.decode, sorted(members))
            continue
        before = seen.get(family)
        if before is None:  # (the one template of the family: no copy of 100,000 members)
            kept: AbstractSet[int] | Members = members
            seen[family] = members
        else:  # a second template with the same key (attributes the key ignores): one copy stays
            want = desired.get(family, NO_MEMBERS)
            plain, seen_plain = members.plain(), set(before)
            copies = {m for m in plain & seen_plain if m in want}
            steps.rule_deletes += [DeleteRule(shape.decode(m), reason="duplicate") for m in sorted(copies)]
            kept = plain - copies
            seen[family] = seen_plain | kept
        going += map(shape.decode, sorted(desired.get(family, NO_MEMBERS).unwanted_in(kept)))
    for rule in rules.duplicate_rules():  # (second copies a full read found)
        if _wanted_template(replace(rule, src=None), policy, families) and \
                member_of(rule.src) in desired.get(rule.family, NO_MEMBERS):
            steps.rule_deletes.append(DeleteRule(rule, reason="duplicate"))
        else:
            going.append(rule)
    for rule in going:
        steps.rule_deletes.append(DeleteRule(rule, reason=imposter_reason(rule, policy, families)))
    if rules.loose:  # (decoded rules given as such: each against the policy's key for its source)
        loose = {}
        for rule in rules.loose:
            if rule.family in families and rule.identity == rule_key(
                    rule.family, rule.src, policy.priority, policy.table, policy.fwmark, policy.effective_fwmask) \
                    and member_of(rule.src) in desired.get(rule.family, NO_MEMBERS):
                loose.setdefault(rule.family, set())
                if member_of(rule.src) in loose[rule.family] or member_of(rule.src) in seen.get(rule.family, ()):
                    steps.rule_deletes.append(DeleteRule(rule, reason="duplicate"))
                loose[rule.family].add(member_of(rule.src))
            else:
                steps.rule_deletes.append(DeleteRule(rule, reason=imposter_reason(rule, policy, families)))
        seen = {f: set(seen.get(f, ())) | loose.get(f, set()) for f in (4, 6)}
    lacking = {family: desired.get(family, NO_MEMBERS).missing_from(seen.get(family, frozenset()))
               for family in sorted(families)}
    missing: list[IPNetwork] = []
    if sum(map(len, lacking.values())) >= OWN_PREFIXES_MIN:
        missing = [p for p in prefixes if member_of(p) in lacking.get(p.version, ())]
        if len(missing) == sum(map(len, lacking.values())):
            return missing
        given = {member_of(p) for p in missing}  # (members no prefix given stands for: made below)
        lacking = {family: {m for m in members if m not in given} for family, members in lacking.items()}
    for family, members in lacking.items():
        missing += (prefix_of(family, m) for m in members)
    return missing


def plan(intent: Intent, state: KernelState, policy: RoutingPolicy,
         verdicts: Mapping[IPAddress, Verdict] | None = None, desired: DesiredRules | None = None) -> Plan:
    """The operations that make the kernel match the intent. `verdicts`: each peer's
    liveness (nra.plan.peer_health; absent: answers); None derives them from this read's
    neighbour states alone. `desired`: desired_rules(intent), if the caller kept it."""
    if verdicts is None:
        verdicts = verdicts_from_states(state.neighbours)
    if desired is None:
        desired = desired_rules(intent)
    steps = PlanSteps()
    families = table_routes(steps, intent, {v: len(desired[v]) for v in (4, 6)}, policy, state.routes, state,
                            verdicts)
    fwmask = policy.fwmask if policy.fwmark is not None else None
    # in AddRule.sort_key's order, made here: one family, priority, table and mark, so the
    # source decides, and a member orders as its network does (None, /0, first)
    missing: dict[int, list[IPNetwork]] = {4: [], 6: []}
    for prefix in rule_set_diff(steps, RuleSet.of(state.rules), desired, policy, families, intent.prefixes):
        missing[prefix.version].append(prefix)
    steps.rule_adds_sorted = not steps.rule_adds
    for family in (4, 6):
        missing[family].sort(key=member_of)
        steps.rule_adds += [AddRule(family, prefix if prefix.prefixlen else None, policy.priority, policy.table,
                                    policy.fwmark, fwmask, reason="missing") for prefix in missing[family]]
    leftovers(steps, state)
    # (the kernel's view holds these once written, not copies: KernelAdapter.adopt_rule_members)
    members = tuple(m.base for m in desired.values() if m.base and not m.added and not m.removed)
    return replace(steps.plan(), rule_members=members)


def uplink_intents(intent: Intent, table: int, tables: range) -> tuple[dict[int, Intent], tuple[str, ...]]:
    """Table -> the intent its plan serves (its group's peers and prefixes), when the pools
    form more than the group of every peer; {} when they do not (one table, as before). And
    the model's problem lines."""
    model = build_model(intent, NodeFacts(), table, tables)
    problems = tuple(str(p) for p in model.problems)
    groups = [g for g in model.groups if not g.vrf and g.table is not None]
    if all(g.table == table for g in groups):
        return {}, problems
    wanted = {table: Intent(intent.peers, frozenset())}
    # a peer resolved through the node's tables (multihop, unnumbered) stands for its next hops
    resolved = {r.key: r.peers for r in intent.resolved}
    for group in groups:
        peers = merge_peers(p for key in sorted(group.peers)
                            for p in (resolved[key] if key in resolved else
                                      [p for p in intent.peers if str(p.address) == key]))
        assert group.table is not None
        wanted[group.table] = Intent(peers, group.prefixes)
    return wanted, problems


def describe_groups(intent: Intent, table: int, tables: range) -> tuple[dict, ...]:
    """Each uplink group for `nra plan` and /status: its peers, pools, prefix count, table,
    VRF. One group of every peer (the legacy sources: no pools) when there are none."""
    model = build_model(intent, NodeFacts(), table, tables)
    if not model.groups:
        return ({"peers": sorted(str(p.address) for p in intent.peers), "pools": [], "prefixes": len(intent.prefixes),
                 "table": table},)
    return tuple({"peers": sorted(g.peers), "pools": list(g.pools), "prefixes": len(g.prefixes), "table": g.table,
                  **({"vrf": g.vrf, "programmed": False} if g.vrf else {})} for g in model.groups)


def merge_plans(plans: list[Plan], extra: list) -> Plan:
    """One plan of several tables' plans (and `extra` operations), in the planner's order."""
    kinds = (ReplaceRoute, AddRule, DeleteRule, DeleteRoute)
    ops = [op for p in plans for op in p.operations] + extra
    # (the planner's order: nft first; here only the removal of a leftover conntrack table)
    ordered = tuple(op for op in ops if isinstance(op, ApplyNft)) + tuple(
        op for kind in kinds for op in sorted((o for o in ops if isinstance(o, kind)), key=kind.sort_key))
    warnings = tuple(dict.fromkeys(w for p in plans for w in p.warnings))
    left_out = {a: r for p in plans for a, r in p.left_out.items()}
    unusable = frozenset().union(*(p.unusable_peers for p in plans))
    unrouted = tuple(sorted({f for p in plans for f in p.unrouted}))
    return Plan(ordered, warnings, left_out, unusable, unrouted,
                rule_members=tuple(m for p in plans for m in p.rule_members))


class RulesReturnPath:
    """The strategy (nra.plan.return_path.base.ReturnPath) for RETURN_PATH=rules."""

    name = "rules"

    def __init__(self, policy: RoutingPolicy, uplink_tables: range = range(0)):
        self.policy = policy
        self.uplink_tables = uplink_tables
        #: the uplink groups' tables: their routes and the rules pointing at them are nra's
        #: and nra's nft table, the conntrack mode's, is looked for (on full reads) to be removed
        self.reads = KernelReads(route_tables=uplink_tables, nft_leftover=True)
        self._desired: dict[int, tuple[Intent, DesiredRules]] = {}
        self._groups: tuple[Intent | None, tuple[dict[int, Intent], tuple[str, ...]]] = (None, ({}, ()))
        self._described: tuple[Intent | None, tuple[dict, ...]] = (None, ())

    def _uplink_intents(self, intent: Intent) -> tuple[dict[int, Intent], tuple[str, ...]]:
        # Once per intent: the same sub-intents keep their desired rules between reconciles.
        if self._groups[0] is not intent:
            self._groups = (intent, uplink_intents(intent, self.policy.table, self.uplink_tables))
        return self._groups[1]

    def _rules_of(self, table: int, intent: Intent, policy: RoutingPolicy, rules: RuleSet) -> DesiredRules:
        # A steady reconcile (the same intent object) does not rebuild 10,000 members, nor
        # does a new intent: only its prefixes that came or went are keyed. Once the kernel
        # holds them, the view's equal set stands for them (shared_desired).
        kept = self._desired.get(table)
        if kept is not None and kept[0] is intent:
            desired = kept[1]
        else:
            desired = (desired_rules(intent) if kept is None
                       else updated_rules(kept[1], kept[0].prefixes, intent.prefixes))
        desired = shared_desired(desired, rules, policy)
        self._desired[table] = (intent, desired)
        return desired

    def plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        if self._described[0] is not intent:
            self._described = (intent, describe_groups(intent, self.policy.table, self.uplink_tables))
        return replace(self._plan(intent, state, verdicts), uplinks=self._described[1])

    def _plan(self, intent: Intent, state: KernelState, verdicts: Mapping[IPAddress, Verdict]) -> Plan:
        groups, problems = self._uplink_intents(intent)
        unused = [r for r in state.router_routes if r.table not in groups]
        rules = RuleSet.of(state.rules)
        tables = rules.tables()  # (per template: no rule decoded)
        if not groups and not unused and not any(t in self.uplink_tables for t in tables):
            # one group, nothing left of others: the one table, exactly as before
            self._desired = {t: d for t, d in self._desired.items() if t == self.policy.table}
            single = plan(intent, state, self.policy, verdicts,
                          self._rules_of(self.policy.table, intent, self.policy, rules))
            return replace(single, warnings=single.warnings + problems)
        groups = groups or {self.policy.table: intent}  # (one group again: its old tables go)
        plans = []
        for table, sub in sorted(groups.items()):
            policy = replace(self.policy, table=table)
            routes = state.routes if table == self.policy.table else tuple(
                r for r in state.router_routes if r.table == table)
            # (the leftovers of other settings go once, with TABLE_WEIGHT's plan)
            sub_rules = rules.of_tables((table,))
            sub_state = replace(state, routes=routes, rules=sub_rules,
                                leftovers=state.leftovers if table == self.policy.table else (),
                                nft_leftover=state.nft_leftover and table == self.policy.table)
            plans.append(plan(sub, sub_state, policy, verdicts, self._rules_of(table, sub, policy, sub_rules)))
        extra: list = [DeleteRoute(r, reason="no uplink group uses this table") for r in unused]
        extra += [DeleteRule(r, reason="no uplink group uses this table")
                  for r in rules.of_tables([t for t in tables if t in self.uplink_tables and t not in groups])]
        self._desired = {t: d for t, d in self._desired.items() if t in groups}
        merged = merge_plans(plans, extra)
        return replace(merged, warnings=merged.warnings + problems)

    def in_kernel(self, state: KernelState, report: ApplyReport) -> Counts:
        return counts_after(state, report, self.policy)

    def describe(self) -> dict[str, Any]:
        fwmark = None if self.policy.fwmark is None else f"{self.policy.fwmark:#x}/{self.policy.effective_fwmask:#x}"
        uplinks = f"{self.uplink_tables.start}-{self.uplink_tables.stop - 1}" if self.uplink_tables else None
        return {"mode": self.name, "table": self.policy.table, "rule_priority": self.policy.priority,
                "fwmark": fwmark, "uplink_tables": uplinks}
