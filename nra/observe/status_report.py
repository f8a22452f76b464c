"""`nra status`: what an operator asks first, from the running agent's `/status` endpoint.

Two halves, kept apart so the client needs nothing of the agent:
- `status_document(...)`: the endpoint's JSON, built from AgentStatus, what the agent last
  loaded and reconciled (StatusDetails), and nra's own metrics registry (the kernel-read
  gauges and counters, so the numbers are the ones /metrics shows);
- `fetch_status` + `format_status`: the client, `nra status [--json] [--address HOST:PORT]`.

Exit codes of the client: 0 the agent is ready, 1 it answers but is not ready, 2 it
cannot be reached (or its answer is not a status).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from nra.config.uplinks import uplink_report

DEFAULT_ADDRESS = "127.0.0.1:9101"
FAMILIES = ("ipv4", "ipv6")


@dataclass(frozen=True)
class StatusDetails:
    """What the agent knows beyond AgentStatus; every part optional (None: not known)."""

    intent: Any = None            # nra.config.intent.Intent: the desired state last loaded
    outcome: Any = None           # nra.daemon.reconciler.Outcome of the last reconcile
    settings: Any = None          # nra.settings.Settings
    config_loaded_at: float | None = None  # wall clock of the last configuration load
    return_path: Any = None       # the return path's describe(): its mode, tables and marks
    datapath: dict | None = None  # nra.kernel.datapath.describe(): the node's datapath, the mode's fit


def _registry_values(registry: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value} for every nra_ sample of the registry."""
    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith("nra_"):
                values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return values


def _by_family(values: dict, name: str) -> dict[str, int]:
    return {dict(labels)["family"]: int(v) for labels, v in values.get(name, {}).items() if "family" in dict(labels)}


def _total(values: dict, name: str) -> int:
    return int(sum(values.get(name, {}).values()))


