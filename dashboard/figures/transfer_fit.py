"""The Transfer fit page's data and figures: each hyperparameter's optimum against scale with the fitted law and
its extrapolation to the target, and the fit's tables (transfers, optima, warnings, backtest, noise, checks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import AXIS_LABEL, CURVE_AXES, FONT, PARAM_COLORS, fmt, param_label
from mutransfer.fit import FitResult


@dataclass(frozen=True)
class LawData:
    parametrization: str
    hparam: str
    kind: str
    axis: str
    scales: list[int]  # proxies along the axis with an optimum
    values: list[float]
    lo: list[float | None]
    hi: list[float | None]
    methods: list[str]
    fitted: bool
    slope: float
    slope_lo: float | None
    slope_hi: float | None
    line_x: list[float]  # the law through the base optimum, from the narrowest proxy to the target
    line_y: list[float]
    band_lo: list[float]
    band_hi: list[float]
    target_x: int | None
    target_y: float | None
    target_lo: float | None
    target_hi: float | None
    largest_proxy: int
    note: str = ""


def law_data(fit: FitResult, parametrization: str, hparam: str, axis: str) -> LawData | None:
    """The optimum of `hparam` against `axis` (other axes at the base), the law through the base optimum with its
    band (base interval, widened by the slope's interval), and the extrapolation to the target. None for a choice
    hyperparameter or when the fit has no such law."""
    kind = fit.hparams.get(hparam)
    if kind is None or kind == "choice":
        return None
    try:
        law = fit.law(parametrization, hparam, axis)
    except KeyError:
        return None
    base = fit.base
    pts = sorted((p for p in fit.points if p.parametrization == parametrization
                  and all(getattr(p.scale, a) == getattr(base, a) for a in CURVE_AXES if a != axis)),
                 key=lambda p: getattr(p.scale, axis))
    scales, values, lo, hi, methods = [], [], [], [], []
    for p in pts:
        o = p.optima.get(hparam)
        if o is None or not o.found:
            continue
        scales.append(int(getattr(p.scale, axis)))
        values.append(float(o.value))
        lo.append(o.lo)
        hi.append(o.hi)
        methods.append(o.method)
    to_v = (lambda u: float(2.0 ** u)) if kind == "log" else float
    b0 = getattr(base, axis)
    largest = max(scales) if scales else b0
    t_ax = fit.target_size(axis)  # steps: the target's tokens over tokens per step, as the fit worked them out
    if t_ax is None:
        t_ax = largest  # no target length: the law over the proxies only
    try:
        tr = fit.transfer(parametrization, hparam)
    except KeyError:
        tr = None
    line_x: list[float] = []
    line_y: list[float] = []
    band_lo: list[float] = []
    band_hi: list[float] = []
    target_y = target_lo = target_hi = None
    # The line is the joint model's law, through its own base optimum (the one the export moves), not through the
    # base point's own optimum (a star like the others).
    if tr is not None and tr.base_value is not None:
        to_u = (lambda v: math.log2(v)) if kind == "log" else float
        u0 = to_u(tr.base_value)
        iv = (to_u(tr.base_lo), to_u(tr.base_hi)) if tr.base_lo is not None and tr.base_hi is not None else (u0, u0)
        s_lo = law.slope_lo if law.slope_lo is not None else law.slope
        s_hi = law.slope_hi if law.slope_hi is not None else law.slope
        x_min = min([*scales, b0])
        x_max = max(t_ax, largest)
        xs = np.unique(np.concatenate([np.geomspace(x_min, x_max, 40), [float(s) for s in scales], [float(t_ax)]]))
        for x in xs:
            d = math.log2(x) - math.log2(b0)
            line_x.append(float(x))
            line_y.append(to_v(u0 + law.slope * d))
            band_lo.append(to_v(iv[0] + min(s_lo * d, s_hi * d)))
            band_hi.append(to_v(iv[1] + max(s_lo * d, s_hi * d)))
        d_t = math.log2(t_ax) - math.log2(b0)
        target_y = to_v(u0 + law.slope * d_t)
        target_lo = to_v(iv[0] + min(s_lo * d_t, s_hi * d_t))
        target_hi = to_v(iv[1] + max(s_lo * d_t, s_hi * d_t))
        # The transfer's own interval (a joint bootstrap) when this axis is the only one that moves the value.
        if tr.value is not None and all(
            s.axis == axis or not s.swept or s.shift == 0 for s in tr.steps
        ) and tr.lo is not None and tr.hi is not None:
            target_y, target_lo, target_hi = float(tr.value), float(tr.lo), float(tr.hi)
    return LawData(
        parametrization=parametrization, hparam=hparam, kind=kind, axis=axis, scales=scales, values=values, lo=lo,
        hi=hi, methods=methods, fitted=law.fitted, slope=law.slope, slope_lo=law.slope_lo, slope_hi=law.slope_hi,
        line_x=line_x, line_y=line_y, band_lo=band_lo, band_hi=band_hi,
        target_x=t_ax if line_x else None, target_y=target_y, target_lo=target_lo, target_hi=target_hi,
        largest_proxy=largest, note=law.note,
    )


def _fill_rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def law_figure(datas: Sequence[LawData], *, height: int = 430) -> go.Figure:
    """Optimum against scale for one axis and hyperparameter, one colour per parametrization: the per-point
    optima with their intervals, the fitted law and its band, and the extrapolation to the target (a star)."""
    fig = go.Figure()
    if not datas:
        return fig
    d0 = datas[0]
    axis_name = AXIS_LABEL.get(d0.axis, d0.axis)
    unit = "octaves" if d0.kind == "log" else "units"
    for d in datas:
        color = PARAM_COLORS.get(d.parametrization, "#555")
        label = param_label(d.parametrization)
        if d.line_x:
            fig.add_trace(go.Scatter(
                x=d.line_x + d.line_x[::-1], y=d.band_hi + d.band_lo[::-1], fill="toself",
                fillcolor=_fill_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip", name=f"{label} interval",
                legendgroup=d.parametrization, showlegend=False, meta={"role": "band"},
            ))
            slope = f"{d.slope:+.2f} {unit}/doubling"
            if d.slope_lo is not None and d.slope_hi is not None and d.fitted:
                slope += f" [{d.slope_lo:+.2f}, {d.slope_hi:+.2f}]"
            inside = [i for i, x in enumerate(d.line_x) if x <= d.largest_proxy * (1 + 1e-9)]
            beyond = [i for i, x in enumerate(d.line_x) if x >= d.largest_proxy * (1 - 1e-9)]
            fig.add_trace(go.Scatter(
                x=[d.line_x[i] for i in inside], y=[d.line_y[i] for i in inside], mode="lines",
                name=f"{label} law: {slope}" if d.fitted else f"{label}: no law ({d.note})",
                line={"color": color, "width": 2}, legendgroup=d.parametrization, meta={"role": "law"},
            ))
            fig.add_trace(go.Scatter(
                x=[d.line_x[i] for i in beyond], y=[d.line_y[i] for i in beyond], mode="lines",
                name=f"{label} extrapolation", showlegend=False, line={"color": color, "width": 2, "dash": "dot"},
                legendgroup=d.parametrization, hoverinfo="skip", meta={"role": "extrapolation"},
            ))
        err = {"type": "data", "symmetric": False, "color": color,
               "array": [max((h if h is not None else v) - v, 0.0) for v, h in zip(d.values, d.hi, strict=True)],
               "arrayminus": [max(v - (lo if lo is not None else v), 0.0) for v, lo in zip(d.values, d.lo, strict=True)]}
        fig.add_trace(go.Scatter(
            x=d.scales, y=d.values, mode="markers", name=f"{label} optimum per {axis_name}", error_y=err,
            marker={"color": color, "size": 9, "symbol": ["circle" if m == "vertex" else "circle-open"
                                                          for m in d.methods]},
            customdata=[[fmt(lo), fmt(hi), m] for lo, hi, m in zip(d.lo, d.hi, d.methods, strict=True)],
            hovertemplate=f"{label} {axis_name} %{{x}}: {d.hparam} %{{y:.4g}} [%{{customdata[0]}}, "
                          "%{customdata[1]}] (%{customdata[2]})<extra></extra>",
            legendgroup=d.parametrization, meta={"role": "optima"},
        ))
        if d.target_x is not None and d.target_y is not None:
            t_err = {}
            if d.target_lo is not None and d.target_hi is not None:
                t_err = {"error_y": {"type": "data", "symmetric": False, "color": color,
                                     "array": [max(d.target_hi - d.target_y, 0.0)],
                                     "arrayminus": [max(d.target_y - d.target_lo, 0.0)]}}
            fig.add_trace(go.Scatter(
                x=[d.target_x], y=[d.target_y], mode="markers+text", name=f"{label} at the target",
                marker={"symbol": "star", "size": 16, "color": color, "line": {"color": "black", "width": 1}},
                text=[f"{fmt(d.target_y)}"], textposition="top left", legendgroup=d.parametrization,
                hovertemplate=f"{label} at the target's {axis_name} %{{x}}: {d.hparam} %{{y:.4g}} "
                              f"[{fmt(d.target_lo)}, {fmt(d.target_hi)}]<extra></extra>",
                meta={"role": "target"}, **t_err,
            ))
    if d0.target_x is not None:
        fig.add_vline(x=d0.target_x, line={"color": "#888", "dash": "dash", "width": 1},
                      annotation_text=f"target {axis_name} {d0.target_x}", annotation_position="top left")
    ticks = sorted({*(s for d in datas for s in d.scales), *(d.target_x for d in datas if d.target_x)})
    fig.update_layout(title={"text": f"optimal {d0.hparam} against {axis_name}"}, height=height, font=FONT,
                      template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50}, hovermode="closest",
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(type="log", title_text=f"{axis_name} (log scale)", tickvals=ticks, ticktext=[str(t) for t in ticks])
    fig.update_yaxes(type="log" if d0.kind == "log" else "linear", title_text=f"optimal {d0.hparam}")
    return fig


def transfers_table(fit: FitResult) -> pd.DataFrame:
    """The transferred config: each hyperparameter's value at the target, with its interval and where it came
    from."""
    rows = []
    for t in fit.transfers:
        reach = ", ".join(f"{AXIS_LABEL.get(s.axis, s.axis)} x{s.extrapolation:.3g}" for s in t.steps
                          if s.swept and s.extrapolation > 1)
        rows.append({
            "parametrization": param_label(t.parametrization), "hyperparameter": t.hparam,
            "value at target": t.value if t.value is not None else None,
            "interval": f"[{fmt(t.lo)}, {fmt(t.hi)}]" if t.lo is not None else "-",
            "base optimum": fmt(t.base_value), "extrapolated": reach or "-", "note": t.note,
        })
    return pd.DataFrame(rows, columns=["parametrization", "hyperparameter", "value at target", "interval",
                                       "base optimum", "extrapolated", "note"])


def optima_table(fit: FitResult) -> pd.DataFrame:
    """One row per (parametrization, scale point, hyperparameter): optimum, interval, method, flags."""
    rows = []
    for p in fit.points:
        for name, o in p.optima.items():
            rows.append({
                "parametrization": param_label(p.parametrization), "scale point": p.tag, "hyperparameter": name,
                "optimum": fmt(o.value, 4), "interval": f"[{fmt(o.lo)}, {fmt(o.hi)}]" if o.lo is not None else "-",
                "method": o.method, "completed": p.n_completed, "diverged": p.n_diverged,
                "best metric": p.best_metric, "flags": ", ".join(o.flags),
            })
    return pd.DataFrame(rows)


def warnings_table(fit: FitResult) -> pd.DataFrame:
    rows = [{"code": w.code, "where": "/".join(x for x in (param_label(w.parametrization) if w.parametrization
                                                          else None, w.hparam, w.scale, w.axis) if x),
             "message": w.message} for w in fit.warnings]
    return pd.DataFrame(rows, columns=["code", "where", "message"])


def backtest_table(fit: FitResult) -> pd.DataFrame:
    """The backtest: the largest proxy of each axis left out, its optimum predicted from the others."""
    rows = []
    for b in fit.backtests:
        unit = " octaves" if fit.hparams.get(b.hparam) == "log" else ""
        rows.append({
            "parametrization": param_label(b.parametrization), "hyperparameter": b.hparam,
            "axis": AXIS_LABEL.get(b.axis, b.axis), "left out": b.held_out,
            "fitted on": ", ".join(map(str, b.fitted_on)), "predicted": fmt(b.predicted),
            "its own optimum": fmt(b.observed) + (f" [{fmt(b.observed_lo)}, {fmt(b.observed_hi)}]"
                                                   if b.observed_lo is not None else ""),
            "error": f"{b.error:+.2f}{unit}" if b.error is not None else "-",
            "metric cost": (f"{b.regret:+.3g} ({100 * b.relative_regret:.1f}%)"
                            if b.regret is not None and b.relative_regret is not None else "-"),
        })
    return pd.DataFrame(rows, columns=["parametrization", "hyperparameter", "axis", "left out", "fitted on",
                                       "predicted", "its own optimum", "error", "metric cost"])


def noise_table(fit: FitResult) -> pd.DataFrame:
    """Trial noise beside the curve's rise near the optimum, per parametrization and hyperparameter."""
    rows = [{"parametrization": param_label(n.parametrization), "hyperparameter": n.hparam, "noise": fmt(n.sigma),
             "from": n.source, "rise at": n.distance, "depth": fmt(n.depth),
             "noise / depth": round(n.ratio, 2) if n.ratio is not None else None} for n in fit.noise]
    return pd.DataFrame(rows, columns=["parametrization", "hyperparameter", "noise", "from", "rise at", "depth",
                                       "noise / depth"])


def law_axes(fit: FitResult) -> list[str]:
    """The axes with a law in the fit, in CURVE_AXES order (the training length last)."""
    have = {law.axis for law in fit.laws}
    return [a for a in CURVE_AXES if a in have]


def checks_table(checks: Sequence[Any]) -> pd.DataFrame:
    """Stored checks (coordinate checks, verifications) as rows, whatever their record type."""
    rows = []
    for c in checks:
        d = c if isinstance(c, dict) else asdict(c) if is_dataclass(c) else dict(getattr(c, "__dict__", {}))
        rows.append({k: d.get(k) for k in ("kind", "parametrization", "passed", "summary", "created_at") if k in d})
    return pd.DataFrame(rows)
