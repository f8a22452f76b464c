"""The agent as a user runs it: the `nra` process programming a throwaway namespace."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env, run_nra
from tests.netns import NetNS
from tests.wait import holds, wait_for

pytestmark = pytest.mark.kernel


def rules(ns: NetNS, family: str = "-4", table: int = 20) -> list[dict]:
    return json.loads(ns.ip(f"-j {family} rule show table {table}") or "[]")


def rule_sources(ns: NetNS, family: str = "-4", table: int = 20) -> list[str]:
    return sorted(f"{r['src']}/{r.get('srclen', 32 if family == '-4' else 128)}" for r in rules(ns, family, table))


def route_gateways(ns: NetNS, family: str = "-4", table: int = 20) -> dict[str, list[tuple[str, int | None]]]:
    """dst -> [(gateway, weight)] of every route in the table."""
    out: dict[str, list[tuple[str, int]]] = {}
    proc = ns.run(["ip", "-j", family, "route", "show", "table", str(table)], capture_output=True, text=True)
    if proc.returncode != 0:
        # an empty table may not exist at all ("FIB table does not exist"): that is no routes
        assert "does not exist" in proc.stderr, proc.stderr
        return {}
    for route in json.loads(proc.stdout or "[]"):
        if "nexthops" in route:
            hops = [(h["gateway"], h.get("weight", 1)) for h in route["nexthops"]]
        else:
            # a single nexthop is a plain gateway route: no weight to speak of
            hops = [(route["gateway"], None)] if "gateway" in route else []
        out[route["dst"]] = sorted(hops)
    return out


def write(path, text: str) -> None:
    # write then rename, the way editors and ConfigMap volumes replace files
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "metallb.yaml"
    path.write_text(TWO_PEERS_V4_V6)
    return path


def oneshot(ns: NetNS, config, *extra: str, **env: str):
    return run_nra("--oneshot", "--static-file", str(config), "--netns", ns.name, *extra, env=clean_env(**env))


# -- settings refused at start --------------------------------------------------------

@pytest.mark.parametrize("args,env,needle", [
    (["--table", "254"], {}, "invalid TABLE_WEIGHT"),
    ([], {"TABLE_WEIGHT": "255"}, "invalid TABLE_WEIGHT"),
    (["--priority", "32767"], {}, "invalid RULE_PRIORITY"),
    (["--peer-weight", "300"], {}, "invalid PEER_WEIGHT"),
    (["--fwmark", "0xZZ"], {}, "invalid RULE_FWMARK"),
    ([], {"DESTINATION": "somewhere"}, "invalid DESTINATION"),
    (["--pre-hook", "/nonexistent"], {}, "invalid PRE_RECONCILE_SCRIPT_PATH"),
    (["--netns", "no-such-namespace-here"], {}, "invalid NRA_NETNS"),
])
def test_cli_refuses_bad_settings_with_one_line(args, env, needle):
    proc = run_nra(*args, "--static-file", "/dev/null", env=clean_env(**env))
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1


def test_plan_in_a_namespace_that_is_not_one_is_one_line(config):
    # NRA_NETNS=/ passed the settings (the path exists) and `nra plan` died with a traceback
    for command in (["plan"], ["--oneshot"], ["--clean-and-exit"]):
        proc = run_nra(*command, "--static-file", str(config), env=clean_env(NRA_NETNS="/"))
        assert proc.returncode == (1 if command == ["plan"] else 2), proc.stderr  # plan: 2 is "changes"
        assert proc.stderr.startswith("nra: invalid NRA_NETNS: '/' is not a network namespace"), proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout and len(proc.stderr.splitlines()) == 1


def test_a_huge_or_multiline_value_is_refused_in_one_short_line():
    for name, value in (("NRA_NETNS", "n" * 100_000), ("TABLE_WEIGHT", "20\n" + "9" * 100_000),
                        ("RULE_FWMARK", "٢٠")):
        proc = run_nra("--static-file", "/dev/null", env=clean_env(**{name: value}))
        assert proc.returncode == 2 and proc.stderr.startswith(f"nra: invalid {name}: "), proc.stderr[:300]
        assert len(proc.stderr.splitlines()) == 1 and len(proc.stderr) < 300, proc.stderr[:300]


@pytest.mark.parametrize("command", [["plan"], ["--oneshot"]])
def test_one_off_modes_with_no_source_fail_at_once(node_ns, tmp_path, command):
    # METALLB_STATIC_FILE='' and no credentials: they retried for SOURCE_START_TIMEOUT (60 s)
    env = clean_env(METALLB_STATIC_FILE="", HOME=str(tmp_path), SOURCE_START_TIMEOUT="60")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    started = time.monotonic()
    proc = run_nra(*command, "--netns", node_ns.name, env=env, timeout=30)
    assert proc.returncode == (1 if command == ["plan"] else 2), proc.stderr  # plan's 2 is "changes pending"
    assert "no Kubernetes credentials" in proc.stderr and "METALLB_STATIC_FILE" in proc.stderr
    assert time.monotonic() - started < 20  # the process start; the 60 s wait is gone
    assert node_ns.ip("-4 rule show table 20") == ""


def test_help_lists_env_names():
    proc = run_nra("--help")
    assert proc.returncode == 0
    for env in ("TABLE_WEIGHT", "RULE_FWMARK", "MAX_RECONCILE_WAIT", "METALLB_STATIC_FILE", "ONESHOT", "CLEANANDEXIT"):
        assert env in proc.stdout


# -- ONESHOT and CLEANANDEXIT --------------------------------------------------------

def test_oneshot_programs_both_families_exactly(node_ns, config):
    proc = oneshot(node_ns, config)
    assert proc.returncode == 0, proc.stderr
    assert rule_sources(node_ns, "-4") == ["198.51.100.0/26", "198.51.100.100/30"]
    assert rule_sources(node_ns, "-6") == ["2001:db8:100::/120"]
    assert all(r["priority"] == 20 for r in rules(node_ns, "-4") + rules(node_ns, "-6"))
    assert route_gateways(node_ns, "-4") == {"default": [("10.99.0.2", 100), ("10.99.0.3", 100)]}
    assert route_gateways(node_ns, "-6") == {"default": [("fd99::2", None)]}
    # a second run finds nothing to do
    plan = run_nra("plan", "--static-file", str(config), "--netns", node_ns.name)
    assert plan.returncode == 0, plan.stderr
    assert "nothing to do" in plan.stdout


def test_oneshot_env_names_table_priority_fwmark(node_ns, config):
    proc = oneshot(node_ns, config, TABLE_WEIGHT="1000", RULE_PRIORITY="77", RULE_FWMARK="0x14/0xff", PEER_WEIGHT="7")
    assert proc.returncode == 0, proc.stderr
    got = rules(node_ns, "-4", 1000)
    assert {(r["priority"], r["fwmark"], r.get("fwmask")) for r in got} in (
        {(77, "0x14", "0xff")}, {(77, "0x14/0xff", None)})
    assert route_gateways(node_ns, "-4", 1000) == {"default": [("10.99.0.2", 7), ("10.99.0.3", 7)]}
    assert rules(node_ns, "-4", 20) == []


@pytest.mark.parametrize("mark", ["0x0/0xff", "0/0xff"])
def test_oneshot_with_a_mark_of_0_installs_the_selector(node_ns, config, mark):
    # issue 11 #5: the rules used to go in without any fwmark
    proc = oneshot(node_ns, config, RULE_FWMARK=mark)
    assert proc.returncode == 0, proc.stderr
    assert node_ns.rules("-4") == ["20:\tfrom 198.51.100.0/26 fwmark 0/0xff lookup 20 proto 245",
                                   "20:\tfrom 198.51.100.100/30 fwmark 0/0xff lookup 20 proto 245"]
    assert run_nra("plan", "--static-file", str(config), "--netns", node_ns.name,
                   env=clean_env(RULE_FWMARK=mark)).stdout.endswith("nothing to do: the kernel matches the configuration\n")


def test_oneshot_fails_fast_on_invalid_file_and_touches_nothing(node_ns, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers: [\n")
    node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 20")
    started = time.monotonic()
    proc = run_nra("--oneshot", "--static-file", str(bad), "--netns", node_ns.name, "--source-timeout", "60")
    assert proc.returncode == 1
    assert time.monotonic() - started < 15  # a file is usable or not: no wait for the timeout
    assert "bad.yaml" in proc.stderr and "Traceback" not in proc.stderr
    # the kernel was not touched: the pre-existing (imposter) rule is still there
    assert rule_sources(node_ns) == ["203.0.113.0/24"]


def test_oneshot_missing_file_fails(node_ns, tmp_path):
    started = time.monotonic()
    proc = run_nra("--oneshot", "--static-file", str(tmp_path / "nope.yaml"), "--netns", node_ns.name,
                   "--source-timeout", "60")
    assert proc.returncode == 1
    assert time.monotonic() - started < 15
    assert "does not exist" in proc.stderr


def test_clean_and_exit_removes_everything_and_succeeds_when_empty(node_ns, config):
    assert oneshot(node_ns, config).returncode == 0
    node_ns.ip("rule add from all lookup 20 priority 5")  # an imposter with no `from`
    proc = run_nra("--netns", node_ns.name, env=clean_env(CLEANANDEXIT="1"))
    assert proc.returncode == 0, proc.stderr
    for family in ("-4", "-6"):
        assert rules(node_ns, family) == []
        assert route_gateways(node_ns, family) == {}
    again = run_nra("clean", "--netns", node_ns.name)
    assert again.returncode == 0, again.stderr


def test_clean_and_exit_removes_scoped_routes(node_ns):
    # issue 11 #6: these stayed, and CLEANANDEXIT still said they were removed and exited 0
    node_ns.ip("route add 10.50.0.0/24 dev eth0 table 20")
    node_ns.ip("route add local 10.99.0.1 dev lo table 20")
    node_ns.ip("-6 route add fd50::/64 dev eth0 table 20")
    proc = run_nra("clean", "--netns", node_ns.name)
    assert proc.returncode == 0, proc.stderr
    assert node_ns.routes("-4") == [] and node_ns.routes("-6") == []


async def test_clean_and_exit_fails_when_something_stays(node_ns, monkeypatch):
    """A delete the kernel takes without removing anything (the old scope-less route delete)
    must not be reported as done: CLEANANDEXIT reads the table again and exits 1, naming it."""
    from loguru import logger

    from nra.daemon.modes import clean_and_exit
    from nra.kernel.routes import Routes
    from nra.settings import Settings

    async def delete_without_scope(self, route):
        try:
            await self.ipr.route("del", family=2 if route.family == 4 else 10, dst=str(route.dst),
                                 table=route.table, type=route.type, priority=route.metric)
        except Exception:  # ESRCH, as the old code swallowed it
            pass

    monkeypatch.setattr(Routes, "delete", delete_without_scope)
    node_ns.ip("route add 10.50.0.0/24 dev eth0 table 20")
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        code = await clean_and_exit(Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off", CLEANANDEXIT="1"))
    finally:
        logger.remove(sink)
    assert code == 1
    assert "still different after applying: ip -4 route del 10.50.0.0/24 table 20" in "".join(lines)
    assert node_ns.routes("-4") == ["10.50.0.0/24 dev eth0 scope link"]


def test_plan_changes_nothing(node_ns, config):
    proc = run_nra("plan", "--static-file", str(config), "--netns", node_ns.name)
    assert proc.returncode == 2, proc.stderr  # changes pending
    assert "rule add from 198.51.100.0/26" in proc.stdout
    assert "route replace" in proc.stdout
    assert rules(node_ns) == [] and route_gateways(node_ns) == {}
    dry = run_nra("--dry-run", "--static-file", str(config), "--netns", node_ns.name)
    assert dry.returncode == 2 and dry.stdout == proc.stdout
    assert rules(node_ns) == []


def test_plan_exit_codes_and_json_document(node_ns, config):
    """0 nothing to do, 2 changes pending, 1 an error: as terraform plan -detailed-exitcode."""
    pending = run_nra("plan", "-o", "json", "--static-file", str(config), "--netns", node_ns.name)
    assert pending.returncode == 2, pending.stderr
    doc = json.loads(pending.stdout)
    assert doc["changes"] is True
    assert doc["desired"]["prefixes"] == {"ipv4": 2, "ipv6": 1}
    assert sorted(p["address"] for p in doc["desired"]["peers"]) == ["10.99.0.2", "10.99.0.3", "fd99::2"]
    commands = [op["command"] for op in doc["operations"]]
    assert "ip -4 rule add from 198.51.100.0/26 lookup 20 priority 20" in commands
    assert {op["kind"] for op in doc["operations"]} == {"add_rule", "replace_route"}
    assert oneshot(node_ns, config).returncode == 0
    done = run_nra("plan", "--output", "json", "--static-file", str(config), "--netns", node_ns.name)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changes"] is False and json.loads(done.stdout)["operations"] == []
    missing_ns = run_nra("plan", "--static-file", str(config), "--netns", "nra-no-such-ns")
    assert missing_ns.returncode == 1, missing_ns.stderr
    bad_setting = run_nra("plan", "--static-file", str(config), "--netns", node_ns.name, "--table", "254")
    assert bad_setting.returncode == 1 and bad_setting.stderr.count("\n") == 1, bad_setting.stderr
    assert "TABLE_WEIGHT" in bad_setting.stderr
    assert run_nra("--oneshot", "--table", "254").returncode == 2  # the agent's bad settings stay exit 2


def test_usage_names_every_command_and_completion_completes_them():
    usage = run_nra("--help").stdout
    assert "{run,plan,clean,status,completion}" in usage
    script = run_nra("completion", "bash").stdout
    complete = """source /dev/stdin; complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _nra; echo "${COMPREPLY[*]}"; }
