"""The µTransfer plot: the metric against one hyperparameter, one curve per scale value along an axis, with the
fit's optimum and its local quadratic. Data (`curves_data` -> `CurvesData`, pure, tested), then the figure.

Besides the completed trials (the curves), diverged ones are drawn in a band along the top and trials stopped early
by the sweep's scheduler (search.early_stop) as open markers at their floor: the level the fit holds them to
(mutransfer.fit.stopped), never at the metric where they stopped, and never joined into a curve. Trials of a refine
round (search.refine, round k >= 1) have a marker symbol of their own (`ROUND_SYMBOLS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.style import AXIS_LABEL, CURVE_AXES, FONT, fmt, numeric, param_label, scale_colors
from mutransfer.fit import FitResult, Optimum, quad_curve
from mutransfer.recipe import Choice, LogUniform, Recipe, Scale

DIVERGED_ROW = 0.035  # of the y range: the height of one row of diverged markers
# A trial's marker by its search round: 0 the recipe's own draws, k >= 1 refine round k (at most 5 rounds).
ROUND_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "pentagon", "hexagon")
NO_FLOOR = "stopped without a floor"  # `CurvesData.hidden`: stopped, no completed trial of its point to compare with


def round_symbol(k: int, *, hollow: bool = False) -> str:
    sym = ROUND_SYMBOLS[min(max(int(k), 0), len(ROUND_SYMBOLS) - 1)]
    return f"{sym}-open" if hollow else sym


def round_label(k: int) -> str:
    """"" for the recipe's own draws, "refine round k" for a refine round's."""
    return f"refine round {int(k)}" if k >= 1 else ""


def _rounds(frame: pd.DataFrame) -> list[int]:
    if "round" not in frame:
        return [0] * len(frame)
    return [int(v) for v in pd.to_numeric(frame["round"], errors="coerce").fillna(0)]


def hparam_kinds(recipe: Recipe) -> dict[str, str]:
    """Each searched hyperparameter's kind as the fit names it: log, linear or choice."""
    return {name: "log" if isinstance(d, LogUniform) else "choice" if isinstance(d, Choice) else "linear"
            for name, d in recipe.search.space.items()}


def single_value_reason(trials: pd.DataFrame, hparam: str) -> str | None:
    """A sentence when `hparam` takes one value only in the sweep's finished trials (no curve against it)."""
    col = f"hp.{hparam}"
    own = trials[(trials["role"] == "sweep") & trials["status"].isin(("completed", "diverged", "stopped"))] \
        if "role" in trials else trials
    if col not in own:
        return f"The trials have no value of {hparam}: there is nothing to draw against it."
    values = own[col].dropna()
    distinct = pd.unique(values.astype(str)) if len(values) else []
    if len(distinct) <= 1:
        shown = fmt(values.iloc[0]) if len(values) else "none"
        return (f"{hparam} has a single value ({shown}) in this sweep: there is no curve to draw against it. "
                "Give it a range in the recipe's search space to see how the metric depends on it.")
    return None


def _axis_values(trials: pd.DataFrame, axis: str) -> pd.Series | None:
    # A trial's planned length is its scale point; the store's `steps` is how far it got (less, if it diverged).
    col = "steps_planned" if axis == "steps" and "steps_planned" in trials else axis
    return pd.to_numeric(trials[col], errors="coerce") if col in trials else None


def along_axis(trials: pd.DataFrame, axis: str, base: Scale) -> pd.DataFrame:
    """The rows whose scale differs from `base` only along `axis` (the base included)."""
    mask = np.ones(len(trials), dtype=bool)
    for a in CURVE_AXES:
        want = getattr(base, a)
        values = _axis_values(trials, a)
        if a != axis and want is not None and values is not None:
            mask &= (values == want).to_numpy()
    return trials[mask]


def varied_axes(trials: pd.DataFrame, base: Scale) -> list[str]:
    """The axes along which the sweep's own trials take more than one value (around the base)."""
    own = trials[trials["role"] == "sweep"] if "role" in trials else trials
    out = []
    for a in CURVE_AXES:
        if a == "steps" and base.steps is None:
            continue  # not a steps sweep: every trial of a scale point trains the recipe's length
        values = _axis_values(along_axis(own, a, base), a)
        if values is not None and values.nunique() > 1:
            out.append(a)
    return out


