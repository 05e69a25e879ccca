"""Pure functions from a sweep's data to tables, sentences and Plotly figures: no Streamlit, no database.

Two kinds: data functions (trials frame / `FitResult` -> frames, dataclasses, sentences) and figure functions
(those -> `go.Figure`). Pages call both and only lay the results out; tests call them directly.

Every trace carries `meta={"role": ..., ...}`: "trials" (one per scale value: the curve a reader compares), "fit"
(the local quadratic behind an optimum), "optimum", "diverged", "verify", "law", "band", "target". A test (or
the browser check) counts traces by role, not by position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go

from mutransfer.fit import FitResult, Optimum, quad_curve
from mutransfer.recipe import AXES, Choice, LogUniform, Recipe, Scale
from mutransfer.storage import SweepInfo

AXIS_LABEL = {"width": "width", "depth": "depth", "batch_size": "batch size", "seq_len": "sequence length",
              "steps": "training steps"}
# The scale axes a transfer-curves chart can run along: the model's, and the training length (scales.vary.steps).
CURVE_AXES = (*AXES, "steps")
PARAM_LABEL = {"mup": "µP", "sp": "SP"}
FINISHED = ("completed", "diverged", "failed")
PARAM_COLORS = {"mup": "#1f77b4", "sp": "#d62728"}
FONT = {"size": 13}
DIVERGED_ROW = 0.035  # of the y range: the height of one row of diverged markers


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


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    return str(x)


def hparam_kinds(recipe: Recipe) -> dict[str, str]:
    """Each searched hyperparameter's kind as the fit names it: log, linear or choice."""
    return {name: "log" if isinstance(d, LogUniform) else "choice" if isinstance(d, Choice) else "linear"
            for name, d in recipe.search.space.items()}


# ------------------------------------------------------------------------------------------------ sweeps


def sweeps_table(sweeps: Sequence[SweepInfo]) -> pd.DataFrame:
    """One row per sweep: status, progress (finished/total), running, diverged, failed, best metric, created."""
    rows = []
    for s in sweeps:
        c = s.counts or {}
        done = sum(c.get(k, 0) for k in FINISHED)
        rows.append({
            "id": s.id,
            "name": s.name,
            "status": s.status,
            "progress": done / s.total_trials if s.total_trials else 0.0,
            "done/total": f"{done}/{s.total_trials}",
            "running": c.get("running", 0),
            "completed": c.get("completed", 0),
            "diverged": c.get("diverged", 0),
            "failed": c.get("failed", 0),
            "best": s.best_metric,
            "metric": s.metric_name,
            "created": pd.Timestamp(s.created_at),
        })
    cols = ["id", "name", "status", "progress", "done/total", "running", "completed", "diverged", "failed", "best",
            "metric", "created"]
    return pd.DataFrame(rows, columns=cols)


def any_running(sweeps: Sequence[SweepInfo]) -> bool:
    return any(s.status == "running" or (s.counts or {}).get("running", 0) for s in sweeps)


