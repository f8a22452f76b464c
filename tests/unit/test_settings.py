"""Settings: the original env var names and meanings, and refusals with one clear line."""

from __future__ import annotations

import ipaddress
import stat

import pytest

from nra import settings as nra_settings
from nra.settings import (
    ENV_NAMES,
    MAX_LINE,
    Settings,
    SettingsError,
    load_settings,
    parse_destination,
    parse_fwmark,
)
from tests.settings_cases import ALL_REFUSED, AT_BOUNDS, BIG

ENV_VARS = [*ENV_NAMES.values(), "TABLE"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def set_case(monkeypatch, env: str, value, others: dict) -> None:
    for name, other in {**others, env: value}.items():
        monkeypatch.setenv(name, str(value if name == env else other))


def test_defaults_match_the_original_agent():
    s = load_settings()
    assert (s.max_reconcile_wait, s.table, s.peer_weight, s.rule_priority) == (60000, 20, 100, 20)
    assert s.fwmark == (None, None)
    assert s.destinations == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert s.metallb_configmap_name == "config"
    assert not s.oneshot and not s.cleanandexit and not s.metallb_use_crds
    assert s.source_kind == "configmap"


def test_environment_names(monkeypatch):
    monkeypatch.setenv("TABLE_WEIGHT", "30")
    monkeypatch.setenv("PEER_WEIGHT", "7")
    monkeypatch.setenv("RULE_PRIORITY", "100")
    monkeypatch.setenv("RULE_FWMARK", "0x14/0xff")
    monkeypatch.setenv("ONESHOT", "1")
    monkeypatch.setenv("METALLB_USE_CRDS", "true")
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    s = load_settings()
    assert (s.table, s.peer_weight, s.rule_priority) == (30, 7, 100)
    assert s.fwmark == (0x14, 0xFF)
    assert s.oneshot and s.metallb_use_crds and s.log_level == "verbose"
    assert s.source_kind == "crds"


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("TABLE_WEIGHT", "30")
    assert load_settings(table=40).table == 40


@pytest.mark.parametrize("given,expected", [("0", 0), ("5", 1000), ("999", 1000), ("1000", 1000), ("2500", 2500)])
def test_max_reconcile_wait_floor_and_off(given, expected):
    assert load_settings(max_reconcile_wait=given).max_reconcile_wait == expected


@pytest.mark.parametrize("text,expected", [
    ("0x14", (0x14, None)), ("20", (20, None)), ("0x14/0xff", (0x14, 0xFF)), ("20/255", (20, 255)),
    ("0x0/0xff", (0, 0xFF)),
])
def test_fwmark_forms(text, expected):
    assert parse_fwmark(text) == expected


def test_destination_forms():
    assert parse_destination("10.0.0.0/8") == (ipaddress.ip_network("10.0.0.0/8"),)
    assert parse_destination("10.0.0.0/8, fd00::/8") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize("field,value,env", [
    ("table", "0", "TABLE_WEIGHT"), ("table", "253", "TABLE_WEIGHT"), ("table", "254", "TABLE_WEIGHT"),
    ("table", "255", "TABLE_WEIGHT"), ("table", "-1", "TABLE_WEIGHT"), ("table", str(2**32), "TABLE_WEIGHT"),
    ("table", "twenty", "TABLE_WEIGHT"),
    ("rule_priority", "0", "RULE_PRIORITY"), ("rule_priority", "32766", "RULE_PRIORITY"),
    ("rule_priority", "32767", "RULE_PRIORITY"), ("rule_priority", str(2**32), "RULE_PRIORITY"),
    ("peer_weight", "0", "PEER_WEIGHT"), ("peer_weight", "257", "PEER_WEIGHT"),
    ("rule_fwmark", "zz", "RULE_FWMARK"), ("rule_fwmark", "0x14/0x0f", "RULE_FWMARK"),
    ("rule_fwmark", "0x1ffffffff", "RULE_FWMARK"),
    ("destination", "nowhere", "DESTINATION"), ("destination", "10.0.0.0/8,11.0.0.0/8", "DESTINATION"),
    ("destination", "999.0.0.0/8", "DESTINATION"),
    ("pre_reconcile_script_path", "/nonexistent/hook", "PRE_RECONCILE_SCRIPT_PATH"),
    ("post_reconcile_script_path", "/", "POST_RECONCILE_SCRIPT_PATH"),
    ("log_level", "loud", "LOG_LEVEL"), ("oneshot", "maybe", "ONESHOT"),
    ("max_reconcile_wait", "-5", "MAX_RECONCILE_WAIT"), ("health_address", "nope", "HEALTH_ADDRESS"),
])
def test_bad_settings_name_the_variable(field, value, env):
    with pytest.raises(SettingsError) as err:
        load_settings(**{field: value})
    line = str(err.value)
    assert line.startswith(f"invalid {env}:"), line
    assert "\n" not in line


def test_hook_must_be_an_executable_file(tmp_path):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\n")
    with pytest.raises(SettingsError, match="not executable"):
        load_settings(pre_reconcile_script_path=str(hook))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    assert load_settings(pre_reconcile_script_path=str(hook)).pre_reconcile_script_path == str(hook)
    with pytest.raises(SettingsError, match="not a file"):
        load_settings(pre_reconcile_script_path=str(tmp_path))


def test_oneshot_and_clean_are_exclusive():
    with pytest.raises(SettingsError, match="cannot both"):
        load_settings(oneshot="1", cleanandexit="1")


def test_health_address_off():
    assert load_settings(health_address="off").health_address == ""
    assert load_settings(health_address="0.0.0.0:9200").health_address == "0.0.0.0:9200"


def test_every_setting_is_documented_in_docs_and_help():
    """docs/settings.md and --help are generated from the settings: each has its row and line."""
    from pathlib import Path

    from nra.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    help_text = build_parser().format_help()
    missing = [env for env in ENV_NAMES.values() if f"| `{env}` |" not in doc or f"[{env}" not in help_text]
    assert not missing, f"undocumented settings: {missing}"


@pytest.mark.parametrize("text,expected", [
    ("", frozenset()), ("off", frozenset()), ("bgp", {186}), ("bgp, bird", {186, 12}), ("BIRD,zebra", {12, 11}),
    ("12,186", {12, 186}), ("254", {254}), ("5", {5}),
])
def test_learned_route_protos_forms(text, expected):
    assert load_settings(learned_route_protos=text).learned_protos == expected


@pytest.mark.parametrize("value", ["kernel", "2", "0", "boot", "frr", "256", "bgp,nope", "-1",
                                   "static", "4", "bgp,static", "١٨٦"])
def test_learned_route_protos_refused(value):
    with pytest.raises(SettingsError) as err:
        load_settings(learned_route_protos=value)
    assert str(err.value).startswith("invalid LEARNED_ROUTE_PROTOS:"), str(err.value)


@pytest.mark.parametrize("text,expected", [
    ("", {}), ("off", {}),
    ("fast", {"base_reachable_ms": 1000, "delay_probe_ms": 200, "retrans_ms": 200, "ucast_probes": 3, "mcast_probes": 3}),
    ("retrans_ms=150", {"retrans_ms": 150}),
    ("base_reachable_ms=2000, delay_probe_ms=0", {"base_reachable_ms": 2000, "delay_probe_ms": 0}),
])
def test_peer_neigh_timers_forms(text, expected):
    assert load_settings(peer_neigh_timers=text).neigh_timers == expected


@pytest.mark.parametrize("value", ["slow", "retrans_ms", "retrans_ms=abc", "retrans_ms=5", "ucast_probes=0",
                                   "base_reachable_ms=99999999", "gc_stale_ms=10", "fast,retrans_ms=100"])
def test_peer_neigh_timers_refused(value):
    with pytest.raises(SettingsError) as err:
        load_settings(peer_neigh_timers=value)
    assert str(err.value).startswith("invalid PEER_NEIGH_TIMERS:"), str(err.value)


def test_managed_neighbours_is_a_flag():
    assert load_settings().managed_neighbours is False
    assert load_settings(managed_neighbours="1").managed_neighbours is True
    with pytest.raises(SettingsError):
        load_settings(managed_neighbours="perhaps")


# -- issue 11, item 11: non-finite or absurd timeouts, a health address that is a name ----


@pytest.mark.parametrize("name,value", [
    ("HOOK_TIMEOUT", "inf"), ("HOOK_TIMEOUT", "nan"), ("HOOK_TIMEOUT", "-inf"), ("HOOK_TIMEOUT", "1e309"),
    ("HOOK_TIMEOUT", "301"), ("SOURCE_START_TIMEOUT", "nan"), ("SOURCE_START_TIMEOUT", "inf"),
    ("SOURCE_START_TIMEOUT", "1e12"),
])
def test_non_finite_or_absurd_timeouts_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"invalid {name}: must be a number of seconds above 0 and at most"):
        load_settings()


