"""Check a transfer at a size larger than any proxy: the transferred value against its neighbours.

`mutransfer verify SWEEP --width 1024` trains, at that size, the value the fit transfers there and the same
value times each factor (x0.5, x2 by default), as `verify` trials of the same sweep. If the transferred value
is the best of them, or close to it, the transfer held at that size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
from pydantic import ValidationError

from mutransfer.errors import MutransferError, option
from mutransfer.fit import FitResult, value_at
from mutransfer.gpt_shape import llama_options_problem
from mutransfer.plan import TrialSpec, spec_for
from mutransfer.recipe import AXES, Recipe, RecipeError, Scale, is_decoder
from mutransfer.recipe.validation import format_error

DEFAULT_FACTORS = (0.5, 1.0, 2.0)


class VerifyError(MutransferError, ValueError):
    """A verification that cannot be planned (one line, for the CLI)."""


def verify_scale(recipe: Recipe, sizes: dict[str, int]) -> Scale:
    """The base proxy with the given axes changed; at least one of them beyond every proxy on its axis."""
    if not sizes:
        raise VerifyError(f"give the size to verify at: {option('width')}, {option('depth')}, {option('batch_size')} or "
                          f"{option('seq_len')}")
    points = recipe.scales.points()
    beyond = [a for a, v in sizes.items() if v > max(getattr(p, a) for p in points)]
    if not beyond:
        largest = ", ".join(f"{a} {max(getattr(p, a) for p in points)}" for a in sizes)
        raise VerifyError(f"verify at a size larger than every proxy (largest: {largest})")
    try:
        scale = recipe.scales.base.model_copy(update=sizes)
        Scale.model_validate(scale.model_dump())
    except ValidationError as e:  # pydantic's own text spans lines: the one-line form names the field
        raise VerifyError(f"invalid size {sizes}: {format_error(e)}") from e
    if is_decoder(recipe.model.family):
        div = recipe.model.head_dim or recipe.model.n_heads or 1
        if scale.width % div:
            raise VerifyError(f"{option('width')} {scale.width} is not a multiple of the model's head size/count {div}")
    m = recipe.model
    if m.family == "hf-llama":  # its KV heads must group the heads at this width too
        problem = llama_options_problem(m.options, m.head_dim, m.n_heads,
                                        [("model.base_width", m.base_width), ("width", scale.width)])
        if problem is not None:
            raise VerifyError(f"{option('width')} {problem[1]}")
    return scale


def plan_verification(recipe: Recipe, fit: FitResult, scale: Scale, *, parametrization: str, hparam: str,
                      factors: tuple[float, ...] = DEFAULT_FACTORS, repeats: int = 1) -> list[TrialSpec]:
    """Trials at `scale`: every swept hyperparameter at its fitted value there, `hparam` times each factor."""
    kind = fit.hparams.get(hparam)
    if kind is None:
        raise VerifyError(f"{option('hparam')}: {hparam!r} was not swept (swept: {', '.join(fit.hparams)})")
    if kind == "choice":
        raise VerifyError(f"{option('hparam')}: {hparam!r} is a choice; verify a numeric hyperparameter")
    if 1.0 not in factors:
        factors = (*factors, 1.0)
    values: dict[str, Any] = {}
    base_best = fit.point(parametrization, fit.base).best_hparams
    for name in fit.hparams:
        v = value_at(fit, parametrization, name, scale)
        values[name] = v if v is not None else base_best.get(name)
    if values[hparam] is None:
        raise VerifyError(f"the fit has no optimum of {hparam} at the base scale point: nothing to verify")
    specs = []
    for i, f in enumerate(sorted(factors)):
        hp = {**values, hparam: values[hparam] * f}
        for r in range(repeats):
            spec = spec_for(recipe, parametrization, scale, i, r, hp)
            key = f"{spec.group}/verify-{hparam}-x{f:g}" + (f"-r{r}" if repeats > 1 else "")
            specs.append(replace(spec, key=key))
    return specs


@dataclass(frozen=True)
class VerifyRow:
    factor: float
    value: float
    metric: float | None  # mean over repeats of completed trials; None when none completed
    statuses: str


@dataclass(frozen=True)
class VerifyReport:
    parametrization: str
    hparam: str
    scale: str
    rows: tuple[VerifyRow, ...]
    transferred_is_best: bool
    gap: float | None  # metric of the transferred value minus the best metric (0 when it is the best)
    relative_gap: float | None

    def summary(self) -> str:
        tr = next(r for r in self.rows if r.factor == 1.0)
        if tr.metric is None:
            return (f"the transferred {self.hparam} {tr.value:.4g} did not complete at {self.scale} "
                    f"({tr.statuses}): the transfer failed there")
        if self.transferred_is_best:
            return (f"the transferred {self.hparam} {tr.value:.4g} was the best of "
                    f"{len(self.rows)} values at {self.scale}: the transfer held")
        best = min((r for r in self.rows if r.metric is not None), key=lambda r: r.metric)  # type: ignore[arg-type,return-value]
        return (f"at {self.scale}, {self.hparam} x{best.factor:g} ({best.value:.4g}) beat the transferred "
                f"{tr.value:.4g} by {self.gap:.4g} ({100 * (self.relative_gap or 0):.1f}% of the metric)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(frame: pd.DataFrame, specs: list[TrialSpec], hparam: str) -> VerifyReport:
    """Compare the verification trials (from `Store.trials_frame`) of one plan."""
    keys = {s.key for s in specs}
    rows_by_factor: dict[float, list[Any]] = {}
    for spec in specs:
        factor = float(spec.key.split(f"verify-{hparam}-x", 1)[1].split("-r")[0])
        rows_by_factor.setdefault(factor, [])
    got = frame[frame["key"].isin(keys)]
    for _, row in got.iterrows():
        factor = float(str(row["key"]).split(f"verify-{hparam}-x", 1)[1].split("-r")[0])
        rows_by_factor[factor].append(row)
    out = []
    for factor in sorted(rows_by_factor):
        rows = rows_by_factor[factor]
        done = [float(r["metric"]) for r in rows if r["status"] == "completed" and pd.notna(r["metric"])]
        value = float(next(s.hparams[hparam] for s in specs if f"-x{factor:g}" in s.key))
        statuses = ", ".join(sorted({str(r["status"]) for r in rows})) or "not run"
        out.append(VerifyRow(factor, value, sum(done) / len(done) if done else None, statuses))
    finite = [r for r in out if r.metric is not None]
    tr = next(r for r in out if r.factor == 1.0)
    best = min(finite, key=lambda r: r.metric) if finite else None  # type: ignore[arg-type,return-value]
    is_best = best is not None and tr.metric is not None and tr.metric <= best.metric  # type: ignore[operator]
    gap = (tr.metric - best.metric) if best is not None and tr.metric is not None else None  # type: ignore[operator]
    rel = gap / abs(best.metric) if gap is not None and best is not None and best.metric else None
    spec0 = specs[0]
    return VerifyReport(spec0.parametrization, hparam, spec0.scale.tag(), tuple(out), is_best, gap,
                        rel if rel is None or math.isfinite(rel) else None)


def side_by_side(reports: list[VerifyReport], fit: FitResult, scale: Scale) -> tuple[list[dict[str, str]], str]:
    """Each parametrization's transferred config at the verification size, side by side: rows for a table, and
    one line saying which trained the better model there (and whether the fit had predicted it)."""
    rows, done = [], []
    for rep in reports:
        tr = next(r for r in rep.rows if r.factor == 1.0)
        fc = fit.forecast(rep.parametrization)
        pred = predicted_at(fc, fit, scale) if fc is not None else None
        rows.append({"parametrization": rep.parametrization, f"transferred {rep.hparam}": f"{tr.value:.4g}",
                     "metric": f"{tr.metric:.4f}" if tr.metric is not None else tr.statuses,
                     "predicted by the fit": f"{pred:.4f}" if pred is not None else "-",
                     "best neighbour": "the transferred value" if rep.transferred_is_best else
                     f"{100 * (rep.relative_gap or 0):.1f}% better"})
        if tr.metric is not None:
            done.append((tr.metric, rep.parametrization))
    if len(done) < 2:
        return rows, "fewer than two parametrizations completed their transferred config: nothing to compare"
    done.sort()
    (m0, p0), (m1, p1) = done[0], done[1]
    line = (f"at {scale.tag()}, {p0}'s transferred config trained the better model ({m0:.4f} against {p1}'s "
            f"{m1:.4f}, {100 * (m1 - m0) / abs(m1):.1f}% lower)")
    if fit.preferred is not None:
        line += "; the fit had predicted " + ("so" if fit.preferred == p0 else f"{fit.preferred}")
    return rows, line


def predicted_at(fc: Any, fit: FitResult, scale: Scale) -> float | None:
    """The forecast's law at another size (the target's value moved along each axis's exponent)."""
    if fc.value is None:
        return None
    u = math.log2(fc.value)
    for axis, b in fc.exponents.items():
        t = fit.target_size(axis)
        if t is None:
            return None
        u += b * (math.log2(getattr(scale, axis)) - math.log2(t))
    return 2.0**u


def parse_factors(text: str) -> tuple[float, ...]:
    try:
        factors = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise VerifyError(f"{option('factors')}: {text!r} is not a comma-separated list of numbers") from e
    if not factors or any(f <= 0 for f in factors):
        raise VerifyError(f"{option('factors')}: {text!r}: give positive multipliers such as 0.5,2")
    return factors


__all__ = ["AXES", "DEFAULT_FACTORS", "RecipeError", "VerifyError", "VerifyReport", "plan_verification", "report",
           "side_by_side", "verify_scale", "parse_factors"]
