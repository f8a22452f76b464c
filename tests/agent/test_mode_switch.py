"""Switching RETURN_PATH between rules and conntrack, on the real kernel, each test in its own
throwaway namespace, nra run as a one-off process (ONESHOT, CLEANANDEXIT, `nra plan`): what the
other mode owned goes, found by what nra knows of its own (its rule and route protocol, 245;
its nftables table's name, `inet nra`), whatever the current settings name.

Before: rules mode never looked at nftables, so after conntrack -> rules the table `inet nra`
stayed (its chains still marking connections) until a CLEANANDEXIT with RETURN_PATH=conntrack."""

from __future__ import annotations

import json

import pytest

from tests.agent.helpers import clean_env, run_nra
from tests.metallb_docs import two_uplinks
from tests.netns import NetNS

pytestmark = pytest.mark.kernel

# two peers on the node's link, each announcing its own pool: rules mode gives each group an
# uplink table (UPLINK_TABLES, 1000-1063), conntrack mode each peer a router table (21-35)
CONFIG = two_uplinks("10.99.0.2", "10.99.0.3")
ROUTER_TABLES = range(21, 36)  # the default: TABLE_WEIGHT 20 + 1 .. + the mark's 15 routers
UPLINK_TABLES = range(1000, 1064)


@pytest.fixture
def node(node_ns: NetNS) -> NetNS:
    """The node, with the peers' link-layer addresses known (conntrack mode's routers)."""
    node_ns.ip("neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev eth0 nud permanent")
    node_ns.ip("neigh add 10.99.0.3 lladdr 02:00:00:00:00:03 dev eth0 nud permanent")
    return node_ns


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "metallb.yaml"
    path.write_text(CONFIG)
    return path


def nra(ns: NetNS, mode: str, *args: str, **env: str):
    return run_nra(*args, "--netns", ns.name, env=clean_env(RETURN_PATH=mode, **env))


def oneshot(ns: NetNS, mode: str, config) -> None:
    proc = nra(ns, mode, "--oneshot", "--static-file", str(config))
    assert proc.returncode == 0, proc.stderr


def nft_tables(ns: NetNS) -> set[tuple[str, str]]:
    listed = json.loads(ns.exec(["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return {(t["table"]["family"], t["table"]["name"]) for t in listed if "table" in t}


def own_rules(ns: NetNS, family: str = "-4") -> list[dict]:
    """nra's rules (protocol 245; `ip rule show protocol` does not filter in iproute2 6.1)."""
    return [r for r in json.loads(ns.ip(f"-j {family} rule show") or "[]") if r.get("protocol") == "245"]


def own(ns: NetNS) -> dict[str, set]:
    """The tables nra's rules and routes (protocol 245) are in, whatever table they are in."""
    found: dict[str, set] = {"rules": set(), "routes": set()}
    for family in ("-4", "-6"):
        found["rules"].update(int(rule["table"]) for rule in own_rules(ns, family))
        for route in json.loads(ns.ip(f"-j {family} route show table all proto 245") or "[]"):
            table = route.get("table", "main")
            found["routes"].add(int(table) if str(table).isdigit() else table)
    return found


def conntrack_programmed(ns: NetNS) -> None:
    assert ("inet", "nra") in nft_tables(ns)
    tables = own(ns)
    assert tables["rules"] & set(ROUTER_TABLES) and tables["routes"] & set(ROUTER_TABLES)
    assert not tables["rules"] & set(UPLINK_TABLES) and not tables["routes"] & set(UPLINK_TABLES)


def rules_programmed(ns: NetNS) -> None:
    assert ("inet", "nra") not in nft_tables(ns)
    tables = own(ns)
    assert not tables["rules"] & set(ROUTER_TABLES) and not tables["routes"] & set(ROUTER_TABLES)
    assert len(tables["rules"] & set(UPLINK_TABLES)) == 2 and len(tables["routes"] & set(UPLINK_TABLES)) == 2
    assert {f"{r['src']}/{r.get('srclen', 32)}" for r in own_rules(ns)} == {"10.80.0.0/28", "10.81.0.0/28"}


def test_conntrack_then_rules_removes_the_nft_table_and_router_tables(node, config):
    oneshot(node, "conntrack", config)
    conntrack_programmed(node)
    node.nft("add table inet other")  # someone else's: stays
    node.nft("add table ip nra")  # another family's table of the same name: not nra's
    # `nra plan` in rules mode lists the table's removal as pending, and leaves it
    plan = nra(node, "rules", "plan", "--static-file", str(config))
    assert plan.returncode == 2, plan.stderr
    pending = [line for line in plan.stdout.splitlines() if line.startswith("nft ")]
    assert pending == ["nft delete table inet nra  # left over: nra's table of the conntrack return path "
                       "(RETURN_PATH=conntrack), which the current return path does not use"]
    assert ("inet", "nra") in nft_tables(node)
    proc = nra(node, "rules", "--oneshot", "--static-file", str(config))
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "nft delete table inet nra" in line]
    assert len(said) == 1 and "conntrack return path" in said[0], proc.stderr
    rules_programmed(node)
    assert {("inet", "other"), ("ip", "nra")} <= nft_tables(node)
    again = nra(node, "rules", "plan", "--static-file", str(config))
    assert again.returncode == 0, again.stdout + again.stderr


def test_rules_then_conntrack_leaves_no_uplink_tables(node, config):
    oneshot(node, "rules", config)
    rules_programmed(node)
    plan = nra(node, "conntrack", "plan", "--static-file", str(config))
    assert plan.returncode == 2, plan.stderr
    assert any("left over: table 10" in line for line in plan.stdout.splitlines()), plan.stdout
    assert len(own(node)["rules"] & set(UPLINK_TABLES)) == 2  # (a plan changes nothing)
    oneshot(node, "conntrack", config)
    conntrack_programmed(node)
    again = nra(node, "conntrack", "plan", "--static-file", str(config))
    assert again.returncode == 0, again.stdout + again.stderr


def test_clean_in_rules_mode_removes_what_conntrack_mode_left(node, config):
    oneshot(node, "conntrack", config)
    conntrack_programmed(node)
    proc = nra(node, "rules", "clean")
    assert proc.returncode == 0, proc.stderr
    assert ("inet", "nra") not in nft_tables(node)
    assert own(node) == {"rules": set(), "routes": set()}


def test_clean_in_conntrack_mode_removes_what_rules_mode_left(node, config):
    oneshot(node, "rules", config)
    rules_programmed(node)
    proc = nra(node, "conntrack", "clean")
    assert proc.returncode == 0, proc.stderr
    assert own(node) == {"rules": set(), "routes": set()}
    assert ("inet", "nra") not in nft_tables(node)
