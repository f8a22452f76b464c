"""Which datapath carries this node's Service traffic, and whether the chosen RETURN_PATH
can work on it.

`conntrack` mode marks connections in netfilter: where an eBPF dataplane forwards the
packets past netfilter (Cilium's kube-proxy replacement, Calico's eBPF dataplane with
`bpfHostConntrackBypass`, its default), the marks are never set and replies keep the wrong
path. `rules` mode routes by source address, which needs the reply's source to be the
LoadBalancer IP when it is routed: true with an eBPF dataplane, IPVS or listeners bound to
the LB IP, not for replies from pods behind kube-proxy's iptables or nftables (un-DNAT comes
after routing).

What is looked at, in the node's network namespace (read only):
- nftables: kube-proxy's own table (`ip`/`ip6`/`inet kube-proxy`, its nftables mode) and
  the `KUBE-SERVICES` chain of its iptables mode (iptables-nft, the default backend; rules
  written through iptables-legacy are not visible to nftables and are not seen here);
- links: IPVS's `kube-ipvs0`, Cilium's `cilium_host`/`cilium_net`, Calico eBPF's
  `bpfout.cali`/`bpfin.cali` (older releases: `bpfnat`);
- BPF programs attached to links: tc (clsact ingress/egress filters of kind bpf) and XDP.
  Programs attached through tcx links (kernels 6.6+, newer Cilium) are not listed by a tc
  filter dump; Cilium's devices still tell it apart.

`classify()` and `fit()` are pure; `read_facts()` reads the kernel.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from nra.kernel.socket import NetlinkSocket, in_netns

KUBE_PROXY_TABLE = "kube-proxy"
KUBE_SERVICES_CHAIN = "KUBE-SERVICES"
IPVS_LINK = "kube-ipvs0"
CILIUM_LINKS = ("cilium_host", "cilium_net")
CALICO_BPF_LINKS = ("bpfout.cali", "bpfin.cali", "bpfnat")
TC_INGRESS, TC_EGRESS = 0xFFFFFFF2, 0xFFFFFFF3  # clsact's parents


@dataclass(frozen=True)
class NodeFacts:
    """What the node shows (see the module's docstring)."""

    links: frozenset[str] = frozenset()
    #: link name -> names of the BPF programs attached to it (tc filters, XDP)
    bpf: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: "family table" of every nftables table
    nft_tables: frozenset[str] = frozenset()
    #: "family table chain" of every KUBE-SERVICES chain
    kube_services_chains: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Datapath:
    name: str  # cilium-ebpf, calico-ebpf, kube-proxy-nftables, kube-proxy-iptables, kube-proxy-ipvs, unknown
    evidence: tuple[str, ...]
    #: False when an eBPF dataplane forwards Service traffic past netfilter
    netfilter_sees_packets: bool | None


@dataclass(frozen=True)
class Fit:
    fits: bool | None  # None: cannot tell
    text: str

    @property
    def refuses(self) -> bool:
        return self.fits is False


def classify(facts: NodeFacts) -> Datapath:
    links = facts.links
    bpf_links = tuple(name for name, _ in facts.bpf)
    bpf_text = ", ".join(f"{name}: {'/'.join(progs)}" for name, progs in facts.bpf)
    kube_proxy_nft = sorted(t for t in facts.nft_tables if t.split()[-1] == KUBE_PROXY_TABLE)
    evidence: list[str] = []
    if kube_proxy_nft:
        evidence.append("nftables table " + ", ".join(kube_proxy_nft))
    if facts.kube_services_chains:
        evidence.append("iptables chain " + ", ".join(sorted(facts.kube_services_chains)))
    calico = [n for n in CALICO_BPF_LINKS if n in links]
    cilium = [n for n in CILIUM_LINKS if n in links]
    if calico and bpf_links:
        return Datapath("calico-ebpf", (f"links {', '.join(calico)}", f"BPF programs on {bpf_text}", *evidence), False)
    kube_proxy = bool(kube_proxy_nft or facts.kube_services_chains)
    if cilium and bpf_links and not kube_proxy and IPVS_LINK not in links:
        return Datapath("cilium-ebpf", (f"links {', '.join(cilium)}", f"BPF programs on {bpf_text}",
                                        "no kube-proxy table or chain"), False)
    if cilium:
        evidence.append(f"links {', '.join(cilium)} (Cilium, with kube-proxy)")
    if IPVS_LINK in links:
        return Datapath("kube-proxy-ipvs", (f"link {IPVS_LINK}", *evidence), True)
    if kube_proxy_nft:
        return Datapath("kube-proxy-nftables", tuple(evidence), True)
    if facts.kube_services_chains:
        return Datapath("kube-proxy-iptables", tuple(evidence), True)
    return Datapath("unknown", tuple(evidence) or ("no kube-proxy table, chain or IPVS link; no Cilium or Calico "
                                                   "eBPF device",), None)


def fit(datapath: Datapath, return_path: str, fwmark: str | None = None) -> Fit:
    """Whether `return_path` can work on `datapath`, and what to do about it."""
    name = datapath.name
    if return_path == "conntrack":
        if datapath.netfilter_sees_packets is False:
            advice = ("use RETURN_PATH=rules" + (" with CALICO_EXT_SERVICE_MARK set to Calico's "
                                                 "bpfExtToServiceConnmark" if name == "calico-ebpf" else ""))
            return Fit(False, f"conntrack cannot work on {name}: netfilter never sees the forwarded packets, so "
                              f"no connection is marked; {advice}")
        if name == "unknown":
            return Fit(None, "conntrack: datapath unknown, cannot tell")
        note = " (IPVS is deprecated since Kubernetes 1.35)" if name == "kube-proxy-ipvs" else ""
        return Fit(True, f"conntrack fits {name}{note}")
    if name == "calico-ebpf":
        if fwmark:
            return Fit(True, f"rules fit calico-ebpf: the rules match mark {fwmark} (bpfExtToServiceConnmark)")
        return Fit(None, "rules on calico-ebpf: set CALICO_EXT_SERVICE_MARK to Calico's bpfExtToServiceConnmark "
                         "so that only connections from outside the cluster take the BGP routers")
    if name in ("kube-proxy-nftables", "kube-proxy-iptables"):
        return Fit(None, f"rules on {name}: only replies whose source is already the LoadBalancer IP when "
                         f"routed (listeners bound to it) take the routers; replies from pods do not: "
                         f"RETURN_PATH=conntrack fits")
    if name == "unknown":
        return Fit(None, "rules: datapath unknown, cannot tell")
    return Fit(True, f"rules fit {name}")


def _links_and_bpf() -> tuple[frozenset[str], tuple[tuple[str, tuple[str, ...]], ...]]:
    """In the thread's namespace: link names, and the BPF programs attached to them."""
    from pyroute2.iproute.linux import (
        IPRoute,  # (the module nra.kernel.routes loads anyway)
    )

    bpf: list[tuple[str, tuple[str, ...]]] = []
    with IPRoute() as ipr:
        names = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            names[link["index"]] = name
            xdp = link.get_attr("IFLA_XDP")
            if xdp is not None and xdp.get_attr("IFLA_XDP_PROG_ID"):
                bpf.append((name, ("xdp",)))
        for index, name in sorted(names.items()):
            progs = []
            for parent in (TC_INGRESS, TC_EGRESS):
                try:
                    filters = ipr.get_filters(index=index, parent=parent)
                except Exception:  # no clsact qdisc on this link: nothing attached there
                    continue
                for f in filters:
                    options = f.get_attr("TCA_OPTIONS")
                    if f.get_attr("TCA_KIND") == "bpf" and options is not None:
                        progs.append(options.get_attr("TCA_BPF_NAME") or "bpf")
            if progs:
                bpf.append((name, tuple(sorted(set(progs)))))
    return frozenset(names.values()) | frozenset(n for _, n in socket.if_nameindex()), tuple(sorted(bpf))


def _nft_facts(netns: str | None) -> tuple[frozenset[str], frozenset[str]]:
    """Every nf_tables table ("family name") and the chains named KUBE-SERVICES ("family
    table name"), through nra's own nf_tables dumps (nft_read.tables_and_chains)."""
    from nra.kernel.nft_netlink import NETLINK_NETFILTER
    from nra.kernel.nft_read import tables_and_chains

    sock = NetlinkSocket(netns, protocol=NETLINK_NETFILTER)
    try:
        table_names, all_chains = tables_and_chains(sock)
    except OSError:
        return frozenset(), frozenset()
    finally:
        sock.close()
    chains = frozenset(f"{family} {table} {name}" for family, table, name in all_chains
                       if name == KUBE_SERVICES_CHAIN)
    return table_names, chains


def describe(datapath: Datapath, the_fit: Fit) -> dict:
    """The datapath as /status shows it."""
    return {"name": datapath.name, "evidence": list(datapath.evidence),
            "netfilter_sees_packets": datapath.netfilter_sees_packets, "mode_fits": the_fit.fits,
            "verdict": the_fit.text}


def read_facts(netns: str | None = None) -> NodeFacts:
    """Blocking: the node's facts, read in `netns` (None: this namespace)."""
    links, bpf = in_netns(netns, _links_and_bpf)
    tables, chains = _nft_facts(netns)
    return NodeFacts(links, bpf, tables, chains)
