"""The MetalLB model: legacy config and metallb.io objects into an Intent plus Problems."""

import ipaddress

import pytest

from nra.config.intent import Intent, Peer, PeerSpec, PoolBinding
from nra.config.metallb import ConfigError, parse_legacy_config, parse_objects

NODE = {"kubernetes.io/hostname": "prod-01", "kubernetes.io/arch": "amd64"}
W = 7  # a default weight that is not 1, so using it is visible


def ip(text):
    return ipaddress.ip_address(text)


def net(text):
    return ipaddress.ip_network(text)


def peers_of(result) -> dict:
    return {str(p.address): p.weight for p in result.intent.peers}


def prefixes_of(result) -> set:
    return {str(n) for n in result.intent.prefixes}


def where_of(result) -> list:
    return [p.where for p in result.problems]


# -- metallb.io objects ---------------------------------------------------------------


def bgp_peer(name, address=None, labels=None, version="v1beta2", **spec):
    if address is not None:
        spec["peerAddress"] = address
    spec.setdefault("myASN", 64512)
    spec.setdefault("peerASN", 64512)
    metadata = {"name": name, "namespace": "metallb-system"}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": f"metallb.io/{version}", "kind": "BGPPeer", "metadata": metadata, "spec": spec}


def pool(name, *addresses, labels=None):
    metadata = {"name": name, "namespace": "metallb-system"}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": metadata,
            "spec": {"addresses": list(addresses)}}


def advertisement(name, pools=None, selectors=None, **spec):
    if pools is not None:
        spec["ipAddressPools"] = pools
    if selectors is not None:
        spec["ipAddressPoolSelectors"] = selectors
    obj = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
           "metadata": {"name": name, "namespace": "metallb-system"}}
    if spec:
        obj["spec"] = spec
    return obj


def test_objects_make_an_intent():
    result = parse_objects([
        bgp_peer("r1", "10.0.0.1"),
        bgp_peer("r2", "fd00::1", version="v1beta1"),
        pool("public", "198.51.100.0/24", "198.51.101.1-198.51.101.2", "2001:db8::/120"),
        advertisement("adv", ["public"]),
    ], NODE, W)
    assert result.problems == ()
    prefixes = frozenset(map(net, ["198.51.100.0/24", "198.51.101.1/32", "198.51.101.2/32", "2001:db8::/120"]))
    assert result.intent == Intent(
        peers=frozenset({Peer(ip("10.0.0.1"), W), Peer(ip("fd00::1"), W)}),
        prefixes=prefixes,
        specs=frozenset({PeerSpec("r1", ip("10.0.0.1"), W), PeerSpec("r2", ip("fd00::1"), W)}),
        pools=frozenset({PoolBinding("public", prefixes, frozenset({"10.0.0.1", "fd00::1"}))}),
    )
    assert {p.name for p in result.intent.peers} == {"r1", "r2"}


def test_peer_node_selectors_against_node_labels():
    objects = [
        bgp_peer("everywhere", "10.0.0.1"),
        bgp_peer("prod01", "10.0.0.2", nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "prod-01"}}]),
        bgp_peer("prod02", "10.0.0.3", nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "prod-02"}}]),
        bgp_peer("arm-or-01", "10.0.0.4", nodeSelectors=[
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]},
            {"matchLabels": {"kubernetes.io/hostname": "prod-01"}},
        ]),
    ]
    assert set(peers_of(parse_objects(objects, NODE, W))) == {"10.0.0.1", "10.0.0.2", "10.0.0.4"}
    assert set(peers_of(parse_objects(objects, {}, W))) == {"10.0.0.1"}


