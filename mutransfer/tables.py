"""The terminal tables the CLI prints: pure functions from the API's typed results to rich Tables (or to the rows
and lines beside them). Nothing here prints or opens a store; `mutransfer.cli` prints what these return, and the
dashboard shows some of the same rows (`forecast_rows`, `compare_rows`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Column, Table

if TYPE_CHECKING:
    import pandas as pd

    from mutransfer.coordcheck.report import CoordCheckReport
    from mutransfer.fit import FitResult, Optimum
    from mutransfer.recipe import Recipe, Scale
    from mutransfer.storage import CheckInfo, SweepInfo
    from mutransfer.sweep import SweepSummary
    from mutransfer.target import TargetModel
    from mutransfer.verify import VerifyReport


def table(columns: Iterable[str | Column], rows: Iterable[Sequence[str]], **options: Any) -> Table:
    """A rich Table of these columns (a header, or a Column for one with options) and rows; `options` are
    Table's own (title, caption, ...)."""
    t = Table(*columns, **options)
    for row in rows:
        t.add_row(*row)
    return t


def dict_table(rows: list[dict[str, str]], **options: Any) -> Table:
    """A Table of rows that name their columns: the first row's keys are the headers, every row has them."""
    return table(list(rows[0]), (list(r.values()) for r in rows), **options)


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _interval(lo: float | None, hi: float | None) -> str:
    return f"[{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else "-"


def _opt(o: Optimum | None) -> str:
    if o is None or not o.found:
        return "none"
    mark = "" if o.method == "vertex" else f" ({o.method})"
    return f"{_num(o.value)} {_interval(o.lo, o.hi)}{mark}"


def _hparam(x: Any) -> str:
    """A trial's hyperparameter value as `mutransfer show` prints it (NaN: the trial did not have it)."""
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}"
    return str(x)


# ------------------------------------------------------------------------------------------------ sweeps


def sweeps_table(sweeps: list[SweepInfo]) -> Table:
    """`mutransfer ls`: one row per sweep."""
    from mutransfer.storage import FINISHED_STATUSES

    rows = []
    for s in sweeps:
        c = s.counts or {}
        done = sum(c.get(k, 0) for k in FINISHED_STATUSES)
        best = f"{s.best_metric:.4f}" if s.best_metric is not None else "-"
        rows.append((str(s.id), s.name, s.status, f"{done}/{s.total_trials}", str(c.get("diverged", 0)),
                     str(c.get("failed", 0)), best, f"{s.created_at:%Y-%m-%d %H:%M}"))
    return table(("id", "name", "status", "done/total", "diverged", "failed", "best", "created"), rows)


def best_trials_table(summary: SweepSummary) -> Table:
    """`mutransfer sweep`: the best trial of each scale point, in scale order."""
    from mutransfer.callbacks import group_order  # imports Ray: only once a sweep has run

    rows = []
    for group in sorted(summary.best, key=group_order):
        value, key = summary.best[group]
        param, tag = group.split("/", 1)
        rows.append((param, tag, f"{value:.4f}", key))
    return table(("parametrization", "scale point", "best metric", "trial"), rows, title="best trial per scale point")


def scale_points_table(frame: pd.DataFrame) -> Table:
    """`mutransfer show`: the trials of a sweep (`Store.trials_frame`) per scale point, verification trials apart,
    with the best completed trial's metric and hyperparameters."""
    hp_cols = [col for col in frame.columns if col.startswith("hp.")]
    # Stopped early (search.early_stop) and refine rounds (search.refine): shown where a sweep has them.
    stopped = bool(len(frame)) and bool((frame["status"] == "stopped").any())
    rounds = bool(len(frame)) and "round" in frame and bool((frame["round"] > 0).any())
    counts = ("completed", "diverged", "failed", *(("stopped",) if stopped else ()))
    columns = [col.removeprefix("hp.") + (" (best)" if col.startswith("hp.") else "")
               for col in ("scale point", "trials", *(("refined",) if rounds else ()), *counts, "best metric",
                           *hp_cols)]
    if len(frame):
        frame = frame.assign(group=[g + (" (verify)" if r == "verify" else "") for g, r in
                                    zip(frame["group"], frame["role"], strict=True)])
    rows = []
    for group, trials in frame.groupby("group", sort=False):
        done = trials[trials["status"] == "completed"]
        if len(done):
            i = done["metric"].idxmin()
            best = [f"{done.loc[i, 'metric']:.4f}", *(_hparam(done.loc[i, col]) for col in hp_cols)]
        else:
            best = ["-", *("-" for _ in hp_cols)]
        n = trials["status"].value_counts()
        refined = (str(int((trials["round"] > 0).sum())),) if rounds else ()
        rows.append((str(group), str(len(trials)), *refined, *(str(n.get(c, 0)) for c in counts), *best))
    return table(columns, rows)


