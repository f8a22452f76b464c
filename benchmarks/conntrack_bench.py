#!/usr/bin/env python3
"""Process-level figures of the conntrack return path, in fresh namespaces (run as root).

For N prefixes (never adjacent, so the nft sets hold N elements, not a merged few):
  oneshot   `nra --oneshot --return-path conntrack` from process start to exit, all programmed
  steady    one reconcile with nothing to do (read + plan), in-process, median
  change    a file edit to the new prefix in the kernel (conntrack: the nft set's element, seen
            by a netfilter listener; rules: agent_bench.py's, the rule), daemon, median
and the same for `rules` where asked (--rules-max), from the same run.

--groups G (G > 1): the node's shape of issue 16 as well, in the same run after the one-group
baseline: G uplink groups, each a pool of N/G prefixes (dealt round-robin) advertised to its own
pair of routers (BGPPeer, IPAddressPool and BGPAdvertisement objects), so 2G routers, G group
fallbacks and the group maps holding every prefix.

    .venv/bin/python benchmarks/conntrack_bench.py [--sizes 1000,10000,100000] [--rounds 15] [--groups 4]
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nra.config.metallb import parse_static_document  # noqa: E402
from nra.daemon.wiring import reconciler as open_reconciler  # noqa: E402
from nra.kernel import nft_netlink as nl  # noqa: E402
from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.socket import open_netlink  # noqa: E402
from nra.settings import load_settings  # noqa: E402
from testbed.netns import NetNS, add_peer_link, new_netns  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import agent_bench  # noqa: E402
from agent_bench import NRA, env  # noqa: E402

SO_RCVBUFFORCE = 33
PEERS = {"10.99.0.2": "02:00:00:00:00:02", "10.99.0.3": "02:00:00:00:00:03"}
GROUPS = 1  # uplink groups of the shape measured (main() sets it)


def peers() -> dict[str, str]:
    """The routers (address: MAC): two, or a pair per uplink group."""
    if GROUPS == 1:
        return PEERS
    return {f"10.99.0.{i}": f"02:00:00:00:00:{i:02x}" for i in range(2, 2 + 2 * GROUPS)}


def namespace() -> NetNS:
    ns = new_netns("nra-ctbench")
    add_peer_link(ns, v6_cidr=None)
    for address, lladdr in peers().items():  # the routers' ARP entries, as BGP traffic would leave them
        ns.ip(f"neigh replace {address} lladdr {lladdr} dev eth0 nud permanent")
    return ns


def prefixes(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [f"{ipaddress.IPv4Address(base + i * 8)}/30" for i in range(n)]


def config_text(nets: list[str]) -> str:
    if GROUPS > 1:
        return groups_config_text(nets)
    lines = ["peers:"] + [f"- peer-address: {p}" for p in PEERS]
    lines += ["address-pools:", "- name: bench", "  protocol: bgp", "  addresses:"] + [f"  - {n}" for n in nets]
    return "\n".join(lines) + "\n"


def groups_config_text(nets: list[str]) -> str:
    """GROUPS pools (the prefixes dealt round-robin: a prefix added changes one pool), each
    advertised to its own pair of routers."""
    docs = []
    addresses = list(peers())
    for i, address in enumerate(addresses):
        docs.append(f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: r{i}, namespace: m}}\n"
                    f"spec: {{myASN: 64512, peerASN: 64500, peerAddress: {address}}}\n")
    for g in range(GROUPS):
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool{g}, namespace: m}}\n"
                    f"spec:\n  addresses:\n" + "".join(f"  - {n}\n" for n in nets[g::GROUPS]))
        docs.append(f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: adv{g}, namespace: m}}\n"
                    f"spec: {{ipAddressPools: [pool{g}], peers: [r{2 * g}, r{2 * g + 1}]}}\n")
    return "---\n".join(docs)


#: nra's IPv4 prefix sets, sharded (lb4_<i>, nft_table.SHARDS) or not (lb4: a wide prefix's,
#: or every prefix's in a table of an nra before the shards)
LB4 = re.compile(r"lb4(_\d+)?")


def lb4_elements(ns: NetNS) -> int:
    """The elements of nra's IPv4 prefix sets (one listing of the table)."""
    out = ns.exec(["nft", "-j", "list", "table", "inet", "nra"], check=False, timeout=300).stdout
    items = json.loads(out)["nftables"] if out.strip() else []
    return sum(len(i["set"].get("elem", [])) for i in items if "set" in i and LB4.fullmatch(i["set"]["name"]))


def group4_elements(ns: NetNS) -> int:
    """The elements of nra's IPv4 group maps (groups4_<i> by block and groups4, or groups4
    alone in a table of an nra before the group maps' shards)."""
    out = ns.exec(["nft", "-j", "list", "table", "inet", "nra"], check=False, timeout=300).stdout
    items = json.loads(out)["nftables"] if out.strip() else []
    return sum(len(i["map"].get("elem", [])) for i in items if "map" in i and GROUPS4.fullmatch(i["map"]["name"]))


#: nra's IPv4 group maps, sharded (groups4_<i>) or not
GROUPS4 = re.compile(r"groups4(_\d+)?")


def lb4_set_of(ns: NetNS, prefix: str) -> str:
    """The set holding a one-block IPv4 prefix: its shard, or lb4 (an nra before the shards)."""
    net = ipaddress.ip_network(prefix)
    name = nft.prefix_set(4, (int(net.network_address), int(net.broadcast_address)))
    listed = ns.exec(["nft", "list", "sets", "table", "inet", "nra"], check=False, timeout=300).stdout
    return name if re.search(rf"\bset {name} ", listed) else "lb4"


