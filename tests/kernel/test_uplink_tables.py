"""Uplink groups in rules mode against the real kernel (issue 16): pools announced to
different peers get their own tables of UPLINK_TABLES, each with a route via its own peers
only and the rules of its pools; back to every pool for every peer, those tables empty
again; CLEANANDEXIT leaves nothing. nra runs ONESHOT in a throwaway namespace."""

from __future__ import annotations

import subprocess

import pytest

from nra.config.uplinks import assign_tables
from tests.agent.helpers import NRA, REPO, clean_env
from tests.kernel.test_neighbours import lan  # noqa: F401

pytestmark = pytest.mark.kernel

UPLINKS = range(1000, 1064)
PEERS = {"a1": "10.99.0.2", "a2": "10.99.0.3", "b1": "10.99.0.4", "b2": "10.99.0.5"}


def objects(split: bool) -> str:
    docs = [f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: {name}}}
spec: {{peerAddress: {address}, myASN: 64512, peerASN: 64500}}""" for name, address in PEERS.items()]
    docs += ["""apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool-a}
spec: {addresses: [198.51.100.0/26]}""", """apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool-b}
spec: {addresses: [198.51.100.64/26]}"""]
    if split:
        docs += ["""apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: to-a}
spec: {ipAddressPools: [pool-a], peers: [a1, a2]}""", """apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: to-b}
spec: {ipAddressPools: [pool-b], peers: [b1, b2]}"""]
    else:
        docs += ["""apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: all}"""]
    return "\n---\n".join(docs) + "\n"


def nra(node, config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NRA, "--static-file", str(config), "--netns", node.name, *args], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=120)


def gateways(node, table: int) -> set[str]:
    words = node.ip(f"-4 route show table {table}", check=False).split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


def rules(node) -> set[tuple[str, str]]:
    """(from, lookup) of every IPv4 rule but the kernel's own."""
    found = set()
    for line in node.ip("-4 rule show").splitlines():
        words = line.split()
        if "from" in words and "lookup" in words and words[words.index("from") + 1] != "all":
            found.add((words[words.index("from") + 1], words[words.index("lookup") + 1]))
    return found


def uplink_tables_used(node) -> set[int]:
    return {t for t in UPLINKS if node.ip(f"-4 route show table {t}", check=False).strip()}


def test_pools_announced_to_different_peers_get_their_own_tables(lan, tmp_path):  # noqa: F811
    node, router = lan
    for address in ("10.99.0.2", "10.99.0.4", "10.99.0.5"):  # (.3 is the router's already)
        router.ip(f"addr add {address}/24 dev eth0")
    config = tmp_path / "metallb.yaml"
    keys = PEERS  # an addressed peer of the default VRF is keyed by its address (PeerSpec.key)
    table_a, table_b = (assign_tables([frozenset({keys[x], keys[y]})], frozenset(), 20, UPLINKS)[
        frozenset({keys[x], keys[y]})] for x, y in (("a1", "a2"), ("b1", "b2")))

    config.write_text(objects(split=True))
    done = nra(node, config, "--oneshot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rules(node) == {("198.51.100.0/26", str(table_a)), ("198.51.100.64/26", str(table_b))}
    assert gateways(node, table_a) == {"10.99.0.2", "10.99.0.3"}  # replies of pool A: A's routers only
    assert gateways(node, table_b) == {"10.99.0.4", "10.99.0.5"}
    assert uplink_tables_used(node) == {table_a, table_b}
    again = nra(node, config, "--oneshot")  # a second run finds nothing to change
    said = again.stdout + again.stderr
    assert again.returncode == 0 and " rule add " not in said and " route replace " not in said, said

    config.write_text(objects(split=False))  # every pool to every peer: the one table, as before
    done = nra(node, config, "--oneshot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rules(node) == {("198.51.100.0/26", "20"), ("198.51.100.64/26", "20")}
    assert gateways(node, 20) == set(PEERS.values())
    assert uplink_tables_used(node) == set()

    config.write_text(objects(split=True))
    assert nra(node, config, "--oneshot").returncode == 0
    clean = nra(node, config, "--clean-and-exit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert rules(node) == set() and uplink_tables_used(node) == set() and not gateways(node, 20)
