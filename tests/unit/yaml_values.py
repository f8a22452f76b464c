"""A comparable form of loaded YAML values, for the loader tests."""

from __future__ import annotations

import math


def canonical(value):
    """Types kept (1, True and 1.0 differ), key order kept, NaN equal to itself."""
    if isinstance(value, dict):
        return ("map", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [canonical(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)
