"""MetalLB's own ConfigMap-to-CRD conversion corpus: the legacy form and the objects MetalLB
generates from it must give the same Intent, so switching METALLB_USE_CRDS changes nothing."""

from pathlib import Path

import pytest
import yaml

from nra.config.metallb import parse_legacy_config, parse_objects, parse_static_document

W = 5
# The corpus' selectors ask for hostname prod-01 and arch amd64 or arm.
MATCHING = {"kubernetes.io/hostname": "prod-01", "kubernetes.io/arch": "amd64"}
OTHER_NODE = {"kubernetes.io/hostname": "prod-02", "kubernetes.io/arch": "s390x"}


def corpus_pairs(shared: Path) -> list[tuple[Path, Path]]:
    root = shared / "metallb" / "configmap-to-crds"
    pairs = [(y, y.with_suffix(".golden")) for sub in ("configmap-data", "configmap-yaml")
             for y in sorted((root / sub).glob("*.yaml"))]
    return [(y, g) for y, g in pairs if g.exists()]


def legacy_side(path: Path, labels) -> object:
    doc = yaml.safe_load(path.read_text())
    if path.parent.name == "configmap-yaml":
        assert doc["kind"] == "ConfigMap"
        doc = doc["data"]["config"]
    else:
        doc = path.read_text()
    return parse_legacy_config(doc, labels, W)


def golden_side(path: Path, labels) -> object:
    return parse_objects([d for d in yaml.safe_load_all(path.read_text()) if d], labels, W)


def test_legacy_and_generated_objects_give_the_same_intent(shared_dir):
    pairs = corpus_pairs(shared_dir)
    assert len(pairs) >= 12, "the conversion corpus looks incomplete"
    peers_seen = prefixes_seen = 0
    selective = False
    for yaml_path, golden_path in pairs:
        for labels in (MATCHING, OTHER_NODE, {}):
            legacy, golden = legacy_side(yaml_path, labels), golden_side(golden_path, labels)
            assert legacy.problems == golden.problems == (), yaml_path.name
            assert legacy.intent == golden.intent, f"{yaml_path.name} with {labels}"
        matching = legacy_side(yaml_path, MATCHING).intent
        other = legacy_side(yaml_path, OTHER_NODE).intent
        peers_seen += len(matching.peers)
        prefixes_seen += len(matching.prefixes)
        selective |= len(other.peers) < len(matching.peers)
    # Guard against both sides agreeing on nothing.
    assert peers_seen > 0 and prefixes_seen > 0 and selective


@pytest.mark.parametrize("sub", ["configmap-data", "configmap-yaml"])
def test_full_config_details(shared_dir, sub):
    prefix = "config-data" if sub == "configmap-data" else "config-yaml"
    path = shared_dir / "metallb" / "configmap-to-crds" / sub / f"{prefix}-full.yaml"
    if not path.exists():
        pytest.skip(f"{path} not in the corpus")
    matching = legacy_side(path, MATCHING).intent
    assert {str(p.address) for p in matching.peers} == {"10.0.0.1"}
    assert {p.weight for p in matching.peers} == {W}
    # the BGP pool's CIDR and its range as exact CIDRs; the l2 pool is left out
    assert {str(n) for n in matching.prefixes} == {
        "192.168.10.0/24", "192.168.0.150/31", "192.168.0.152/29", "192.168.0.160/27",
        "192.168.0.192/29", "192.168.0.200/32"}
    assert legacy_side(path, OTHER_NODE).intent.peers == frozenset()


def test_whole_configmaps_parse_as_static_documents(shared_dir):
    for yaml_path, golden_path in corpus_pairs(shared_dir):
        if yaml_path.parent.name != "configmap-yaml":
            continue
        static = parse_static_document(yaml_path.read_text(), "prod-01", W)
        # NODE_NAME alone gives only the hostname label, which the arch expression needs too
        assert static.intent == legacy_side(yaml_path, {"kubernetes.io/hostname": "prod-01"}).intent
        assert parse_static_document(golden_path.read_text(), "prod-01", W).intent == static.intent


def test_every_config_sample_parses(shared_dir):
    samples = sorted((shared_dir / "metallb" / "configsamples").glob("*.yaml"))
    assert samples
    results = {p.name: parse_static_document(p.read_text(), "kind-worker", W) for p in samples}
    checked = {"bgppeer_simple.yaml", "bgppeer_withsecret.yaml", "bgppeer_with_vrf.yaml",
               "simple_pool_adv_bgp.yaml", "ipaddresspool_simple.yaml", "bgpadv_selectspool_by_list.yaml"}
    assert checked <= set(results), f"samples missing: {checked - set(results)}"
    for name, result in results.items():
        for problem in result.problems:
            assert problem.where and problem.message, name

    def addresses(name):
        return {str(p.address) for p in results[name].intent.peers}

    def prefixes(name):
        return {str(n) for n in results[name].intent.prefixes}

    assert addresses("bgppeer_simple.yaml") == {"172.30.0.3"}
    assert addresses("bgppeer_withsecret.yaml") == {"172.30.0.3"}
    result = results["bgppeer_with_vrf.yaml"]
    assert addresses("bgppeer_with_vrf.yaml") == set()
    assert [p.where for p in result.problems] == ["peer peer"] and "vrf" in result.problems[0].message
    # the advertisement has no spec at all: every pool is announced
    assert prefixes("simple_pool_adv_bgp.yaml") == {
        "192.168.10.0/24", "192.168.9.1/32", "192.168.9.2/31", "192.168.9.4/31", "fc00:f853:ccd:e799::/124"}
    assert prefixes("ipaddresspool_simple.yaml") == set()  # a pool alone is not announced
    result = results["bgpadv_selectspool_by_list.yaml"]
    # it names a pool and a peer that the sample does not define
    assert [p.where for p in result.problems] == ["BGPAdvertisement advertisement"] * 2
    assert "ebgp-single-hop0" in result.problems[0].message and "test-addresspool" in result.problems[1].message


def test_samples_combined_with_their_pools(shared_dir):
    """An advertisement sample plus a pool it names, as one would apply them together."""
    samples = shared_dir / "metallb" / "configsamples"
    adv = samples / "bgpadvertisement_with_node_selector.yaml"
    if not adv.exists():
        pytest.skip("sample missing")
    pool = ("---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n"
            "metadata: {name: first-pool, namespace: metallb-system}\nspec: {addresses: [10.20.0.0/24]}\n")
    # the advertisement's nodeSelectors name kind nodes; nra announces the return path anyway
    result = parse_static_document(adv.read_text() + pool, "some-other-node", W)
    assert result.problems == ()
    assert {str(n) for n in result.intent.prefixes} == {"10.20.0.0/24"}
