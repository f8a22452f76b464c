"""Values nra's settings refuse and values they accept at their bounds: one list, used by the
settings' own tests (tests/unit/test_settings.py) and by the chart's (tests/ship/test_chart.py),
so the chart refuses what nra refuses and accepts what nra accepts.

Each case is (variable, value, other settings it needs); the value as a values file would hold
it (a YAML number or a string). REFUSED_BY_NRA_ONLY are those a JSON schema cannot tell (a
relation between two numbers, a file on the node): nra refuses them at start, the chart
renders them; each says why it is here.
"""

from __future__ import annotations

from typing import Any

U32 = 2**32 - 1
BIG = "7" * 100_000  # a 100 KB value
CONNTRACK = {"RETURN_PATH": "conntrack"}

Case = tuple[str, Any, dict[str, Any]]


def case(env: str, value: Any, **others: Any) -> Case:
    return env, value, others


REFUSED: list[Case] = [
    # 32-bit table ids and the kernel's own tables
    case("TABLE_WEIGHT", 0), case("TABLE_WEIGHT", 253), case("TABLE_WEIGHT", 254), case("TABLE_WEIGHT", 255),
    case("TABLE_WEIGHT", U32 + 1), case("TABLE_WEIGHT", -1), case("TABLE_WEIGHT", "twenty"),
    case("TABLE_WEIGHT", "٢٠"), case("TABLE_WEIGHT", "0x14"), case("TABLE_WEIGHT", 20.5),
    # priorities: 32-bit, and below `lookup main` (32766), where a rule of nra's would never match
    case("RULE_PRIORITY", 0), case("RULE_PRIORITY", 32766), case("RULE_PRIORITY", 32767),
    case("RULE_PRIORITY", U32), case("RULE_PRIORITY", U32 + 1), case("RULE_PRIORITY", 32765, **CONNTRACK),
    case("PEER_WEIGHT", 0), case("PEER_WEIGHT", 257), case("PEER_WEIGHT", "١٠٠"),
    case("RULE_FWMARK", "zz"), case("RULE_FWMARK", "٢٠"), case("RULE_FWMARK", "0x1ffffffff"),
    case("RULE_FWMARK", "4294967296"), case("RULE_FWMARK", "0x_14"), case("RULE_FWMARK", "0o17"),
    case("MAX_RECONCILE_WAIT", -5), case("MAX_RECONCILE_WAIT", 2**31), case("MAX_RECONCILE_WAIT", "1e3"),
    case("HEALTH_ADDRESS", "node-a:9101"), case("HEALTH_ADDRESS", "127.0.0.1:0"),
    case("HEALTH_ADDRESS", "127.0.0.1:65536"), case("HEALTH_ADDRESS", "127.0.0.1:٩١"),
    case("HEALTH_ADDRESS", "256.0.0.1:9101"),
    case("HOOK_TIMEOUT", 0), case("HOOK_TIMEOUT", 301), case("HOOK_TIMEOUT", "inf"), case("HOOK_TIMEOUT", "nan"),
    case("HOOK_TIMEOUT", "1e2"), case("HOOK_TIMEOUT", "١"), case("SOURCE_START_TIMEOUT", 3600.5),
    case("BGP_SESSION_HOLD", "-1"),
    case("LOG_LEVEL", "loud"), case("LOG_FORMAT", "xml"), case("RETURN_PATH", "nat"), case("ONESHOT", "maybe"),
    case("DESTINATION", "nowhere"), case("DESTINATION", "fd00::zz/8"), case("DESTINATION", "999.0.0.0/8"), case("DESTINATION", "10.0.0.0/33"),
    # conntrack's mark: kube-proxy's bits, and more routers than nra holds (no allocation per router)
    case("RETURN_PATH_MARK", "0x2"), case("RETURN_PATH_MARK", "٢/0x3e"), case("RETURN_PATH_MARK", "0x2/0x1ffffffff"),
    case("RETURN_PATH_TABLES", "21-x"), case("RETURN_PATH_TABLES", "0-5"), case("RETURN_PATH_TABLES", f"1-{U32 + 1}"),
    case("LEARNED_ROUTE_PROTOS", "static"), case("LEARNED_ROUTE_PROTOS", "4"), case("LEARNED_ROUTE_PROTOS", "kernel"),
    case("LEARNED_ROUTE_PROTOS", "3"), case("LEARNED_ROUTE_PROTOS", "245"), case("LEARNED_ROUTE_PROTOS", "bgp,0245"), case("LEARNED_ROUTE_PROTOS", "256"), case("LEARNED_ROUTE_PROTOS", "١٨٦"),
    case("PEER_NEIGH_TIMERS", "retrans_ms=5"), case("PEER_NEIGH_TIMERS", "retrans_ms=١٠٠"),
    case("PEER_NEIGH_TIMERS", "slow"),
    case("TABLE_NAME", "9lives"), case("TABLE_NAME", "a b"),
    case("STATUS_ACCESS", "everywhere"), case("DATAPATH_CHECK", "ignore"), case("CALICO_EXT_SERVICE_MARK", "zz"),
    case("METRICS_ADDRESS", "node-a:9120"), case("METRICS_ADDRESS", "127.0.0.1:0"), case("METRICS_AUTH", "basic"),
    case("FRRK8S_NAMESPACE", "frr-k8s-system", METALLB_USE_CRDS="0"),  # the chart's template refuses it
    # a value far too long, or with a newline: refused, and never echoed whole
    case("TABLE_WEIGHT", BIG), case("RULE_FWMARK", "0x14\nTABLE_WEIGHT=30"), case("TABLE_NAME", "n" * 100_000),
]

