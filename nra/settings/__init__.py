"""Settings: the Node.js agent's environment variables, same names and meanings, validated.

Each setting is declared once, below: its variable, flag, help, default and kind of value
(nra.settings.kinds). From that one declaration come the typed value (parsed once, at start),
the command-line flag (nra.cli), docs/settings.md and the chart's values.schema.json
(scripts/chart_schema.py). A bad value is refused at start with one bounded line naming the
setting (exit code 2), never a traceback.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import ssl
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from nra.config.intent import MAX_WEIGHT, MIN_WEIGHT, IPNetwork
from nra.kernel.marks import (
    DEFAULT_MARK_TEXT,
    U32,
    MarkField,
    parse_mark_field,
    parse_number,
)
from nra.kernel.model import NRA_PROTOCOL
from nra.kernel.table_names import NAME as TABLE_NAME_PATTERN
from nra.kernel.table_names import check_name
from nra.settings.kinds import (
    FALSE_WORDS,
    Choice,
    Kind,
    Seconds,
    Switch,
    Text,
    Whole,
    range_pattern,
    shown,
)

# Tables the kernel itself uses: unspec (0), default (253), main (254), local (255).
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
MAX_TABLE = U32
# The kernel's `lookup main` rule: a rule of nra's at or after it never sees a packet that
# has a route in main (a default route, on any node), so nra's priorities stay below it.
MAIN_RULE_PRIORITY = 32766
# The conntrack return path also uses the priority after RULE_PRIORITY (checked together).
CONNTRACK_PRIORITY = Whole(1, MAIN_RULE_PRIORITY - 2, why=" (it also uses the next priority, and 32766 is "
                           "lookup main's)")
# Node.js's setTimeout limit, the original agent's bound for MAX_RECONCILE_WAIT.
MAX_RECONCILE_WAIT_MS = 2**31 - 1
# The conntrack return path numbers at most this many routers (8 bits beside the value):
# one nft chain pair and one routing table each; a node has a handful of BGP peers.
MAX_ROUTERS = 255
# kube-proxy's masquerade (0x4000) and drop (0x8000) bits: nra rewrites every bit of its
# mask on reply packets, so a mask over them would masquerade or drop replies.
KUBE_PROXY_BITS = 0xC000
# Upper bounds of the timeouts: beyond them a typo would hang the agent. A hook runs inside
# the reconcile, so its bound stays well under what liveness tolerates.
MAX_HOOK_TIMEOUT_S = 300
MAX_SOURCE_START_TIMEOUT_S = 3600
MAX_LINE = 240  # characters of a refusal line
MAX_PEM_BYTES = 1 << 20  # a certificate chain or key file larger than this is not one


class SettingsError(Exception):
    """A setting the agent refuses to start with; str() is the one line shown to the user."""


# -- numbers of 32 bits, as marks and tables are written ---------------------------------------

HEX32 = "0[xX]0*[0-9a-fA-F]{1,8}"
DEC32 = "0*" + range_pattern(0, U32)
NUMBER32 = f"(?:{HEX32}|{DEC32})"


def parse_fwmark(text: str) -> tuple[int, int | None]:
    """`0x14`, `20`, `0x14/0xff` or `20/255` -> (mark, mask or None)."""
    mark_text, sep, mask_text = text.strip().partition("/")
    mark = parse_number(mark_text, "mark")
    mask = parse_number(mask_text, "mask") if sep else None
    if mark == 0 and mask is None:
        raise ValueError("mark 0 without a mask matches nothing useful; leave RULE_FWMARK unset instead")
    if mask is not None and mark & ~mask:
        raise ValueError(f"mark {mark:#x} has bits outside mask {mask:#x}")
    return mark, mask


def parse_return_path_mark(text: str) -> MarkField:
    """RETURN_PATH_MARK `VALUE/MASK` -> the field, bounded to what nra can hold."""
    field = parse_mark_field(text)
    if field.mask & KUBE_PROXY_BITS:
        raise ValueError(f"mask {field.mask:#x} holds kube-proxy's bits {field.mask & KUBE_PROXY_BITS:#x} "
                         f"(0x4000 masquerade, 0x8000 drop): nra would rewrite them on replies; pick other bits")
    if field.capacity > MAX_ROUTERS:
        raise ValueError(f"mask {field.mask:#x} numbers {field.capacity} routers; nra holds at most {MAX_ROUTERS} "
                         f"(8 bits beside the value): narrow the mask")
    return field


def parse_table_range(text: str) -> range:
    """RETURN_PATH_TABLES `FIRST-LAST` (inclusive), or one id: the router tables."""
    first_text, sep, last_text = text.strip().partition("-")
    bound = Whole(1, MAX_TABLE)
    first = bound.accept(first_text)
    last = bound.accept(last_text) if sep else first
    if first > last:
        raise ValueError(f"FIRST {first} is above LAST {last}")
    if last - first + 1 > MAX_ROUTERS:
        raise ValueError(f"{last - first + 1} tables; nra numbers at most {MAX_ROUTERS} routers")
    tables = range(first, last + 1)
    reserved = [t for t in RESERVED_TABLES if t in tables]
    if reserved:
        raise ValueError(f"{reserved[0]} is the kernel's {RESERVED_TABLES[reserved[0]]} table; pick another range")
    return tables


# Routing protocol ids of `ip route ... proto NAME` (iproute2's rt_protos), for LEARNED_ROUTE_PROTOS.
ROUTE_PROTOS = {"static": 4, "gated": 8, "ra": 9, "mrt": 10, "zebra": 11, "bird": 12, "dnrouted": 13,
                "xorp": 14, "ntk": 15, "dhcp": 16, "keepalived": 18, "babel": 42, "openr": 99, "bgp": 186,
                "isis": 187, "ospf": 188, "rip": 189, "eigrp": 192}
# Routes never learned from a peer: the kernel's or the system's (unspec, redirect, kernel,
# boot), and nra's own: NRA_PROTOCOL, and static, which nra's routes carried before it (they
# stay on a node until its first reconcile by this version).
NOT_LEARNED_PROTOS = {0: "the kernel's routes (unspec)", 1: "the kernel's routes (redirect)",
                      2: "the kernel's own routes", 3: "the system's routes (boot)",
                      4: "nra's routes before protocol 245 (static)", NRA_PROTOCOL: "nra's own routes"}
LEARNED_NAMES = {n: p for n, p in ROUTE_PROTOS.items() if p not in NOT_LEARNED_PROTOS}


def parse_route_protos(text: str) -> frozenset[int]:
    """`bgp,bird` or `186,12` -> {186, 12}; empty or `off` -> none (learned-route liveness off)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if items in ([], ["off"]):
        if text.strip() and not items:  # only commas: a list that lost its names
            raise ValueError(f"{shown(text)} names no routing protocol (leave it empty, or `off`)")
        return frozenset()
    protos = set()
    for item in items:
        number = ROUTE_PROTOS.get(item, int(item) if re.fullmatch("[0-9]{1,3}", item) else None)
        if number is None or number > 255:
            raise ValueError(f"{shown(item)} is neither a routing protocol name ({', '.join(LEARNED_NAMES)}) "
                             f"nor a number 5..255 (not {NRA_PROTOCOL})")
        if number in NOT_LEARNED_PROTOS:
            raise ValueError(f"proto {number} marks {NOT_LEARNED_PROTOS[number]}, not routes learned from a peer")
        protos.add(number)
    return frozenset(protos)


