"""Kubernetes label selectors, as MetalLB uses them for nodes and address pools.

Both spellings are accepted: the CRDs' `matchLabels`/`matchExpressions` and the legacy
ConfigMap's `match-labels`/`match-expressions`. Operators follow Kubernetes exactly
(case-sensitive), as MetalLB hands them to apimachinery.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from nra.config.yaml_loader import clip, shown


class SelectorError(ValueError):
    """A selector Kubernetes would refuse; the message says which part."""


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True when `labels` satisfy every matchLabels pair and every matchExpression.

    An empty (or null) selector matches everything.
    """
    if selector is None:
        return True
    if not isinstance(selector, Mapping):
        raise SelectorError(f"a label selector must be a mapping, not {_kind(selector)}")
    match_labels = _field(selector, "matchLabels", "match-labels") or {}
    expressions = _field(selector, "matchExpressions", "match-expressions") or []
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"matchLabels must be a mapping, not {_kind(match_labels)}")
    if not isinstance(expressions, list):
        raise SelectorError(f"matchExpressions must be a list, not {_kind(expressions)}")
    # Validate everything before answering, so a bad expression is reported even when an
    # earlier term already fails to match.
    checks = [_expression_check(i, e) for i, e in enumerate(expressions)]
    wanted = {str(k): label_value(v) for k, v in match_labels.items()}
    return all(labels.get(k) == v for k, v in wanted.items()) and all(c(labels) for c in checks)


def any_selector_matches(selectors: Iterable[Mapping[str, Any] | None] | None, labels: Mapping[str, str]) -> bool:
    """A list of selectors (BGPPeer nodeSelectors): true if any matches; empty or absent
    matches everything. Every selector is validated, even after a match."""
    if selectors is None:
        return True
    if not isinstance(selectors, list):
        raise SelectorError(f"node selectors must be a list, not {_kind(selectors)}")
    results = [selector_matches(s, labels) for s in selectors]
    return not results or any(results)


def label_value(value: Any) -> str:
    """YAML may hand us `true` or `1` where Kubernetes has the strings "true" and "1"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _expression_check(index: int, expression: Any):
    where = f"matchExpressions[{index}]"
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{where} must be a mapping, not {_kind(expression)}")
    key = expression.get("key")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{where} has no key")
    shown_key = clip(key, 60)
    operator = expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(values, list):
        raise SelectorError(f"{where} ({shown_key}): values must be a list, not {_kind(values)}")
    wanted = {label_value(v) for v in values}
    if operator in ("In", "NotIn"):
        if not wanted:
            raise SelectorError(f"{where} ({shown_key}): operator {operator} needs at least one value")
        if operator == "In":
            return lambda labels: key in labels and labels[key] in wanted
        return lambda labels: key not in labels or labels[key] not in wanted
    if operator in ("Exists", "DoesNotExist"):
        if wanted:
            raise SelectorError(f"{where} ({shown_key}): operator {operator} takes no values")
        if operator == "Exists":
            return lambda labels: key in labels
        return lambda labels: key not in labels
    raise SelectorError(
        f"{where} ({shown_key}): invalid operator {shown(operator)} (expected one of {', '.join(_OPERATORS)})"
    )


def _field(mapping: Mapping[str, Any], camel: str, dashed: str) -> Any:
    return mapping[camel] if camel in mapping else mapping.get(dashed)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
