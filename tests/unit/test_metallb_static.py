"""parse_static_document: every form a user may put in METALLB_STATIC_FILE, and refusals."""

import textwrap

import pytest

from nra.config.intent import Intent
from nra.config.metallb import ConfigError, parse_legacy_config, parse_static_document

W = 3

LEGACY = """\
peers:
- peer-address: 10.0.0.1
- peer-address: 10.0.0.2
  node-selectors:
  - match-labels:
      kubernetes.io/hostname: node-a
address-pools:
- name: public
  protocol: bgp
  addresses: [198.51.100.0/24, 2001:db8::/120]
"""

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: metallb-system\ndata:\n  config: |\n" \
    + textwrap.indent(LEGACY, "    ")

OBJECTS = """\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r1, namespace: metallb-system}
spec: {myASN: 1, peerASN: 2, peerAddress: 10.0.0.1}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r2, namespace: metallb-system}
spec:
  myASN: 1
  peerASN: 2
  peerAddress: 10.0.0.2
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: node-a}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: public, namespace: metallb-system}
spec: {addresses: [198.51.100.0/24, 2001:db8::/120]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: all, namespace: metallb-system}
"""


def peers(result) -> set:
    return {str(p.address) for p in result.intent.peers}


@pytest.mark.parametrize("text", [LEGACY, CONFIGMAP, OBJECTS], ids=["legacy", "configmap", "objects"])
def test_every_form_gives_the_same_intent(text):
    on_a = parse_static_document(text, "node-a", W)
    on_b = parse_static_document(text, "node-b", W)
    anonymous = parse_static_document(text, None, W)
    assert on_a.problems == ()
    assert peers(on_a) == {"10.0.0.1", "10.0.0.2"}
    assert peers(on_b) == peers(anonymous) == {"10.0.0.1"}
    assert {str(n) for n in on_a.intent.prefixes} == {"198.51.100.0/24", "2001:db8::/120"}
    assert {p.weight for p in on_a.intent.peers} == {W}
    assert on_a == parse_static_document(LEGACY, "node-a", W)


def test_kind_list_of_objects():
    import yaml
    items = list(yaml.safe_load_all(OBJECTS))
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
    assert parse_static_document(text, "node-a", W) == parse_static_document(OBJECTS, "node-a", W)


@pytest.mark.parametrize("items", ["{}", '""', "0", "false", "x"])
def test_a_list_whose_items_are_not_a_list_is_refused(items):
    # issue 20.12: `items: {}` was applied as an empty configuration, which empties the table
    with pytest.raises(ConfigError, match="a List's items must be a list, not a"):
        parse_static_document(f"apiVersion: v1\nkind: List\nitems: {items}\n", "node-a", W)


def test_node_object_gives_this_nodes_labels():
    node = "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: whatever\n  labels: {kubernetes.io/hostname: node-a}\n"
    # the Node's labels win over NODE_NAME's default hostname label
    assert peers(parse_static_document(OBJECTS + node, "node-b", W)) == {"10.0.0.1", "10.0.0.2"}
    assert peers(parse_static_document(CONFIGMAP + node, None, W)) == {"10.0.0.1", "10.0.0.2"}


def test_several_nodes_pick_the_one_named_like_this_node():
    nodes = "".join(
        f"---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels: {{kubernetes.io/hostname: {h}}}\n"
        for n, h in (("n1", "node-a"), ("n2", "node-z")))
    assert peers(parse_static_document(OBJECTS + nodes, "n1", W)) == {"10.0.0.1", "10.0.0.2"}
    assert peers(parse_static_document(OBJECTS + nodes, "n2", W)) == {"10.0.0.1"}
    with pytest.raises(ConfigError, match="2 Nodes"):
        parse_static_document(OBJECTS + nodes, "n3", W)


@pytest.mark.parametrize("text", ["{}\n", "peers: []\n", "peers: []\naddress-pools: []\n",
                                  "apiVersion: v1\nkind: List\nitems: []\n", "apiVersion: v1\nkind: List\nitems:\n"])
def test_explicit_empty_config_is_valid_and_empty(text):
    result = parse_static_document(text, "node-a", W)
    assert result.intent == Intent() and result.problems == ()


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("# only a comment\n# and another\n", "empty"),
    ("---\n---\n", "empty"),
    ("peers: [\n", "invalid YAML at line 2, column 1"),
    ("peers:\n  - peer-address: 10.0.0.1\n   bad-indent: x\n", "invalid YAML at line 3"),
    ("foo: bar\n", "unexpected keys foo"),
    ("just a string\n", "not a Kubernetes object"),
    ("- 1\n- 2\n", "not a Kubernetes object"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "no metallb.io objects found (found Deployment)"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config}\ndata: {other: x}\n", "no data.config"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  config: |\n    peers: [\n", "invalid YAML"),
    (LEGACY + "---\n" + LEGACY, "not a Kubernetes object"),
])
def test_unusable_documents_raise_one_line_config_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        parse_static_document(text, "node-a", W)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_legacy_config_text_that_is_not_yaml_raises():
    # The kube source relies on this to keep the last good intent.
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_legacy_config("peers: [", {}, W)
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_legacy_config("- a\n- b\n", {}, W)


def test_bad_entries_in_a_static_file_are_problems_not_errors():
    text = LEGACY + "- name: broken\n  protocol: bgp\n  addresses: [not-an-ip]\n"
    result = parse_static_document(text, None, W)
    assert [str(p) for p in result.problems] == [
        "pool broken: address 'not-an-ip' is not a CIDR, an address or a range (first-last, one '-'); entry skipped"]
    assert {str(n) for n in result.intent.prefixes} == {"198.51.100.0/24", "2001:db8::/120"}


def test_the_repository_example_parses_cleanly():
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "examples" / "metallb-config.yaml"
    if not example.exists():
        pytest.skip("no example config in this checkout")
    result = parse_static_document(example.read_text(), None, W)
    assert result.problems == ()
    assert len(result.intent.peers_of(4)) >= 1 and result.intent.prefixes