def check_lines(checks: list[CheckInfo]) -> list[str]:
    """The latest check of each kind and parametrization (a resumed sweep runs its coordinate check again), one
    line each, in rich markup."""
    latest = {(x.kind, x.parametrization): x for x in checks}
    if not latest:
        return ["checks: none stored (`mutransfer coord-check RECIPE`, `mutransfer verify SWEEP`)"]
    lines = []
    for (kind, param), x in sorted(latest.items()):
        what = {"coord": "coordinate check", "coord_depth": "coordinate check over depth",
                "verify": "verification"}.get(kind, kind)
        verdict = "[green]passed[/]" if x.passed else "[red]failed[/]"
        lines.append(f"{what} ({param}, {x.created_at:%Y-%m-%d %H:%M}): {verdict}: {escape(x.summary)}")
    return lines


# ------------------------------------------------------------------------------------------------ checks


VERDICT_COLORS = {"flat": "green", "blows up": "red", "vanishes": "yellow", "non-finite": "red", "unchanged": "dim"}


def coord_check_table(recipe: Recipe, rep: CoordCheckReport) -> Table:
    """`mutransfer coord-check`: each layer's change at the smallest and largest size, its slope and verdict."""
    axis = rep.axis
    if axis == "depth":
        title = (f"coordinate check over depth: {recipe.name} ({rep.parametrization}, {recipe.model.family}, "
                 f"depth_scaling {recipe.model.depth_scaling}), width {rep.width}, depths "
                 f"{', '.join(map(str, rep.widths))}")
        judged = ("; over depth only the residual stream (<stack>.last) and the logits are judged, other layers' "
                  "verdicts are in (brackets)")
    else:
        title = (f"coordinate check: {recipe.name} ({rep.parametrization}, {recipe.model.family}), widths "
                 f"{', '.join(map(str, rep.widths))}")
        judged = ""
    letter = axis[0]
    columns = [Column("layer", no_wrap=True), Column("role", no_wrap=True),
               *(Column(col, justify="right", no_wrap=True, min_width=6)
                 for col in (f"{letter}{rep.widths[0]}", f"{letter}{rep.widths[-1]}", "slope")),
               Column("verdict", no_wrap=True, min_width=10)]
    rows = []
    for x in rep.layers:
        color = VERDICT_COLORS.get(x.verdict, "white")
        shown = f"[{color}]{x.verdict}[/]" if x.judged else f"[dim]({x.verdict})[/]"
        rows.append((escape(x.name), x.role, f"{x.values[0]:.3g}", f"{x.values[-1]:.3g}", f"{x.slope:+.2f}", shown))
    attention = ("; <module>.attn_logits: an attention call's scale·|q|·|k|, the largest logit it can make"
                 if any(x.role == "attention" for x in rep.layers) else "")
    return table(columns, rows, title=title, caption=f"{letter}<N>: mean |change| of the layer's output per "
                                                     f"coordinate at {axis} N; slope: of log(change) against "
                                                     f"log({axis}){attention}{judged}")


