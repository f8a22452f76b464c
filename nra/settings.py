"""Settings: the Node.js agent's environment variables, same names and meanings, validated.

Every setting can also be given as a command-line flag (see nra.cli). A bad value is refused
at start with one line naming the setting (exit code 2), never a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from nra.config.intent import MAX_WEIGHT, MIN_WEIGHT, IPNetwork
from nra.kernel.marks import DEFAULT_MARK_TEXT, parse_mark_field, parse_table_range
from nra.kernel.table_names import check_name

# Tables the kernel itself uses: unspec (0), default (253), main (254), local (255).
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
MAX_TABLE = 2**32 - 1
# Priorities of the kernel's own rules: local (0), main (32766), default (32767).
RESERVED_PRIORITIES = {0: "the local table's rule", 32766: "the main table's rule", 32767: "the default table's rule"}

LogLevel = Literal["error", "warn", "info", "verbose", "debug", "silly"]
_LOG_LEVEL_ALIASES = {"warning": "warn", "trace": "silly", "err": "error"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# Upper bounds of the timeouts: beyond them a typo (or `inf`) would hang the agent. A hook
# runs inside the reconcile, so its bound stays well under what liveness tolerates.
MAX_HOOK_TIMEOUT_S = 300.0
MAX_SOURCE_START_TIMEOUT_S = 3600.0


class SettingsError(Exception):
    """A setting the agent refuses to start with; str() is the one line shown to the user."""


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected 1/0, true/false or yes/no, got {value!r}")


def parse_fwmark(text: str) -> tuple[int, int | None]:
    """`0x14`, `20`, `0x14/0xff` or `20/255` -> (mark, mask or None)."""
    mark_text, _, mask_text = text.strip().partition("/")
    try:
        mark = int(mark_text, 0)
        mask = int(mask_text, 0) if mask_text else None
    except ValueError:
        raise ValueError(f"expected a mark like 0x14 or 0x14/0xff, got {text!r}") from None
    for what, number in (("mark", mark), ("mask", mask)):
        if number is not None and not 0 <= number <= 0xFFFFFFFF:
            raise ValueError(f"{what} {number:#x} is outside 32 bits")
    if mark == 0 and mask is None:
        raise ValueError("mark 0 without a mask matches nothing useful; leave RULE_FWMARK unset instead")
    if mask is not None and mark & ~mask:
        raise ValueError(f"mark {mark:#x} has bits outside mask {mask:#x}")
    return mark, mask


# Routing protocol ids of `ip route ... proto NAME` (iproute2's rt_protos), for LEARNED_ROUTE_PROTOS.
ROUTE_PROTOS = {"static": 4, "gated": 8, "ra": 9, "mrt": 10, "zebra": 11, "bird": 12, "dnrouted": 13,
                "xorp": 14, "ntk": 15, "dhcp": 16, "keepalived": 18, "babel": 42, "openr": 99, "bgp": 186,
                "isis": 187, "ospf": 188, "rip": 189, "eigrp": 192}
# unspec, redirect, kernel, boot: routes the kernel or the system made, never learned from a peer
KERNEL_PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot"}


def parse_route_protos(text: str) -> frozenset[int]:
    """`bgp,bird` or `186,12` -> {186, 12}; empty or `off` -> none (learned-route liveness off)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if items in ([], ["off"]):
        return frozenset()
    protos = set()
    for item in items:
        number = ROUTE_PROTOS.get(item, int(item) if item.isdigit() else None)
        if number is None or not 0 <= number <= 255:
            raise ValueError(f"{item!r} is neither a routing protocol name ({', '.join(ROUTE_PROTOS)}) "
                             f"nor a number 4..255")
        if number in KERNEL_PROTOS:
            raise ValueError(f"proto {number} ({KERNEL_PROTOS[number]}) marks the kernel's own routes, "
                             f"not routes learned from a peer")
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
        key = key.strip()
        if key not in NEIGH_TIMER_LIMITS or not sep or not number.strip().isdigit():
            raise ValueError(f"{item!r}: expected {'|'.join(NEIGH_TIMER_PRESETS)}, or key=number with keys "
                             f"{', '.join(NEIGH_TIMER_LIMITS)}")
        low, high = NEIGH_TIMER_LIMITS[key]
        if not low <= int(number) <= high:
            raise ValueError(f"{key} must be {low}..{high}")
        values[key] = int(number)
    return values