@dataclass(frozen=True)
class CurveSeries:
    """One scale value's trials on a transfer-curves chart."""

    scale: int
    x: list[Any]
    y: list[float]
    keys: list[str]
    diverged_x: list[Any]
    diverged_keys: list[str]
    lines: bool  # connect the points (only this hyperparameter varies): else markers only
    fit_x: list[float] = field(default_factory=list)  # the local quadratic behind the optimum
    fit_y: list[float] = field(default_factory=list)
    opt_x: Any = None
    opt_y: float | None = None
    opt_lo: float | None = None
    opt_hi: float | None = None
    opt_method: str = ""
    # With several seeds per value (search.repeats) the line goes through their mean at each x; the points stay.
    mean_x: list[Any] = field(default_factory=list)
    mean_y: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)  # each point's search round (0, or refine round k); [] all 0
    # Trials stopped early (search.early_stop) with a floor: drawn at it, apart from the curve.
    stopped_x: list[Any] = field(default_factory=list)
    stopped_y: list[float] = field(default_factory=list)  # the floor: the fit's level it would end at least at
    stopped_keys: list[str] = field(default_factory=list)
    stopped_steps: list[int | None] = field(default_factory=list)  # the step it reached
    stopped_at: list[float] = field(default_factory=list)  # its metric there (not comparable with a final one)
    stopped_rounds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CurvesData:
    parametrization: str
    hparam: str
    kind: str  # log | linear | choice
    axis: str
    metric: str
    series: tuple[CurveSeries, ...]
    verify: pd.DataFrame | None = None  # verification trials at a larger size along this axis: x, y, scale, key
    # Trials not drawn, by status: failed, pending, running, and NO_FLOOR (stopped, nothing to compare with).
    hidden: dict[str, int] = field(default_factory=dict)

    @property
    def scales(self) -> list[int]:
        return [s.scale for s in self.series]


def _opt_y(opt: Optimum, xs: np.ndarray, ys: np.ndarray, fallback: float | None) -> float | None:
    """The metric to draw an optimum at: the local quadratic at its vertex, else the best observed nearby."""
    if opt.method == "vertex" and opt.quad is not None and opt.u is not None:
        u0, a, b, c = opt.quad
        d = float(opt.u) - u0
        at_vertex = float(a + b * d + c * d * d)
        # Not below the best trial: the star marks where the optimum is, on the curve's floor.
        return max(at_vertex, float(np.min(ys))) if len(ys) else at_vertex
    if len(xs):
        try:
            i = int(np.argmin(np.abs(np.asarray(xs, dtype=float) - float(opt.value))))
            return float(ys[i])
        except (TypeError, ValueError):
            pass
    return fallback


