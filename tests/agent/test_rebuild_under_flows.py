"""A rebuild of nra's nft table under new connections, with the real daemon at 100,000
prefixes (conntrack mode): someone deletes `inet nra` (or empties the chain looking the LB
address up in its prefix set and deletes or flushes that set, or flushes the table's rules) while a router sends 500 new flows a second to an LB address (each a UDP flow the node answers, so conntrack has it established,
sending again every second for three seconds). Afterwards no flow keeps a wrong mark: every
conntrack entry of an LB flow carries its router's mark.

Between the foreign delete and nra's rebuild no table marks anything: the flows that start
then are seen unmarked (a counter of someone else's, after nra's chains, shows there were
some). Before, `classify` looked at new connections only (`ct state != new return`), so those
flows stayed unmarked for good: their replies bypass the return path for the life of the
connection. Now an unmarked connection is classified by its next packet of the original
direction, and the table is made again as soon as the notification of the delete arrives,
with no listing. And the sets are filled before the rules that use them go live: in one
transaction the kernel made the rules live before an interval set's new elements, and the
flows arriving then kept the "examined" mark for good."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time

import pytest

from nra.kernel import nft_table as nft
from nra.kernel.marks import parse_mark_field
from testbed.netns import add_veth, new_netns
from tests.agent.helpers import NRA, REPO, clean_env
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

MARK = "0x2/0x3e"
FIELD = parse_mark_field(MARK)
ROUTER_MAC = "02:00:00:00:00:01"
PREFIXES = 100_000
RATE = 500  # new flows a second
SECONDS = 8.0  # of new flows; the table is deleted DELETE_AT into them
DELETE_AT = 3.0
RESENDS = 3  # each flow sends again every second this many times
LB = "10.80.0.10"
LB_SET = nft.prefix_set(4, (int(ipaddress.IPv4Address(LB)),) * 2)

# someone else's counter after nra's chains (prerouting, priority -100): new flows to the LB
# address that nra's chains left unmarked
UNMARKED = f"""table inet seen {{
  counter unmarked {{ }}
  chain pre {{ type filter hook prerouting priority -100; policy accept;
    ip daddr {LB} udp dport 7008 ct state new ct mark & {FIELD.mask:#x} == 0 counter name unmarked
  }}
}}
"""

ECHO = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(('{LB}', 7008))
print('up', flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
"""

SENDER = f"""
import heapq, resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
rate, seconds, resends = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
start = time.monotonic()
due = []  # (when, n, socket, sends left)
made = 0
print('up', flush=True)
total = int(rate * seconds)
while made < total or due:
    now = time.monotonic()
    next_new = start + made / rate if made < total else None
    if next_new is not None and next_new <= now:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new source port: a new flow
        s.bind(('10.79.0.1', 0))
        s.setblocking(False)
        s.sendto(b'x', ('{LB}', 7008))
        heapq.heappush(due, (now + 1.0, made, s, resends))
        made += 1
        continue
    if due and due[0][0] <= now:
        _, n, s, left = heapq.heappop(due)
        s.sendto(b'x', ('{LB}', 7008))
        if left > 1:
            heapq.heappush(due, (now + 1.0, n, s, left - 1))
        else:
            s.close()
        continue
    wake = min(t for t in (next_new, due[0][0] if due else None) if t is not None)
    time.sleep(max(0.0, wake - now))
print(made, flush=True)
"""


def config_text() -> str:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    lines = ["peers:", "- peer-address: 10.60.0.2", "address-pools:", "- name: many", "  protocol: bgp",
             "  addresses:", f"  - {LB}/32"]
    # 100,000 prefixes that do not merge: 100,000 intervals in the kernel's set
    lines += [f"  - {ipaddress.IPv4Address(base + i * 8)}/30" for i in range(PREFIXES - 1)]
    return "\n".join(lines) + "\n"


def router_index(node) -> int | None:
    """The router index nra's map gives the router (None: not yet programmed, with its jump
    and classify's rules)."""
    chain = node.exec(["nft", "list", "chain", "inet", "nra", "prerouting"], check=False).stdout
    classify = node.exec(["nft", "list", "chain", "inet", "nra", "classify"], check=False).stdout
    if "jump dispatch_in" not in chain or "goto in_lb4_" not in classify:
        return None
    found = re.search(r"goto save_(\d+)", node.exec(["nft", "list", "map", "inet", "nra", "link_routers"],
                                                    check=False).stdout)
    return int(found.group(1)) if found else None


def unmarked(node) -> int:
    out = json.loads(node.exec(["nft", "-j", "list", "counter", "inet", "seen", "unmarked"]).stdout)["nftables"]
    return next(c["counter"]["packets"] for c in out if "counter" in c)


@pytest.mark.parametrize("drift", [
    "delete table inet nra",  # a rebuild
    # (LB's set: its block's shard, nft_table.SHARDS; the chain looking it up is in_<set>)
    f"flush chain inet nra in_{LB_SET}; delete set inet nra {LB_SET}",  # the set made again, its chain written again
    "flush table inet nra",  # every chain's rules (not the sets' elements): every chain written again
    f"flush chain inet nra in_{LB_SET}; flush set inet nra {LB_SET}",  # the chain written again, the set's prefixes added again
])
def test_a_rebuild_under_500_new_flows_a_second_at_100k_leaves_no_flow_with_a_wrong_mark(tmp_path, drift):
    node, router = new_netns("nra-rb-node"), new_netns("nra-rb-rtr")
    procs: list[subprocess.Popen] = []
    try:
        add_veth(node, "eth0", router, "eth0")
        router.ip(f"link set dev eth0 address {ROUTER_MAC}")
        node.ip("addr add 10.60.0.1/24 dev eth0")
        node.ip(f"addr add {LB}/32 dev lo")
        node.ip("route add 10.79.0.0/24 via 10.60.0.2")
        node.ip(f"neigh replace 10.60.0.2 lladdr {ROUTER_MAC} dev eth0 nud permanent")
        router.ip("addr add 10.60.0.2/24 dev eth0")
        router.ip("addr add 10.79.0.1/32 dev lo")  # a client behind the router
        router.ip(f"route add {LB}/32 via 10.60.0.1")
        node.nft(UNMARKED)
        config = tmp_path / "metallb.yaml"
        config.write_text(config_text())
        log = open(tmp_path / "nra.log", "w")
        env = clean_env(RETURN_PATH="conntrack", RETURN_PATH_MARK=MARK)
        procs.append(subprocess.Popen([*NRA, "--netns", node.name, "--static-file", str(config)], cwd=REPO, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        index = wait_for(lambda: router_index(node), 60, interval=0.2, what="nra's table at 100,000 prefixes")
        echo = subprocess.Popen([*node.exec_prefix(), "python3", "-c", ECHO], stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        assert echo.stdout.readline().strip() == "up"
        sender = subprocess.Popen([*router.exec_prefix(), "python3", "-c", SENDER, str(RATE), str(SECONDS),
                                   str(RESENDS)], stdout=subprocess.PIPE, text=True)
        procs.append(sender)
        assert sender.stdout.readline().strip() == "up"
        time.sleep(DELETE_AT)
        deleted_at = time.monotonic()
        node.exec(["nft", drift])  # someone else's hand
        back = wait_for(lambda: router_index(node), 20, interval=0.02, what="nra's table repaired")
        rebuilt_in = time.monotonic() - deleted_at
        assert back == index
        assert sender.poll() is None, "the repair must happen while new flows arrive"
        made = int(sender.stdout.readline())
        sender.wait(10)
        time.sleep(0.5)  # the last replies
        entries = node.exec(["conntrack", "-L", "-p", "udp", "-d", LB, "--dport", "7008"],
                            check=False).stdout.splitlines()
        met_no_table = unmarked(node)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        node.delete()
        router.delete()
    marks = [int(word.split("=")[1]) for line in entries for word in line.split() if word.startswith("mark=")]
    assert len(marks) > made * 0.9, (len(marks), made)
    # the delete happened under traffic: some new flows met no table of nra's
    assert met_no_table > 0, f"no flow met the table missing (repaired in {rebuilt_in:.2f} s)"
    want = FIELD.router(index)
    wrong = sorted((m & FIELD.mask for m in marks if m & FIELD.mask != want))
    assert not wrong, (f"{len(wrong)} of {len(marks)} flows kept a wrong mark ({sorted(set(wrong))}, want {want:#x}); "
                       f"repaired in {rebuilt_in:.2f} s")
