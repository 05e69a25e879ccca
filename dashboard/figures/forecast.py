"""The metric to expect at the target: each scale point's floor against its size, the power law through them and
the prediction at the target, one colour per parametrization. Data (pure, tested), then the Plotly figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import AXIS_LABEL, FONT, PARAM_COLORS, param_label
from mutransfer.fit import FitResult
from mutransfer.tables import forecast_rows


@dataclass(frozen=True)
class ForecastData:
    parametrization: str
    axis: str
    metric: str
    sizes: list[int]  # the proxies along the axis with a floor
    floors: list[float]
    line_x: list[float]  # the law, from the smallest proxy to the target
    line_y: list[float]
    target_x: int | None
    target_y: float | None
    target_lo: float | None
    target_hi: float | None


def forecast_data(fit: FitResult, parametrization: str) -> ForecastData | None:
    """The forecast of one parametrization along its single axis; None when there is none to draw (no
    prediction, or a law in several axes at once)."""
    f = fit.forecast(parametrization)
    if f is None or f.value is None or len(f.exponents) != 1:
        return None
    (axis, b), = f.exponents.items()
    scale_of = {p.tag: p.scale for p in fit.points if p.parametrization == parametrization}
    pts = sorted((getattr(scale_of[tag], axis), v) for tag, v in f.floors if tag in scale_of)
    sizes = [int(s) for s, _ in pts]
    floors = [float(v) for _, v in pts]
    if not sizes or axis not in f.doublings:
        return None
    target = max(sizes) * 2.0 ** f.doublings[axis]  # the forecast says how far beyond the largest proxy it lies
    xs = np.geomspace(min(sizes), max(target, max(sizes)), 40)
    # Anchored at the target's prediction: value = y_t * (x / x_t) ** b.
    ys = f.value * (xs / target) ** b
    return ForecastData(parametrization, axis, fit.metric, sizes, floors, xs.tolist(), ys.tolist(), round(target),
                        f.value, f.lo, f.hi)


def forecast_figure(datas: Sequence[ForecastData], *, height: int = 380) -> go.Figure:
    fig = go.Figure()
    if not datas:
        return fig
    axis_name = AXIS_LABEL.get(datas[0].axis, datas[0].axis)
    for d in datas:
        color = PARAM_COLORS.get(d.parametrization, "#555")
        label = param_label(d.parametrization)
        fig.add_trace(go.Scatter(x=d.line_x, y=d.line_y, mode="lines", name=f"{label} law",
                                 line={"color": color, "width": 2, "dash": "dot"}, meta={"role": "law"}))
        fig.add_trace(go.Scatter(x=d.sizes, y=d.floors, mode="markers", name=f"{label} floor per {axis_name}",
                                 marker={"color": color, "size": 9}, meta={"role": "floors"}))
        if d.target_y is not None:
            err = {}
            if d.target_lo is not None and d.target_hi is not None:
                err = {"error_y": {"type": "data", "symmetric": False, "color": color,
                                   "array": [max(d.target_hi - d.target_y, 0.0)],
                                   "arrayminus": [max(d.target_y - d.target_lo, 0.0)]}}
            fig.add_trace(go.Scatter(x=[d.target_x], y=[d.target_y], mode="markers", name=f"{label} at the target",
                                     marker={"symbol": "star", "size": 15, "color": color,
                                             "line": {"color": "black", "width": 1}}, meta={"role": "target"},
                                     **err))
    fig.update_layout(title={"text": f"best {datas[0].metric} against {axis_name}: the floors and the law"},
                      height=height, font=FONT, template="plotly_white", hovermode="closest",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    fig.update_xaxes(type="log", title=axis_name)
    fig.update_yaxes(title=f"best {datas[0].metric}")
    return fig


def forecast_table(fit: FitResult) -> pd.DataFrame:
    return pd.DataFrame(forecast_rows(fit))