complete_words nra pl; complete_words nra --return-path c; complete_words nra status --j; complete_words nra --tab"""
    got = subprocess.run(["bash", "-c", complete], input=script, capture_output=True, text=True, check=True)
    assert got.stdout.splitlines() == ["plan", "conntrack", "--json", "--table --table-name"], got.stderr
    zsh = run_nra("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("autoload -U +X bashcompinit") and script in zsh.stdout
    assert run_nra("completion", "fish").returncode == 2


# -- hooks ------------------------------------------------------------------------------

def make_hook(path, body: str):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_hooks_run_around_the_reconcile_without_a_shell(node_ns, config, tmp_path):
    marks = tmp_path / "marks"
    pre = make_hook(tmp_path / "pre.sh", f'echo "pre $1 rules=$(ip -n {node_ns.name} rule show table 20 | wc -l)" >> {marks}\necho hello-from-pre\n')
    post = make_hook(tmp_path / "post.sh", f'echo "post $1 rules=$(ip -n {node_ns.name} rule show table 20 | wc -l)" >> {marks}\nexit 3\n')
    proc = oneshot(node_ns, config, PRE_RECONCILE_SCRIPT_PATH=str(pre), POST_RECONCILE_SCRIPT_PATH=str(post))
    assert proc.returncode == 0, proc.stderr  # a failing hook warns, it does not fail the run
    assert marks.read_text().splitlines() == ["pre pre rules=0", "post post rules=2"]
    assert "hello-from-pre" in proc.stderr
    assert "exited with status 3" in proc.stderr


def test_slow_hook_is_killed_after_its_timeout(node_ns, config, tmp_path):
    slow = make_hook(tmp_path / "slow.sh", "sleep 30\n")
    started = time.monotonic()
    proc = oneshot(node_ns, config, "--hook-timeout", "1", PRE_RECONCILE_SCRIPT_PATH=str(slow))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    assert "timeout" in proc.stderr
    assert len(rule_sources(node_ns)) == 2


# -- the daemon ---------------------------------------------------------------------------

@pytest.fixture
def daemon(node_ns, config, tmp_path):
    started: list[Daemon] = []

    def start(*extra: str, **env: str) -> Daemon:
        d = Daemon("--static-file", str(config), "--netns", node_ns.name, *extra,
                   env=clean_env(**env), log_path=tmp_path / f"nra-{len(started)}.log")
        started.append(d)
        wait_for(lambda: len(rule_sources(node_ns)) == 2, 10, what="first reconcile")
        return d

    yield start
    for d in started:
        d.kill()


def test_daemon_follows_file_changes_and_keeps_state_on_bad_input(node_ns, config, daemon):
    d = daemon()
    # a change reaches the kernel quickly
    write(config, TWO_PEERS_V4_V6.replace("198.51.100.0/26", "198.51.100.64/26"))
    # (the new rule is added before the old one goes, two messages apart: wait for both)
    wait_for(lambda: rule_sources(node_ns) == ["198.51.100.100/30", "198.51.100.64/26"], 2, what="changed rule")
    good = (rule_sources(node_ns), route_gateways(node_ns))

    # invalid YAML, a truncated (empty) file, a missing file: all keep the last good state
    write(config, "peers: [\n")
    wait_for(lambda: "keeping the last good configuration" in d.log(), 3, what="invalid file warning")
    config.write_text("")
    wait_for(lambda: "the file is empty" in d.log(), 3, what="empty file warning")
    config.unlink()
    wait_for(lambda: "does not exist" in d.log(), 3, what="missing file warning")
    holds(lambda: (rule_sources(node_ns), route_gateways(node_ns)) == good, 0.3, what="the last good state")

    # an explicitly empty configuration cleans up
    write(config, "peers: []\naddress-pools: []\n")
    wait_for(lambda: rule_sources(node_ns) == [] and route_gateways(node_ns) == {}, 3, what="cleanup")
    assert d.stop() == 0


def test_daemon_repairs_drift_at_once(node_ns, daemon):
    d = daemon("--max-reconcile-wait", "0")  # no timer: only netlink events can repair
    node_ns.ip("rule del from 198.51.100.0/26 lookup 20 priority 20")
    wait_for(lambda: "198.51.100.0/26" in rule_sources(node_ns), 2, what="rule restored")
    node_ns.ip("route del default table 20")
    wait_for(lambda: "default" in route_gateways(node_ns), 2, what="route restored")
    node_ns.ip("rule add from 203.0.113.0/24 lookup 20 priority 99")
    wait_for(lambda: "203.0.113.0/24" not in rule_sources(node_ns), 2, what="imposter rule removed")
    node_ns.ip("route add 203.0.113.0/24 via 10.99.0.2 table 20")
    wait_for(lambda: list(route_gateways(node_ns)) == ["default"], 2, what="imposter route removed")
    assert d.proc.poll() is None


def test_daemon_restores_routes_after_link_flap(node_ns, daemon):
    daemon("--max-reconcile-wait", "0")
    node_ns.ip("link set dev eth0 down")
    wait_for(lambda: "default" not in route_gateways(node_ns, "-6"), 3, what="kernel dropping v6 routes")
    node_ns.ip("link set dev eth0 up")
    wait_for(lambda: route_gateways(node_ns, "-4").get("default") == [("10.99.0.2", 100), ("10.99.0.3", 100)]
             and route_gateways(node_ns, "-6").get("default") == [("fd99::2", None)], 3, what="routes restored")
    assert len(rule_sources(node_ns)) == 2


def test_sigterm_exits_cleanly_and_leaves_the_kernel_as_it_is(node_ns, daemon):
    d = daemon()
    before = (rule_sources(node_ns), route_gateways(node_ns))
    assert d.stop(signal.SIGTERM) == 0
    assert (rule_sources(node_ns), route_gateways(node_ns)) == before
    assert "left as it is" in d.log()


def test_json_logs(node_ns, config):
    proc = oneshot(node_ns, config, LOG_FORMAT="json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "msg"} <= set(line) for line in lines)
    assert any("rule add from 198.51.100.0/26" in line["msg"] for line in lines)


def test_json_logs_carry_structured_fields(node_ns, tmp_path):
    """reconcile id and trigger on a reconcile's lines, prefix counts on the desired state,
    the peer on a line about one peer."""
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6.replace("- peer-address: fd99::2", "- peer-address: fd99::2\n- peer-address: 192.0.2.77"))
    proc = oneshot(node_ns, config, LOG_FORMAT="json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    desired = next(line for line in lines if line["msg"].startswith("desired state loaded"))
    assert (desired["peers_ipv4"], desired["peers_ipv6"], desired["prefixes_ipv4"], desired["prefixes_ipv6"]) == (3, 1, 2, 1)
    ops = [line for line in lines if "rule add from" in line["msg"]]
    assert ops and all(line["reconcile_id"] == 1 and line["trigger"] == "oneshot" for line in ops)
    off_link = next(line for line in lines if "192.0.2.77" in line["msg"] and line["level"] == "warning")
    assert off_link["peer"] == "192.0.2.77" and off_link["reconcile_id"] == 1


def test_a_large_first_reconcile_says_its_progress_once(node_ns, tmp_path):
    """25 prefixes: one INFO line counts the operations; none is logged per rule at INFO."""
    config = tmp_path / "metallb.yaml"
    prefixes = ", ".join(f"198.51.{i}.0/24" for i in range(25))
    config.write_text(f"peers:\n- peer-address: 10.99.0.2\naddress-pools:\n- name: p\n  protocol: bgp\n"
                      f"  addresses: [{prefixes}]\n")
    proc = oneshot(node_ns, config, LOG_FORMAT="json")
    assert proc.returncode == 0, proc.stderr
    info = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert [line for line in info if "rule add" in line["msg"]] == []
    summary = [line for line in info if line["msg"].startswith("applying 26 operations")]
    assert len(summary) == 1 and summary[0]["operations_add_rule"] == 25 and summary[0]["operations_replace_route"] == 1
    assert len(rule_sources(node_ns)) == 25


def test_health_port_in_use_is_one_line_not_a_traceback(node_ns, config):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_nra("--static-file", str(config), "--netns", node_ns.name,
                       env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{port}"), timeout=20)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
    assert rules(node_ns) == []  # it refused before touching the kernel


# -- peers that cannot be used (issue 11) --------------------------------------------------

def write_config(tmp_path, peers: list[str]) -> str:
    path = tmp_path / "peers.yaml"
    path.write_text("peers:\n" + "".join(f"- peer-address: {p!r}\n" for p in peers)
                    + "address-pools:\n- name: a\n  protocol: bgp\n  addresses: [198.51.100.0/26, 2001:db8::/64]\n")
    return str(path)


def test_oneshot_leaves_out_the_nodes_own_address_and_says_so(node_ns, tmp_path):
    # issue 11 #7: it went in as a nexthop, blackholing replies, with no warning
    proc = oneshot(node_ns, write_config(tmp_path, ["10.99.0.1", "10.99.0.2", "10.99.0.255"]))
    assert proc.returncode == 0, proc.stderr
    assert "peer 10.99.0.1 (10.99.0.1) is this node's own address: not a usable nexthop" in proc.stderr
    assert "peer 10.99.0.255 (10.99.0.255) is a broadcast address" in proc.stderr
    assert node_ns.routes("-4") == ["default via 10.99.0.2 dev eth0 proto 245"]


def test_oneshot_fails_when_a_family_gets_no_usable_peer(node_ns, tmp_path):
    # issue 11 #10: rules went in, no route, and it exited 0
    proc = oneshot(node_ns, write_config(tmp_path, ["10.55.0.1", "10.55.0.2", "fd99::2"]))
    assert proc.returncode == 1
    assert "ONESHOT failed: no usable IPv4 peer, so no IPv4 route (rules are installed)" in proc.stderr
    assert len(node_ns.rules("-4")) == 1 and node_ns.routes("-6")  # the other family is fine
    assert "default" not in node_ns.ip("-4 route show table 20", check=False)


def test_oneshot_installs_a_zoned_link_local_peer_with_its_link(node_ns, tmp_path):
    # issue 11 #9: `fe80::1%v0` was refused as a peer address
    proc = oneshot(node_ns, write_config(tmp_path, ["fe80::1%eth0", "10.99.0.2"]))
    assert proc.returncode == 0, proc.stderr
    assert node_ns.routes("-6") == ["default via fe80::1 dev eth0 proto 245 metric 1024 pref medium"]


def test_daemon_leaves_out_a_peer_at_the_withdrawal_of_its_learned_routes(node_ns, daemon):
    # what BIRD or FRR install while their BGP sessions are up (proto bird = 12)
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")
    node_ns.ip("route add 10.200.2.0/24 via 10.99.0.3 proto bird")
    d = daemon("--learned-route-protos", "bird", MAX_RECONCILE_WAIT="0")  # no timer: only events act

    def v4_gateways() -> set[str]:
        return {gw for gw, _ in route_gateways(node_ns).get("default", [])}

    wait_for(lambda: v4_gateways() == {"10.99.0.2", "10.99.0.3"}, 5, what="both peers in the route")
    time.sleep(1.5)  # past the check that follows our own changes (ECHO_CHECK_S): nothing pending
    node_ns.ip("route del 10.200.1.0/24")  # r1's session dropped
    # only the route event can act this soon: no timer, no retry (nothing was degraded)
    wait_for(lambda: v4_gateways() == {"10.99.0.3"}, 0.9, what="10.99.0.2 left out")
    wait_for(lambda: "10.99.0.2 (10.99.0.2) has no route learned over BGP any more" in d.log(), 2, what="the warning")
    node_ns.ip("route add 10.200.1.0/24 via 10.99.0.2 proto bird")
    wait_for(lambda: v4_gateways() == {"10.99.0.2", "10.99.0.3"}, 3, what="10.99.0.2 back")
    # fd99::2 never had a learned route: not judged, still in its route
    assert {gw for gw, _ in route_gateways(node_ns, "-6").get("default", [])} == {"fd99::2"}


def test_managed_neighbours_and_link_timers_are_set_by_the_daemon_not_by_plan(node_ns, config, daemon):
    def managed() -> set[str]:
        return {line.split()[0] for f in ("-4", "-6") for line in node_ns.ip(f"-d {f} neigh show dev eth0").splitlines()
                if "managed" in line.split()}

    flags = ("--managed-neighbours", "1", "--peer-neigh-timers", "base_reachable_ms=1500,retrans_ms=300")
    proc = run_nra("plan", "--static-file", str(config), "--netns", node_ns.name, *flags)
    assert proc.returncode == 2, proc.stderr
    assert managed() == set() and "base_reachable 30000" in node_ns.ip("ntable show dev eth0 name arp_cache")

    daemon(*flags)
    wait_for(lambda: managed() == {"10.99.0.2", "10.99.0.3", "fd99::2"}, 3, what="managed entries")
    for table in ("arp_cache", "ndisc_cache"):
        assert "base_reachable 1500 retrans 300" in " ".join(node_ns.ip(f"ntable show dev eth0 name {table}").split())