def parse_health_address(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101`, `[::1]:9101`, `:9101` (all IPv4 interfaces), `localhost:9101`
    -> (host, port); None for `off` (or empty). The host must be an IP address: a name
    would be resolved only when the listener starts, too late to refuse it."""
    value = text.strip()
    if value.lower() in _FALSE | {"off"}:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:9101, or 'off'; got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "":
        return "0.0.0.0", int(port)
    if host == "localhost":
        return "127.0.0.1", int(port)
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (write 0.0.0.0, 127.0.0.1, [::1] or the node's "
                         f"address, not a host name); got {text!r}") from None


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
            raise ValueError(f"{item!r} is neither 'default' nor a prefix such as 10.0.0.0/8") from None
    versions = [n.version for n in nets]
    if len(set(versions)) != len(versions):
        raise ValueError("give at most one destination per address family")
    return tuple(sorted(nets, key=lambda n: n.version))


#: the uplink groups' tables (nra.config.uplinks) when UPLINK_TABLES is not set: far from
#: TABLE_WEIGHT and the router tables (else the 64 ids after both)
DEFAULT_UPLINK_TABLES = range(1000, 1064)


class Settings(BaseSettings):
    """All of nra's settings. Environment names are the original agent's."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", case_sensitive=True)

    max_reconcile_wait: int = Field(
        60000, validation_alias="MAX_RECONCILE_WAIT",
        description="ms between timer reconciles; 0 disables the timer; below 1000 means 1000",
    )
    table: int = Field(20, validation_alias=AliasChoices("TABLE_WEIGHT", "TABLE"), description="id of the managed routing table")
    peer_weight: int = Field(100, validation_alias="PEER_WEIGHT", description="default nexthop weight of each peer (1..256)")
    rule_priority: int = Field(20, validation_alias="RULE_PRIORITY", description="priority of the managed rules")
    rule_fwmark: str | None = Field(None, validation_alias="RULE_FWMARK", description="fwmark[/mask] the rules also match")
    destination: str = Field("default", validation_alias="DESTINATION", description="destination of the managed route")
    pre_reconcile_script_path: str | None = Field(None, validation_alias="PRE_RECONCILE_SCRIPT_PATH")
    post_reconcile_script_path: str | None = Field(None, validation_alias="POST_RECONCILE_SCRIPT_PATH")
    metallb_namespace: str | None = Field(None, validation_alias="METALLB_NAMESPACE")
    metallb_configmap_name: str = Field("config", validation_alias="METALLB_CONFIGMAP_NAME")
    metallb_static_file: str | None = Field(None, validation_alias="METALLB_STATIC_FILE")
    metallb_use_crds: bool = Field(False, validation_alias="METALLB_USE_CRDS")
    node_name: str | None = Field(None, validation_alias="NODE_NAME")
    kubeconfig: str | None = Field(None, validation_alias="KUBECONFIG")
    log_level: LogLevel = Field("info", validation_alias="LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="LOG_FORMAT")
    oneshot: bool = Field(False, validation_alias="ONESHOT")
    cleanandexit: bool = Field(False, validation_alias="CLEANANDEXIT")
    netns: str | None = Field(None, validation_alias="NRA_NETNS", description="program this named network namespace")
    health_address: str = Field("127.0.0.1:9101", validation_alias="HEALTH_ADDRESS")
    status_access: Literal["loopback", "health", "off"] = Field(
        "loopback", validation_alias="STATUS_ACCESS",
        description="where /status is answered: on loopback only (a loopback listener on the health port when "
                    "HEALTH_ADDRESS is another address), on the health listener (health), or nowhere (off)")
    source_start_timeout: float = Field(60.0, validation_alias="SOURCE_START_TIMEOUT", description="seconds ONESHOT and plan wait for the first configuration from the API (a static file is read once)")
    hook_timeout: float = Field(10.0, validation_alias="HOOK_TIMEOUT")
    set_multipath_use_neigh: bool = Field(True, validation_alias="SET_MULTIPATH_USE_NEIGH")
    managed_neighbours: bool = Field(
        False, validation_alias="MANAGED_NEIGHBOURS",
        description="make the peers' neighbour entries managed (Linux 5.16+): the kernel keeps probing them",
    )
    peer_neigh_timers: str = Field("", validation_alias="PEER_NEIGH_TIMERS",
                                   description="neighbour timers set on the peers' links through netlink")
    frrk8s_namespace: str | None = Field(
        None, validation_alias="FRRK8S_NAMESPACE",
        description="watch FRR-K8s's BGPSessionStates of this node in this namespace (CRD mode)",
    )
    bgp_session_hold: float = Field(3.0, validation_alias="BGP_SESSION_HOLD",
                                    description="seconds a session state must persist to change a verdict")
    learned_route_protos: str = Field(
        "", validation_alias="LEARNED_ROUTE_PROTOS",
        description="a peer counts as alive only while a route via it from these routing daemons exists",
    )
    return_path: Literal["rules", "conntrack"] = Field("rules", validation_alias="RETURN_PATH")
    return_path_mark: str = Field(DEFAULT_MARK_TEXT, validation_alias="RETURN_PATH_MARK")
    return_path_tables: str | None = Field(None, validation_alias="RETURN_PATH_TABLES")
    uplink_tables: str | None = Field(None, validation_alias="UPLINK_TABLES",
                                      description="tables of the uplink groups other than the one of every peer")
    table_name: str | None = Field(None, validation_alias="TABLE_NAME",
                                   description="name written for the table id in /etc/iproute2/rt_tables.d")
    datapath_check: Literal["refuse", "warn"] = Field(
        "refuse", validation_alias="DATAPATH_CHECK",
        description="refuse (exit 2) or only warn when RETURN_PATH cannot work on the datapath found")
    calico_ext_service_mark: str | None = Field(
        None, validation_alias="CALICO_EXT_SERVICE_MARK",
        description="Calico eBPF's bpfExtToServiceConnmark: the rules match this mark (as RULE_FWMARK)")

    # -- validation: each error names the setting by its environment variable --------

    @field_validator("metallb_use_crds", "oneshot", "cleanandexit", "set_multipath_use_neigh", "managed_neighbours",
                     mode="before")
    @classmethod
    def _bools(cls, v: Any) -> bool:
        return _flag(v)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> str:
        text = str(v).strip().lower()
        return _LOG_LEVEL_ALIASES.get(text, text)

    @field_validator("log_format", "return_path", "datapath_check", "status_access", mode="before")
    @classmethod
    def _format(cls, v: Any) -> str:
        return str(v).strip().lower()

    @field_validator("max_reconcile_wait")
    @classmethod
    def _wait(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 (timer off) or a number of milliseconds")
        return 0 if v == 0 else max(v, 1000)

    @field_validator("table")
    @classmethod
    def _table(cls, v: int) -> int:
        if v in RESERVED_TABLES:
            raise ValueError(f"{v} is the kernel's {RESERVED_TABLES[v]} table; pick another id")
        if not 0 < v <= MAX_TABLE:
            raise ValueError(f"must be 1..{MAX_TABLE}")
        return v

    @field_validator("rule_priority")
    @classmethod
    def _priority(cls, v: int) -> int:
        if v in RESERVED_PRIORITIES:
            raise ValueError(f"{v} is the priority of {RESERVED_PRIORITIES[v]}; pick another")
        if not 0 < v < 2**32:
            raise ValueError("must be 1..4294967295")
        return v

    @field_validator("peer_weight")
    @classmethod
    def _weight(cls, v: int) -> int:
        if not MIN_WEIGHT <= v <= MAX_WEIGHT:
            raise ValueError(f"must be {MIN_WEIGHT}..{MAX_WEIGHT} (the kernel's nexthop weight range)")
        return v

    @field_validator("rule_fwmark", "pre_reconcile_script_path", "post_reconcile_script_path", "netns", "table_name", "return_path_tables",
                     "calico_ext_service_mark", "uplink_tables", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: Any) -> Any:
        # `FOO=` in a manifest means unset, as if FOO were not given
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("rule_fwmark", "calico_ext_service_mark")
    @classmethod
    def _fwmark(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parse_fwmark(v)
        return v.strip()

    @field_validator("destination", "peer_neigh_timers", "learned_route_protos")
    @classmethod
    def _parsed(cls, v: str, info: ValidationInfo) -> str:
        # checked by the parser the derived value comes from (a property below)
        {"destination": parse_destination, "peer_neigh_timers": parse_neigh_timers,
         "learned_route_protos": parse_route_protos}[info.field_name](v)
        return v.strip()

    @field_validator("pre_reconcile_script_path", "post_reconcile_script_path")
    @classmethod
    def _hook(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not os.path.isfile(v):
            raise ValueError(f"{v} is not a file")
        if not os.access(v, os.X_OK):
            raise ValueError(f"{v} is not executable (chmod +x it)")
        return v

    @field_validator("health_address")
    @classmethod
    def _health(cls, v: str) -> str:
        return "" if parse_health_address(v) is None else v.strip()

    @field_validator("netns")
    @classmethod
    def _netns(cls, v: str | None) -> str | None:
        if v is None:
            return None
        path = v if "/" in v else f"/var/run/netns/{v}"
        if not os.path.exists(path):
            raise ValueError(f"network namespace {v} does not exist (ip netns add {v})")
        return v.strip()

    @field_validator("table_name")
    @classmethod
    def _table_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)

    @field_validator("source_start_timeout", "hook_timeout", "bgp_session_hold")
    @classmethod
    def _timeout(cls, v: float, info) -> float:
        limit = MAX_HOOK_TIMEOUT_S if info.field_name == "hook_timeout" else MAX_SOURCE_START_TIMEOUT_S
        # float() takes "inf" and "nan": a hook that may run for ever, or is killed at once.
        if not math.isfinite(v) or not 0 < v <= limit:
            raise ValueError(f"must be a number of seconds above 0 and at most {limit:g} (got {v!r})")
        return v

    @field_validator("return_path_mark")
    @classmethod
    def _return_path_mark(cls, v: str) -> str:
        parse_mark_field(v)
        return v.strip()

    @field_validator("return_path_tables", "uplink_tables")
    @classmethod
    def _table_ranges(cls, v: str | None) -> str | None:
        if v is None:
            return None
        reserved = sorted(set(parse_table_range(v)) & RESERVED_TABLES.keys())
        if reserved:
            raise ValueError(f"{reserved[0]} is the kernel's {RESERVED_TABLES[reserved[0]]} table; pick another range")
        return v.strip()

    @model_validator(mode="after")
    def _modes(self) -> "Settings":
        if self.oneshot and self.cleanandexit:
            raise ValueError("ONESHOT and CLEANANDEXIT cannot both be set")
        if self.frrk8s_namespace and not (self.metallb_use_crds and self.node_name):
            raise ValueError("FRRK8S_NAMESPACE needs METALLB_USE_CRDS=1 and NODE_NAME (BGPSessionStates are "
                             "picked by this node's name)")
        if self.calico_ext_service_mark:  # the mark Calico's eBPF dataplane sets: the rules match it
            if self.rule_fwmark and parse_fwmark(self.rule_fwmark) != parse_fwmark(self.calico_ext_service_mark):
                raise ValueError(f"CALICO_EXT_SERVICE_MARK {self.calico_ext_service_mark} and RULE_FWMARK "
                                 f"{self.rule_fwmark} differ: set one")
            self.rule_fwmark = self.calico_ext_service_mark
        uplinks = self.uplink_table_range
        if set(uplinks) & RESERVED_TABLES.keys() or uplinks.stop - 1 > MAX_TABLE:
            raise ValueError(f"UPLINK_TABLES: the default range {uplinks.start}-{uplinks.stop - 1} after TABLE_WEIGHT "
                             "holds a reserved or too large table id; set the range")
        if self.table in uplinks:
            raise ValueError(f"UPLINK_TABLES {uplinks.start}-{uplinks.stop - 1} holds TABLE_WEIGHT {self.table}")
        if self.return_path != "conntrack":
            return self  # the router tables are not used: TABLE_WEIGHT alone is checked
        tables = self.router_tables
        if tables.start < uplinks.stop and uplinks.start < tables.stop:
            raise ValueError(f"UPLINK_TABLES {uplinks.start}-{uplinks.stop - 1} overlaps the router tables "
                             f"{tables.start}-{tables.stop - 1} (RETURN_PATH_TABLES)")
        if self.table in tables:
            raise ValueError(f"RETURN_PATH_TABLES {tables.start}-{tables.stop - 1} holds TABLE_WEIGHT {self.table}")
        if not self.return_path_tables and set(tables) & RESERVED_TABLES.keys():
            raise ValueError(f"RETURN_PATH_TABLES: the default range after TABLE_WEIGHT {self.table} "
                             f"({tables.start}-{tables.stop - 1}) holds a reserved table id; set the range")
        return self

    # -- derived values ---------------------------------------------------------------

    @property
    def fwmark(self) -> tuple[int | None, int | None]:
        if not self.rule_fwmark:
            return None, None
        return parse_fwmark(self.rule_fwmark)

    @property
    def router_tables(self) -> range:
        """The conntrack return path's tables: RETURN_PATH_TABLES, or the ids after
        TABLE_WEIGHT, one per router the mark can number."""
        if self.return_path_tables:
            return parse_table_range(self.return_path_tables)
        return range(self.table + 1, self.table + 1 + parse_mark_field(self.return_path_mark).capacity)

    @property
    def uplink_table_range(self) -> range:
        """The uplink groups' tables: UPLINK_TABLES, or 1000-1063 unless that holds TABLE_WEIGHT
        or meets the router tables, then the 64 ids after both."""
        if self.uplink_tables:
            return parse_table_range(self.uplink_tables)
        taken = [self.table, *(self.router_tables if self.return_path == "conntrack" else ())]
        if not any(t in DEFAULT_UPLINK_TABLES for t in taken):
            return DEFAULT_UPLINK_TABLES
        first = max(taken) + 1
        return range(first, first + len(DEFAULT_UPLINK_TABLES))

    @property
    def health_endpoint(self) -> tuple[str, int] | None:
        """(host, port) to serve /healthz, /readyz and /metrics on; None when off."""
        return parse_health_address(self.health_address) if self.health_address else None

    @property
    def destinations(self) -> tuple[IPNetwork, ...]:
        return parse_destination(self.destination)

    @property
    def neigh_timers(self) -> dict[str, int]:
        return parse_neigh_timers(self.peer_neigh_timers)

    @property
    def learned_protos(self) -> frozenset[int]:
        return parse_route_protos(self.learned_route_protos)

    @property
    def source_kind(self) -> str:
        if self.metallb_static_file:
            return "static-file"
        return "crds" if self.metallb_use_crds else "configmap"


# Environment variable name of each field, for error messages and --help.
ENV_NAMES: dict[str, str] = {}
for _name, _field in Settings.model_fields.items():
    alias = _field.validation_alias
    ENV_NAMES[_name] = alias.choices[0] if isinstance(alias, AliasChoices) else str(alias)


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
        given = err.get("input")
        if err.get("type", "").startswith(("int_", "float_", "literal_")) and given is not None:
            message = f"{message} (got {given!r})"
        raise SettingsError(f"invalid {name}: {message}") from None
