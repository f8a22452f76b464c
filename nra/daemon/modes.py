"""The ways nra runs: the daemon, ONESHOT (one reconcile), `nra plan` (print what would
change) and CLEANANDEXIT (a reconcile to the empty intent). Exit codes: 0 success, 1 a run
that failed, 2 an unusable setting; `nra plan`: 0 nothing to do, 2 changes pending, 1 an
error (an unusable setting included, so that 2 only ever means changes)."""

from __future__ import annotations

import asyncio
import json

from loguru import logger

from nra.config.intent import Intent
from nra.config.uplinks import uplink_report
from nra.daemon.desired import first_configuration
from nra.daemon.host import check_multipath_use_neigh
from nra.daemon.threads import default_executor
from nra.daemon.wiring import prefetch_kernel, reconciler
from nra.kernel import datapath
from nra.kernel.protocol import KERNEL_ERRORS
from nra.kernel.table_names import name_table, unname_table
from nra.observe.logs import reconcile_context
from nra.observe.status_report import resolution_lines, uplink_lines
from nra.plan.planner import Plan
from nra.settings import Settings
from nra.sources.base import Source


def make_source(settings: Settings) -> Source:
    if settings.metallb_static_file:
        from nra.sources.static_file import StaticFileSource

        return StaticFileSource(settings.metallb_static_file, settings.node_name, settings.peer_weight)
    from nra.sources.kube import make_kube_source

    return make_kube_source(settings)


async def run(settings: Settings, command: str = "run", output: str = "text") -> int:
    asyncio.get_running_loop().set_default_executor(default_executor())  # (its threads named)
    if settings.cleanandexit:
        return await clean_and_exit(settings)
    one_off = command == "plan" or settings.oneshot
    if not one_off and settings.metrics_endpoint and settings.metrics_auth == "kubernetes":
        from nra.sources.kube.client import NO_CREDENTIALS, has_credentials

        if not has_credentials(settings.kubeconfig):  # the scrapes could never be reviewed
            logger.error("METRICS_AUTH=kubernetes: the API server reviews the scrapers, but {}; set KUBECONFIG, "
                         "or METRICS_AUTH=none", NO_CREDENTIALS)
            return 2
    try:
        if one_off and not settings.metallb_static_file:
            from nra.sources.kube.client import NO_CREDENTIALS, has_credentials

            if not has_credentials(settings.kubeconfig):  # nothing to wait SOURCE_START_TIMEOUT for
                raise ValueError(f"{NO_CREDENTIALS}; set METALLB_STATIC_FILE or KUBECONFIG")
        source = make_source(settings)
    except (ValueError, OSError) as exc:
        logger.error("cannot start the configuration source: {}", exc)
        return 1 if command == "plan" else 2  # plan's 2 means "changes pending"
    if command != "plan":
        prefetch_kernel(settings)  # (a thread: overlaps the datapath check and the first parse)
    # after the source's own refusals, so each of those stays the one line said
    datapath = await check_datapath(settings)
    if datapath is None:
        return 1 if command == "plan" else 2
    if command == "plan":
        return await plan_only(settings, source, output)
    if settings.oneshot:
        return await oneshot(settings, source)
    from nra.daemon.agent import Agent

    agent = Agent(settings, source)
    agent.datapath = datapath
    return await agent.run()


async def check_datapath(settings: Settings) -> dict | None:
    """Say which datapath the node has and whether RETURN_PATH fits it; None when the mode
    cannot work there and DATAPATH_CHECK=refuse (the caller exits 2). A node that cannot be
    read is "unknown", never a refusal."""
    try:
        found = datapath.classify(await asyncio.to_thread(datapath.read_facts, settings.netns))
    except Exception as exc:  # (a kernel or library surprise must not stop the agent)
        found = datapath.Datapath("unknown", (f"could not read the node: {type(exc).__name__}: {exc}",), None)
    the_fit = datapath.fit(found, settings.return_path, settings.fwmark_text)
    line = "datapath {} ({}); RETURN_PATH={}: {}"
    args = (found.name, "; ".join(found.evidence), settings.return_path, the_fit.text)
    if the_fit.refuses and settings.datapath_check == "refuse":
        logger.bind(datapath=found.name).error(line + " (DATAPATH_CHECK=warn to run anyway)", *args)
        return None
    logger.bind(datapath=found.name).log("WARNING" if the_fit.fits is False else "INFO", line, *args)
    return datapath.describe(found, the_fit)