# Refused by nra at start, but a JSON schema cannot tell: why, for each.
REFUSED_BY_NRA_ONLY: list[tuple[Case, str]] = [
    (case("RULE_FWMARK", "0x14/0x0f"), "a mark with bits outside its mask: a relation between two numbers"),
    (case("RULE_FWMARK", "0"), "mark 0 without a mask"),
    (case("RETURN_PATH_MARK", "0x1/0xfffff"), "a mask over kube-proxy's bits: a relation of bits"),
    (case("RETURN_PATH_MARK", "0x1/0xffffffff"), "a mask over kube-proxy's bits: a relation of bits"),
    (case("RETURN_PATH_MARK", "0x4000/0xc000"), "a mask over kube-proxy's bits: a relation of bits"),
    (case("RETURN_PATH_MARK", "0x10000/0x3ff0000"), "more than 8 bits beside the value: a count of bits"),
    (case("RETURN_PATH_TABLES", "250-260"), "a range holding a reserved id"),
    (case("RETURN_PATH_TABLES", "1000-1255"), "256 tables: a difference of two numbers"),
    (case("RETURN_PATH_TABLES", "35-21"), "FIRST above LAST"),
    (case("RETURN_PATH_TABLES", "21-35", TABLE_WEIGHT=30, **CONNTRACK), "a range holding TABLE_WEIGHT"),
    (case("TABLE_WEIGHT", 4294967290, **CONNTRACK), "the default router range (after TABLE_WEIGHT) passes 32 bits"),
    (case("TABLE_WEIGHT", 240, **CONNTRACK), "the default router range (241-255) holds reserved ids"),
    (case("DESTINATION", "10.0.0.0/8,11.0.0.0/8"), "two destinations of one family"),
    (case("DESTINATION", "fd00:::1/8"), "an IPv6 prefix that is not one: the schema checks its characters only"),
    (case("TABLE_NAME", "main"), "iproute2's own table names"),
    (case("PRE_RECONCILE_SCRIPT_PATH", "/nonexistent/hook"), "a file on the node"),
    (case("NRA_NETNS", "/"), "a file on the node (not a network namespace)"),
    (case("METRICS_TLS_CERT_FILE", "/nonexistent/tls.crt", METRICS_ADDRESS=":9120",
          METRICS_TLS_KEY_FILE="/nonexistent/tls.key"), "a file on the node"),
    (case("METRICS_ADDRESS", "127.0.0.1:9101", HEALTH_ADDRESS="127.0.0.1:9101"), "the health listener's port: "
     "a relation between two settings"),
    (case("METRICS_ADDRESS", ":9120", HEALTH_ADDRESS="off"), "the HTTPS listener needs the health server"),
]
ALL_REFUSED = REFUSED + [c for c, _ in REFUSED_BY_NRA_ONLY]

