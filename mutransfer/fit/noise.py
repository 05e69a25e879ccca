"""Trial noise beside the depth of the curve near the optimum, and what would pin the optimum down.

A dozen trials cannot place an optimum whose neighbours an octave away score within the noise of one another: the
reading says how the two compare and, when the noise wins, names the recipe fields that would fix it.
"""

from __future__ import annotations

import math

import pandas as pd

from mutransfer.fit.joint import JointFit
from mutransfer.fit.result import FitWarning, Noise
from mutransfer.recipe import Recipe

# sigma / depth above this: two trials an octave apart differ by less than the noise of one, and the optimum
# cannot be told from its neighbours by single trials.
NOISE_RATIO = 0.5
LINEAR_DISTANCE = 0.10  # of the searched range: the "near" distance of a uniform hyperparameter


def repeat_sigma(rows: pd.DataFrame) -> float | None:
    """Pooled standard deviation of the metric between seeds of one configuration at one scale point (completed
    trials), or None when no configuration has two completed seeds."""
    if "sample" not in rows or "group" not in rows:
        return None
    done = rows[rows["_completed"]]
    num = 0.0
    dof = 0
    for _, g in done.groupby(["group", "sample"], sort=False):
        if len(g) >= 2:
            m = g["metric"].to_numpy(dtype=float)
            num += float(((m - m.mean()) ** 2).sum())
            dof += len(m) - 1
    return math.sqrt(num / dof) if dof else None


def noise_readings(param: str, jf: JointFit, rows: pd.DataFrame, recipe: Recipe,
                   warnings: list[FitWarning]) -> list[Noise]:
    sig_rep = repeat_sigma(rows)
    sigma, source = (sig_rep, "repeats") if sig_rep is not None else (jf.sigma, "residuals")
    if sigma is not None and not math.isfinite(sigma):
        sigma = None
    out = []
    for j, name in enumerate(jf.names):
        log = jf.kinds[j] == "log"
        dist = 1.0 if log else LINEAR_DISTANCE * float(jf.span(j))
        label = "1 octave" if log else f"{LINEAR_DISTANCE:.0%} of the range"
        depth = jf.depth(j, dist)
        ratio = sigma / depth if sigma is not None and depth > 0 else None
        advice = ""
        if ratio is not None and ratio > NOISE_RATIO:
            fixes = []
            if recipe.search.repeats < 3:
                fixes.append("search.repeats: 3 (seeds per configuration)")
            if (recipe.train.metric_window or 1) < 3:
                fixes.append("train.metric_window: 3 (the mean of the last evaluations)")
            value = 2.0 ** float(jf.mu0[j]) if log else float(jf.mu0[j])
            fixes.append(f"more search.samples in a narrower search.space.{name} around {value:.3g}")
            fixes.append("longer runs (train.steps), which deepen the curve")
            advice = (f"trial noise ({sigma:.3g}, from {source}) is {ratio:.1f}x the rise of {recipe.train.metric} "
                      f"{label} from the {name} optimum ({depth:.3g}): single trials cannot place it; to pin it: "
                      + "; ".join(fixes))
            warnings.append(FitWarning("noise", advice, param, name))
        out.append(Noise(param, name, sigma, source, depth, label, ratio, advice))
    return out