def test_timeouts_within_bounds_are_kept(monkeypatch):
    monkeypatch.setenv("HOOK_TIMEOUT", "300")
    monkeypatch.setenv("SOURCE_START_TIMEOUT", "0.5")
    s = load_settings()
    assert (s.hook_timeout, s.source_start_timeout) == (300.0, 0.5)


@pytest.mark.parametrize("value", ["metrics.example.com:9101", "node-a:9101",
                                   "1.2.3:9101", "127.0.0.1:+80", "127.0.0.1:٩١"])
def test_health_address_host_must_be_an_ip_address(monkeypatch, value):
    monkeypatch.setenv("HEALTH_ADDRESS", value)
    with pytest.raises(SettingsError, match="invalid HEALTH_ADDRESS: "):
        load_settings()


@pytest.mark.parametrize("value,endpoint", [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)), ("[::1]:9101", ("::1", 9101)), (":9101", ("0.0.0.0", 9101)),
    ("localhost:80", ("127.0.0.1", 80)), ("off", None), ("", None),
])
def test_health_address_is_parsed_once_into_host_and_port(monkeypatch, value, endpoint):
    monkeypatch.setenv("HEALTH_ADDRESS", value)
    assert load_settings().health_endpoint == endpoint


def test_uplink_tables_default_and_form(monkeypatch):
    assert load_settings().uplink_table_range == range(1000, 1064)
    monkeypatch.setenv("UPLINK_TABLES", " ")
    assert load_settings().uplink_table_range == range(1000, 1064)
    monkeypatch.setenv("UPLINK_TABLES", "300-301")
    assert load_settings().uplink_table_range == range(300, 302)