def verify_table(rep: VerifyReport, metric: str) -> Table:
    """`mutransfer verify`: the transferred value and its neighbours at the verification size, one parametrization."""
    rows = [(f"x{row.factor:g}" + (" (transferred)" if row.factor == 1.0 else ""), f"{row.value:.4g}",
             f"{row.metric:.4f}" if row.metric is not None else "-", row.statuses) for row in rep.rows]
    return table(("factor", rep.hparam, metric, "status"), rows,
                 title=f"verification at {rep.scale} ({rep.parametrization})")


def side_by_side_table(rows: list[dict[str, str]], scale: Scale) -> Table:
    """`mutransfer verify` of both parametrizations: their transferred configs side by side at `scale` (the rows
    of `mutransfer.verify.side_by_side`)."""
    return dict_table(rows, title=f"the transferred configs side by side at {scale.tag()}")


# ------------------------------------------------------------------------------------------------ the fit


def fit_tables(result: FitResult) -> list[Table]:
    """`mutransfer fit`: optima per scale point, transfer laws, values at the target, warnings."""
    names = list(result.hparams)
    tables: list[Table] = []

    rows: list[Sequence[str]] = [
        (p.parametrization, p.tag, str(p.n_completed), str(p.n_diverged),
         f"{p.best_metric:.4f}" if p.best_metric is not None else "-", *(_opt(p.optima.get(n)) for n in names))
        for p in result.points]
    tables.append(table(("param.", "scale point", "completed", "diverged", f"best {result.metric}", *names), rows,
                        title="optimum per scale point (95% bootstrap interval)"))

    if result.laws:
        rows = []
        for law in result.laws:
            free = (f"{law.free_slope:+.2f} {_interval(law.free_slope_lo, law.free_slope_hi)}"
                    if law.free_slope is not None else "-")
            rows.append((law.parametrization, law.hparam, law.axis, str(len(law.scales)),
                         f"{law.slope:+.3f}" if law.fitted else "-", _interval(law.slope_lo, law.slope_hi), free,
                         law.note))
        tables.append(table(("param.", "hparam", "axis", "points", "slope used", "interval", "free slope [interval]",
                             "note"), rows,
                            title="transfer law per axis (joint model): log2(optimum) = a + slope * log2(scale); the "
                                  "slope used, 0 where the data do not carry one"))

    if len(result.parametrizations) > 1 and result.laws:
        tables.append(_compare(result))

    if result.noise:
        rows = [(n.parametrization, n.hparam, _num(n.sigma), n.source, n.distance, _num(n.depth),
                 f"{n.ratio:.2f}" if n.ratio is not None else "-") for n in result.noise]
        tables.append(table(("param.", "hparam", "noise sigma", "from", "rise at", "depth", "noise / depth"), rows,
                            title="trial noise against the curve's depth near the optimum"))

    if result.backtests:
        rows = []
        for b in result.backtests:
            unit = " oct." if result.hparams.get(b.hparam) == "log" else ""
            cost = (f"{b.regret:+.3g} ({100 * b.relative_regret:.1f}%)" if b.regret is not None
                    and b.relative_regret is not None else _num(b.regret))
            rows.append((b.parametrization, b.hparam, b.axis, str(b.held_out), ",".join(map(str, b.fitted_on)),
                         _num(b.predicted), f"{_num(b.observed)} {_interval(b.observed_lo, b.observed_hi)}",
                         f"{b.error:+.2f}{unit}" if b.error is not None else "-", cost))
        tables.append(table(("param.", "hparam", "axis", "left out", "fitted on", "predicted", "its own optimum",
                             "error", "metric cost"), rows,
                            title="backtest: the largest proxy left out, its optimum predicted from the others"))

    rows = []
    for tr in result.transfers:
        reach = ", ".join(f"{s.axis} x{s.extrapolation:.3g}" for s in tr.steps if s.extrapolation > 1)
        rows.append((tr.parametrization, tr.hparam, _num(tr.value), _interval(tr.lo, tr.hi), _num(tr.base_value),
                     reach or "-"))
    tables.append(table(("param.", "hparam", "value at target", "interval", "base optimum", "extrapolation"), rows,
                        title=f"transferred to the target (width {result.target.width}, depth "
                              f"{result.target.depth}, batch {result.target.batch_size}, seq "
                              f"{result.target.seq_len})"))

    if result.forecasts:
        tables.append(forecast_table(result))

    if result.warnings:
        rows = [(w.code, "/".join(x for x in (w.parametrization, w.hparam, w.scale, w.axis) if x), w.message)
                for w in result.warnings]
        tables.append(table((Column("code", style="yellow"), "where", "message"), rows, title="warnings",
                            show_header=True))
    return tables