@pytest.mark.parametrize("value", ["false", "False", "FALSE", "0", "no", "No"])
def test_enabled_label_switches_a_peer_off_quietly(value):
    result = parse_objects([bgp_peer("off", "10.0.0.1", labels={"metallb-nra/enabled": value}),
                            bgp_peer("on", "10.0.0.2")], NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert result.problems == ()


@pytest.mark.parametrize("value", ["true", "1", "yes", ""])
def test_enabled_label_other_values_keep_the_peer(value):
    result = parse_objects([bgp_peer("on", "10.0.0.1", labels={"metallb-nra/enabled": value})], NODE, W)
    assert peers_of(result) == {"10.0.0.1": W}


def test_address_label_overrides_peer_address():
    result = parse_objects([bgp_peer("r1", "10.0.0.1", labels={"metallb-nra/address": "10.0.0.99"})], NODE, W)
    assert peers_of(result) == {"10.0.0.99": W}
    assert result.problems == ()


def test_invalid_address_label_skips_the_peer_with_a_problem():
    result = parse_objects([bgp_peer("r1", "10.0.0.1", labels={"metallb-nra/address": "router-1"}),
                            bgp_peer("r2", "10.0.0.2")], NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert where_of(result) == ["peer r1"]
    assert "metallb-nra/address" in result.problems[0].message and "router-1" in result.problems[0].message


@pytest.mark.parametrize("value,expected", [("1", 1), ("256", 256), ("40", 40), (" 3 ", 3)])
def test_weight_label(value, expected):
    result = parse_objects([bgp_peer("r1", "10.0.0.1", labels={"metallb-nra/weight": value})], NODE, W)
    assert peers_of(result) == {"10.0.0.1": expected}
    assert result.problems == ()


@pytest.mark.parametrize("value", ["0", "257", "-1", "ten", "1.5", "", "0x10"])
def test_invalid_weight_keeps_the_peer_with_default_weight(value):
    result = parse_objects([bgp_peer("r1", "10.0.0.1", labels={"metallb-nra/weight": value})], NODE, W)
    assert peers_of(result) == {"10.0.0.1": W}
    assert where_of(result) == ["peer r1"]
    assert "metallb-nra/weight" in result.problems[0].message
    assert f"default weight {W}" in result.problems[0].message


def test_v1beta2_interface_peer_is_found_on_its_interface_or_by_the_address_label():
    unnumbered = bgp_peer("unnumbered", interface="eth1")
    result = parse_objects([unnumbered, bgp_peer("r2", "10.0.0.2")], NODE, W)
    # no problem: its router's link-local address is found on eth1 (resolve_intent), not here
    assert peers_of(result) == {"10.0.0.2": W} and where_of(result) == []
    assert {(s.interface, s.address) for s in result.intent.specs if s.name == "unnumbered"} == {("eth1", None)}
    fixed = bgp_peer("unnumbered", interface="eth1", labels={"metallb-nra/address": "fe80::1"})
    assert peers_of(parse_objects([fixed], NODE, W)) == {"fe80::1": W}


@pytest.mark.parametrize("address", ["eth0", "10.0.0.0/24", "300.1.1.1", "", None])
def test_peer_address_that_is_not_an_ip_is_a_problem(address):
    result = parse_objects([bgp_peer("bad", address), bgp_peer("good", "10.0.0.2")], NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert where_of(result) == ["peer bad"]
    assert "peerAddress" in result.problems[0].message


def test_vrf_peer_is_modelled_but_not_in_the_default_vrf_table():
    result = parse_objects([bgp_peer("red", "10.0.0.1", vrf="red"), bgp_peer("r2", "10.0.0.2")], NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert where_of(result) == ["peer red"]
    assert "vrf 'red'" in result.problems[0].message and "not routed yet" in result.problems[0].message
    assert {s.key: s.vrf for s in result.intent.specs} == {"10.0.0.1@red": "red", "10.0.0.2": ""}


def test_duplicate_peer_address_keeps_the_higher_weight():
    result = parse_objects([
        bgp_peer("a", "10.0.0.1", labels={"metallb-nra/weight": "5"}),
        bgp_peer("b", "10.0.0.1", labels={"metallb-nra/weight": "50"}),
        bgp_peer("c", "10.0.0.1", labels={"metallb-nra/weight": "9"}),
    ], NODE, W)
    assert peers_of(result) == {"10.0.0.1": 50}
    assert [p.name for p in result.intent.peers] == ["b"]
    assert sorted(where_of(result)) == ["peer a", "peer c"]
    assert all("duplicate peer address 10.0.0.1" in p.message for p in result.problems)


def test_invalid_node_selector_skips_the_peer():
    bad = bgp_peer("bad", "10.0.0.1", nodeSelectors=[{"matchExpressions": [{"key": "a", "operator": "Is"}]}])
    result = parse_objects([bad, bgp_peer("r2", "10.0.0.2")], NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert where_of(result) == ["peer bad"] and "invalid operator 'Is'" in result.problems[0].message


def test_advertisement_selects_pools_by_name_and_by_label():
    objects = [
        pool("by-name", "10.1.0.0/24"),
        pool("by-label", "10.2.0.0/24", labels={"announce": "bgp"}),
        pool("other-label", "10.3.0.0/24", labels={"announce": "no"}),
        pool("unlabelled", "10.4.0.0/24"),
        advertisement("names", ["by-name"]),
        advertisement("labels", selectors=[{"matchLabels": {"announce": "bgp"}}]),
    ]
    assert prefixes_of(parse_objects(objects, NODE, W)) == {"10.1.0.0/24", "10.2.0.0/24"}


def test_advertisement_with_both_lists_takes_the_union():
    objects = [pool("a", "10.1.0.0/24"), pool("b", "10.2.0.0/24", labels={"x": "y"}), pool("c", "10.3.0.0/24"),
               advertisement("adv", ["a"], [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}])]
    assert prefixes_of(parse_objects(objects, NODE, W)) == {"10.1.0.0/24", "10.2.0.0/24"}


@pytest.mark.parametrize("adv", [
    advertisement("no-spec"),
    advertisement("empty-lists", [], []),
    advertisement("only-options", aggregationLength=32, communities=["64512:1"]),
])
def test_advertisement_with_neither_list_announces_every_pool(adv):
    objects = [pool("a", "10.1.0.0/24"), pool("b", "fd00::/120"), adv]
    assert prefixes_of(parse_objects(objects, NODE, W)) == {"10.1.0.0/24", "fd00::/120"}


def test_pool_without_advertisement_is_not_announced():
    objects = [pool("announced", "10.1.0.0/24"), pool("l2-only", "10.9.0.0/24"),
               advertisement("adv", ["announced"]),
               {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "l2"}, "spec": {"ipAddressPools": ["l2-only"]}}]
    assert prefixes_of(parse_objects(objects, NODE, W)) == {"10.1.0.0/24"}
    assert prefixes_of(parse_objects(objects[:2], NODE, W)) == set()


def test_a_pool_no_advertisement_announces_from_this_node_still_has_its_return_path():
    # DSR-like set-ups: replies still leave through the routers of the pool's advertisements
    adv = advertisement("elsewhere", ["a"], nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "prod-99"}}],
                        peers=["r1"])
    result = parse_objects([bgp_peer("r1", "10.0.0.1"), bgp_peer("r2", "10.0.0.2"), pool("a", "10.1.0.0/24"), adv],
                           NODE, W)
    assert prefixes_of(result) == {"10.1.0.0/24"}
    assert {b.name: set(b.peers) for b in result.intent.pools} == {"a": {"10.0.0.1"}}