def status_document(status: Any, details: StatusDetails | None = None, registry: Any = None,
                    now: float | None = None, prefixes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The `/status` JSON: a pure function of its arguments (`now` for the ages). `prefixes`:
    the lists shown by family (the agent shows the first few: nra.observe.documents); by
    default every prefix of the intent. `prefix_counts` always counts them all."""
    from nra import __version__

    if registry is None:
        from nra.observe.metrics import REGISTRY as registry
    details = details or StatusDetails()
    now = time.time() if now is None else now
    values = _registry_values(registry)
    (ready, ready_reason), (live, live_reason) = status.readiness(), status.liveness()

    left_out = [
        {"family": dict(labels).get("family"), "reason": dict(labels).get("reason"), "count": int(v)}
        for labels, v in sorted(values.get("nra_peers_left_out", {}).items()) if v
    ]
    doc: dict[str, Any] = {
        "version": __version__,
        "ready": ready,
        "ready_reason": ready_reason,
        "live": live,
        "live_reason": live_reason,
        "source": {
            "name": status.source_name,
            "synced": status.source_synced,
            "config_loaded": status.config_loaded,
            "loads": _total(values, "nra_config_loads_total"),
            "last_load_at": details.config_loaded_at,
            "bad_entries": _total(values, "nra_config_errors"),
            "refused": bool(_total(values, "nra_config_refused")),
            "missing": bool(_total(values, "nra_config_missing")),
        },
        "peers": None,
        "prefixes": None,
        "kernel": {
            "table": getattr(details.settings, "table", None),
            "rule_priority": getattr(details.settings, "rule_priority", None),
            "fwmark": getattr(details.settings, "fwmark_text", None),
            "peers_in_route": _by_family(values, "nra_peers_in_route"),
            "rules_installed": _by_family(values, "nra_rules_installed"),
            "return_path": details.return_path,
            # each uplink group: its peers, pools, tables (and routers in conntrack mode)
            "uplinks": list(getattr(getattr(details.outcome, "plan", None), "uplinks", ()) or ()),
        },
        "left_out": left_out,
        "last_reconcile": None,
        "reconciles": _total(values, "nra_reconciles_total"),
        "reconcile_failures": _total(values, "nra_reconcile_failures_total"),
        "drift_repairs": _total(values, "nra_drift_repairs_total"),
        "datapath": details.datapath,
    }
    if details.intent is not None:
        doc["peers"] = [{"address": str(p.address), "family": f"ipv{p.address.version}", "weight": p.weight,
                         "name": p.name} for v in (4, 6) for p in details.intent.peers_of(v)]
        counts = details.intent.prefix_counts
        if prefixes is None:
            prefixes = {f"ipv{v}": [str(n) for n in details.intent.prefixes_of(v)] for v in (4, 6)}
        doc["prefixes"] = prefixes
        doc["prefix_counts"] = {f"ipv{v}": counts[v] for v in (4, 6)}
        doc["prefixes_complete"] = all(len(prefixes.get(f"ipv{v}", ())) == counts[v] for v in (4, 6))
    resolved = getattr(details.outcome, "intent", None) or details.intent
    settings = details.settings
    if resolved is not None and settings is not None and getattr(resolved, "specs", None):
        doc["uplinks"] = uplink_report(resolved, settings.table, settings.uplink_table_range)
    if status.last_reconcile_at is not None:
        outcome = details.outcome
        doc["last_reconcile"] = {
            "at": status.last_reconcile_at,
            "age_seconds": round(max(0.0, now - status.last_reconcile_at), 3),
            "ok": status.last_reconcile_ok,
            "applied": getattr(outcome, "applied", None),
            "failed": list(getattr(outcome, "failed", []) or []),
            # the planner's warnings name each peer left out, and why
            "warnings": list(getattr(outcome, "warnings", ()) or ()),
        }
    return doc


# -- the client ------------------------------------------------------------------------------

class StatusUnavailable(Exception):
    """The agent could not be asked; str() is the one line shown."""


def client_address(address: str | None) -> str:
    """Where to ask: `address` as given (a wildcard host: loopback), else HEALTH_ADDRESS's port
    on loopback, where the agent answers /status unless STATUS_ACCESS=health (then the
    health address itself)."""
    given = address is not None
    text = (address or os.environ.get("HEALTH_ADDRESS") or DEFAULT_ADDRESS).strip()
    if os.environ.get("STATUS_ACCESS", "").strip().lower() == "off" and not given:
        raise StatusUnavailable("the agent serves no /status (STATUS_ACCESS=off)")
    if text.lower() in ("off", "0", "false", "no", ""):
        raise StatusUnavailable("the health listener is off (HEALTH_ADDRESS=off): no status to ask")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise StatusUnavailable(f"address {text!r}: expected host:port such as 127.0.0.1:9101")
    host = host.strip("[]")
    on_health = os.environ.get("STATUS_ACCESS", "").strip().lower() == "health"
    if host in ("", "0.0.0.0", "::") or not (given or on_health):
        host = "::1" if ":" in host else "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fetch_status(address: str, timeout: float = 5.0, all_prefixes: bool = False) -> dict[str, Any]:
    url = f"http://{address}/status" + ("?prefixes=all" if all_prefixes else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            why = exc.read(300).decode(errors="replace").strip()
            if "/status" not in why:
                why = "an agent without the /status endpoint"
            raise StatusUnavailable(f"{url}: not found ({why})") from None
        raise StatusUnavailable(f"{url}: HTTP {exc.code}") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(f"cannot reach the agent at {url}: {reason}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise StatusUnavailable(f"{url}: the answer is not JSON") from None
    if not isinstance(doc, dict) or "ready" not in doc:
        raise StatusUnavailable(f"{url}: the answer is not an nra status")
    return doc


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "unknown"
    stamp = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} ({_ago(now - timestamp)})"


def _families(counts: dict[str, int], noun: str) -> str:
    return ", ".join(f"{family.replace('ip', 'IP')} {counts.get(family, 0)} {noun}" for family in FAMILIES)


def resolution_lines(groups: list[dict]) -> list[str]:
    """One line per uplink group and one per peer, with how the peer was resolved."""
    lines = []
    for group in groups:
        table = f"table {group['table']}" if group.get("table") is not None else "not programmed"
        vrf = f"vrf {group['vrf']}" if group.get("vrf") else "default vrf"
        lines.append(f"uplink group:    pools {', '.join(group['pools'])}; {vrf}; {table}")
        lines += [f"                 peer {p['name']} ({p['key']}): {p['kind']} {p['how']}" for p in group["peers"]]
    return lines


def format_status(doc: dict[str, Any], now: float | None = None) -> str:
    """The human answer: one line per question, most important first."""
    now = time.time() if now is None else now
    lines = [f"nra {doc.get('version', '?')}: {'ready' if doc['ready'] else 'NOT READY'} ({doc['ready_reason']})"]
    if not doc.get("live", True):
        lines.append(f"liveness:        FAILING ({doc.get('live_reason')})")
    src = doc["source"]
    state = ["synced" if src["synced"] else "not synced",
             "configuration loaded" if src["config_loaded"] else "no configuration yet"]
    if src.get("refused"):
        state.append("current configuration REFUSED (last good one kept)")
    if src.get("missing"):
        state.append("configuration MISSING (last good state kept)")
    lines.append(f"source:          {src['name'] or '?'}, {', '.join(state)}; "
                 f"{src['loads']} load(s), last {_when(src.get('last_load_at'), now)}; "
                 f"{src['bad_entries']} bad entr{'y' if src['bad_entries'] == 1 else 'ies'} skipped")
    if doc.get("peers") is not None:
        peers = ", ".join(f"{p['address']} w{p['weight']}"
                          + (f" ({p['name']})" if p.get("name") not in (None, "", p["address"]) else "")
                          for p in doc["peers"]) or "none"
        lines.append(f"peers:           {peers}")
    lines += resolution_lines(doc.get("uplinks") or [])
    kernel = doc["kernel"]
    lines.append(f"in the route:    {_families(kernel['peers_in_route'], 'nexthop(s)')}")
    left = [f"{x['count']} {x['family']} ({x['reason']})" for x in doc.get("left_out", [])]
    warnings = [w for w in ((doc.get("last_reconcile") or {}).get("warnings") or []) if "left out" in w or "unusable" in w]
    lines.append(f"left out:        {', '.join(left) if left else 'none counted'}")
    lines += [f"                 {w}" for w in warnings]
    if doc.get("prefixes") is not None:
        for family in FAMILIES:
            prefixes = doc["prefixes"].get(family, [])
            count = (doc.get("prefix_counts") or {}).get(family, len(prefixes))
            shown = ", ".join(prefixes[:8]) + (f", ... ({count} in all)" if count > 8 else "")
            lines.append(f"prefixes {family.replace('ip', 'IP')}:   {shown or 'none'}")
    table = kernel.get("table")
    where = f"table {table}" if table is not None else "the table"
    extra = f", priority {kernel['rule_priority']}" if kernel.get("rule_priority") is not None else ""
    extra += f", fwmark {kernel['fwmark']}" if kernel.get("fwmark") else ""
    lines.append(f"held:            {where}{extra}: {_families(kernel['rules_installed'], 'rule(s)')}")
    uplinks = uplink_lines(kernel.get("uplinks") or [])
    if len(uplinks) > 1 or (kernel.get("uplinks") or [{}])[0].get("routers"):
        lines += [f"{'uplinks:' if i == 0 else '':<17}{line}" for i, line in enumerate(uplinks)]
    last = doc.get("last_reconcile")
    if last is None:
        lines.append("last reconcile:  none yet")
    else:
        outcome = "ok" if last["ok"] else "FAILED"
        if last.get("applied") is not None:
            outcome += f", {last['applied']} change(s) applied"
        lines.append(f"last reconcile:  {_when(last['at'], now)}, {outcome}")
        lines += [f"                 failed: {f}" for f in last.get("failed", [])]
    lines.append(f"reconciles:      {doc['reconciles']} ({doc['reconcile_failures']} failed); "
                 f"drift repairs: {doc['drift_repairs']}")
    found = doc.get("datapath")
    if found:
        fits = {True: "fits", False: "DOES NOT FIT", None: "cannot tell"}[found.get("mode_fits")]
        lines.append(f"datapath:        {found['name']} ({'; '.join(found.get('evidence', []))})")
        lines.append(f"mode:            {fits}: {found.get('verdict', '')}")
    return "\n".join(lines) + "\n"


def uplink_lines(uplinks: list[dict]) -> list[str]:
    """Each uplink group in a line (its peers, pools, prefixes, table, mark, VRF), then its
    routers (conntrack mode: link, link-layer address, peers, table, mark), indented."""
    lines = []
    for group in uplinks:
        pools = ", ".join(group.get("pools") or []) or "every pool"
        where = f"table {group.get('table')}" + (f", mark {group['mark']}" if group.get("mark") else "")
        if group.get("vrf"):
            where += f", vrf {group['vrf']}" + ("" if group.get("programmed", True) else " (not programmed)")
        lines.append(f"group {', '.join(group.get('peers') or []) or '(no peer)'}: pools {pools} "
                     f"({group.get('prefixes', 0)} prefix(es)); {where}")
        for router in group.get("routers") or []:
            lines.append(f"  router {router['link']} {router['lladdr']} ({', '.join(router['peers'])}): "
                         f"table {router['table']}, mark {router['mark']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nra status", description="Ask a running nra what it holds and why.")
    parser.add_argument("--address", metavar="HOST:PORT", default=None,
                        help=f"the agent's health listener (default: HEALTH_ADDRESS, else {DEFAULT_ADDRESS})")
    parser.add_argument("--json", action="store_true", help="print the agent's JSON as it is")
    parser.add_argument("--all-prefixes", action="store_true",
                        help="ask for every prefix (the agent sends the first 100 of each family otherwise)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        doc = fetch_status(client_address(args.address), args.timeout, args.all_prefixes)
    except StatusUnavailable as exc:
        print(f"nra status: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else format_status(doc))
    return 0 if doc["ready"] else 1


if __name__ == "__main__":
    sys.exit(main())