def groups_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per scale point (and parametrization, and role): trials by status and the best completed metric."""
    cols = ["parametrization", "scale point", "role", "trials", "completed", "diverged", "failed", "running",
            "pending", "best"]
    if not len(trials):
        return pd.DataFrame(columns=cols)
    rows = []
    role = trials["role"] if "role" in trials else pd.Series("sweep", index=trials.index)
    for (group, r), at in trials.groupby([trials["group"], role], sort=False):
        n = at["status"].value_counts()
        done = at[at["status"] == "completed"]["metric"]
        rows.append({
            "parametrization": param_label(str(at["parametrization"].iloc[0])),
            "scale point": str(group).split("/", 1)[-1], "role": r, "trials": len(at),
            **{k: int(n.get(k, 0)) for k in ("completed", "diverged", "failed", "running", "pending")},
            "best": float(done.min()) if len(done.dropna()) else None,
        })
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------------------ sentences


def no_result_reason(sweep: SweepInfo, trials: pd.DataFrame) -> str | None:
    """Why there is nothing to plot for a sweep (no completed trial), as one sentence; None when there is."""
    own = trials[trials["role"] == "sweep"] if "role" in trials else trials
    if len(own) and (own["status"] == "completed").any():
        return None
    n = own["status"].value_counts().to_dict() if len(own) else {}
    total = len(own)
    if total == 0:
        return f"Sweep {sweep.name!r} has no trials yet."
    div, fail = n.get("diverged", 0), n.get("failed", 0)
    if div == total:
        return (f"Every trial of sweep {sweep.name!r} diverged ({div} of {total}): the learning rates were too "
                "large. Lower the top of the range in the recipe and sweep again.")
    if div + fail == total:
        return (f"No trial of sweep {sweep.name!r} completed: {div} diverged, {fail} failed. The Trials page "
                "shows the errors of the failed ones.")
    waiting = n.get("pending", 0) + n.get("running", 0)
    detail = ", ".join(f"{v} {k}" for k, v in sorted(n.items()))
    return (f"Sweep {sweep.name!r} has no completed trial yet ({detail}): its curves appear here as the "
            f"{waiting} remaining trials finish.")


def single_value_reason(trials: pd.DataFrame, hparam: str) -> str | None:
    """A sentence when `hparam` takes one value only in the sweep's finished trials (no curve against it)."""
    col = f"hp.{hparam}"
    own = trials[(trials["role"] == "sweep") & trials["status"].isin(("completed", "diverged"))] \
        if "role" in trials else trials
    if col not in own:
        return f"The trials have no value of {hparam}: there is nothing to draw against it."
    values = own[col].dropna()
    distinct = pd.unique(values.astype(str)) if len(values) else []
    if len(distinct) <= 1:
        shown = _fmt(values.iloc[0]) if len(values) else "none"
        return (f"{hparam} has a single value ({shown}) in this sweep: there is no curve to draw against it. "
                "Give it a range in the recipe's search space to see how the metric depends on it.")
    return None


# ------------------------------------------------------------------------------------------------ transfer curves


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


@dataclass(frozen=True)
class CurvesData:
    parametrization: str
    hparam: str
    kind: str  # log | linear | choice
    axis: str
    metric: str
    series: tuple[CurveSeries, ...]
    verify: pd.DataFrame | None = None  # verification trials at a larger size along this axis: x, y, scale, key
    hidden: dict[str, int] = field(default_factory=dict)  # failed/pending/running trials not drawn

    @property
    def scales(self) -> list[int]:
        return [s.scale for s in self.series]


