"""A fit, as the terminal tables `mutransfer fit` prints."""

from __future__ import annotations

from typing import Any

from mutransfer.fit import FitResult, Optimum


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


def fit_tables(result: FitResult) -> list[Any]:
    """Rich renderables: optima per scale point, transfer laws, values at the target, warnings."""
    from rich.table import Table

    names = list(result.hparams)
    tables: list[Any] = []

    t = Table(title="optimum per scale point (95% bootstrap interval)")
    for col in ("param.", "scale point", "completed", "diverged", f"best {result.metric}", *names):
        t.add_column(col)
    for p in result.points:
        best = f"{p.best_metric:.4f}" if p.best_metric is not None else "-"
        t.add_row(p.parametrization, p.tag, str(p.n_completed), str(p.n_diverged), best,
                  *(_opt(p.optima.get(n)) for n in names))
    tables.append(t)

    if result.laws:
        t = Table(title="transfer law per axis (joint model): log2(optimum) = a + slope * log2(scale); the slope "
                        "used, 0 where the data do not carry one")
        for col in ("param.", "hparam", "axis", "points", "slope used", "interval", "free slope [interval]",
                    "note"):
            t.add_column(col)
        for law in result.laws:
            free = (f"{law.free_slope:+.2f} {_interval(law.free_slope_lo, law.free_slope_hi)}"
                    if law.free_slope is not None else "-")
            t.add_row(law.parametrization, law.hparam, law.axis, str(len(law.scales)),
                      f"{law.slope:+.3f}" if law.fitted else "-", _interval(law.slope_lo, law.slope_hi), free,
                      law.note)
        tables.append(t)

    if len(result.parametrizations) > 1 and result.laws:
        tables.append(_compare(result))

    if result.noise:
        t = Table(title="trial noise against the curve's depth near the optimum")
        for col in ("param.", "hparam", "noise sigma", "from", "rise at", "depth", "noise / depth"):
            t.add_column(col)
        for n in result.noise:
            t.add_row(n.parametrization, n.hparam, _num(n.sigma), n.source, n.distance, _num(n.depth),
                      f"{n.ratio:.2f}" if n.ratio is not None else "-")
        tables.append(t)

    if result.backtests:
        t = Table(title="backtest: the largest proxy left out, its optimum predicted from the others")
        for col in ("param.", "hparam", "axis", "left out", "fitted on", "predicted", "its own optimum",
                    "error", "metric cost"):
            t.add_column(col)
        for b in result.backtests:
            unit = " oct." if result.hparams.get(b.hparam) == "log" else ""
            cost = (f"{b.regret:+.3g} ({100 * b.relative_regret:.1f}%)" if b.regret is not None
                    and b.relative_regret is not None else _num(b.regret))
            t.add_row(b.parametrization, b.hparam, b.axis, str(b.held_out), ",".join(map(str, b.fitted_on)),
                      _num(b.predicted), f"{_num(b.observed)} {_interval(b.observed_lo, b.observed_hi)}",
                      f"{b.error:+.2f}{unit}" if b.error is not None else "-", cost)
        tables.append(t)

    t = Table(title=f"transferred to the target (width {result.target.width}, depth {result.target.depth}, "
                    f"batch {result.target.batch_size}, seq {result.target.seq_len})")
    for col in ("param.", "hparam", "value at target", "interval", "base optimum", "extrapolation"):
        t.add_column(col)
    for tr in result.transfers:
        reach = ", ".join(f"{s.axis} x{s.extrapolation:.3g}" for s in tr.steps if s.extrapolation > 1)
        t.add_row(tr.parametrization, tr.hparam, _num(tr.value), _interval(tr.lo, tr.hi), _num(tr.base_value),
                  reach or "-")
    tables.append(t)

    if result.forecasts:
        tables.append(forecast_table(result))

    if result.warnings:
        t = Table(title="warnings", show_header=True)
        t.add_column("code", style="yellow")
        t.add_column("where")
        t.add_column("message")
        for w in result.warnings:
            where = "/".join(x for x in (w.parametrization, w.hparam, w.scale, w.axis) if x)
            t.add_row(w.code, where, w.message)
        tables.append(t)
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


def forecast_table(result: FitResult) -> Any:
    from rich.table import Table

    title = f"the {result.metric} to expect at the target (a power law through each scale point's floor)"
    if result.preferred_reason:
        title += f"; {result.preferred_reason}"
    rows = forecast_rows(result)
    t = Table(title=title)
    for col in rows[0]:
        t.add_column(col)
    for r in rows:
        t.add_row(*r.values())
    return t


def compare_rows(result: FitResult) -> list[dict[str, Any]]:
    """µP against SP: for each hyperparameter and axis, each parametrization's slope side by side."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for law in result.laws:
        row = rows.setdefault((law.hparam, law.axis), {"hparam": law.hparam, "axis": law.axis})
        row[law.parametrization] = law
    return list(rows.values())


def _compare(result: FitResult) -> Any:
    from rich.table import Table

    params = list(result.parametrizations)
    t = Table(title="µP vs SP: how the optimum moves per doubling of scale (slope of log2 optimum; 0 = it "
                    "transfers)")
    t.add_column("hparam")
    t.add_column("axis")
    for p in params:
        t.add_column(f"{p} slope [interval]")
    t.add_column("reading")
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
        t.add_row(row["hparam"], row["axis"], *cells, reading)
    return t
