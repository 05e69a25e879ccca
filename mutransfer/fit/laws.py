"""Laws and transfer: the joint model read along each scale axis, and moved to the target (or any size).

What the fit table prints, what the dashboard draws and what the export writes all come from here, so they agree:
a law's `slope` is the one the transfer uses (0 when the joint model dropped it), and `value_at` applies exactly
the laws that `transfer` applied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mutransfer.fit.joint import JointFit
from mutransfer.fit.optima import interval, outside
from mutransfer.fit.result import AxisStep, FitResult, FitWarning, Law, PointFit, Transfer
from mutransfer.fit.warnings import fmt
from mutransfer.recipe import AXES, Recipe, Scale

MUP_SLOPE_LOG = 0.25  # octaves per doubling of width: a kept µP width slope beyond this is flagged
MUP_SLOPE_LINEAR = 0.05  # of the searched range per doubling of width
HORIZON_RATIO = 2.0


def has_steps(recipe: Recipe) -> bool:
    """Whether the recipe's scale points carry their own training steps (the token-horizon axis)."""
    return any(p.steps is not None for p in recipe.scales.points())


def fit_axes(recipe: Recipe) -> tuple[str, ...]:
    """The scale axes a point is identified by: AXES, and steps when the recipe gives proxies their own steps."""
    return (*AXES, "steps") if has_steps(recipe) else AXES


def target_at(recipe: Recipe, axis: str) -> int | None:
    """The target's size along an axis; its steps are its tokens over tokens per step (None without tokens)."""
    return recipe.target_steps() if axis == "steps" else getattr(recipe.target, axis)


def along(axis: str, by_scale: dict[Scale, PointFit], base: Scale) -> list[Scale]:
    """Points that differ from the base only along `axis` (the base included), ascending."""
    others = [a for a in (*AXES, "steps") if a != axis]
    pts = [s for s in by_scale if all(getattr(s, a) == getattr(base, a) for a in others)]
    return sorted(pts, key=lambda s: getattr(s, axis))


def _free_interval(draws: np.ndarray, point: float) -> tuple[float | None, float | None]:
    if draws.size == 0:
        return None, None
    return interval(draws, point)


def axis_law(param: str, name: str, kind: str, axis: str, by_scale: dict[Scale, PointFit], base: Scale,
             jf: JointFit | None, span: float, warnings: list[FitWarning]) -> Law:
    """The law of one hyperparameter along one axis, as the joint model has it."""
    coord = "log2" if kind == "log" else "linear"
    pts = [s for s in along(axis, by_scale, base) if by_scale[s].optima[name].found]
    scales = tuple(getattr(s, axis) for s in pts)
    optima = tuple(float(by_scale[s].optima[name].u) for s in pts)  # type: ignore[arg-type]
    weights = tuple(float(by_scale[s].n_completed) for s in pts)
    if jf is None or name not in jf.names or axis not in jf.axes:
        note = f"fewer than 2 {axis} points with completed trials of {name}: no law, slope 0"
        warnings.append(FitWarning("no_law", note, param, name, axis=axis))
        return Law(parametrization=param, hparam=name, axis=axis, coord=coord, scales=scales, optima=optima,
                   weights=weights, slope=0.0, note=note, kept=False)
    j, a = jf.index(name), jf.axes.index(axis)
    slope = float(jf.slopes[j, a])
    kept = bool(jf.kept[j, a])
    lo, hi = _free_interval(jf.boot_slopes[:, j, a], slope)
    free = float(jf.free_slopes[j, a])
    flo, fhi = _free_interval(jf.boot_free_slopes[:, j, a], free)
    wald = float(jf.wald[j, a])
    unit = "octaves" if kind == "log" else "units"
    evidence = f"Wald chi2 {wald:.2f} {'>' if kept else '<'} log(n) {jf.threshold:.2f}"
    if kept:
        note = f"slope kept ({evidence})"
    else:
        free_iv = f" [{flo:+.2f}, {fhi:+.2f}]" if flo is not None and fhi is not None else ""
        note = f"slope set to 0: the data do not carry one (free fit {free:+.2f}{free_iv} {unit}/doubling, {evidence})"
    unstable = outside(slope, lo, hi)
    if unstable:
        warnings.append(FitWarning(
            "unstable", f"the {axis} slope of {name} ({slope:+.2f}) lies outside its own bootstrap interval "
            f"[{lo:+.2f}, {hi:+.2f}]: the estimate is unstable; more trials near the optimum would steady it",
            param, name, axis=axis))
    intercept = float(jf.mu0[j] - slope * math.log2(getattr(base, axis)))
    law = Law(parametrization=param, hparam=name, axis=axis, coord=coord, scales=scales, optima=optima,
              weights=weights, intercept=intercept, slope=slope, slope_lo=lo, slope_hi=hi, note=note, kept=kept,
              free_slope=free, free_slope_lo=flo, free_slope_hi=fhi, wald=wald, threshold=jf.threshold,
              unstable=unstable)
    if param == "mup" and axis == "width" and kept:
        limit = MUP_SLOPE_LOG if kind == "log" else MUP_SLOPE_LINEAR * span
        if abs(slope) > limit:
            iv = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None else ""
            warnings.append(FitWarning(
                "mup_width_slope",
                f"under µP the {name} optimum moves {slope:+.2f}{iv} {unit} per doubling of width, and the data "
                f"carry that slope ({evidence}): the model may not be in µP: run the coordinate check",
                param, name, axis="width"))
    return law