def curves_data(trials: pd.DataFrame, fit: FitResult | None, *, parametrization: str, hparam: str, kind: str,
                axis: str, base: Scale, metric: str = "metric") -> CurvesData:
    """The metric against `hparam` for each value of `axis` (the other axes at the base), in one parametrization:
    completed trials as points, diverged ones apart, stopped ones at their floor (the `floor` column of
    mutransfer.fit.stopped.fit_frame; one without a floor is counted in `hidden`), and the fit's optimum and local
    quadratic when there is one. A `round` column marks the refine rounds' trials (`CurveSeries.rounds`)."""
    col = f"hp.{hparam}"
    rows = trials[trials["parametrization"].astype(str) == parametrization]
    if "steps" in rows:
        rows = rows.assign(_reached=rows["steps"])  # how far a trial got (a stopped one: where it stopped)
    if axis == "steps" and "steps_planned" in rows:
        rows = rows.assign(steps=rows["steps_planned"])
    own = rows[rows["role"] == "sweep"] if "role" in rows else rows
    on_axis = along_axis(own, axis, base)
    floor = numeric(on_axis["floor"]) if "floor" in on_axis else np.full(len(on_axis), np.nan)
    is_stopped = (on_axis["status"] == "stopped").to_numpy()
    hidden = {k: int(v) for k, v in on_axis["status"].value_counts().items()
              if k not in ("completed", "diverged", "stopped")}
    if (no_floor := int((is_stopped & ~np.isfinite(floor)).sum())):
        hidden[NO_FLOOR] = no_floor
    stopped_rows = on_axis[is_stopped & np.isfinite(floor)].assign(_floor=floor[is_stopped & np.isfinite(floor)])
    names = [c for c in trials.columns if c.startswith("hp.")]
    series = []
    for scale in sorted(pd.unique(on_axis[axis]).tolist()):
        at = on_axis[on_axis[axis] == scale]
        comp = at[(at["status"] == "completed") & np.isfinite(numeric(at["metric"]))]
        div = at[(at["status"] == "diverged") | ((at["status"] == "completed") & ~np.isfinite(numeric(at["metric"])))]
        stop = stopped_rows[stopped_rows[axis] == scale]
        if col not in at:
            continue
        if kind == "choice":
            comp = comp.assign(_x=comp[col].astype(str))
            div = div.assign(_x=div[col].astype(str))
            stop = stop.assign(_x=stop[col].astype(str))
        else:
            comp = comp.assign(_x=numeric(comp[col])).dropna(subset=["_x"])
            div = div.assign(_x=numeric(div[col])).dropna(subset=["_x"])
            stop = stop.assign(_x=numeric(stop[col])).dropna(subset=["_x"])
        stop = stop.sort_values("_x", kind="stable")
        comp = comp.sort_values("_x", kind="stable")
        others = [c for c in names if c != col and at[c].nunique(dropna=True) > 1]
        fx: list[float] = []
        fy: list[float] = []
        opt_kw: dict[str, Any] = {}
        if fit is not None:
            pt = _find_point(fit, parametrization, base, axis, int(scale))
            opt = pt.optima.get(hparam) if pt is not None else None
            if opt is not None and opt.found:
                curve = quad_curve(opt)
                if curve is not None and opt.method == "vertex":
                    fx, fy = [float(v) for v in curve[0]], [float(v) for v in curve[1]]
                xs = comp["_x"].to_numpy()
                ys = comp["metric"].to_numpy(dtype=float)
                opt_kw = {"opt_x": str(opt.value) if kind == "choice" else float(opt.value),
                          "opt_y": _opt_y(opt, xs, ys, pt.best_metric if pt else None),
                          "opt_lo": opt.lo, "opt_hi": opt.hi, "opt_method": opt.method}
        lines = not others and kind != "choice"
        mean_kw: dict[str, Any] = {}
        if lines and comp["_x"].duplicated().any():
            means = comp.assign(_y=comp["metric"].astype(float)).groupby("_x", sort=True)["_y"].mean()
            mean_kw = {"mean_x": [float(v) for v in means.index], "mean_y": [float(v) for v in means.to_numpy()]}
        rounds = _rounds(comp)
        stopped_kw: dict[str, Any] = {}
        if len(stop):
            stopped_kw = {
                "stopped_x": stop["_x"].tolist(), "stopped_y": [float(v) for v in stop["_floor"]],
                "stopped_keys": stop["key"].tolist(),
                "stopped_steps": [None if pd.isna(v) else int(v) for v in stop["_reached"]] if "_reached" in stop
                else [None] * len(stop),
                "stopped_at": [float(v) for v in numeric(stop["metric"])], "stopped_rounds": _rounds(stop),
            }
        series.append(CurveSeries(
            scale=int(scale), x=comp["_x"].tolist(), y=[float(v) for v in comp["metric"]], keys=comp["key"].tolist(),
            diverged_x=div["_x"].tolist(), diverged_keys=div["key"].tolist(), lines=lines,
            fit_x=fx, fit_y=fy, **opt_kw, **mean_kw, rounds=rounds if any(rounds) else [], **stopped_kw,
        ))
    verify = None
    if "role" in rows:
        v = rows[(rows["role"] == "verify") & rows["status"].isin(("completed", "diverged"))]
        v = along_axis(v, axis, base)
        if len(v) and col in v:
            verify = pd.DataFrame({
                "x": v[col].astype(str) if kind == "choice" else numeric(v[col]),
                "y": numeric(v["metric"]), "scale": v[axis].astype(int).to_numpy(), "key": v["key"].to_numpy(),
                "status": v["status"].to_numpy(),
            })
    return CurvesData(parametrization, hparam, kind, axis, metric, tuple(series), verify, hidden)


def _find_point(fit: FitResult, parametrization: str, base: Scale, axis: str, value: int) -> Any:
    want = base.model_copy(update={axis: value}).tag()
    for p in fit.points:
        if p.parametrization == parametrization and p.tag == want:
            return p
    return None


def _ys(datas: Sequence[CurvesData]) -> list[float]:
    # The trials set the range; a fitted quadratic may dip below them, and is clipped by the axis.
    ys = [y for d in datas for s in d.series for y in (*s.y, *s.stopped_y) if math.isfinite(y)]
    return ys + [y for d in datas if d.verify is not None for y in d.verify["y"].tolist() if math.isfinite(y)]