@pytest.mark.parametrize("env, message", [
    ({"UPLINK_TABLES": "10-30"}, "invalid settings: UPLINK_TABLES 10-30 holds TABLE_WEIGHT 20"),
    ({"UPLINK_TABLES": "250-260"}, "invalid UPLINK_TABLES: 253 is the kernel's"),
    ({"UPLINK_TABLES": "7-x"}, "invalid UPLINK_TABLES: expected a whole number"),
    ({"UPLINK_TABLES": "30-40", "RETURN_PATH": "conntrack"},
     "invalid settings: UPLINK_TABLES 30-40 overlaps the router tables 21-35 (RETURN_PATH_TABLES)"),
    ({"UPLINK_TABLES": "100-110", "RETURN_PATH": "conntrack", "RETURN_PATH_TABLES": "105-120"},
     "invalid settings: UPLINK_TABLES 100-110 overlaps the router tables 105-120"),
])
def test_uplink_tables_overlaps_are_refused_in_one_line(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_uplink_tables_beside_the_router_tables_are_fine(monkeypatch):
    monkeypatch.setenv("RETURN_PATH", "conntrack")
    monkeypatch.setenv("UPLINK_TABLES", "36-60")
    assert load_settings().uplink_table_range == range(36, 61)


@pytest.mark.parametrize("env, expected", [
    ({"TABLE_WEIGHT": "1000"}, range(1001, 1065)),  # the default moves out of TABLE_WEIGHT's way
    ({"TABLE_WEIGHT": "1000", "RETURN_PATH": "conntrack"}, range(1016, 1080)),  # and of the router tables (1001-1015)
    ({"TABLE_WEIGHT": "990", "RETURN_PATH": "conntrack"}, range(1006, 1070)),
    ({"TABLE_WEIGHT": "100", "RETURN_PATH": "conntrack"}, range(1000, 1064)),
])
def test_the_default_uplink_tables_keep_clear_of_the_other_tables(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().uplink_table_range == expected


# -- issues 20 and 21: typed, bounded, one short line ------------------------------------------

def case_id(case) -> str:
    env, value, others = case
    text = str(value)
    return f"{env}={text[:20] + '...' if len(text) > 20 else text}" + "".join(f"+{k}" for k in others)


@pytest.mark.parametrize("case", ALL_REFUSED, ids=case_id)
def test_refused_at_start_with_one_bounded_line(monkeypatch, case):
    env, value, others = case
    set_case(monkeypatch, env, value, others)
    with pytest.raises(SettingsError) as err:
        load_settings()
    line = str(err.value)
    assert line.startswith("invalid ") and env in line, line
    assert "\n" not in line and len(line) <= MAX_LINE, line
    assert BIG[:200] not in line and "n" * 200 not in line


@pytest.mark.parametrize("case", AT_BOUNDS, ids=case_id)
def test_accepted_at_the_bounds(monkeypatch, case):
    env, value, others = case
    set_case(monkeypatch, env, value, others)
    load_settings()


def test_values_are_typed_and_parsed_once(monkeypatch):
    given = {"RULE_FWMARK": "0x14/0xff", "DESTINATION": "10.0.0.0/8", "RETURN_PATH_TABLES": "100-102",
             "PEER_NEIGH_TIMERS": "retrans_ms=150", "LEARNED_ROUTE_PROTOS": "bgp"}
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    for parser in ("parse_fwmark", "parse_destination", "parse_table_range", "parse_neigh_timers",
                   "parse_route_protos", "parse_return_path_mark", "parse_mark_field"):
        monkeypatch.setattr(nra_settings, parser, None)  # reading a value must not parse again
    assert s.rule_fwmark == s.fwmark == (0x14, 0xFF)
    assert s.destination == s.destinations == (ipaddress.ip_network("10.0.0.0/8"),)
    assert s.router_tables == range(100, 103)
    assert (s.return_path_mark.value, s.return_path_mark.mask) == (0x2, 0x3E)
    assert s.neigh_timers == {"retrans_ms": 150} and s.learned_protos == {186}
    assert isinstance(s.table, int) and isinstance(s.hook_timeout, float) and s.oneshot is False


def test_a_wide_mask_is_refused_without_allocating(monkeypatch):
    # 0x1/0xffffffff took 2.3 GB (a set of every table the mark could number) before a MemoryError
    import tracemalloc

    monkeypatch.setenv("RETURN_PATH", "conntrack")
    monkeypatch.setenv("RETURN_PATH_TABLES", "21-35")
    for mark in ("0x1/0xffffffff", "0x1/0xfffff", "0x10000/0xfff0000"):
        monkeypatch.setenv("RETURN_PATH_MARK", mark)
        tracemalloc.start()
        with pytest.raises(SettingsError, match="invalid RETURN_PATH_MARK"):
            load_settings()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2_000_000, f"{mark}: {peak} bytes"


def test_a_wide_table_range_holding_a_reserved_id_costs_nothing(monkeypatch):
    import tracemalloc

    monkeypatch.setenv("RETURN_PATH", "conntrack")
    tracemalloc.start()
    for tables in ("1-4294967295", "200-300"):
        monkeypatch.setenv("RETURN_PATH_TABLES", tables)
        with pytest.raises(SettingsError, match="invalid RETURN_PATH_TABLES"):
            load_settings()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000


@pytest.mark.parametrize("env", ENV_VARS[:-1])
def test_every_setting_refuses_a_huge_value_in_one_short_line(monkeypatch, env):
    monkeypatch.setenv(env, "x\n" + "9" * 100_000)
    try:
        load_settings()
    except SettingsError as err:
        assert "\n" not in str(err) and len(str(err)) <= MAX_LINE
    else:  # free text (a name): taken as given, never echoed
        assert env in {"METALLB_NAMESPACE", "METALLB_CONFIGMAP_NAME", "NODE_NAME", "KUBECONFIG",
                       "METALLB_STATIC_FILE", "FRRK8S_NAMESPACE"}, env


def test_the_generated_docs_are_current():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "settings_doc.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_given_in_code_is_refused():
    # A test once wrote Settings(NETNS=...) for NRA_NETNS: ignored, and nra programmed the
    # machine's own namespace. Names given in code must be settings; the environment may hold
    # anything else.
    import pydantic
    with pytest.raises(pydantic.ValidationError, match="NETNS"):
        Settings(NETNS="x")