def numeric_transfer(param: str, name: str, kind: str, by_scale: dict[Scale, PointFit], laws: dict[str, Law],
                     jf: JointFit | None, recipe: Recipe, b_u: tuple[float, float],
                     warnings: list[FitWarning]) -> Transfer:
    """The joint model's optimum at the target: mu0 moved along every kept slope."""
    base = recipe.scales.base
    target = recipe.target
    steps = []
    for axis in fit_axes(recipe):
        b_val, t_val = getattr(base, axis), target_at(recipe, axis)
        law = laws.get(axis)
        proxies = [getattr(s, axis) for s in along(axis, by_scale, base)] if law is not None else [b_val]
        largest = max(proxies) if proxies else b_val
        if t_val is None:
            note = "the target states no tokens: its training steps are unknown, kept the base proxy's horizon"
            warnings.append(FitWarning("no_target_steps", note, param, name, axis=axis))
            steps.append(AxisStep(axis, b_val, b_val, largest, False, 0.0, 0.0, b_val / largest,
                                  math.log2(b_val / largest), note))
            continue
        ratio = t_val / largest
        dbl = math.log2(ratio)
        if law is None:
            note = "not swept: kept the base value"
            if t_val != b_val:
                note += f" although the target's {axis} is {t_val} (proxies: {b_val})"
                warnings.append(FitWarning(
                    "not_swept", f"{axis} was not swept: {name} keeps its base-scale value at the target's {axis} "
                    f"{t_val} ({math.log2(t_val / b_val):+.1f} doublings from the base)", param, name, axis=axis))
            steps.append(AxisStep(axis, b_val, t_val, largest, False, 0.0, 0.0, ratio, dbl, note))
            continue
        shift = law.slope * (math.log2(t_val) - math.log2(b_val))
        note = law.note if not law.kept else (f"extrapolated {dbl:.1f} doublings beyond the largest proxy"
                                              if dbl > 0 else "")
        steps.append(AxisStep(axis, b_val, t_val, largest, law.fitted, law.slope, shift, ratio, dbl,
                              note))

    if jf is None or name not in jf.names:
        note = "no completed trials to fit: nothing to transfer"
        warnings.append(FitWarning("no_base_optimum", note, param, name, base.tag()))
        return Transfer(parametrization=param, hparam=name, kind=kind, steps=tuple(steps), note=note)

    j = jf.index(name)
    u0 = float(jf.mu0[j])
    u_t = u0 + sum(s.shift for s in steps)
    draws = jf.boot_mu0[:, j].copy()
    for s in steps:
        if s.axis in jf.axes and s.target != s.base:
            draws = draws + jf.boot_slopes[:, j, jf.axes.index(s.axis)] * (math.log2(s.target) - math.log2(s.base))
    lo, hi = interval(draws, u_t) if draws.size else (u_t, u_t)
    b_lo, b_hi = interval(jf.boot_mu0[:, j], u0) if draws.size else (u0, u0)

    def val(t: float) -> float:
        return float(2.0**t) if kind == "log" else float(t)

    notes = []
    unstable = outside(u_t, lo, hi)
    if unstable:
        msg = (f"the transferred {name} {fmt(val(u_t))} lies outside its own bootstrap interval "
               f"[{fmt(val(lo))}, {fmt(val(hi))}]: the estimate is unstable (a few trials decide it); add trials "
               "near the optimum or repeats before trusting it")
        warnings.append(FitWarning("unstable", msg, param, name))
        notes.append(msg)
    if not (b_u[0] <= u_t <= b_u[1]):
        msg = (f"the transferred {name} {fmt(val(u_t))} lies outside the searched range "
               f"[{fmt(val(b_u[0]))}, {fmt(val(b_u[1]))}]")
        warnings.append(FitWarning("outside_range", msg, param, name))
        notes.append(msg)
    if name == "lr" and target.tokens is not None and "steps" not in laws:
        proxy_tokens = recipe.steps_at(base) * base.batch_size * base.seq_len
        ratio = target.tokens / proxy_tokens
        if ratio >= HORIZON_RATIO:
            msg = (f"the target trains on {ratio:.3g}x the base proxy's tokens; the optimal learning rate usually "
                   "shrinks with the training horizon, which this sweep does not model")
            warnings.append(FitWarning("token_horizon", msg, param, name))
            notes.append(msg)
    return Transfer(
        parametrization=param, hparam=name, kind=kind, value=val(u_t), lo=val(lo), hi=val(hi),
        log2_value=u_t if kind == "log" else None, log2_lo=lo if kind == "log" else None,
        log2_hi=hi if kind == "log" else None, base_value=val(u0), base_lo=val(b_lo), base_hi=val(b_hi),
        steps=tuple(steps), note="; ".join(notes), unstable=unstable)


