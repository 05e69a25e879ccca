"""Plain values: what every module that writes a result (the store, the fit, the export) turns numbers and
records into before they leave as JSON, YAML or a database column."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np


def finite_or_none(x: Any) -> float | None:
    """`x` as a plain float when it is finite, else None (None, NaN, inf): a diverged trial has no metric, and an
    interval that ran off has no end worth writing."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def plain(x: Any) -> Any:
    """`x` as JSON/YAML-clean data: dataclasses and pydantic models become dicts, tuples lists, numpy scalars
    Python ones, dict keys strings, non-finite floats None; anything else that is not a plain scalar its str()."""
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: plain(getattr(x, f.name)) for f in fields(x)}
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    return str(x)