async def oneshot(settings: Settings, source: Source) -> int:
    """One reconcile, then exit: 0 on success, 1 with the reason on failure."""
    desired = await first_configuration(source, settings.source_start_timeout)
    if desired is None:
        logger.error("ONESHOT failed: no configuration")
        return 1
    await check_multipath_use_neigh(settings.netns, settings.set_multipath_use_neigh)
    name_table(settings.table, settings.table_name)
    return await _reconcile_once(settings, desired.intent, "oneshot", "ONESHOT", hooks=True, verify=False)


async def clean_and_exit(settings: Settings) -> int:
    """CLEANANDEXIT: every rule of either family pointing at the table and every route in it
    removed, which is what reconciling to an empty intent does; nra's rules and routes left in
    tables the settings no longer name, and in conntrack mode its nft table (libnftables or
    not); and the table's name file."""
    code = await _reconcile_once(settings, Intent(), "clean", "CLEANANDEXIT", hooks=False, verify=True,
                                 cleaning=True)
    unname_table()
    return code


async def _reconcile_once(settings: Settings, intent: Intent, trigger: str, mode: str, hooks: bool,
                          verify: bool, cleaning: bool = False) -> int:
    """verify: read the kernel again after applying and fail if anything still differs (cheap
    for CLEANANDEXIT, whose read-back is of an empty table). cleaning: CLEANANDEXIT, which
    goes on without libnftables (nra's nft table is removed through nf_tables netlink)."""
    try:
        async with reconciler(settings, cleaning=cleaning) as one:
            with reconcile_context(trigger):
                outcome = await one.reconcile(intent, trigger, hooks=hooks, verify=verify)
    except KERNEL_ERRORS as exc:  # e.g. the namespace does not exist
        logger.error("{} failed: {}", mode, exc)
        return 1
    if not outcome.ok:
        logger.error("{} failed: {}", mode, outcome.describe())
        return 1
    unrouted = outcome.plan.unrouted if outcome.plan else ()
    if unrouted:  # a one-off run has no later reconcile to put the route in
        families = " and ".join(f"IPv{v}" for v in unrouted)
        logger.error("{} failed: no usable {} peer, so no {} route (rules are installed): {}", mode, families,
                     families, outcome.describe())
        return 1
    logger.info("{} done: {}", mode, outcome.describe())
    return 0


#: `nra plan`'s exit codes, as `terraform plan -detailed-exitcode` and `kubectl diff` have them
PLAN_NO_CHANGES, PLAN_ERROR, PLAN_CHANGES = 0, 1, 2


async def plan_only(settings: Settings, source: Source, output: str = "text") -> int:
    """`nra plan`: print what a reconcile would do, change nothing. Exit 0 when the kernel
    matches, 2 when changes are pending, 1 when the plan could not be made."""
    desired = await first_configuration(source, settings.source_start_timeout)
    if desired is None:
        return PLAN_ERROR
    try:
        async with reconciler(settings) as one:
            _, the_plan = await one.compute_plan(desired.intent)
            resolved = one.resolved_intent or desired.intent
    except KERNEL_ERRORS as exc:  # e.g. the namespace does not exist
        logger.error("plan failed: {}", exc)
        return PLAN_ERROR
    if output == "json":
        document = plan_document(resolved, the_plan)
        document["uplink_groups"] = uplink_report(resolved, settings.table, settings.uplink_table_range)
        print(json.dumps(document, indent=2))
    else:
        print(f"# desired: {resolved.summary()}")
        for line in resolution_lines(uplink_report(resolved, settings.table, settings.uplink_table_range)):
            print(f"# {' '.join(line.split())}")
        for line in uplink_lines(list(the_plan.uplinks)):
            print(f"# {line}")
        for warning in the_plan.warnings:
            print(f"# warning: {warning}")
        for op in the_plan.operations:
            print(op)
        if not the_plan.operations:
            print("# nothing to do: the kernel matches the configuration")
    return PLAN_CHANGES if the_plan.operations else PLAN_NO_CHANGES


def plan_document(intent: Intent, the_plan: Plan) -> dict:
    """`nra plan -o json`: the plan as one JSON document, for scripts."""
    return {
        "changes": bool(the_plan.operations),
        "desired": {
            "peers": [{"address": str(p.address), "weight": p.weight} for p in intent.peers],
            "prefixes": {"ipv4": intent.prefix_counts[4], "ipv6": intent.prefix_counts[6]},
        },
        "operations": [{"kind": op.kind, "command": op.command(), "reason": op.reason}
                       for op in the_plan.operations],
        "resolved": [{"peer": r.name, "key": r.key, "kind": r.kind, "how": r.how, "vrf": r.vrf,
                      "next_hops": [str(p.address) for p in r.peers]} for r in intent.resolved],
        "uplinks": list(the_plan.uplinks),
        "warnings": list(the_plan.warnings),
        "left_out": {str(peer): reason for peer, reason in the_plan.left_out.items()},
    }