def choice_transfer(param: str, name: str, by_scale: dict[Scale, PointFit], recipe: Recipe,
                    axes: tuple[str, ...], warnings: list[FitWarning]) -> Transfer:
    """A choice has no law: the base point's best value (the mean of each value's best trials), kept."""
    base = recipe.scales.base
    steps = []
    for axis in fit_axes(recipe):
        b_val = getattr(base, axis)
        t_val = target_at(recipe, axis)
        t_val = b_val if t_val is None else t_val
        proxies = [getattr(s, axis) for s in along(axis, by_scale, base)] if axis in axes else [b_val]
        largest = max(proxies) if proxies else b_val
        note = "a choice has no law: kept the base value" if axis in axes else "not swept: kept the base value"
        steps.append(AxisStep(axis, b_val, t_val, largest, False, 0.0, 0.0, t_val / largest,
                              math.log2(t_val / largest), note))
    base_pf = by_scale.get(base)
    base_opt = base_pf.optima.get(name) if base_pf is not None else None
    if base_opt is None or not base_opt.found:
        note = "no optimum at the base scale point: nothing to transfer"
        warnings.append(FitWarning("no_base_optimum", note, param, name, base.tag()))
        return Transfer(parametrization=param, hparam=name, kind="choice", steps=tuple(steps), note=note,
                        source="per_point")
    chosen = {s.tag(): pf.optima[name].value for s, pf in by_scale.items()
              if name in pf.optima and pf.optima[name].found}
    note = ""
    if len({repr(v) for v in chosen.values()}) > 1:
        note = "the best choice differs between scale points: " + ", ".join(f"{k}: {v}" for k, v in chosen.items())
        warnings.append(FitWarning("choice_varies", note, param, name))
    return Transfer(parametrization=param, hparam=name, kind="choice", value=base_opt.value,
                    base_value=base_opt.value, steps=tuple(steps), note=note, source="per_point")


def value_at(result: FitResult, parametrization: str, hparam: str, scale: Scale) -> Any:
    """The fitted value of `hparam` at any `scale`: the joint model's base optimum moved along the laws the
    transfer to the target used (`mutransfer verify` trains it). None when there is no optimum."""
    kind = result.hparams.get(hparam)
    if kind is None:
        raise KeyError(f"{hparam!r} was not swept")
    t = result.transfer(parametrization, hparam)
    if kind == "choice" or t.base_value is None:
        return t.value
    u = math.log2(t.base_value) if kind == "log" else float(t.base_value)
    for law in result.laws:
        if (law.parametrization, law.hparam) != (parametrization, hparam) or not law.fitted:
            continue
        if getattr(scale, law.axis, None) is None or getattr(result.base, law.axis, None) is None:
            continue  # e.g. a steps law asked about a size without its own steps: the base horizon
        u += law.slope * (math.log2(getattr(scale, law.axis)) - math.log2(getattr(result.base, law.axis)))
    return float(2.0**u) if kind == "log" else float(u)