# Neighbour timers nra may set on the peers' links (PEER_NEIGH_TIMERS), with their bounds.
NEIGH_TIMER_LIMITS = {"base_reachable_ms": (100, 3_600_000), "delay_probe_ms": (0, 60_000),
                      "retrans_ms": (10, 60_000), "ucast_probes": (1, 32), "mcast_probes": (1, 32)}
# Measured in docs/failover.md: a dead router with traffic is FAILED in 0.7-2.2 s.
NEIGH_TIMER_PRESETS = {"fast": {"base_reachable_ms": 1000, "delay_probe_ms": 200, "retrans_ms": 200,
                                "ucast_probes": 3, "mcast_probes": 3}}


def parse_neigh_timers(text: str) -> dict[str, int]:
    """`fast`, or `base_reachable_ms=1000,retrans_ms=200,...` (any subset) -> the values to
    set; empty or `off` -> none."""
    text = text.strip().lower()
    if text in ("", "off"):
        return {}
    if text in NEIGH_TIMER_PRESETS:
        return dict(NEIGH_TIMER_PRESETS[text])
    values: dict[str, int] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        key, sep, number = item.partition("=")
        key, number = key.strip(), number.strip()
        if key not in NEIGH_TIMER_LIMITS or not sep or not re.fullmatch("[0-9]+", number):
            raise ValueError(f"{shown(item)}: expected {'|'.join(NEIGH_TIMER_PRESETS)}, or key=number with keys "
                             f"{', '.join(NEIGH_TIMER_LIMITS)}")
        low, high = NEIGH_TIMER_LIMITS[key]
        if not low <= int(number) <= high:
            raise ValueError(f"{key} must be {low}..{high}")
        values[key] = int(number)
    return values


HEALTH_OFF = {*FALSE_WORDS, "off"}


