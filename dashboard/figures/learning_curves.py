"""The Trials page's data and figure: trials filtered and tabled, the default pick, and the learning curves of
the picked trials."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go

from dashboard.figures.style import FONT, numeric

# `round`: 0 the recipe's draws, k a refine round's; `floor` (only when some trial was stopped early): the level a
# stopped trial would have ended at least at (mutransfer.fit.stopped); `steps` how far a trial got, of `steps_planned`.
TRIAL_COLUMNS = ("key", "role", "round", "parametrization", "width", "depth", "batch_size", "seq_len", "status",
                 "metric", "floor", "best_metric", "steps", "steps_planned", "wall_time")


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
    """The columns a reader scans: key, role, round, scale point, hyperparameters, status, metric (a stopped
    trial's: where it stopped) and floor, steps, wall time."""
    hp = [c for c in trials.columns if c.startswith("hp.")]
    cols = [c for c in TRIAL_COLUMNS if c in trials] + hp
    out = trials[cols].copy()
    if "error" in trials:
        out["error"] = trials["error"].fillna("").astype(str).str.slice(0, 200)
    return out.rename(columns={c: c.removeprefix("hp.") for c in hp}).reset_index(drop=True)


def default_selection(trials: pd.DataFrame, limit: int = 8) -> list[str]:
    """The best completed trial of each scale point (and parametrization), best first, at most `limit`."""
    done = trials[(trials["status"] == "completed") & np.isfinite(numeric(trials["metric"]))]
    if done.empty:
        return trials["key"].head(min(limit, 3)).tolist()
    best = done.sort_values("metric", kind="stable").groupby("group", sort=False).head(1)
    return best["key"].head(limit).tolist()


def learning_curves_figure(curves: pd.DataFrame, trials: pd.DataFrame, metric: str, *,
                           height: int = 430) -> go.Figure:
    """`metric` against step for each selected trial; a trial that ended on a non-finite value gets an x there, one
    stopped early (search.early_stop) is dotted and ends at the step it reached."""
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
        row = info.loc[key] if info is not None and key in info.index else None
        status = str(row["status"]) if row is not None else ""
        why = ""
        if row is not None and status == "stopped":
            reached, planned = row.get("steps"), row.get("steps_planned")
            at = f" at step {int(reached)}" if reached is not None and pd.notna(reached) else ""
            of = f" of {int(planned)}" if at and planned is not None and pd.notna(planned) else ""
            why = f"<br>stopped early{at}{of} by the sweep's scheduler"
        fig.add_trace(go.Scatter(
            x=x[finite].tolist(), y=y[finite].tolist(), mode="lines", name=f"{key} ({status})" if status else key,
            line={"color": color, "width": 2,
                  "dash": {"diverged": "dash", "stopped": "dot"}.get(status, "solid")},
            legendgroup=key, meta={"role": "curve", "key": key, "status": status},
            hovertemplate=f"{key}<br>step %{{x}}: {metric} %{{y:.4f}}{why}<extra></extra>",
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
