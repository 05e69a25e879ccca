"""Per-point optima: each scale point's optimum of each hyperparameter from its own trials alone.

A view beside the joint model (mutransfer.fit.joint), not what laws or the export use: the dashboard draws these as
stars, the backtest compares a law's prediction with them, and their warnings (edge, few_near_optimum, flat, ...)
say what a point's own data can and cannot place. Choices made here, and why:

- Diverged trials are evidence that the value was too large: inside a local quadratic their metric is the worst
  completed metric in the fit window plus half the window's spread (a global penalty, set by trials several octaves
  away, would swamp the local bowl).
- The optimum is a robust local fit: a quadratic in u, weighted by a tricube kernel over the max(5, 40%) trials
  nearest the best one, re-centred on its own vertex up to three times; the best observed value when the
  quadratic is not convex there (flagged).
- Random search over several hyperparameters at once: the marginal of each is its lower envelope (the best trial
  in each of up to 16 bins), the other hyperparameters making every trial a noisy look at it.
- The interval is the percentile interval of a trial bootstrap, vectorised over resamples, never widened to hold
  the estimate: when the estimate lies outside it the optimum is flagged `unstable`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mutransfer.fit.result import Optimum
from mutransfer.values import finite_or_none

CI = 0.95
TOP_FRACTION = 0.4  # of the trials (or envelope bins) nearest the best one, at least MIN_FIT_POINTS
MIN_FIT_POINTS = 5
# A choice is judged on the mean of each value's best trials: few enough that the other hyperparameters' luck of
# the draw washes out (they sit near their own optimum), enough to average over the seed noise.
CHOICE_TOP_FRACTION = 0.1
CHOICE_MIN_TOP = 3
KERNEL_STRETCH = 1.5  # tricube bandwidth over the distance to the farthest selected point: it keeps some weight
PASSES = 3
PENALTY_MARGIN = 0.5  # diverged metric = worst completed + this × completed spread
MAX_BINS = 16
EDGE_FRACTION = 0.10  # of the searched range (in u) at each end
NEAR_LOG = 1.0  # octaves either side of the optimum that count as "near"
NEAR_LINEAR = 0.10  # of the searched range, for uniform hyperparameters
NEAR_MIN = 3
FLAT_REL = 0.01  # envelope spread / |median metric| below this: the hyperparameter barely matters
NOISY_R2 = 0.5


@dataclass
class _Local:
    u: np.ndarray  # (B,) optimum in u; NaN when the resample has no completed trial
    vertex: np.ndarray  # (B,) bool: from an accepted vertex (else the best observed)
    r2: np.ndarray  # (B,)
    quad: np.ndarray  # (B, 4): u0, a, b, c of the pass that gave u (the first pass for a fallback)
    at_data_edge: np.ndarray  # (B,) bool: the best observed value is the lowest or highest point


def diverged_penalty(y_completed: np.ndarray) -> float:
    hi, lo = float(np.max(y_completed)), float(np.min(y_completed))
    # A floor keeps diverged trials visibly worse when every completed trial has the same metric.
    return hi + max(PENALTY_MARGIN * (hi - lo), 0.05 * abs(hi), 1e-6)


def _quad_pass(
    U: np.ndarray, V: np.ndarray, W: np.ndarray, C: np.ndarray, present: np.ndarray, center: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One weighted quadratic around `center` per row. Returns coef (B,3), vertex u, ok-inside-window, r2, ok-in-range."""
    B = U.shape[0]
    d = np.where(present, np.abs(U - center[:, None]), np.inf)
    m = present.sum(1)
    k = np.minimum(np.maximum(MIN_FIT_POINTS, np.ceil(TOP_FRACTION * m)).astype(int), m)
    ds = np.sort(d, axis=1)
    dk = ds[np.arange(B), np.maximum(k - 1, 0)]
    dk = np.where(np.isfinite(dk), dk, 0.0)
    sel = present & (d <= dk[:, None] * (1 + 1e-9) + 1e-12)
    h = np.maximum(KERNEL_STRETCH * dk, 1e-9)
    with np.errstate(over="ignore", invalid="ignore"):
        kern = np.clip(1.0 - (np.where(sel, d, 0.0) / h[:, None]) ** 3, 0.0, 1.0) ** 3
    w = np.where(sel, W * kern, 0.0)
    z = np.where(sel, U - center[:, None], 0.0)
    # Diverged trials in the window are put just above the worst completed one *in the window*: a penalty on the
    # scale of the whole range (several octaves away) would swamp the local bowl and throw the vertex far off.
    sc = sel & C
    top = np.where(sc, V, -np.inf).max(1)
    bottom = np.where(sc, V, np.inf).min(1)
    with np.errstate(invalid="ignore"):
        pen = top + np.maximum(PENALTY_MARGIN * (top - bottom), np.maximum(0.01 * np.abs(top), 1e-6))
    Vs = np.where(sel, np.where(C, V, pen[:, None]), 0.0)
    phi = np.stack([np.ones_like(z), z, z * z], axis=2)  # (B, m, 3)
    A = np.einsum("bm,bmi,bmj->bij", w, phi, phi)
    rhs = np.einsum("bm,bmi,bm->bi", w, phi, Vs)
    # A quadratic needs three distinct abscissae among the weighted points.
    us = np.sort(np.where(sel & (w > 0), U, np.inf), axis=1)
    with np.errstate(invalid="ignore"):
        gaps = np.diff(us, axis=1)
    distinct = np.isfinite(us[:, 0]).astype(int) + ((gaps > 1e-9) & np.isfinite(us[:, 1:])).sum(1)
    good = distinct >= 3
    coef = np.full((B, 3), np.nan)
    if good.any():
        Ag = A[good]
        ridge = 1e-12 * np.trace(Ag, axis1=1, axis2=2)[:, None, None] * np.eye(3)
        try:
            coef[good] = np.linalg.solve(Ag + ridge, rhs[good][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            coef[good] = np.einsum("bij,bj->bi", np.linalg.pinv(Ag), rhs[good])
    a, b, c = coef[:, 0], coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vert = center - b / (2 * c)
        pred = np.einsum("bmi,bi->bm", phi, np.nan_to_num(coef))
        wsum = w.sum(1)
        vbar = (w * Vs).sum(1) / wsum
        ss_tot = (w * (Vs - vbar[:, None]) ** 2).sum(1)
        ss_res = (w * (Vs - pred) ** 2).sum(1)
        r2 = np.where(good & (ss_tot > 1e-300), 1.0 - ss_res / ss_tot, np.nan)
    convex = good & (c > 0) & np.isfinite(vert)
    win_lo = np.where(sel, U, np.inf).min(1)
    win_hi = np.where(sel, U, -np.inf).max(1)
    rng_lo = np.where(present, U, np.inf).min(1)
    rng_hi = np.where(present, U, -np.inf).max(1)
    in_window = convex & (vert >= win_lo) & (vert <= win_hi)
    in_range = convex & (vert >= rng_lo) & (vert <= rng_hi)
    return np.column_stack([a, b, c]), vert, in_window, r2, in_range


def _local_fit(U: np.ndarray, V: np.ndarray, W: np.ndarray, C: np.ndarray) -> _Local:
    """Batched robust local quadratic. U, V, W, C: (B, m) positions, metrics, multiplicities (0 = absent), completed."""
    B = U.shape[0]
    rows = np.arange(B)
    present = W > 0
    comp = present & C
    ok = comp.any(1)
    ib = np.where(comp, V, np.inf).argmin(1)
    best_u = U[rows, ib]
    lo_data = np.where(present, U, np.inf).min(1)
    hi_data = np.where(present, U, -np.inf).max(1)
    at_data_edge = ok & ((best_u <= lo_data + 1e-12) | (best_u >= hi_data - 1e-12))

    center = best_u.copy()
    acc_u = np.full(B, np.nan)
    acc_quad = np.full((B, 4), np.nan)
    acc_r2 = np.full(B, np.nan)
    first_quad = np.full((B, 4), np.nan)
    first_r2 = np.full(B, np.nan)
    for p in range(PASSES):
        coef, vert, in_window, r2, in_range = _quad_pass(U, V, W, C, present, center)
        quad = np.column_stack([center, coef])
        if p == 0:
            first_quad, first_r2 = quad, r2
        acc_u = np.where(in_window, vert, acc_u)
        acc_quad = np.where(in_window[:, None], quad, acc_quad)
        acc_r2 = np.where(in_window, r2, acc_r2)
        # Re-centre even on a vertex outside the window (but inside the data): the next window can then reach it.
        center = np.where(in_range, vert, center)
    vertex = np.isfinite(acc_u) & ok
    u = np.where(vertex, acc_u, np.where(ok, best_u, np.nan))
    return _Local(
        u=u,
        vertex=vertex,
        r2=np.where(vertex, acc_r2, first_r2),
        quad=np.where(vertex[:, None], acc_quad, first_quad),
        at_data_edge=at_data_edge & ~vertex,
    )


def _candidates(
    u: np.ndarray,
    v: np.ndarray,
    comp: np.ndarray,
    counts: np.ndarray,
    bins: np.ndarray | None,
    n_bins: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The points a fit sees, per resample: every trial (weighted by its count), or the lower envelope per bin."""
    B, n = counts.shape
    if bins is None:
        return (
            np.broadcast_to(u, (B, n)),
            np.broadcast_to(v, (B, n)),
            counts.astype(float),
            np.broadcast_to(comp, (B, n)),
        )
    U = np.zeros((B, n_bins))
    V = np.zeros((B, n_bins))
    W = np.zeros((B, n_bins))
    C = np.zeros((B, n_bins), dtype=bool)
    rows = np.arange(B)
    for j in range(n_bins):
        idx = np.flatnonzero(bins == j)
        if idx.size == 0:
            continue
        vm = np.where(counts[:, idx] > 0, v[idx], np.inf)
        a = vm.argmin(1)  # penalised diverged trials lose to any completed one in the bin
        vmin = vm[rows, a]
        has = np.isfinite(vmin)
        U[:, j] = np.where(has, u[idx][a], 0.0)
        V[:, j] = np.where(has, vmin, 0.0)
        W[:, j] = has
        C[:, j] = has & comp[idx][a]
    return U, V, W, C


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n == 0 or n_boot <= 0:
        return np.zeros((0, n), dtype=np.int64)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def interval(draws: np.ndarray, point: float) -> tuple[float, float]:
    """The CI percentile interval of the finite draws ((point, point) without any). Not widened to hold the point:
    an estimate outside its own bootstrap distribution is news (an unstable estimator), for the caller to flag."""
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return point, point
    lo, hi = np.percentile(d, [50 * (1 - CI), 50 * (1 + CI)])
    return float(lo), float(hi)


def outside(point: float | None, lo: float | None, hi: float | None, tol: float = 1e-9) -> bool:
    """Whether an estimate lies outside its own interval."""
    if point is None or lo is None or hi is None:
        return False
    return point < lo - tol or point > hi + tol


def numeric_optimum(
    hparam: str,
    kind: str,
    u: np.ndarray,
    y: np.ndarray,
    diverged: np.ndarray,
    *,
    bounds_u: tuple[float, float],
    envelope: bool,
    counts: np.ndarray,
    penalty: float | None = None,
) -> tuple[Optimum, np.ndarray]:
    comp = ~diverged
    n_c, n_d = int(comp.sum()), int(diverged.sum())
    n_boot = counts.shape[0]
    if n_c == 0:
        flag = "all_diverged" if n_d else "no_completed"
        return Optimum(hparam, kind, n_diverged=n_d, flags=(flag,)), np.full(n_boot, np.nan)
    pen = diverged_penalty(y[comp]) if penalty is None else penalty
    v = np.where(comp, y, pen)
    lo_u, hi_u = bounds_u
    if not hi_u > lo_u:
        lo_u, hi_u = lo_u - 0.5, hi_u + 0.5
    bins = None
    n_bins = 0
    if envelope:
        n_bins = int(np.clip(len(u) // 3, 4, MAX_BINS))
        bins = np.clip(((u - lo_u) / (hi_u - lo_u) * n_bins).astype(int), 0, n_bins - 1)

    full = _local_fit(*_candidates(u, v, comp, np.ones((1, len(u)), dtype=np.int64), bins, n_bins))
    u_star = float(full.u[0])
    if n_boot:
        boot = _local_fit(*_candidates(u, v, comp, counts, bins, n_bins))
        draws = boot.u
    else:
        draws = np.full(0, np.nan)
    lo, hi = interval(draws, u_star)

    flags: list[str] = []
    Uc, Vc, Wc, Cc = _candidates(u, v, comp, np.ones((1, len(u)), dtype=np.int64), bins, n_bins)
    cand = Vc[0][(Wc[0] > 0) & Cc[0]]
    level = abs(float(np.median(cand)))
    flat = cand.size >= 2 and float(cand.max() - cand.min()) <= FLAT_REL * max(level, 1e-12)
    span = hi_u - lo_u
    edge = (
        u_star <= lo_u + EDGE_FRACTION * span
        or u_star >= hi_u - EDGE_FRACTION * span
        or bool(full.at_data_edge[0])
    )
    near = NEAR_LOG if kind == "log" else NEAR_LINEAR * span
    n_near = int((np.abs(u[comp] - u_star) <= near + 1e-12).sum())
    r2 = finite_or_none(full.r2[0])
    if flat:
        flags.append("flat")
    if edge and not flat:
        flags.append("edge")
    if n_near < NEAR_MIN:
        flags.append("few_near_optimum")
    if not flat and r2 is not None and r2 < NOISY_R2:
        flags.append("noisy")
    if not flat and not edge and not bool(full.vertex[0]):
        flags.append("non_monotone")
    if outside(u_star, lo, hi):
        flags.append("unstable")

    def val(x: float) -> float:
        return float(2.0**x) if kind == "log" else float(x)

    quad = tuple(float(q) for q in full.quad[0])
    opt = Optimum(
        hparam=hparam,
        kind=kind,
        value=val(u_star),
        lo=val(lo),
        hi=val(hi),
        log2_value=u_star if kind == "log" else None,
        log2_lo=lo if kind == "log" else None,
        log2_hi=hi if kind == "log" else None,
        method="vertex" if bool(full.vertex[0]) else "best_observed",
        r2=r2,
        quad=quad if all(math.isfinite(q) for q in quad) else None,  # type: ignore[arg-type]
        n_completed=n_c,
        n_diverged=n_d,
        n_near=n_near,
        support=finite_or_none(np.mean(boot.vertex)) if n_boot else None,
        flags=tuple(flags),
    )
    return opt, draws


def choice_optimum(
    hparam: str, cats: np.ndarray, y: np.ndarray, diverged: np.ndarray, counts: np.ndarray, penalty: float | None
) -> tuple[Optimum, np.ndarray]:
    comp = ~diverged
    n_c, n_d = int(comp.sum()), int(diverged.sum())
    if n_c == 0:
        flag = "all_diverged" if n_d else "no_completed"
        return Optimum(hparam, "choice", n_diverged=n_d, flags=(flag,)), np.full(counts.shape[0], np.nan)
    pen = diverged_penalty(y[comp]) if penalty is None else penalty
    v = np.where(comp, y, pen)
    labels = list(dict.fromkeys(cats.tolist()))
    full_means = np.full(len(labels), np.inf)
    boot_means = np.full((counts.shape[0], len(labels)), np.inf)
    for j, lab in enumerate(labels):
        idx = np.flatnonzero(cats == lab)
        idx = idx[np.argsort(v[idx], kind="stable")]
        vs = v[idx]
        q = min(len(idx), max(CHOICE_MIN_TOP, math.ceil(CHOICE_TOP_FRACTION * len(idx))))
        full_means[j] = vs[:q].mean()
        if counts.shape[0]:
            # The mean of the best trials of each resample, duplicates counted: take the sorted values in order until
            # the resample's quota is filled.
            cc = counts[:, idx]
            tot = cc.sum(1)
            qb = np.minimum(tot, np.maximum(CHOICE_MIN_TOP, np.ceil(CHOICE_TOP_FRACTION * tot)))
            before = np.cumsum(cc, 1) - cc
            take = np.clip(qb[:, None] - before, 0, cc)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot_means[:, j] = np.where(tot > 0, (take * vs).sum(1) / np.maximum(qb, 1), np.inf)
    win = int(np.argmin(full_means))
    draws = np.argmin(boot_means, axis=1).astype(float) if counts.shape[0] else np.full(0, np.nan)
    fin = full_means[np.isfinite(full_means)]
    flags = []
    level = abs(float(np.median(fin)))
    if len(fin) >= 2 and float(fin.max() - fin.min()) <= FLAT_REL * max(level, 1e-12):
        flags.append("flat")
    opt = Optimum(
        hparam=hparam,
        kind="choice",
        value=labels[win],
        method="best_mean",
        n_completed=n_c,
        n_diverged=n_d,
        n_near=int(((cats == labels[win]) & comp).sum()),
        support=finite_or_none(np.mean(draws == win)) if counts.shape[0] else None,
        flags=tuple(flags),
    )
    return opt, draws


def optimum_1d(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    diverged_mask: Sequence[bool] | np.ndarray | None = None,
    *,
    log: bool = True,
    bounds: tuple[float, float] | None = None,
    envelope: bool = False,
    n_boot: int = 200,
    seed: int = 0,
    hparam: str = "x",
) -> Optimum:
    """The optimum of a metric (lower is better) over one hyperparameter, with a bootstrap interval.

    `x` in the hyperparameter's units (fitted in log2 when `log`); `y` may be NaN where `diverged_mask` is set
    (default: wherever `y` is not finite). `bounds`: the searched range (default: the data's); `envelope`: fit the
    lower envelope (for a marginal of a multi-hyperparameter random search).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    div = ~np.isfinite(ya) if diverged_mask is None else np.asarray(diverged_mask, dtype=bool) | ~np.isfinite(ya)
    keep = np.isfinite(xa) & ((xa > 0) if log else True)
    xa, ya, div = xa[keep], ya[keep], div[keep]
    u = np.log2(xa) if log else xa
    if bounds is None:
        b_u = (float(u.min()), float(u.max())) if u.size else (0.0, 1.0)
    else:
        b_u = (math.log2(bounds[0]), math.log2(bounds[1])) if log else (float(bounds[0]), float(bounds[1]))
    counts = bootstrap_counts(len(u), n_boot, np.random.default_rng(seed))
    opt, _ = numeric_optimum(
        hparam, "log" if log else "linear", u, ya, div, bounds_u=b_u, envelope=envelope, counts=counts
    )
    return opt


# Exported for a dashboard that wants to draw the fitted parabola over the trials.
def quad_curve(opt: Optimum, n: int = 50) -> tuple[np.ndarray, np.ndarray] | None:
    """Points (x in the hyperparameter's units, metric) of the local quadratic behind an optimum."""
    if opt.quad is None or opt.kind == "choice" or opt.u_interval is None:
        return None
    u0, a, b, c = opt.quad
    half = max(2.0 * abs((opt.u or u0) - u0), 1.0 if opt.kind == "log" else abs(u0) * 0.5 + 1e-9)
    uu = np.linspace(u0 - half, u0 + half, n)
    yy = a + b * (uu - u0) + c * (uu - u0) ** 2
    xx = 2.0**uu if opt.kind == "log" else uu
    return xx, yy

