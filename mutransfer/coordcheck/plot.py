"""The coordinate check's plot: activation change against width (or depth) in log-log, one line per layer and
one panel per step, as mup's papers draw it. `figure_data` is the plot's data, pure; plotly is imported only by
`figure`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mutransfer.coordcheck.report import ROLE_WORDS

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from mutransfer.coordcheck.report import CoordCheckReport


def figure_data(report: CoordCheckReport) -> list[dict[str, Any]]:
    """Long rows for the plot: layer, role, verdict, slope, step, width (or depth: the report's axis), value (the
    last step when steps were not tracked). Pure: a stored report's dict, through `CoordCheckReport.from_dict`,
    plots the same."""
    rows: list[dict[str, Any]] = []
    for layer in report.layers:
        per_step = layer.step_values or [layer.values]
        first = report.steps - len(per_step) + 1
        for t, values in enumerate(per_step, start=first):
            for width, value in zip(report.widths, values, strict=True):
                rows.append({"layer": layer.name, "role": layer.role, "verdict": layer.verdict,
                             "slope": layer.slope, "step": t, report.axis: width, "value": value})
    return rows


def figure(report: CoordCheckReport) -> go.Figure:
    """Log-log activation change against width (or depth), one line per layer, one panel per step; failing layers
    bold; over depth, the layers not judged (interior blocks) dotted."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = figure_data(report)
    steps = sorted({r["step"] for r in rows})
    fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"after step {t}" for t in steps])
    palette = px.colors.qualitative.Dark24
    axis = report.axis
    for i, layer in enumerate(report.layers):
        color = palette[i % len(palette)]
        note = ", " + layer.verdict if layer.bad else "" if layer.judged else ", not judged"
        label = f"{layer.name} ({layer.slope:+.2f}{note})"
        for col, t in enumerate(steps, start=1):
            pts = [(r[axis], r["value"]) for r in rows if r["layer"] == layer.name and r["step"] == t
                   and r["value"] is not None and math.isfinite(r["value"]) and r["value"] > 0]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label,
                legendgroup=layer.name, showlegend=col == 1,
                line={"color": color, "width": 3.5 if layer.bad else 1.2, "dash": "solid" if layer.judged else "dot"},
                marker={"size": 7 if layer.bad else 4}, opacity=1.0 if layer.bad else 0.75,
                hovertemplate=f"{layer.name} ({ROLE_WORDS.get(layer.role, layer.role)})<br>{axis} %{{x}}<br>"
                              f"change %{{y:.3g}}<extra>step {t}</extra>",
            ), row=1, col=col)
    fig.update_xaxes(type="log", title_text=axis, tickvals=report.widths)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="mean |Δ activation| per coordinate" if report.metric == "change"
                     else "mean |activation|", row=1, col=1)
    if report.over_depth:
        status = "passed" if report.stable else (
            "FAILED" if report.expects_flat else "grows with depth (expected without depth scaling)")
        what = f"over depth, width {report.width}, depth_scaling {report.depth_scaling}"
        flat = "flat lines = depth-stable (judged: the residual stream and the logits)"
    else:
        status = "passed" if report.stable else ("FAILED" if report.mup else "not width-stable (expected for SP)")
        what, flat = "", "flat lines = width-stable"
    fig.update_layout(
        title={"text": f"Coordinate check{' ' + what if what else ''}: {report.recipe} ({report.parametrization}, "
                       f"{report.family}): {status}"
                       f"<br><sup>{flat}; slope > {report.blow_up:+.2f} blows up, "
                       f"< {report.vanish:+.2f} vanishes; {report.optimizer} lr {report.lr:g}</sup>"},
        legend={"title": {"text": "layer (slope)"}}, template="plotly_white", height=520,
        width=max(700, 330 * len(steps) + 300),
    )
    return fig


def save_figure(report: CoordCheckReport, path: Any) -> None:
    """The plot as a standalone HTML page (plotly.js from its CDN); PNG would need kaleido."""
    figure(report).write_html(str(path), include_plotlyjs="cdn")

