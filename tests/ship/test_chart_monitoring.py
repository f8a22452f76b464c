"""The alerts and the dashboard: promtool checks and unit-tests the rules, the chart and
deploy/monitoring carry the same ones, every metric they name is in nra's metrics contract,
and (scripts/check-dashboard) every dashboard query returns series from a real agent
scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nra.observe.metrics import REGISTRY
from tests.ship import monitoring_schema
from tests.ship.k8s_schema import kubectl, schema_errors
from tests.ship.k8s_schema import render as kustomize
from tests.ship.test_chart import HELMS, helm_template

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "nra" / "files" / "nra-alerts.rules.yaml"
DASHBOARD = REPO / "charts" / "nra" / "files" / "nra-dashboard.json"
MONITORING = REPO / "deploy" / "monitoring"
RULE_TESTS = Path(__file__).parent / "fixtures" / "nra-alerts.test.yaml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian prometheus): run scripts/setup")


def exposed_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b(nra_[a-z_]+)\b", text))


def rule_exprs() -> str:
    return "\n".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])


def dashboard_exprs() -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    return "\n".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))


@needs_promtool
def test_promtool_checks_the_rules():
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts():
    done = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert alerts == tested, "every alert has a promtool test"


def test_alerts_and_dashboard_use_only_contract_metrics():
    names = exposed_names()
    assert referenced_metrics(rule_exprs()) - names == set()
    assert referenced_metrics(dashboard_exprs()) - names == set()


def test_every_alert_has_a_runbook_in_the_docs():
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert f"#### {rule['alert']}\n" in runbooks, f"docs/runbooks.md has no runbook heading for {rule['alert']}"
            assert rule["annotations"]["runbook"] == f"docs/runbooks.md#{rule['alert'].lower()} (nra repository)"
            assert rule["annotations"]["runbook_url"] == \
                f"https://github.com/nra-project/nra/blob/main/docs/runbooks.md#{rule['alert'].lower()}"


@pytest.mark.skipif(kubectl() is None, reason="kubectl not installed")
def test_deploy_monitoring_carries_the_same_rules_and_dashboard():
    objects = kustomize(MONITORING)
    by_kind = {o["kind"]: o for o in objects}
    assert by_kind["PrometheusRule"]["spec"] == yaml.safe_load(RULES.read_text())
    assert (MONITORING / "nra-dashboard.json").read_text() == DASHBOARD.read_text()
    dashboard_map = by_kind["ConfigMap"]
    assert json.loads(dashboard_map["data"]["nra-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert schema_errors(dashboard_map) == []
    if monitoring_schema.available():
        for kind in ("PrometheusRule", "PodMonitor"):
            assert monitoring_schema.schema_errors(by_kind[kind]) == []


@pytest.mark.skipif(not HELMS[4].exists(), reason="helm 4 missing: run scripts/setup")
def test_chart_carries_the_same_rules_and_dashboard():
    objects = helm_template(4, "--set", "prometheus.rule.enabled=true", "--set", "prometheus.dashboard.enabled=true")
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    (dashboard,) = [o for o in objects if o["metadata"]["name"] == "nra-dashboard"]
    assert json.loads(dashboard["data"]["nra-dashboard.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing (Debian prometheus): run scripts/setup")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_every_dashboard_query_returns_series_from_a_real_agent():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check-dashboard"), "--json"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    assert len(results) == len(re.findall(r'"expr"', DASHBOARD.read_text()))
    for r in results:
        assert r["status"] == "ok" and r["series"] > 0, r
    # the events the script caused are visible
    # the failure counters exist from the start (0), before any failure
    failures = next(r for r in results if "nra_reconcile_failures_total" in r["expr"])
    assert failures["series"] > 0, failures
    drift = next(r for r in results if "nra_drift_repairs_total" in r["expr"])
    assert any(float(v) > 0 for v in drift["sample"].values()), drift
