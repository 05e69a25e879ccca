"""The per-point warnings' wording: what a point's own data cannot place, and what to do about it."""

from __future__ import annotations

from typing import Any

from mutransfer.fit.optima import FLAT_REL
from mutransfer.fit.result import FitWarning, Optimum
from mutransfer.recipe import Scale


def fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


WARN_TEXT = {
    # Also raised when the best point is the lowest (highest) value tried inside a wider range: the optimum may lie
    # beyond it either way.
    "edge": "{hp} optimum {val} is at the {side} end of the values tried (searched range [{lo}, {hi}]): widen the "
            "range {dir} or sample more there",
    "few_near_optimum": "only {n_near} completed trials within {near} of the {hp} optimum: add samples near it",
    "flat": "the metric barely changes with {hp} (spread under {flat:.0%} of its level): its optimum means little",
    "noisy": "the quadratic near the {hp} optimum explains little of the metric (R² = {r2}): the optimum is uncertain",
    "non_monotone": "the metric is not U-shaped around the best {hp}: used the best observed value",
    "all_diverged": "every trial diverged: no {hp} optimum (lower the range)",
    "no_completed": "no completed trials: no {hp} optimum",
    "unstable": "the {hp} optimum {val} lies outside its own bootstrap interval: this point's trials cannot place "
                "it (add samples near it or repeats)",
}


def point_warnings(param: str, scale: Scale, opt: Optimum, bounds: tuple[float, float] | None) -> list[FitWarning]:
    out = []
    for flag in opt.flags:
        ctx: dict[str, Any] = {
            "hp": opt.hparam,
            "val": fmt(opt.value),
            "n_near": opt.n_near,
            "near": "±1 octave" if opt.kind == "log" else "±10% of the range",
            "flat": FLAT_REL,
            "r2": f"{opt.r2:.2f}" if opt.r2 is not None else "n/a",
        }
        if flag == "edge" and bounds is not None and opt.u is not None:
            lo_u, hi_u = bounds
            low = opt.u - lo_u <= hi_u - opt.u
            conv = (lambda t: 2.0**t) if opt.kind == "log" else (lambda t: t)
            ctx.update(
                side="low" if low else "high",
                dir="downwards" if low else "upwards",
                lo=fmt(conv(lo_u)),
                hi=fmt(conv(hi_u)),
            )
        elif flag == "edge":
            ctx.update(side="outer", dir="", lo="?", hi="?")
        text = WARN_TEXT.get(flag, flag).format(**ctx)
        out.append(FitWarning(flag, text, param, opt.hparam, scale.tag()))
    return out
