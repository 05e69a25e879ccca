"""What every dashboard table and chart shares: axis and parametrization labels, colours, the number format, and
the trace roles.

Every trace carries `meta={"role": ..., ...}`: "trials" (one per scale value: the curve a reader compares), "fit"
(the local quadratic behind an optimum), "optimum", "diverged", "verify", "law", "band", "target". A test (or
the browser check) counts traces by role, not by position (`count_traces`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go

from mutransfer.recipe import AXES

AXIS_LABEL = {"width": "width", "depth": "depth", "batch_size": "batch size", "seq_len": "sequence length",
              "steps": "training steps"}
# The scale axes a transfer-curves chart can run along: the model's, and the training length (scales.vary.steps).
CURVE_AXES = (*AXES, "steps")
PARAM_LABEL = {"mup": "µP", "sp": "SP"}
PARAM_COLORS = {"mup": "#1f77b4", "sp": "#d62728"}
FONT = {"size": 13}


def param_label(p: str) -> str:
    return PARAM_LABEL.get(p, p)


def scale_colors(values: Sequence[int]) -> dict[int, str]:
    """Narrow (dark purple) to wide (green-yellow): Viridis, stopping short of its pale yellow end."""
    vals = sorted(set(int(v) for v in values))
    if not vals:
        return {}
    if len(vals) == 1:
        return {vals[0]: pcolors.sample_colorscale("Viridis", [0.0])[0]}
    logs = np.log2(vals)
    pos = (logs - logs.min()) / (logs.max() - logs.min()) * 0.85
    return dict(zip(vals, pcolors.sample_colorscale("Viridis", list(pos)), strict=True))


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table or a hover label: `digits` significant digits, "-" for a missing or non-finite one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    return str(x)


def numeric(col: pd.Series) -> np.ndarray:
    """A column as floats, NaN where a value is not a number."""
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


def count_traces(fig: go.Figure | dict[str, Any], role: str) -> int:
    """How many traces of a figure (or its JSON dict) have `meta.role == role`."""
    traces = fig.data if isinstance(fig, go.Figure) else fig.get("data", [])
    out = 0
    for t in traces:
        meta = t.meta if isinstance(fig, go.Figure) else t.get("meta")
        if isinstance(meta, dict) and meta.get("role") == role:
            out += 1
    return out