AT_BOUNDS: list[Case] = [
    case("TABLE_WEIGHT", 1), case("TABLE_WEIGHT", 252), case("TABLE_WEIGHT", 256), case("TABLE_WEIGHT", U32),
    case("TABLE_WEIGHT", "4294967295"), case("TABLE_WEIGHT", " 020 "), case("TABLE_WEIGHT", 4294967280, **CONNTRACK),
    case("RULE_PRIORITY", 1), case("RULE_PRIORITY", 32765), case("RULE_PRIORITY", 32764, **CONNTRACK),
    case("PEER_WEIGHT", 1), case("PEER_WEIGHT", 256),
    case("RULE_FWMARK", "0xffffffff"), case("RULE_FWMARK", "4294967295/0xFFFFFFFF"), case("RULE_FWMARK", "0/0xff"),
    case("RULE_FWMARK", "20"),
    case("MAX_RECONCILE_WAIT", 0), case("MAX_RECONCILE_WAIT", 2**31 - 1), case("MAX_RECONCILE_WAIT", "5"),
    case("HEALTH_ADDRESS", "255.255.255.255:65535"), case("HEALTH_ADDRESS", "0.0.0.0:1"),
    case("HEALTH_ADDRESS", "[::1]:9101"), case("HEALTH_ADDRESS", ":9101"), case("HEALTH_ADDRESS", "OFF"),
    case("HEALTH_ADDRESS", "localhost:80"),
    case("HOOK_TIMEOUT", 300), case("HOOK_TIMEOUT", "300.0"), case("HOOK_TIMEOUT", 0.001), case("HOOK_TIMEOUT", ".5"),
    case("SOURCE_START_TIMEOUT", 3600), case("BGP_SESSION_HOLD", "0.1"),
    case("LOG_LEVEL", "SILLY"), case("LOG_LEVEL", "warning"), case("LOG_FORMAT", "JSON"),
    # (a true ONESHOT or CLEANANDEXIT in env the chart refuses on purpose: oneshot/cleanup.enabled)
    case("RETURN_PATH", "Conntrack"), case("ONESHOT", "No"), case("CLEANANDEXIT", False),
    case("METALLB_USE_CRDS", "Yes"), case("METALLB_USE_CRDS", 1), case("SET_MULTIPATH_USE_NEIGH", True),
    case("SET_MULTIPATH_USE_NEIGH", "off"), case("MANAGED_NEIGHBOURS", ""),
    case("DESTINATION", "10.0.0.0/8, fd00::/8"), case("DESTINATION", "DEFAULT"),
    case("RETURN_PATH_MARK", "0x10000/0x1ff0000"), case("RETURN_PATH_MARK", "0x1/0x3"),
    case("RETURN_PATH_TABLES", "1000-1254"), case("RETURN_PATH_TABLES", "4294967295"),
    case("RETURN_PATH_TABLES", "4294967041-4294967295"),
    case("LEARNED_ROUTE_PROTOS", "bgp, BIRD,5,244,246,255"), case("LEARNED_ROUTE_PROTOS", "off"),
    case("PEER_NEIGH_TIMERS", "fast"),
    case("PEER_NEIGH_TIMERS", "base_reachable_ms=3600000,delay_probe_ms=0,retrans_ms=10,ucast_probes=32"),
    case("TABLE_NAME", "nra"), case("TABLE_NAME", "_" + "x" * 62),
    case("METALLB_STATIC_FILE", ""), case("RULE_FWMARK", ""),
    case("STATUS_ACCESS", "OFF"), case("DATAPATH_CHECK", "warn"), case("CALICO_EXT_SERVICE_MARK", "0x4/0x4"),
    case("METRICS_ADDRESS", "[::1]:65535"), case("METRICS_ADDRESS", "off"), case("METRICS_AUTH", "None"),
]