def test_advertisement_naming_a_missing_pool_is_a_problem_and_the_rest_applies():
    objects = [pool("a", "10.1.0.0/24"), advertisement("adv1", ["a", "ghost"])]
    result = parse_objects(objects, NODE, W)
    assert prefixes_of(result) == {"10.1.0.0/24"}
    assert where_of(result) == ["BGPAdvertisement adv1"] and "'ghost'" in result.problems[0].message


def test_malformed_advertisement_does_not_widen_to_every_pool():
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "typo"},
           "spec": {"ipAddressPools": "a"}}
    result = parse_objects([pool("a", "10.1.0.0/24"), pool("b", "10.2.0.0/24"), adv], NODE, W)
    assert prefixes_of(result) == set()
    assert where_of(result) == ["BGPAdvertisement typo"]


@pytest.mark.parametrize("field", ["ipAddressPools", "ipAddressPoolSelectors"])
@pytest.mark.parametrize("value", ["", {}, False, 0])
def test_an_empty_but_malformed_pool_list_is_a_problem_not_every_pool(field, value):
    # issue 20.12: `ipAddressPools: ""` announced every pool, a layer-2 pool included, silently
    adv = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "blank"},
           "spec": {field: value}}
    result = parse_objects([pool("a", "10.1.0.0/24"), pool("l2", "10.2.0.0/24"), adv], NODE, W)
    assert prefixes_of(result) == set()
    assert where_of(result) == ["BGPAdvertisement blank"] and "must be a list" in result.problems[0].message


def test_invalid_pool_selector_is_skipped_other_selectors_apply():
    adv = advertisement("adv", selectors=[{"matchExpressions": [{"key": "x", "operator": "Nope"}]},
                                          {"matchLabels": {"x": "y"}}])
    result = parse_objects([pool("a", "10.1.0.0/24", labels={"x": "y"}), adv], NODE, W)
    assert prefixes_of(result) == {"10.1.0.0/24"}
    assert where_of(result) == ["BGPAdvertisement adv"] and "ipAddressPoolSelectors[0]" in result.problems[0].message


def test_bad_address_entry_is_skipped_the_rest_of_the_pool_applies():
    objects = [pool("my-ip-space", "10.1.0.0/24", "999.1.1.1/24", "10.2.0.9-10.2.0.1", "fd00::/64"),
               advertisement("adv")]
    result = parse_objects(objects, NODE, W)
    assert prefixes_of(result) == {"10.1.0.0/24", "fd00::/64"}
    assert where_of(result) == ["pool my-ip-space", "pool my-ip-space"]
    assert "999.1.1.1" in result.problems[0].message and "reversed" in result.problems[1].message


def test_overlapping_prefixes_are_deduplicated_not_merged():
    objects = [pool("a", "10.1.0.0/24", "10.1.0.0/25"), pool("b", "10.1.0.0/24", "10.1.0.0-10.1.0.127"),
               advertisement("adv")]
    assert prefixes_of(parse_objects(objects, NODE, W)) == {"10.1.0.0/24", "10.1.0.0/25"}