def forecast_rows(result: FitResult) -> list[dict[str, str]]:
    """The metric to expect at the target per parametrization, as table rows (the CLI's and the dashboard's)."""
    def m(x: float | None) -> str:
        return f"{x:.4g}" if x is not None else "-"

    rows = []
    for f in result.forecasts:
        exps = ", ".join(f"{a} {v:+.3f} {_interval(f.exponents_lo.get(a), f.exponents_hi.get(a))}"
                         for a, v in f.exponents.items())
        far = ", ".join(f"{a} +{v:.1f}" for a, v in f.doublings.items() if v > 0)
        bt = (f"{f.backtest_scale}: {m(f.backtest_predicted)} vs {m(f.backtest_observed)} "
              f"({100 * f.backtest_error:+.1f}%)" if f.backtest_error is not None else "-")
        rows.append({"param.": f.parametrization, f"predicted {result.metric}": m(f.value),
                     "interval": f"[{m(f.lo)}, {m(f.hi)}]" if f.lo is not None else "-", "law exponent per doubling": exps or "-",
                     "doublings beyond the proxies": far or "-", "backtest": bt, "note": f.note})
    return rows


def forecast_table(result: FitResult) -> Table:
    """The forecast rows as a table, titled with why the export prefers the parametrization it does."""
    title = f"the {result.metric} to expect at the target (a power law through each scale point's floor)"
    if result.preferred_reason:
        title += f"; {result.preferred_reason}"
    return dict_table(forecast_rows(result), title=title)


def compare_rows(result: FitResult) -> list[dict[str, Any]]:
    """µP against SP: for each hyperparameter and axis, each parametrization's slope side by side."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for law in result.laws:
        row = rows.setdefault((law.hparam, law.axis), {"hparam": law.hparam, "axis": law.axis})
        row[law.parametrization] = law
    return list(rows.values())


def _compare(result: FitResult) -> Table:
    params = list(result.parametrizations)
    rows = []
    for row in compare_rows(result):
        cells, flat = [], {}
        for p in params:
            law = row.get(p)
            if law is None or not law.fitted:
                cells.append("-")
                continue
            cells.append(f"{law.slope:+.2f} {_interval(law.slope_lo, law.slope_hi)}")
            # The reading is the model's choice, the one the export uses: a kept slope drifts, a dropped one not.
            flat[p] = not law.kept or law.slope == 0.0
        reading = ", ".join(f"{p}: {'stays put' if flat[p] else f'drifts {row[p].slope:+.2f}/doubling'}"
                            for p in flat)
        rows.append((row["hparam"], row["axis"], *cells, reading))
    return table(("hparam", "axis", *(f"{p} slope [interval]" for p in params), "reading"), rows,
                 title="µP vs SP: how the optimum moves per doubling of scale (slope of log2 optimum; 0 = it "
                       "transfers)")


# ------------------------------------------------------------------------------------------------ the target


def param_groups_table(tm: TargetModel) -> Table:
    """`mutransfer target`: each parameter group's absolute learning rate, weight decay and init."""
    rows = []
    for g in tm.param_groups:
        init = g["init"] if g["init"] != "normal" else f"normal({g['init_std']:.3g})"
        rows.append((g["name"], str(g["count"]), "x".join(map(str, g["shape"])), g["kind"], f"{g['lr']:.4g}",
                     f"{g['weight_decay']:.4g}", str(init)))
    return table(("group", "tensors", "shape", "kind", "lr", "weight decay", "init"), rows,
                 title=f"per-group learning rates ({tm.optimizer})")
