import pytest

from nra.config.selectors import SelectorError, any_selector_matches, selector_matches

NODE = {"kubernetes.io/hostname": "prod-01", "kubernetes.io/arch": "amd64", "rack": "r1"}


def both_spellings(labels=None, expressions=None) -> list[dict]:
    """The same selector as a CRD and as the legacy ConfigMap writes it."""
    camel, dashed = {}, {}
    if labels is not None:
        camel["matchLabels"], dashed["match-labels"] = labels, labels
    if expressions is not None:
        camel["matchExpressions"], dashed["match-expressions"] = expressions, expressions
    return [camel, dashed]


def expr(key, operator, values=None):
    e = {"key": key, "operator": operator}
    if values is not None:
        e["values"] = values
    return e


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}}, {"match-expressions": []}])
def test_empty_selector_matches_everything(selector):
    assert selector_matches(selector, NODE)
    assert selector_matches(selector, {})


@pytest.mark.parametrize("labels,expected", [
    ({"kubernetes.io/hostname": "prod-01"}, True),
    ({"kubernetes.io/hostname": "prod-01", "rack": "r1"}, True),
    ({"kubernetes.io/hostname": "prod-02"}, False),
    ({"kubernetes.io/hostname": "prod-01", "rack": "r2"}, False),
    ({"zone": "a"}, False),
])
def test_match_labels(labels, expected):
    for selector in both_spellings(labels=labels):
        assert selector_matches(selector, NODE) is expected


@pytest.mark.parametrize("expression,expected", [
    (expr("kubernetes.io/arch", "In", ["amd64", "arm"]), True),
    (expr("kubernetes.io/arch", "In", ["arm64"]), False),
    (expr("missing", "In", ["x"]), False),
    (expr("kubernetes.io/arch", "NotIn", ["arm64"]), True),
    (expr("kubernetes.io/arch", "NotIn", ["amd64"]), False),
    (expr("missing", "NotIn", ["x"]), True),  # Kubernetes: an absent key is "not in"
    (expr("rack", "Exists"), True),
    (expr("missing", "Exists"), False),
    (expr("rack", "DoesNotExist"), False),
    (expr("missing", "DoesNotExist"), True),
])
def test_every_operator(expression, expected):
    for selector in both_spellings(expressions=[expression]):
        assert selector_matches(selector, NODE) is expected


def test_labels_and_expressions_must_all_hold():
    ok = both_spellings({"kubernetes.io/hostname": "prod-01"}, [expr("kubernetes.io/arch", "In", ["amd64"])])
    bad = both_spellings({"kubernetes.io/hostname": "prod-01"}, [expr("kubernetes.io/arch", "In", ["arm"])])
    assert all(selector_matches(s, NODE) for s in ok)
    assert not any(selector_matches(s, NODE) for s in bad)


def test_yaml_scalars_compare_as_kubernetes_strings():
    labels = {"gpu": "true", "slot": "1"}
    assert selector_matches({"matchLabels": {"gpu": True, "slot": 1}}, labels)
    assert selector_matches({"matchExpressions": [expr("slot", "In", [1, 2])]}, labels)
    assert not selector_matches({"matchLabels": {"gpu": False}}, labels)


@pytest.mark.parametrize("selector,needle", [
    ({"matchExpressions": [expr("a", "Equals", ["x"])]}, "invalid operator 'Equals'"),
    ({"matchExpressions": [expr("a", "in", ["x"])]}, "invalid operator 'in'"),  # case-sensitive, as in Kubernetes
    ({"match-expressions": [expr("a", None)]}, "invalid operator None"),
    ({"matchExpressions": [expr("a", "In", [])]}, "needs at least one value"),
    ({"matchExpressions": [expr("a", "NotIn")]}, "needs at least one value"),
    ({"matchExpressions": [expr("a", "Exists", ["x"])]}, "takes no values"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "has no key"),
    ({"matchExpressions": ["a=b"]}, "must be a mapping"),
    ({"matchExpressions": {"key": "a"}}, "matchExpressions must be a list"),
    ({"matchLabels": ["a"]}, "matchLabels must be a mapping"),
    ("hostname=prod-01", "must be a mapping"),
])
def test_invalid_selectors_raise(selector, needle):
    with pytest.raises(SelectorError, match=needle.replace("(", r"\(")):
        selector_matches(selector, NODE)
    assert issubclass(SelectorError, ValueError)


def test_bad_expression_is_reported_even_when_labels_already_fail():
    selector = {"matchLabels": {"rack": "nope"}, "matchExpressions": [expr("a", "Bogus", ["x"])]}
    with pytest.raises(SelectorError):
        selector_matches(selector, NODE)


@pytest.mark.parametrize("selectors", [None, []])
def test_absent_or_empty_list_matches_every_node(selectors):
    assert any_selector_matches(selectors, NODE)
    assert any_selector_matches(selectors, {})


def test_list_matches_if_any_selector_matches():
    selectors = [{"matchLabels": {"kubernetes.io/hostname": "other"}},
                 {"match-labels": {"kubernetes.io/hostname": "prod-01"}}]
    assert any_selector_matches(selectors, NODE)
    assert not any_selector_matches(selectors[:1], NODE)
    assert any_selector_matches([{}], NODE)  # one empty selector: everything


def test_list_validates_every_selector():
    selectors = [{}, {"matchExpressions": [expr("a", "Bogus", ["x"])]}]
    with pytest.raises(SelectorError, match="Bogus"):
        any_selector_matches(selectors, NODE)
    with pytest.raises(SelectorError, match="must be a list"):
        any_selector_matches({"matchLabels": {}}, NODE)