def parse_health_address(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101`, `[::1]:9101`, `:9101` (all IPv4 interfaces), `localhost:9101`
    -> (host, port); None for `off` (or empty). The host must be an IP address: a name
    would be resolved only when the listener starts, too late to refuse it."""
    value = text.strip()
    if value.lower() in HEALTH_OFF:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not re.fullmatch("[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:9101, or 'off'; got {shown(text)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "":
        return "0.0.0.0", int(port)
    if host == "localhost":
        return "127.0.0.1", int(port)
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        raise ValueError(f"{shown(text)}: {shown(host)} is not an IP address (write 0.0.0.0, 127.0.0.1, [::1] or "
                         f"the node's address, not a host name)") from None


def _health_text(text: str) -> str:
    return "" if parse_health_address(text) is None else text.strip()


def check_pem_file(path: str) -> str:
    """A PEM file nra can read (a certificate or a key; whether they pair is checked together)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{shown(path)}: cannot read it: {exc.strerror or exc}") from None
    if len(head) > MAX_PEM_BYTES:
        raise ValueError(f"{shown(path)} is larger than {MAX_PEM_BYTES // 1024} KiB: not a certificate or key")
    if b"-----BEGIN " not in head:
        raise ValueError(f"{shown(path)} is not PEM (no -----BEGIN line)")
    return path


def check_tls_pair(cert: str, key: str) -> None:
    """The certificate and key load together (the key is the certificate's): ValueError if not."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"METRICS_TLS_CERT_FILE and METRICS_TLS_KEY_FILE do not load as a certificate and its "
                         f"key ({reason})") from None


def parse_destination(text: str) -> tuple[IPNetwork, ...]:
    """`default` -> both families' default route; else one prefix per family, comma separated."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("empty")
    nets: list[IPNetwork] = []
    for item in items:
        if item.lower() == "default":
            nets += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{shown(item)} is neither 'default' nor a prefix such as 10.0.0.0/8") from None
    versions = [n.version for n in nets]
    if len(set(versions)) != len(versions):
        raise ValueError("give at most one destination per address family")
    return tuple(sorted(nets, key=lambda n: n.version))


def check_hook(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"{shown(path)} is not a file")
    if not os.access(path, os.X_OK):
        raise ValueError(f"{shown(path)} is not executable (chmod +x it)")
    return path


NS_GET_NSTYPE = 0xB703  # ioctl: the kind of namespace a file stands for
CLONE_NEWNET = 0x40000000


def check_netns(name: str) -> str:
    """A name under /var/run/netns, or a path to a network namespace file."""
    path = name if "/" in name else f"/var/run/netns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise ValueError(f"network namespace {shown(name)} does not exist (ip netns add NAME)") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    finally:
        os.close(fd)
    if kind != CLONE_NEWNET:
        raise ValueError(f"{shown(name)} is not a network namespace (a name from `ip netns list`, or "
                         f"/proc/PID/ns/net)")
    return name


# -- patterns of the texts, for the chart (what a regular expression can tell) -----------------

OCTET = range_pattern(0, 255)
IPV4 = rf"{OCTET}(?:\.{OCTET}){{3}}"
PREFIX = rf"(?:{IPV4}(?:/{range_pattern(0, 32)})?|[0-9a-fA-F:]*:[0-9a-fA-F:.]*(?:/{range_pattern(0, 128)})?)"
DESTINATION = rf"(?:(?i:default)|{PREFIX})(?:\s*,\s*(?:(?i:default)|{PREFIX}))?"
PORT = range_pattern(1, 65535)
# $(VAR): Kubernetes puts the pod's HOST_IP there before nra sees it
HEALTH = (rf"(?i:{'|'.join(sorted(w for w in HEALTH_OFF if w))})|(?:{IPV4}|\[[0-9a-fA-F:.]+\]|localhost"
          rf"|\$\([A-Za-z_][A-Za-z0-9_]*\))?:0*{PORT}")
TIMER = "(?:" + "|".join(f"{k}\\s*=\\s*0*{range_pattern(*b)}" for k, b in NEIGH_TIMER_LIMITS.items()) + ")"
NEIGH_TIMERS = rf"(?i:off|{'|'.join(NEIGH_TIMER_PRESETS)})|{TIMER}(?:\s*,\s*{TIMER})*"
PROTO = ("(?:(?i:" + "|".join(LEARNED_NAMES) + ")|0*" + range_pattern(5, NRA_PROTOCOL - 1) + "|0*"
         + range_pattern(NRA_PROTOCOL + 1, 255) + ")")
PROTOS = rf"(?i:off)|{PROTO}(?:\s*,\s*{PROTO})*"
TABLE_RANGE = f"0*{range_pattern(1, MAX_TABLE)}(?:-0*{range_pattern(1, MAX_TABLE)})?"


#: the uplink groups' tables (nra.config.uplinks) when UPLINK_TABLES is not set: far from
#: TABLE_WEIGHT and the router tables (else the 64 ids after both)
DEFAULT_UPLINK_TABLES = range(1000, 1064)


# -- the settings --------------------------------------------------------------------------------

def setting(default: Any, env: str, flag: str, help: str, *, details: str = "", metavar: str | None = None,
            switch: bool = False, default_text: str | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """One setting's declaration. switch: the flag takes no argument (it sets the value on);
    details: more for docs/settings.md and the chart than --help shows; default_text: what
    the docs say when the default is not a plain value."""
    extra = {"flag": flag, "switch": switch, "details": details}
    if metavar:
        extra["metavar"] = metavar
    if default_text is not None:
        extra["default_text"] = default_text
    alias = AliasChoices(env, *aliases) if aliases else env
    return Field(default, validation_alias=alias, description=help, json_schema_extra=extra)


class Settings(BaseSettings):
    """All of nra's settings. Environment names are the original agent's."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="forbid", case_sensitive=True,
                                      validate_default=True, arbitrary_types_allowed=True,
                                      enable_decoding=False)

    metallb_static_file: Annotated[str | None, Text(metavar="PATH", blank_is_unset=True)] = setting(
        None, "METALLB_STATIC_FILE", "--static-file",
        "read this file instead of the Kubernetes API (legacy `config` document, a ConfigMap, or metallb.io "
        "objects plus an optional `v1/Node`); watched for changes")
    metallb_use_crds: Annotated[bool, Switch()] = setting(
        False, "METALLB_USE_CRDS", "--use-crds", "read BGPPeer, IPAddressPool, BGPAdvertisement instead of the "
        "ConfigMap", switch=True)
    metallb_namespace: Annotated[str | None, Text(metavar="NS", blank_is_unset=True)] = setting(
        None, "METALLB_NAMESPACE", "--namespace", "where MetalLB's configuration lives",
        default_text="the pod's namespace, else metallb-system")
    metallb_configmap_name: Annotated[str, Text(metavar="NAME")] = setting(
        "config", "METALLB_CONFIGMAP_NAME", "--configmap", "the legacy ConfigMap (key `config`)")
    node_name: Annotated[str | None, Text(metavar="NAME", blank_is_unset=True)] = setting(
        None, "NODE_NAME", "--node-name", "this node (required with CRDs: its labels select BGPPeers)")
    kubeconfig: Annotated[str | None, Text(metavar="PATH", blank_is_unset=True)] = setting(
        None, "KUBECONFIG", "--kubeconfig", "a kubeconfig file instead of the service account",
        default_text="in-cluster, else ~/.kube/config")
    table: Annotated[int, Whole(1, MAX_TABLE, {n: f"the kernel's {t} table" for n, t in RESERVED_TABLES.items()},
                                metavar="ID")] = setting(
        20, "TABLE_WEIGHT", "--table", "id of the managed table (both families)", aliases=("TABLE",))
    rule_priority: Annotated[int, Whole(1, MAIN_RULE_PRIORITY - 1, {0: "the priority of the local table's rule"},
                                        why=" (below 32766, the main table's rule, which would match first)")
                             ] = setting(
        20, "RULE_PRIORITY", "--priority", "priority of the managed rules",
        details="The conntrack return path also uses the next priority, so there it must be at most 32764.")
    rule_fwmark: Annotated[tuple[int, int | None] | None, Text(
        parse_fwmark, f"{NUMBER32}(?:/{NUMBER32})?", "MARK[/MASK]", blank_is_unset=True,
        accepts="32-bit numbers, hexadecimal 0x.. or decimal",
        agent_only="mark 0 without a mask; a mark with bits outside its mask")] = setting(
        None, "RULE_FWMARK", "--fwmark", "rules also match this mark: `0x14`, `0x14/0xff`, or decimal `20`, `20/255`")
    peer_weight: Annotated[int, Whole(MIN_WEIGHT, MAX_WEIGHT, why=" (the kernel's nexthop weight range)")] = setting(
        100, "PEER_WEIGHT", "--peer-weight",
        "nexthop weight of each peer (a BGPPeer's `metallb-nra/weight` label overrides it)")
    destination: Annotated[tuple[IPNetwork, ...], Text(
        parse_destination, DESTINATION, "DST", accepts="default, or one IPv4 and/or one IPv6 prefix",
        agent_only="an IPv6 prefix that is not an address; two destinations of one family")] = setting(
        "default", "DESTINATION", "--destination", "destination of the managed route: `default` (0.0.0.0/0 and "
        "::/0) or a prefix per family, e.g. `10.0.0.0/8,fd00::/8`")
    max_reconcile_wait: Annotated[int, Whole(0, MAX_RECONCILE_WAIT_MS, metavar="MS")] = setting(
        60000, "MAX_RECONCILE_WAIT", "--max-reconcile-wait",
        "ms between timer reconciles, each a full read of the kernel's state (between them, rules mode reads "
        "its rules from what the netlink events told); `0` turns the timer off; values below 1000 become 1000")
    pre_reconcile_script_path: Annotated[str | None, Text(check_hook, metavar="PATH", blank_is_unset=True,
                                                          agent_only="a path that is not an executable file")
                                         ] = setting(
        None, "PRE_RECONCILE_SCRIPT_PATH", "--pre-hook", "executable run before each reconcile",
        details="Argument `pre`, the agent's environment; no shell; at most 100 lines / 64 KiB of output logged.")
    post_reconcile_script_path: Annotated[str | None, Text(check_hook, metavar="PATH", blank_is_unset=True,
                                                           agent_only="a path that is not an executable file")
                                          ] = setting(
        None, "POST_RECONCILE_SCRIPT_PATH", "--post-hook", "executable run after each reconcile (argument `post`)")
    hook_timeout: Annotated[float, Seconds(MAX_HOOK_TIMEOUT_S)] = setting(
        10.0, "HOOK_TIMEOUT", "--hook-timeout", "seconds before a hook is killed with its process group",
        details="A failing hook is a warning, never fatal.")
    oneshot: Annotated[bool, Switch()] = setting(
        False, "ONESHOT", "--oneshot", "reconcile once and exit: 0 on success, 1 with the reason on failure",
        switch=True)
    cleanandexit: Annotated[bool, Switch()] = setting(
        False, "CLEANANDEXIT", "--clean-and-exit", "remove every rule of either family pointing at the table, "
        "flush the table, exit (also `nra clean`)", switch=True)
    source_start_timeout: Annotated[float, Seconds(MAX_SOURCE_START_TIMEOUT_S)] = setting(
        60.0, "SOURCE_START_TIMEOUT", "--source-timeout",
        "seconds ONESHOT and `plan` wait for the first configuration from the API",
        details="A static file is read once: usable or not, no wait. With no Kubernetes credentials at all "
        "they fail at once (exit 2).")
    netns: Annotated[str | None, Text(check_netns, metavar="NAME", blank_is_unset=True,
                                      agent_only="a name or path that is not a network namespace")] = setting(
        None, "NRA_NETNS", "--netns",
        "program this named network namespace instead of the current one (tests, lab, demos)")
    health_address: Annotated[str, Text(_health_text, HEALTH, "HOST:PORT", accepts="IP:PORT (port 1..65535), "
                                        "[IPv6]:PORT, :PORT, localhost:PORT; off, 0, false, no, empty",
                                        agent_only="an IPv6 address in brackets that is not one")] = setting(
        "127.0.0.1:9101", "HEALTH_ADDRESS", "--health-address",
        "`/healthz`, `/readyz`, `/metrics` on `ip:port`, or `off`",
        details="`[::1]:9101`; `:9101` is every IPv4 address; `localhost` is 127.0.0.1; other host names are "
        "refused (the chart writes `$(HOST_IP):9101`, which Kubernetes fills in).")
    status_access: Annotated[str, Choice(("loopback", "health", "off"))] = setting(
        "loopback", "STATUS_ACCESS", "--status-access",
        "where /status is answered: on loopback only (a loopback listener on the health port when "
        "HEALTH_ADDRESS is another address), on the health listener (health), or nowhere (off)")
    metrics_address: Annotated[str, Text(_health_text, HEALTH, "HOST:PORT", accepts="as HEALTH_ADDRESS",
                                         agent_only="as HEALTH_ADDRESS")] = setting(
        "", "METRICS_ADDRESS", "--metrics-address",
        "serve `/metrics` over HTTPS on `ip:port` as well, to scrapers the API server allows (METRICS_AUTH)",
        default_text="unset (off)",
        details="When set, plain-HTTP `/metrics` on HEALTH_ADDRESS is answered on loopback only. The chart "
        "sets `$(HOST_IP):<prometheus.secureMetricsPort>` (docs/http.md).")
    metrics_tls_cert_file: Annotated[str | None, Text(check_pem_file, metavar="PATH", blank_is_unset=True,
                                                      agent_only="a file that is not PEM, or not this key's")
                                     ] = setting(
        None, "METRICS_TLS_CERT_FILE", "--metrics-tls-cert-file",
        "the HTTPS listener's certificate (chain), PEM; with METRICS_TLS_KEY_FILE",
        default_text="unset (a self-signed certificate made at start)",
        details="Read again when the file changes (a renewed Secret). Unset: a self-signed certificate is "
        "made in memory at each start, so scrapers skip verification (`insecureSkipVerify`).")
    metrics_tls_key_file: Annotated[str | None, Text(check_pem_file, metavar="PATH", blank_is_unset=True,
                                                     agent_only="a file that is not PEM, or not the "
                                                     "certificate's key")] = setting(
        None, "METRICS_TLS_KEY_FILE", "--metrics-tls-key-file", "the private key of METRICS_TLS_CERT_FILE, PEM")
    metrics_auth: Annotated[str, Choice(("kubernetes", "none"))] = setting(
        "kubernetes", "METRICS_AUTH", "--metrics-auth",
        "who may scrape the HTTPS `/metrics`: a bearer token the API server allows `get` on the "
        "non-resource URL `/metrics` (kubernetes), or anyone (none)",
        details="`kubernetes`: TokenReview then SubjectAccessReview, answers kept briefly (401 without or "
        "with a bad token, 403 when not allowed, 503 when the API server cannot be asked); nra's own "
        "identity needs `create` on tokenreviews and subjectaccessreviews.")
    log_level: Annotated[str, Choice(("error", "warn", "info", "verbose", "debug", "silly"),
                                     {"warning": "warn", "trace": "silly", "err": "error"})] = setting(
        "info", "LOG_LEVEL", "--log-level", "how much to log")
    log_format: Annotated[str, Choice(("text", "json"))] = setting(
        "text", "LOG_FORMAT", "--log-format", "`json` for one JSON object a line")
    set_multipath_use_neigh: Annotated[bool, Switch()] = setting(
        True, "SET_MULTIPATH_USE_NEIGH", "--set-multipath-use-neigh",
        "set `net.ipv4.fib_multipath_use_neigh=1` (ECMP skips peers whose neighbour entry failed), or only "
        "warn when `0`")
    managed_neighbours: Annotated[bool, Switch()] = setting(
        False, "MANAGED_NEIGHBOURS", "--managed-neighbours",
        "mark the on-link peers' neighbour entries `managed` (Linux 5.16+): the kernel keeps them resolved",
        details="So an idle dead router goes FAILED (measured: 1.5-4.8 s with `PEER_NEIGH_TIMERS=fast`, 20-48 s "
        "with the kernel's timers; never without); an entry nra marked is deleted when its peer goes; the "
        "marks stay when nra stops. Refused by an older kernel: a warning, then off.")
    peer_neigh_timers: Annotated[dict[str, int], Text(
        parse_neigh_timers, NEIGH_TIMERS, "TIMERS", accepts="off, " + ", ".join(NEIGH_TIMER_PRESETS) + ", or "
        + ", ".join(f"{k}={low}..{high}" for k, (low, high) in NEIGH_TIMER_LIMITS.items()))] = setting(
        "", "PEER_NEIGH_TIMERS", "--peer-neigh-timers",
        "neighbour timers set on the peers' links: `fast`, or `key=value,...`",
        default_text="unset (the kernel's)",
        details="Through netlink (RTM_SETNEIGHTBL, NET_ADMIN only), both families. `fast` = "
        "`base_reachable_ms=1000,delay_probe_ms=200,retrans_ms=200,ucast_probes=3,mcast_probes=3`: a dead "
        "router with traffic FAILED in 0.7-2.2 s instead of 20-50 s. They apply to every neighbour of that "
        "link, and stay when nra stops.")
    frrk8s_namespace: Annotated[str | None, Text(metavar="NS", blank_is_unset=True)] = setting(
        None, "FRRK8S_NAMESPACE", "--frrk8s-namespace",
        "CRD mode (needs `METALLB_USE_CRDS=1`, `NODE_NAME`): leave out peers whose FRR-K8s BGPSessionState "
        "in this namespace is down", default_text="unset (off)",
        details="A peer whose session is reported not `Established`, or BFD down, for `BGP_SESSION_HOLD` is "
        "left out (`bgp-down`), and back after being reported up as long; no object means unknown, not down, "
        "and so does a watch failing for the hold time; a family's last peers are kept. Advisory and slow: "
        "FRR-K8s refreshes these objects by polling FRR (2 minutes by default). RBAC: get/list/watch "
        "`bgpsessionstates.frrk8s.metallb.io` there.")
    bgp_session_hold: Annotated[float, Seconds(MAX_SOURCE_START_TIMEOUT_S)] = setting(
        3.0, "BGP_SESSION_HOLD", "--bgp-session-hold",
        "seconds a reported session state must last before it changes a peer's verdict, both ways")
    learned_route_protos: Annotated[frozenset[int], Text(
        parse_route_protos, PROTOS, "PROTOS", accepts="off, or a list of " + ", ".join(LEARNED_NAMES)
        + f", 5..255 except {NRA_PROTOCOL}")] = setting(
        "", "LEARNED_ROUTE_PROTOS", "--learned-route-protos",
        "peer liveness from routes learned over BGP, e.g. `bgp,bird` (names or numbers of `proto`)",
        default_text="unset (off)",
        details="A peer that had a route via it installed by one of these daemons and has none now is left "
        "out of the route at once; a peer never seen with one is not judged; a family's last peers are kept. "
        f"nra's own protocols ({NRA_PROTOCOL}, and static, 4, which its routes carried before) and the "
        "kernel's (0-3) are refused; routes in nra's own tables are never counted. Each reconcile reads these routes: "
        "for nodes that receive a handful, not a full table.")
    return_path: Annotated[str, Choice(("rules", "conntrack"))] = setting(
        "rules", "RETURN_PATH", "--return-path",
        "`rules`: one `from <prefix>` rule per LoadBalancer prefix; `conntrack`: connection marks, replies "
        "through the router their request came in by")
    return_path_mark: Annotated[MarkField, Text(
        parse_return_path_mark, f"{NUMBER32}/{NUMBER32}", "VALUE/MASK", accepts="two 32-bit numbers",
        agent_only="value 0 or outside the mask; no bit beside the value; more than 8 bits beside it; "
        "a mask over 0xc000")] = setting(
        DEFAULT_MARK_TEXT, "RETURN_PATH_MARK", "--return-path-mark",
        "conntrack mode: `VALUE/MASK`, nra's bits of the packet and connection mark",
        details="VALUE is the external mark, the other bits of MASK number the routers (at most 8 bits, 255 "
        "routers). kube-proxy's bits 0xc000 are refused: nra rewrites every bit of its mask on replies.")
    return_path_tables: Annotated[range | None, Text(
        parse_table_range, TABLE_RANGE, "FIRST-LAST", blank_is_unset=True,
        accepts=f"FIRST-LAST or one id, 1..{MAX_TABLE}, at most {MAX_ROUTERS} ids",
        agent_only="FIRST above LAST; more than 255 tables; a reserved id inside")] = setting(
        None, "RETURN_PATH_TABLES", "--return-path-tables",
        "conntrack mode: `FIRST-LAST`, one routing table per router",
        default_text="the ids after `TABLE_WEIGHT`, one per router the mark can number (`21-35`)",
        details="At most 255; reserved ids (0, 253, 254, 255) and a range holding `TABLE_WEIGHT` are refused.")
    uplink_tables: Annotated[range | None, Text(
        parse_table_range, TABLE_RANGE, "FIRST-LAST", blank_is_unset=True,
        accepts=f"FIRST-LAST or one id, 1..{MAX_TABLE}, at most {MAX_ROUTERS} ids",
        agent_only="FIRST above LAST; more than 255 tables; a reserved id inside; a range holding "
        "TABLE_WEIGHT or meeting the router tables")] = setting(
        None, "UPLINK_TABLES", "--uplink-tables",
        "tables of the uplink groups other than the one of every peer (`FIRST-LAST`)",
        default_text="1000-1063, or the 64 ids after `TABLE_WEIGHT` and the router tables when those are in it",
        details="A group of peers that announce some pools only gets a table from this range, chosen by a hash "
        "of its peers so it is the same on every start and node (docs/uplinks.md).")
    table_name: Annotated[str | None, Text(
        check_name, TABLE_NAME_PATTERN.pattern, "NAME", blank_is_unset=True,
        accepts="letters, digits, _ . -, not starting with a digit, at most 63",
        agent_only="unspec, default, main, local, all")] = setting(
        None, "TABLE_NAME", "--table-name", "a name for `TABLE_WEIGHT`'s id in "
        "`/etc/iproute2/rt_tables.d/nra.conf`, when that directory exists (`ip rule` then shows it)",
        details="On a cluster, the node's directory mounted into the pod: the chart does it when "
        "`env.TABLE_NAME` is set. A file of that name nra did not write is left alone; CLEANANDEXIT removes "
        "it. Letters, digits, `_ . -`, not iproute2's own names.")

    datapath_check: Annotated[str, Choice(("refuse", "warn"))] = setting(
        "refuse", "DATAPATH_CHECK", "--datapath-check",
        "refuse (exit 2) or only warn when RETURN_PATH cannot work on the datapath found")
    calico_ext_service_mark: Annotated[tuple[int, int | None] | None, Text(
        parse_fwmark, f"{NUMBER32}(?:/{NUMBER32})?", "MARK[/MASK]", blank_is_unset=True,
        accepts="as RULE_FWMARK", agent_only="as RULE_FWMARK; a mark other than RULE_FWMARK's")] = setting(
        None, "CALICO_EXT_SERVICE_MARK", "--calico-ext-service-mark",
        "Calico eBPF's bpfExtToServiceConnmark: the rules match this mark (as RULE_FWMARK)")

    @field_validator("max_reconcile_wait")
    @classmethod
    def _wait_floor(cls, v: int) -> int:
        return 0 if v == 0 else max(v, 1000)

    @model_validator(mode="after")
    def _together(self) -> "Settings":
        """What one setting cannot tell alone."""
        if self.oneshot and self.cleanandexit:
            raise ValueError("ONESHOT and CLEANANDEXIT cannot both be set")
        if self.frrk8s_namespace and not (self.metallb_use_crds and self.node_name):
            raise ValueError("FRRK8S_NAMESPACE needs METALLB_USE_CRDS=1 and NODE_NAME (BGPSessionStates are "
                             "picked by this node's name)")
        if self.calico_ext_service_mark:  # the mark Calico's eBPF dataplane sets: the rules match it
            if self.rule_fwmark and self.rule_fwmark != self.calico_ext_service_mark:
                raise ValueError("CALICO_EXT_SERVICE_MARK and RULE_FWMARK differ: set one")
            self.rule_fwmark = self.calico_ext_service_mark
        certs = (self.metrics_tls_cert_file, self.metrics_tls_key_file)
        if any(certs):
            if not all(certs):
                raise ValueError("METRICS_TLS_CERT_FILE and METRICS_TLS_KEY_FILE go together: set both, or "
                                 "neither (a self-signed certificate)")
            if not self.metrics_address:
                raise ValueError("METRICS_TLS_CERT_FILE needs METRICS_ADDRESS (the HTTPS listener)")
            check_tls_pair(*certs)
        if self.metrics_endpoint and not self.health_endpoint:
            raise ValueError("METRICS_ADDRESS needs HEALTH_ADDRESS: the HTTPS listener is part of the health server")
        if self.metrics_endpoint and self.health_endpoint and self.metrics_endpoint[1] == self.health_endpoint[1]:
            hosts = {self.metrics_endpoint[0], self.health_endpoint[0]}
            if len(hosts) == 1 or hosts & {"0.0.0.0", "::"}:
                raise ValueError(f"METRICS_ADDRESS {self.metrics_address} and HEALTH_ADDRESS {self.health_address} "
                                 "take the same port: give the HTTPS listener a port of its own")
        uplinks = self.uplink_table_range
        if self.uplink_tables is None and (any(t in uplinks for t in RESERVED_TABLES) or uplinks.stop - 1 > MAX_TABLE):
            raise ValueError(f"UPLINK_TABLES: the default range {uplinks.start}-{uplinks.stop - 1} after TABLE_WEIGHT "
                             "holds a reserved or too large table id; set the range")
        if self.table in uplinks:
            raise ValueError(f"UPLINK_TABLES {uplinks.start}-{uplinks.stop - 1} holds TABLE_WEIGHT {self.table}")
        if self.return_path != "conntrack":
            return self  # the router tables and priority+1 are not used
        try:
            CONNTRACK_PRIORITY.check(self.rule_priority)
        except ValueError as exc:
            raise ValueError(f"RULE_PRIORITY with RETURN_PATH=conntrack {exc}") from None
        tables = self.router_tables
        where = f"{tables.start}-{tables.stop - 1}"
        if self.table in tables:
            raise ValueError(f"RETURN_PATH_TABLES {where} holds TABLE_WEIGHT {self.table}")
        if tables.start < uplinks.stop and uplinks.start < tables.stop:
            raise ValueError(f"UPLINK_TABLES {uplinks.start}-{uplinks.stop - 1} overlaps the router tables {where} "
                             "(RETURN_PATH_TABLES)")
        if self.return_path_tables is None:
            if tables.stop - 1 > MAX_TABLE:
                raise ValueError(f"RETURN_PATH_TABLES: the default range after TABLE_WEIGHT {self.table} "
                                 f"({where}) passes {MAX_TABLE}; set the range")
            if any(t in tables for t in RESERVED_TABLES):
                raise ValueError(f"RETURN_PATH_TABLES: the default range after TABLE_WEIGHT {self.table} "
                                 f"({where}) holds a reserved table id; set the range")
        return self

    # -- derived values: views of the typed fields, nothing parsed again ----------------------

    @property
    def fwmark(self) -> tuple[int | None, int | None]:
        return self.rule_fwmark or (None, None)

    @property
    def fwmark_text(self) -> str | None:
        """RULE_FWMARK as the kernel shows it (`0x14`, `0x14/0xff`); None when unset."""
        if self.rule_fwmark is None:
            return None
        mark, mask = self.rule_fwmark
        return f"{mark:#x}" if mask is None else f"{mark:#x}/{mask:#x}"

    @property
    def router_tables(self) -> range:
        """The conntrack return path's tables: RETURN_PATH_TABLES, or the ids after
        TABLE_WEIGHT, one per router the mark can number."""
        if self.return_path_tables is not None:
            return self.return_path_tables
        return range(self.table + 1, self.table + 1 + self.return_path_mark.capacity)

    @property
    def uplink_table_range(self) -> range:
        """The uplink groups' tables: UPLINK_TABLES, or 1000-1063 unless that holds TABLE_WEIGHT
        or meets the router tables, then the 64 ids after both."""
        if self.uplink_tables is not None:
            return self.uplink_tables
        taken = [self.table, *(self.router_tables if self.return_path == "conntrack" else ())]
        if not any(t in DEFAULT_UPLINK_TABLES for t in taken):
            return DEFAULT_UPLINK_TABLES
        first = max(taken) + 1
        return range(first, first + len(DEFAULT_UPLINK_TABLES))

    @cached_property
    def health_endpoint(self) -> tuple[str, int] | None:
        """(host, port) to serve /healthz, /readyz and /metrics on; None when off."""
        return parse_health_address(self.health_address) if self.health_address else None

    @cached_property
    def metrics_endpoint(self) -> tuple[str, int] | None:
        """(host, port) of the HTTPS /metrics listener; None when off."""
        return parse_health_address(self.metrics_address) if self.metrics_address else None

    @property
    def destinations(self) -> tuple[IPNetwork, ...]:
        return self.destination

    @property
    def neigh_timers(self) -> dict[str, int]:
        return self.peer_neigh_timers

    @property
    def learned_protos(self) -> frozenset[int]:
        return self.learned_route_protos

    @property
    def source_kind(self) -> str:
        if self.metallb_static_file:
            return "static-file"
        return "crds" if self.metallb_use_crds else "configmap"


# Environment variable name of each field, for error messages, flags, docs and the chart.
ENV_NAMES: dict[str, str] = {}
for _name, _field in Settings.model_fields.items():
    alias = _field.validation_alias
    ENV_NAMES[_name] = alias.choices[0] if isinstance(alias, AliasChoices) else str(alias)


def kind_of(field_name: str) -> Kind:
    """The kind of value of a setting (its bounds, pattern, choices)."""
    return next(m for m in Settings.model_fields[field_name].metadata if isinstance(m, Kind))


def default_text(field_name: str) -> str:
    """The default as docs and --help say it."""
    info = Settings.model_fields[field_name]
    extra = info.json_schema_extra
    if "default_text" in extra:
        return extra["default_text"]
    default = info.default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def one_line(text: str) -> str:
    """A message as one line of at most MAX_LINE characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment plus explicit overrides (flags win).

    Raises SettingsError with one line naming the setting on a bad value.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = ENV_NAMES.get(field, field) or "settings"
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise SettingsError(one_line(f"invalid {name}: {message}")) from None