def test_other_kinds_and_groups_are_ignored():
    objects = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile", "metadata": {"name": "b"}, "spec": {}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "Community", "metadata": {"name": "c"}, "spec": {}},
        {"apiVersion": "example.com/v1", "kind": "BGPPeer", "metadata": {"name": "x"},
         "spec": {"peerAddress": "10.0.0.9"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}},
        bgp_peer("r1", "10.0.0.1"),
    ]
    result = parse_objects(objects, NODE, W)
    assert peers_of(result) == {"10.0.0.1": W} and result.problems == ()


def test_empty_objects_give_an_empty_intent():
    assert parse_objects([], NODE, W).intent == Intent()


# -- legacy ConfigMap -----------------------------------------------------------------


LEGACY = """
peers:
- peer-address: 10.0.0.1
  peer-asn: 64512
  my-asn: 64512
- peer-address: fd00::1
  peer-asn: 64512
  my-asn: 64512
  node-selectors:
  - match-labels:
      kubernetes.io/hostname: prod-01
address-pools:
- name: bgp-lower
  protocol: bgp
  addresses: [198.51.100.0/24]
- name: bgp-upper
  protocol: BGP
  addresses: [198.51.101.10-198.51.101.11]
- name: bgp-mixed
  protocol: Bgp
  addresses: [2001:db8::/64]
  bgp-advertisements:
  - aggregation-length: 32
- name: l2
  protocol: layer2
  addresses: [192.0.2.0/28]
"""


def test_legacy_config_makes_an_intent():
    result = parse_legacy_config(LEGACY, NODE, W)
    assert result.problems == ()
    assert result.intent.peers == frozenset({Peer(ip("10.0.0.1"), W), Peer(ip("fd00::1"), W)})
    assert result.intent.prefixes == frozenset(map(net, ["198.51.100.0/24", "198.51.101.10/31", "2001:db8::/64"]))
    assert {p.name for p in result.intent.peers} == {"10.0.0.1", "fd00::1"}
    # the legacy form has no advertisement peers: every pool goes to every peer, as before
    assert {b.name: set(b.peers) for b in result.intent.pools} == {
        name: {"10.0.0.1", "fd00::1"} for name in ("bgp-lower", "bgp-upper", "bgp-mixed")}


def test_legacy_node_selectors():
    assert set(peers_of(parse_legacy_config(LEGACY, {"kubernetes.io/hostname": "prod-02"}, W))) == {"10.0.0.1"}


def test_legacy_accepts_a_loaded_document():
    import yaml
    assert parse_legacy_config(yaml.safe_load(LEGACY), NODE, W) == parse_legacy_config(LEGACY, NODE, W)


@pytest.mark.parametrize("doc", [None, "", "# nothing\n", {}, "peers: []\n", "address-pools: []\n"])
def test_legacy_empty_config_is_an_empty_intent(doc):
    result = parse_legacy_config(doc, NODE, W)
    assert result.intent == Intent() and result.problems == ()


def test_legacy_bad_entries_are_named_and_the_rest_applies():
    doc = {
        "peers": [
            {"peer-address": "eth0"},
            {"peer-asn": 64512},
            "10.0.0.5",
            {"peer-address": "10.0.0.2"},
            {"peer-address": "10.0.0.2"},
            {"peer-address": "10.0.0.3", "node-selectors": [{"match-expressions": [{"key": "a", "operator": "Has"}]}]},
        ],
        "address-pools": [
            {"name": "good", "protocol": "bgp", "addresses": ["10.1.0.0/24", "10.1.0.0/33"]},
            {"protocol": "bgp", "addresses": "10.2.0.0/24"},
        ],
    }
    result = parse_legacy_config(doc, NODE, W)
    assert peers_of(result) == {"10.0.0.2": W}
    assert prefixes_of(result) == {"10.1.0.0/24"}
    assert where_of(result) == ["peers[0]", "peers[1]", "peers[2]", "peer 10.0.0.3", "pool good",
                                "address-pools[1]", "peer 10.0.0.2"]
    messages = [p.message for p in result.problems]
    assert "'eth0' is not an IP address" in messages[0]
    assert "missing" in messages[1]
    assert "invalid operator 'Has'" in messages[3]
    assert "/33" in messages[4]
    assert "duplicate peer address 10.0.0.2" in messages[6]


@pytest.mark.parametrize("doc,where", [({"peers": {"peer-address": "10.0.0.1"}}, "peers"),
                                       ({"address-pools": "10.0.0.0/24"}, "address-pools")])
def test_legacy_sections_of_the_wrong_type_refuse_the_config(doc, where):
    # Not an empty intent: that would wipe the table (issue 11, item 3).
    with pytest.raises(ConfigError, match=f"type: {where} must be a list"):
        parse_legacy_config(doc, NODE, W)
