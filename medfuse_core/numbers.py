"""Finite numbers, written once: what a NaN or an infinity becomes where it cannot be shown or stored.

JSON has no NaN (explanations are strict JSON: `json_safe` turns them into null), and a shading weight
must be a number (`finite(x, 0.0)`): the caller says which, the rule is the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def finite(x: Any, default: Any = None) -> Any:
    """float(x) when it is finite, else `default` (None: "no number", e.g. null in JSON)."""
    value = float(x)
    return value if math.isfinite(value) else default


def json_safe(x: Any) -> Any:
    """Plain JSON types, recursively: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return finite(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