def _numeric(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


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
    completed trials as points, diverged ones apart, and the fit's optimum and local quadratic when there is one."""
    col = f"hp.{hparam}"
    rows = trials[trials["parametrization"].astype(str) == parametrization]
    if axis == "steps" and "steps_planned" in rows:
        rows = rows.assign(steps=rows["steps_planned"])
    own = rows[rows["role"] == "sweep"] if "role" in rows else rows
    on_axis = along_axis(own, axis, base)
    hidden = {k: int(v) for k, v in on_axis["status"].value_counts().items() if k not in ("completed", "diverged")}
    names = [c for c in trials.columns if c.startswith("hp.")]
    series = []
    for scale in sorted(pd.unique(on_axis[axis]).tolist()):
        at = on_axis[on_axis[axis] == scale]
        comp = at[(at["status"] == "completed") & np.isfinite(_numeric(at["metric"]))]
        div = at[(at["status"] == "diverged") | ((at["status"] == "completed") & ~np.isfinite(_numeric(at["metric"])))]
        if col not in at:
            continue
        if kind == "choice":
            comp = comp.assign(_x=comp[col].astype(str))
            div = div.assign(_x=div[col].astype(str))
        else:
            comp = comp.assign(_x=_numeric(comp[col])).dropna(subset=["_x"])
            div = div.assign(_x=_numeric(div[col])).dropna(subset=["_x"])
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
        series.append(CurveSeries(
            scale=int(scale), x=comp["_x"].tolist(), y=[float(v) for v in comp["metric"]], keys=comp["key"].tolist(),
            diverged_x=div["_x"].tolist(), diverged_keys=div["key"].tolist(), lines=lines,
            fit_x=fx, fit_y=fy, **opt_kw, **mean_kw,
        ))
    verify = None
    if "role" in rows:
        v = rows[(rows["role"] == "verify") & rows["status"].isin(("completed", "diverged"))]
        v = along_axis(v, axis, base)
        if len(v) and col in v:
            verify = pd.DataFrame({
                "x": v[col].astype(str) if kind == "choice" else _numeric(v[col]),
                "y": _numeric(v["metric"]), "scale": v[axis].astype(int).to_numpy(), "key": v["key"].to_numpy(),
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
    ys = [y for d in datas for s in d.series for y in s.y if math.isfinite(y)]
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
        fig.add_trace(go.Scatter(
            x=s.x, y=s.y, mode="lines+markers" if s.lines and not s.mean_x else "markers", name=name, legendgroup=group,
            line={"color": color, "width": 2}, marker={"color": color, "size": 6},
            customdata=s.keys, hovertemplate=f"{name}<br>{data.hparam} %{{x:.4g}}<br>{data.metric} %{{y:.4f}}"
                                             "<br>%{customdata}<extra></extra>",
            meta={"role": "trials", "scale": s.scale},
        ))
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
            interval = f" [{_fmt(s.opt_lo)}, {_fmt(s.opt_hi)}]" if s.opt_lo is not None else ""
            fig.add_trace(go.Scatter(
                x=[s.opt_x], y=[s.opt_y], mode="markers", name=f"optimum, {name}", legendgroup=group,
                showlegend=False, marker={"symbol": "star", "size": 15, "color": color,
                                          "line": {"color": "white", "width": 1}},
                hovertemplate=f"optimum at {name}: {data.hparam} {_fmt(s.opt_x)}{interval} ({s.opt_method})"
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


def count_traces(fig: go.Figure | dict[str, Any], role: str) -> int:
    """How many traces of a figure (or its JSON dict) have `meta.role == role`."""
    traces = fig.data if isinstance(fig, go.Figure) else fig.get("data", [])
    out = 0
    for t in traces:
        meta = t.meta if isinstance(fig, go.Figure) else t.get("meta")
        if isinstance(meta, dict) and meta.get("role") == role:
            out += 1
    return out


# ------------------------------------------------------------------------------------------------ transfer fit


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
            customdata=[[_fmt(lo), _fmt(hi), m] for lo, hi, m in zip(d.lo, d.hi, d.methods, strict=True)],
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
                text=[f"{_fmt(d.target_y)}"], textposition="top left", legendgroup=d.parametrization,
                hovertemplate=f"{label} at the target's {axis_name} %{{x}}: {d.hparam} %{{y:.4g}} "
                              f"[{_fmt(d.target_lo)}, {_fmt(d.target_hi)}]<extra></extra>",
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
            "interval": f"[{_fmt(t.lo)}, {_fmt(t.hi)}]" if t.lo is not None else "-",
            "base optimum": _fmt(t.base_value), "extrapolated": reach or "-", "note": t.note,
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
                "optimum": _fmt(o.value, 4), "interval": f"[{_fmt(o.lo)}, {_fmt(o.hi)}]" if o.lo is not None else "-",
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
            "fitted on": ", ".join(map(str, b.fitted_on)), "predicted": _fmt(b.predicted),
            "its own optimum": _fmt(b.observed) + (f" [{_fmt(b.observed_lo)}, {_fmt(b.observed_hi)}]"
                                                   if b.observed_lo is not None else ""),
            "error": f"{b.error:+.2f}{unit}" if b.error is not None else "-",
            "metric cost": (f"{b.regret:+.3g} ({100 * b.relative_regret:.1f}%)"
                            if b.regret is not None and b.relative_regret is not None else "-"),
        })
    return pd.DataFrame(rows, columns=["parametrization", "hyperparameter", "axis", "left out", "fitted on",
                                       "predicted", "its own optimum", "error", "metric cost"])


def noise_table(fit: FitResult) -> pd.DataFrame:
    """Trial noise beside the curve's rise near the optimum, per parametrization and hyperparameter."""
    rows = [{"parametrization": param_label(n.parametrization), "hyperparameter": n.hparam, "noise": _fmt(n.sigma),
             "from": n.source, "rise at": n.distance, "depth": _fmt(n.depth),
             "noise / depth": round(n.ratio, 2) if n.ratio is not None else None} for n in fit.noise]
    return pd.DataFrame(rows, columns=["parametrization", "hyperparameter", "noise", "from", "rise at", "depth",
                                       "noise / depth"])


def law_axes(fit: FitResult) -> list[str]:
    """The axes with a law in the fit, in CURVE_AXES order (the training length last)."""
    have = {law.axis for law in fit.laws}
    return [a for a in CURVE_AXES if a in have]


# ------------------------------------------------------------------------------------------------ trials


TRIAL_COLUMNS = ("key", "role", "parametrization", "width", "depth", "batch_size", "seq_len", "status", "metric",
                 "best_metric", "steps", "wall_time")


def filter_trials(trials: pd.DataFrame, *, parametrizations: Sequence[str] | None = None,
                  groups: Sequence[str] | None = None, statuses: Sequence[str] | None = None,
                  roles: Sequence[str] | None = None) -> pd.DataFrame:
    """The trials matching every given filter (None: no filter on that column)."""
    mask = np.ones(len(trials), dtype=bool)
    for col, allowed in (("parametrization", parametrizations), ("group", groups), ("status", statuses),
                         ("role", roles)):
        if allowed is not None and col in trials:
            mask &= trials[col].astype(str).isin(list(allowed)).to_numpy()
    return trials[mask]


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader scans: key, role, scale point, hyperparameters, status, metric, wall time."""
    hp = [c for c in trials.columns if c.startswith("hp.")]
    cols = [c for c in TRIAL_COLUMNS if c in trials] + hp
    out = trials[cols].copy()
    if "error" in trials:
        out["error"] = trials["error"].fillna("").astype(str).str.slice(0, 200)
    return out.rename(columns={c: c.removeprefix("hp.") for c in hp}).reset_index(drop=True)


def default_selection(trials: pd.DataFrame, limit: int = 8) -> list[str]:
    """The best completed trial of each scale point (and parametrization), best first, at most `limit`."""
    done = trials[(trials["status"] == "completed") & np.isfinite(_numeric(trials["metric"]))]
    if done.empty:
        return trials["key"].head(min(limit, 3)).tolist()
    best = done.sort_values("metric", kind="stable").groupby("group", sort=False).head(1)
    return best["key"].head(limit).tolist()


def learning_curves_figure(curves: pd.DataFrame, trials: pd.DataFrame, metric: str, *,
                           height: int = 430) -> go.Figure:
    """`metric` against step for each selected trial; a trial that ended on a non-finite value gets an x there."""
    fig = go.Figure()
    info = trials.set_index("key") if len(trials) else None
    sub = curves[curves["name"] == metric]
    keys = list(dict.fromkeys(sub["key"].tolist()))
    palette = pcolors.qualitative.Plotly + pcolors.qualitative.D3
    for i, key in enumerate(keys):
        c = sub[sub["key"] == key].sort_values("step", kind="stable")
        y = c["value"].to_numpy(dtype=float)
        x = c["step"].to_numpy()
        finite = np.isfinite(y)
        color = palette[i % len(palette)]
        status = str(info.loc[key, "status"]) if info is not None and key in info.index else ""
        fig.add_trace(go.Scatter(
            x=x[finite].tolist(), y=y[finite].tolist(), mode="lines", name=f"{key} ({status})" if status else key,
            line={"color": color, "width": 2, "dash": "dash" if status == "diverged" else "solid"},
            legendgroup=key, meta={"role": "curve", "key": key},
            hovertemplate=f"{key}<br>step %{{x}}: {metric} %{{y:.4f}}<extra></extra>",
        ))
        if (~finite).any():
            last = x[finite][-1] if finite.any() else x[0]
            y_last = y[finite][-1] if finite.any() else 0.0
            fig.add_trace(go.Scatter(
                x=[int(x[~finite][0])], y=[float(y_last)], mode="markers", name=f"{key}: {metric} not finite",
                marker={"symbol": "x", "size": 12, "color": color}, legendgroup=key, showlegend=False,
                hovertemplate=f"{key}: {metric} became non-finite at step %{{x}} (last finite {y_last:.4g} at step "
                              f"{last})<extra></extra>",
                meta={"role": "nonfinite", "key": key},
            ))
    fig.update_layout(title={"text": f"{metric} of the selected trials"}, height=height, font=FONT,
                      template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=metric)
    return fig


def checks_table(checks: Sequence[Any]) -> pd.DataFrame:
    """Stored checks (coordinate checks, verifications) as rows, whatever their record type."""
    rows = []
    for c in checks:
        d = c if isinstance(c, dict) else asdict(c) if is_dataclass(c) else dict(getattr(c, "__dict__", {}))
        rows.append({k: d.get(k) for k in ("kind", "parametrization", "passed", "summary", "created_at") if k in d})
    return pd.DataFrame(rows)
