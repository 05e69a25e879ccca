"""The built-in backtest: leave the largest proxy of an axis out, predict its optimum from the others.

The user sees how well the law did at a size it had not seen, in octaves and in the metric, before trusting it
several doublings further out. The observed optimum is that point's own (the per-point view, from its trials
alone); the metric cost of the miss is read off the joint model's curve: regret = f(predicted - observed).
"""

from __future__ import annotations

import math

import numpy as np

from mutransfer.fit.design import Design, subset
from mutransfer.fit.joint import JointFit, fit_joint, predict_u, rise
from mutransfer.fit.result import Backtest, PointFit
from mutransfer.recipe import Scale

MIN_POINTS = 3  # along the axis: two left to fit a slope on once the largest is out


def backtests(param: str, D: Design, jf: JointFit, points: list[Scale], by_scale: dict[Scale, PointFit],
              along: dict[str, list[Scale]], base: Scale) -> list[Backtest]:
    """One backtest per (axis with >= MIN_POINTS points, numeric hyperparameter). `points[g]` is design group g."""
    out = []
    for axis, pts in along.items():
        if axis not in jf.axes:
            continue
        with_data = [s for s in pts if s in points]
        if len(with_data) < MIN_POINTS:
            continue
        held = with_data[-1]
        g_held = points.index(held)
        keep = D.group != g_held
        if not (keep & ~D.censored).any():
            continue
        sub = fit_joint(subset(D, keep), n_boot=0, rng=np.random.default_rng(0))
        x_held = {a: math.log2(getattr(held, a) / getattr(base, a)) for a in sub.axes}
        pred_u = predict_u(sub, x_held)
        pf = by_scale[held]
        fitted_on = tuple(getattr(s, axis) for s in with_data[:-1])
        for j, name in enumerate(jf.names):
            log = jf.kinds[j] == "log"
            opt = pf.optima.get(name)
            pu = float(pred_u[j])
            pred = 2.0**pu if log else pu
            slope = float(sub.slopes[j, sub.axes.index(axis)]) if axis in sub.axes else 0.0
            if opt is None or opt.u is None:
                out.append(Backtest(parametrization=param, hparam=name, axis=axis, held_out=getattr(held, axis),
                                    fitted_on=fitted_on, predicted=pred, slope=slope,
                                    note="the left-out point has no optimum of its own"))
                continue
            err = pu - float(opt.u)
            regret = rise(jf, j, err)
            best = pf.best_metric
            rel = regret / abs(best) if best else None
            note = ""
            if opt.flags:
                note = "the left-out point's own optimum is flagged " + ", ".join(opt.flags)
            out.append(Backtest(parametrization=param, hparam=name, axis=axis, held_out=getattr(held, axis),
                                fitted_on=fitted_on, predicted=pred, observed=opt.value, observed_lo=opt.lo,
                                observed_hi=opt.hi, error=err, regret=regret, relative_regret=rel, slope=slope,
                                note=note))
    return out
