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
        t = Table(title="transfer law per axis: log2(optimum) = a + slope * log2(scale)")
        for col in ("param.", "hparam", "axis", "points", "slope", "slope interval", "note"):
            t.add_column(col)
        for law in result.laws:
            t.add_row(law.parametrization, law.hparam, law.axis, str(len(law.scales)),
                      f"{law.slope:+.3f}" if law.fitted else "-", _interval(law.slope_lo, law.slope_hi), law.note)
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
