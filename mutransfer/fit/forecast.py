"""The loss to expect at the target, and which parametrization is predicted to train the better one.

Each scale point's floor is the joint model's lowest metric there (its per-point offset, at the best choice
combination): how good the point is at its own optimum, read off all of its trials rather than its single best
one. A power law in each varied axis is fitted through the floors,

    log2(floor) = a + sum_a b_a * log2(scale_a / base_a),

and evaluated at the target (no prediction when some floor is not positive: a loss is). The interval comes
from the bootstrap: each replicate's floors get their own law. It covers the floors' noise, not the law's form,
so the backtest says how well the law predicted the largest proxy from the others. The prediction is at the
proxies' training length (`train.steps`) unless the recipe varies steps: a target trained on more tokens does
better than this.
"""

from __future__ import annotations

import math

import numpy as np

from mutransfer.fit.joint import JointFit
from mutransfer.fit.laws import target_at
from mutransfer.fit.optima import interval, outside
from mutransfer.fit.result import Forecast
from mutransfer.fit.warnings import fmt
from mutransfer.recipe import AXES, Recipe, Scale


def _law(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least squares of y (G,) on [1, x] (G, A); None when the points cannot pin every coefficient."""
    ok = np.isfinite(y)
    X = np.column_stack([np.ones(int(ok.sum())), x[ok]])
    if X.shape[0] < X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    return np.linalg.lstsq(X, y[ok], rcond=None)[0]


def _predict(beta: np.ndarray, x_t: np.ndarray) -> float:
    """The law's metric at x_t (log2 of each axis's scale over the base's)."""
    return float(2.0 ** (beta[0] + beta[1:] @ x_t))


def forecast(param: str, jf: JointFit, groups: list[Scale], recipe: Recipe) -> Forecast:
    """The predicted best metric at the target for one parametrization (`groups[g]` is design group g)."""
    base = recipe.scales.base
    axes = jf.axes
    x = np.array([[math.log2(getattr(s, a) / getattr(base, a)) for a in axes] for s in groups]).reshape(
        len(groups), len(axes))
    floors = jf.floors
    tags = tuple((s.tag(), float(f)) for s, f in zip(groups, floors, strict=True) if np.isfinite(f))
    form = "power"
    if np.any(floors[np.isfinite(floors)] <= 0):
        # A loss is positive: a floor at or below 0 is the bowl extrapolated past the curve's bottom (a flat-bottomed
        # curve between steep walls), not a loss to put a law through.
        return Forecast(param, None, None, None, form, {}, {}, {}, tags, {}, note="a scale point's floor is not "
                        "positive (the bowl does not fit the bottom of the curve): no prediction")
    tf = np.log2(floors)
    notes = []
    differs = [a for a in AXES if a not in axes and getattr(recipe.target, a) != getattr(base, a)]
    if differs:
        notes.append(f"the target's {', '.join(differs)} differs from every proxy's and is not in the law")
    if not axes:
        return Forecast(param, None, None, None, form, {}, {}, {}, tags, {},
                        note="no scale axis varies among the trials: nothing to extrapolate along")
    x_t = np.zeros(len(axes))
    doublings: dict[str, float] = {}
    for i, a in enumerate(axes):
        t = target_at(recipe, a)
        if t is None:
            return Forecast(param, None, None, None, form, {}, {}, {}, tags, {}, note="the target has no "
                            "tokens, so its steps are unknown: no prediction along the steps axis")
        x_t[i] = math.log2(t / getattr(base, a))
        doublings[a] = float(x_t[i] - x[:, i].max())
    if "steps" not in axes:
        notes.append(f"at the proxies' training length ({recipe.train.steps} steps); the target trains longer and "
                     "should do better")
    beta = _law(x, tf)
    if beta is None:
        need = len(axes) + 1
        return Forecast(param, None, None, None, form, {}, {}, {}, tags, doublings,
                        note=f"a law in {len(axes)} axes needs floors at {need} scale points or more")
    value = _predict(beta, x_t)
    draws, slopes = [], []
    for b in range(jf.boot_floors.shape[0]):
        yb = jf.boot_floors[b]
        yb = np.where(yb > 0, np.log2(np.where(yb > 0, yb, 1.0)), np.nan)
        bb = _law(x, yb)
        if bb is not None:
            draws.append(_predict(bb, x_t))
            slopes.append(bb[1:])
    lo = hi = None
    exps_lo: dict[str, float] = {}
    exps_hi: dict[str, float] = {}
    unstable = False
    if draws:
        d = np.array(draws)
        # The interval in the law's own coordinate (log2 for a power law), then back. It assumes the law's form:
        # measured on power-law truths it holds them (tests/test_forecast.py); widening it by the floors' bend made
        # it cover 100% there, too wide. Whether the form held is what the backtest reports.
        v_t = math.log2(value)
        lo_t, hi_t = interval(np.log2(d), v_t)
        unstable = outside(v_t, lo_t, hi_t)
        lo, hi = 2.0**lo_t, 2.0**hi_t
        s = np.array(slopes)
        for i, a in enumerate(axes):
            exps_lo[a], exps_hi[a] = interval(s[:, i], float(beta[1 + i]))
    if unstable:
        notes.append("unstable: the prediction lies outside its own bootstrap interval")
    bt = _backtest(x, tf, groups, axes)
    return Forecast(param, value, lo, hi, form, {a: float(beta[1 + i]) for i, a in enumerate(axes)}, exps_lo,
                    exps_hi, tags, doublings, *bt, unstable=unstable, note="; ".join(notes))


def _backtest(x: np.ndarray, tf: np.ndarray, groups: list[Scale], axes: tuple[str, ...]
              ) -> tuple[str | None, float | None, float | None, float | None]:
    """The largest proxy of the first axis with 3 or more sizes left out: (its tag, the law's prediction from the
    others' floors, its own floor, the relative error)."""
    for i in range(len(axes)):
        sizes = np.unique(x[:, i])
        if sizes.size < 3:
            continue
        held = np.flatnonzero(x[:, i] == sizes.max())
        keep = np.ones(len(groups), dtype=bool)
        keep[held] = False
        beta = _law(x[keep], tf[keep])
        g = int(held[0])
        if beta is None or not np.isfinite(tf[g]):
            continue
        pred = _predict(beta, x[g])
        obs = 2.0 ** float(tf[g])
        return groups[g].tag(), pred, obs, (pred - obs) / abs(obs) if obs else None
    return None, None, None, None


def prefer(forecasts: list[Forecast]) -> tuple[str | None, str]:
    """Which parametrization is predicted to train the better target, and why (None: cannot tell)."""
    have = {f.parametrization: f for f in forecasts if f.value is not None and f.lo is not None}
    if len(have) < 2:
        return None, ""
    ranked = sorted(have.values(), key=lambda f: f.value)  # type: ignore[arg-type, return-value]
    best, other = ranked[0], ranked[1]
    said = ", ".join(f"{f.parametrization} {fmt(f.value)} [{fmt(f.lo)}, {fmt(f.hi)}]" for f in ranked)
    if best.hi is not None and other.lo is not None and best.hi < other.lo:
        return best.parametrization, f"{best.parametrization} is predicted to train the better target ({said})"
    return None, f"the predicted metrics at the target overlap ({said}): the sweep cannot tell which is better"