def prefers_log_y(datas: Sequence[CurvesData]) -> bool:
    """A log y axis when the metric is positive and spans more than a decade (the bowl would be a flat line)."""
    ys = [y for d in datas for s in d.series for y in s.y if math.isfinite(y)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 10


def shared_y_range(datas: Sequence[CurvesData], *, log: bool = False) -> tuple[float, float] | None:
    """One y range for side-by-side charts (µP and SP), in axis units (log10 of the metric on a log axis), with a
    band on top for the diverged markers: one row per scale value."""
    ys = _ys(datas)
    if log:
        ys = [math.log10(y) for y in ys if y > 0]
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.06 or abs(hi) * 0.05 or 0.1
    rows = len({s.scale for d in datas for s in d.series if s.diverged_x})
    return lo - pad, hi + pad + (hi - lo + 2 * pad) * DIVERGED_ROW * (rows + 0.5) if rows else hi + pad


def transfer_curves_figure(data: CurvesData, *, colors: dict[int, str] | None = None,
                           y_range: tuple[float, float] | None = None, log_y: bool | None = None,
                           height: int = 520) -> go.Figure:
    """The µTransfer plot: the metric against the hyperparameter, one curve per scale value, narrow to wide.

    `y_range` in axis units (see `shared_y_range`); `log_y` None: `prefers_log_y`."""
    colors = colors or scale_colors(data.scales)
    axis_name = AXIS_LABEL.get(data.axis, data.axis)
    fig = go.Figure()
    log_y = prefers_log_y([data]) if log_y is None else log_y
    y_rng = y_range or shared_y_range([data], log=log_y)
    span = (y_rng[1] - y_rng[0]) if y_rng else 1.0

    def from_axis(a: float) -> float:
        return float(10.0 ** a) if log_y else a

    rows = sorted({s.scale for s in data.series if s.diverged_x})
    div_x: list[Any] = []
    div_y: list[float] = []
    div_c: list[str] = []
    div_t: list[str] = []
    stop_x: list[Any] = []
    stop_y: list[float] = []
    stop_c: list[str] = []
    stop_s: list[str] = []
    stop_t: list[str] = []
    in_round: dict[int, int] = {}  # refine round -> its trials drawn (completed and stopped)
    for s in data.series:
        color = colors.get(s.scale, "#444")
        group = f"{data.axis}={s.scale}"
        name = f"{axis_name} {s.scale}"
        if s.mean_x:
            fig.add_trace(go.Scatter(
                x=s.mean_x, y=s.mean_y, mode="lines", name=f"mean over seeds, {name}", legendgroup=group,
                showlegend=False, line={"color": color, "width": 2}, hoverinfo="skip",
                meta={"role": "mean", "scale": s.scale},
            ))
        refine: dict[str, Any] = {}
        if s.rounds:  # some of its trials come from refine rounds: their own symbol, and said on hover
            refine = {"text": [f"<br>{round_label(k)}" if k else "" for k in s.rounds]}
            for k in s.rounds:
                if k:
                    in_round[k] = in_round.get(k, 0) + 1
        fig.add_trace(go.Scatter(
            x=s.x, y=s.y, mode="lines+markers" if s.lines and not s.mean_x else "markers", name=name, legendgroup=group,
            line={"color": color, "width": 2},
            marker={"color": color, "size": [9 if k else 6 for k in s.rounds] if s.rounds else 6,
                    **({"symbol": [round_symbol(k) for k in s.rounds]} if s.rounds else {})},
            customdata=s.keys, hovertemplate=f"{name}<br>{data.hparam} %{{x:.4g}}<br>{data.metric} %{{y:.4f}}"
                                             "<br>%{customdata}" + ("%{text}" if refine else "") + "<extra></extra>",
            meta={"role": "trials", "scale": s.scale}, **refine,
        ))
        for x, y, key, step, at, k in zip(s.stopped_x, s.stopped_y, s.stopped_keys, s.stopped_steps, s.stopped_at,
                                          s.stopped_rounds, strict=True):
            stop_x.append(x)
            stop_y.append(y)
            stop_c.append(color)
            stop_s.append(round_symbol(k, hollow=True))
            where = f"step {step}" if step is not None else "an unknown step"
            reached = f"<br>{data.metric} {at:.4f} where it stopped" if math.isfinite(at) else ""
            stop_t.append(f"{name}: {key} stopped at {where}; would end at least at {y:.4f}{reached}"
                          + (f"<br>{round_label(k)}" if k else ""))
            if k:
                in_round[k] = in_round.get(k, 0) + 1
        if s.fit_x:
            fig.add_trace(go.Scatter(
                x=s.fit_x, y=s.fit_y, mode="lines", name=f"fit, {name}", legendgroup=group, showlegend=False,
                line={"color": color, "width": 1.5, "dash": "dot"}, hoverinfo="skip",
                meta={"role": "fit", "scale": s.scale},
            ))
        if s.opt_x is not None and s.opt_y is not None:
            err = {}
            if s.opt_lo is not None and s.opt_hi is not None and data.kind != "choice":
                err = {"error_x": {"type": "data", "symmetric": False, "array": [max(s.opt_hi - s.opt_x, 0.0)],
                                   "arrayminus": [max(s.opt_x - s.opt_lo, 0.0)], "color": color, "thickness": 1.5}}
            interval = f" [{fmt(s.opt_lo)}, {fmt(s.opt_hi)}]" if s.opt_lo is not None else ""
            fig.add_trace(go.Scatter(
                x=[s.opt_x], y=[s.opt_y], mode="markers", name=f"optimum, {name}", legendgroup=group,
                showlegend=False, marker={"symbol": "star", "size": 15, "color": color,
                                          "line": {"color": "white", "width": 1}},
                hovertemplate=f"optimum at {name}: {data.hparam} {fmt(s.opt_x)}{interval} ({s.opt_method})"
                              "<extra></extra>",
                meta={"role": "optimum", "scale": s.scale}, **err,
            ))
        for x, key in zip(s.diverged_x, s.diverged_keys, strict=True):
            div_x.append(x)
            # One row per scale value along the top, narrow highest: the same draws diverge at several widths.
            div_y.append(from_axis((y_rng[1] if y_rng else 1.0) - span * DIVERGED_ROW * (rows.index(s.scale) + 0.7)))
            div_c.append(color)
            div_t.append(f"{name}: {key} diverged")
    if div_x:
        fig.add_trace(go.Scatter(
            x=div_x, y=div_y, mode="markers", name="diverged (drawn along the top)",
            marker={"symbol": "x-thin", "size": 10, "color": div_c, "line": {"color": div_c, "width": 2}},
            text=div_t, hovertemplate="%{text}<br>" + data.hparam + " %{x:.4g}<extra></extra>",
            meta={"role": "diverged", "count": len(div_x)},
        ))
    if stop_x:
        fig.add_trace(go.Scatter(
            x=stop_x, y=stop_y, mode="markers", name="stopped early (open: the floor it would end above)",
            marker={"symbol": stop_s, "size": 9, "color": stop_c, "line": {"color": stop_c, "width": 1.5}},
            text=stop_t, hovertemplate="%{text}<br>" + data.hparam + " %{x:.4g}<extra></extra>",
            meta={"role": "stopped", "count": len(stop_x)},
        ))
    for k in sorted(in_round):  # a legend key per refine round: its symbol (the points are on the curves)
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"{round_label(k)} ({in_round[k]} trials)",
            marker={"symbol": round_symbol(k), "size": 8, "color": "#666"}, hoverinfo="skip",
            meta={"role": "refine", "round": k, "count": in_round[k]},
        ))
    if data.verify is not None and len(data.verify):
        v = data.verify
        ok = v["status"] == "completed"
        label = ", ".join(f"{axis_name} {int(x)}" for x in sorted(set(v["scale"].tolist())))
        fig.add_trace(go.Scatter(
            x=v.loc[ok, "x"].tolist(), y=v.loc[ok, "y"].tolist(), mode="markers", name=f"verification ({label})",
            marker={"symbol": "diamond", "size": 11, "color": "black", "line": {"color": "white", "width": 1}},
            text=v.loc[ok, "key"].tolist(), hovertemplate="%{text}<br>%{x:.4g}: %{y:.4f}<extra></extra>",
            meta={"role": "verify", "count": int(len(v))},
        ))
    title = f"{param_label(data.parametrization)}: {data.metric} vs {data.hparam}, by {axis_name}"
    fig.update_layout(
        title={"text": title}, height=height, font=FONT, template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0}, hovermode="closest",
    )
    fig.update_xaxes(title_text=data.hparam + (" (log scale)" if data.kind == "log" else ""),
                     type="log" if data.kind == "log" else ("category" if data.kind == "choice" else "linear"))
    if data.kind == "log":
        fig.update_xaxes(exponentformat="power", dtick=1)  # 10^-4 ... 10^0: no SI prefixes on a learning rate
    fig.update_yaxes(title_text=data.metric + (" (log scale)" if log_y else ""), type="log" if log_y else "linear")
    if y_rng is not None:
        fig.update_yaxes(range=list(y_rng))
    return fig