def programmed(ns: NetNS, mode: str, n: int) -> bool:
    if mode == "rules":
        return len(ns.rules("-4", 20)) == n
    if GROUPS > 1:  # every prefix in its group's map too
        return lb4_elements(ns) == n and group4_elements(ns) == n
    return lb4_elements(ns) == n


def bench_oneshot(mode: str, n: int, workdir: Path) -> float:
    ns = namespace()
    try:
        cfg = workdir / f"oneshot-{mode}-{GROUPS}-{n}.yaml"
        cfg.write_text(config_text(prefixes(n)))
        started = time.perf_counter()
        subprocess.run([*NRA, "--oneshot", "--return-path", mode, "--static-file", str(cfg), "--netns", ns.name],
                       check=True, env=env(), cwd=REPO)
        took = time.perf_counter() - started
        assert programmed(ns, mode, n), f"{mode}: not all {n} prefixes programmed"
        return took
    finally:
        ns.delete()


async def _steady(ns: NetNS, mode: str, n: int, rounds: int) -> float:
    settings = load_settings(health_address="off", return_path=mode, netns=ns.name)
    intent = parse_static_document(config_text(prefixes(n)), None, settings.peer_weight).intent
    times = []
    async with open_reconciler(settings) as reconciler:
        outcome = await reconciler.reconcile(intent, "bench", hooks=False)
        assert outcome.ok, outcome.describe()
        for _ in range(rounds):
            started = time.perf_counter()
            _, the_plan = await reconciler.compute_plan(intent)
            times.append(time.perf_counter() - started)
            assert not the_plan.operations, [str(op) for op in the_plan.operations[:3]]
    return statistics.median(times)


def bench_steady(mode: str, n: int) -> float:
    ns = namespace()
    try:
        return asyncio.run(_steady(ns, mode, n, rounds=10))
    finally:
        ns.delete()


class ElementListener:
    """nf_tables notifications of one namespace: when did an element of an IPv4 prefix set arrive (its
    transaction's end, through nra's own notification reader)."""

    def __init__(self, netns: str, sets: re.Pattern = None):
        #: the sets whose elements are waited for (the IPv4 prefix sets; with uplink groups, their
        #: maps too: a group's prefixes are in its map alone)
        self.sets = sets or LB4
        self.sock = open_netlink(netns, 1 << (nl.NFNLGRP_NFTABLES - 1), protocol=nl.NETLINK_NETFILTER)
        # a change of 100,000 elements is 100,000 notifications: room for them (root may force it)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
        self.sock.setblocking(False)
        self.reader = nl.NotificationReader()

    def drain(self) -> None:
        while True:
            try:
                if not self.sock.recv(1 << 20):
                    break
            except BlockingIOError:
                break
            except OSError as error:  # ENOBUFS: notifications were dropped; what is queued still drains
                if error.errno != errno.ENOBUFS:
                    raise
        self.reader = nl.NotificationReader()

    def wait(self, deadline: float, message: int = nl.NFT_MSG_NEWSETELEM) -> float | None:
        """When an element of an IPv4 prefix set (or `sets`) came (or, message=NFT_MSG_DELSETELEM, went)."""
        delete = message == nl.NFT_MSG_DELSETELEM
        while (left := deadline - time.perf_counter()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return None
            for transaction in self.reader.feed(self.sock.recv(1 << 20)):
                # a transaction of more elements than the reader decodes (deleting half of
                # 100,000) is named only: its end is the change's arrival
                if transaction.elements_skipped or any(
                        self.sets.fullmatch(c.set_name) and c.delete == delete for c in transaction.elements):
                    return time.perf_counter()
        return None

    def close(self) -> None:
        self.sock.close()


def bench_change(mode: str, n: int, workdir: Path, rounds: int) -> float:
    """conntrack mode: until the new prefix's element is in the nft set."""
    ns = namespace()
    return agent_bench.measure_changes(ns, workdir, prefixes(n), config_text, lambda: programmed(ns, mode, n),
                                       lambda: ElementListener(ns.name), rounds, "--return-path", mode)


def main() -> int:
    parser = agent_bench.parser_with_sizes(__doc__, "1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rules-max", type=int, default=10000)
    parser.add_argument("--groups", type=int, default=1,
                        help="also measure conntrack with this many uplink groups (2 routers each), after the baseline")
    args = parser.parse_args()
    global GROUPS
    print(f"nra conntrack benchmark: {agent_bench.machine()}")
    print(f"{'mode':>10} {'groups':>6} {'routers':>7} {'N':>7} {'oneshot s':>10} {'steady ms':>10} {'change ms':>10}")
    with tempfile.TemporaryDirectory(prefix="nra-ctbench-") as tmp:
        workdir = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            shapes = [("rules", 1), ("conntrack", 1)] + ([("conntrack", args.groups)] if args.groups > 1 else [])
            for mode, GROUPS in shapes:
                if mode == "rules" and n > args.rules_max:
                    print(f"{mode:>10} {n:>7}   (skipped: above --rules-max {args.rules_max})", flush=True)
                    continue
                oneshot = bench_oneshot(mode, n, workdir)
                steady = bench_steady(mode, n)
                change = (bench_change(mode, n, workdir, args.rounds) if mode == "conntrack"
                          else agent_bench.bench_change(n, workdir, args.rounds))
                print(f"{mode:>10} {GROUPS:>6} {len(peers()):>7} {n:>7} {oneshot:>10.3f} {steady * 1000:>10.1f} "
                      f"{change * 1000:>10.1f}", flush=True)
    print("change: rules mode's is agent_bench.py's (its prefixes adjacent /30s, a rule listener); conntrack's "
          "waits for the nft element")
    return 0


if __name__ == "__main__":
    sys.exit(main())
