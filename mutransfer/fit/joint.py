"""The joint model: one curve of the metric over the swept hyperparameters, shared by every scale point.

For the trials of one parametrization, with u the fit coordinate of each numeric hyperparameter (log2 of a
loguniform one, the value of a uniform one) and x_a = log2(scale_a / base_a) per varied scale axis:

    metric_i = d[point_i] + e[choices_i] + f(z_i),    z_ij = u_ij - mu_j(point_i),
    mu_j(s)  = mu0_j + sum_a slope_ja * x_a(s),
    f(z)     = sum_j c_j(sign z_j) z_j^2 + sum_{j<k} 2 r_jk sqrt(c_j c_k) z_j z_k.

Every trial informs the shape (curvatures c_j^-, c_j^+ either side of the optimum, convex by construction) and the
slopes; the offsets d (one per scale point) and e (one per combination of choice hyperparameters) absorb how good
a point is overall, and are solved exactly for any shape (variable projection). Why this and not a line through
per-point optima: each point's optimum is placed by a dozen noisy trials, and a line through three such points
turns their noise into a slope; here a slope must explain all trials at once.

Fitting choices, each a named constant below:
- Locality. A quadratic is a model of the bowl, not of the whole range (far below the optimum the loss flattens,
  far above it diverges): trials are weighted by a tricube kernel in z (distance normalised by each searched
  range), its bandwidth KERNEL_STRETCH times the distance within which WINDOW_FRACTION of the trials lie.
- Robustness. soft-L1 (pseudo-Huber) weights with scale ROBUST_SCALE x the residuals' robust sigma: one broken run
  does not move the optimum.
- Diverged trials are censored evidence: the model must predict them at least as bad as the worst completed
  trial of their scale point inside the window (a one-sided, hinge residual). They pull the optimum away from a
  divergence cliff without being given a made-up metric.
- Slopes are kept only where the data carry them: after the fit with every slope free, a slope whose Wald
  chi-square (slope^2 / its variance) is below log(n), n the trials the fit uses, is set to zero and the model
  refitted. That is the BIC's penalty for one parameter (the Wald statistic approximates the likelihood ratio);
  a µP model whose optimum does not move keeps slope 0 instead of extrapolating noise. The variance is the larger
  of the cluster-robust sandwich and the bootstrap spread of the free slope (the sandwich alone understated it).
- Uncertainty: a bootstrap that resamples trials within each scale point (configurations, then their seeds, when
  a configuration was repeated), each replicate refitted from the full-data estimate and re-selected: the
  intervals include the selection's own uncertainty. Nothing is widened to contain the point estimate.

Everything is vectorised over bootstrap replicates: a replicate is a row of weights, and a batched
Levenberg-Marquardt with finite-difference Jacobians fits all of them at once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

WINDOW_FRACTION = 0.6  # of the completed trials, nearest the optimum: the kernel's reach
KERNEL_STRETCH = 1.5  # bandwidth over the distance that holds WINDOW_FRACTION of the trials
MIN_WINDOW = 6  # trials the window holds at least
# ... and reaches at least this share of each searched range (4 octaves of a 10-octave LR range): with a dozen
# draws, the trials nearest the optimum can all score alike within the noise, and a window of only those let the
# bowl go flat and its centre run off.
MIN_BANDWIDTH = 0.4
# A diverged trial is at least as bad as this quantile of the completed trials of its scale point inside the
# window. Not the worst of them: the worst is often a barely-trained run octaves below the optimum, and a bowl
# forced up to it right past the optimum bends the whole fit (measured: the optimum moved up by an octave).
DIVERGED_LEVEL = 0.5
ROBUST_SCALE = 2.0
# The two sides' curvatures differ only as far as the data say: a zero-centred Gaussian prior on log(c+ / c-) with
# this standard deviation (a factor 1.4 at one sd). With a dozen draws per point, fully free sides traded the
# optimum's place against the curvatures (optimum sd 0.7 octave on synthetic sweeps at noise 0.08, against 0.2 with this prior).
ASYMMETRY_PRIOR = 0.35  # soft-L1 scale in robust sigmas of the residuals: within it, a residual counts in full
OUTER = 4  # passes that re-centre the window, the divergence levels and the robust weights
INNER = 12  # Levenberg-Marquardt steps per pass
BOOT_OUTER = 2  # replicates start at the full-data estimate: fewer passes suffice
BOOT_INNER = 4
FD_STEP = 1e-5
LOG_CURV_BOUNDS = (-25.0, 15.0)
# No optimum moves by more than this many fit units per doubling of scale (SP's LR drifts by about one octave):
# beyond it, a free slope is the optimizer running off along a flat direction, not a reading of the data.
SLOPE_BOUND = 4.0  # log curvature: metric units per squared fit unit


@dataclass(frozen=True)
class Design:
    """One parametrization's trials as arrays (completed and diverged only)."""

    names: tuple[str, ...]  # numeric hyperparameters, in the recipe's order
    kinds: tuple[str, ...]  # log | linear
    lows: np.ndarray  # (H,) searched range in the fit coordinate
    highs: np.ndarray
    axes: tuple[str, ...]  # scale axes with at least two distinct values among the trials
    u: np.ndarray  # (n, H)
    x: np.ndarray  # (n, A) log2(scale / base)
    group: np.ndarray  # (n,) scale point index
    n_groups: int
    cat: np.ndarray  # (n,) index of the trial's combination of choice values
    n_cats: int
    y: np.ndarray  # (n,) metric; NaN where diverged
    diverged: np.ndarray  # (n,) bool
    cluster: np.ndarray  # (n,) configuration id within a point (trials that are seeds of one configuration)

    @property
    def spans(self) -> np.ndarray:
        return np.maximum(self.highs - self.lows, 1e-9)

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Layout:
    """Where each nonlinear parameter lives in theta."""

    H: int
    A: int

    @property
    def p(self) -> int:
        return self.H + self.H * self.A + 2 * self.H + self.H * (self.H - 1) // 2

    def mu0(self, th: np.ndarray) -> np.ndarray:
        return th[..., : self.H]

    def slopes(self, th: np.ndarray) -> np.ndarray:
        return th[..., self.H : self.H + self.H * self.A].reshape(*th.shape[:-1], self.H, self.A)

    def slope_index(self, j: int, a: int) -> int:
        return self.H + j * self.A + a

    def log_curv(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o = self.H + self.H * self.A
        return th[..., o : o + self.H], th[..., o + self.H : o + 2 * self.H]

    def corr(self, th: np.ndarray) -> np.ndarray:
        o = self.H + self.H * self.A + 2 * self.H
        return np.tanh(th[..., o:])

    def curv_slice(self) -> slice:
        o = self.H + self.H * self.A
        return slice(o, o + 2 * self.H)


@dataclass(frozen=True)
class JointFit:
    """The fitted model of one parametrization, and its bootstrap."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    axes: tuple[str, ...]
    mu0: np.ndarray  # (H,) optimum at the base scale point, fit coordinate
    slopes: np.ndarray  # (H, A) the slopes used (dropped ones are 0)
    kept: np.ndarray  # (H, A) bool
    free_slopes: np.ndarray  # (H, A) with every slope free
    wald: np.ndarray  # (H, A) slope^2 / variance, in the free fit
    threshold: float  # log(n): what a Wald statistic must exceed for its slope to be kept
    c_minus: np.ndarray  # (H,) curvature below / above the optimum (metric per squared fit unit)
    c_plus: np.ndarray
    corr: np.ndarray  # (H(H-1)/2,) interaction coefficients r_jk
    offsets: np.ndarray  # (n_groups,) d: the model's best metric at each scale point (first choice combination)
    sigma: float  # robust residual sigma of completed trials in the window: the trial noise the model sees
    n_used: int  # trials with weight in the final fit
    # Bootstrap draws: (B, H), (B, H, A), (B, H, A), (B,) for sigma-free quantities.
    boot_mu0: np.ndarray
    boot_slopes: np.ndarray
    boot_free_slopes: np.ndarray
    boot_offsets: np.ndarray  # (B, n_groups)

    lows: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (H,) the searched range, fit coordinate
    highs: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def index(self, name: str) -> int:
        return self.names.index(name)

    def span(self, j: int) -> float:
        return float(self.highs[j] - self.lows[j])

    def depth(self, j: int, dist: float) -> float:
        """The model's rise in metric `dist` fit units either side of the optimum, averaged over both sides."""
        return float(0.5 * (self.c_minus[j] + self.c_plus[j]) * dist**2)


# --------------------------------------------------------------------------------------------------------------
# The model, batched: theta (B, p)
# --------------------------------------------------------------------------------------------------------------


def _z(D: Design, L: Layout, th: np.ndarray) -> np.ndarray:
    mu = L.mu0(th)[:, None, :] + np.matmul(D.x[None, :, :], np.swapaxes(L.slopes(th), 1, 2))  # (B, n, H)
    return D.u[None, :, :] - mu


def _shape(D: Design, L: Layout, th: np.ndarray, z: np.ndarray) -> np.ndarray:
    lcm, lcp = L.log_curv(th)
    lcm = np.clip(lcm, *LOG_CURV_BOUNDS)
    lcp = np.clip(lcp, *LOG_CURV_BOUNDS)
    c = np.where(z < 0, np.exp(lcm)[:, None, :], np.exp(lcp)[:, None, :])  # (B, n, H)
    f = (c * z * z).sum(-1)
    if L.H > 1:
        r = L.corr(th)
        sq = np.sqrt(c) * z
        k = 0
        for j in range(L.H):
            for m in range(j + 1, L.H):
                f = f + 2.0 * r[:, k : k + 1] * sq[..., j] * sq[..., m]
                k += 1
    return f


def _linear_design(D: Design) -> np.ndarray:
    """One-hot scale points, then one-hot choice combinations but the first: the offsets d and e."""
    cols = [np.eye(D.n_groups)[D.group]]
    if D.n_cats > 1:
        cols.append(np.eye(D.n_cats)[D.cat][:, 1:])
    return np.concatenate(cols, axis=1)


def _offsets(Lin: np.ndarray, resid: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of resid (B, n) on the offset design, per row: (B, q). Completed trials only (w)."""
    A = np.matmul(Lin.T[None, :, :] * w[:, None, :], Lin)  # (B, q, q); matmul, not einsum: BLAS speed
    rhs = (w * resid) @ Lin
    q = A.shape[1]
    ridge = 1e-9 * (np.trace(A, axis1=1, axis2=2) / q + 1e-12)[:, None, None] * np.eye(q)
    return np.linalg.solve(A + ridge, rhs[:, :, None])[:, :, 0]


@dataclass
class _Weights:
    w: np.ndarray  # (B, n + H) resampling count x kernel x robust weight (0 outside the window); 1 for the prior
    w_lin: np.ndarray  # (B, n) the same for completed trials only: what the offsets are solved on
    pen: np.ndarray  # (B, n_groups) the level a diverged trial must be predicted at least at
    scale: np.ndarray  # (B,) the residuals' robust sigma: the unit of the prior's residuals


def _residuals(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, W: _Weights) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (B, n) (data - model for completed; the hinge for diverged) and the offsets (B, q)."""
    f = _shape(D, L, th, _z(D, L, th))
    y = np.where(D.diverged, 0.0, D.y)[None, :]
    off = _offsets(Lin, y - f, W.w_lin)
    pred = f + off @ Lin.T
    r = y - pred
    pen = W.pen[:, D.group]
    hinge = np.minimum(pred - pen, 0.0)  # negative when the model calls a diverged trial better than the level
    r = np.where(D.diverged[None, :], hinge, r)
    # The asymmetry's prior, as H extra residuals: log(c+ / c-) / ASYMMETRY_PRIOR in units of the noise.
    lcm, lcp = L.log_curv(th)
    prior = W.scale[:, None] * (lcp - lcm) / ASYMMETRY_PRIOR
    return np.concatenate([r, prior], axis=1), off


def _weights(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, counts: np.ndarray,
             local: bool = True) -> _Weights:
    """Kernel (unless not `local`: every trial in full), divergence levels and robust weights at theta."""
    B = th.shape[0]
    z = _z(D, L, th)
    dist = np.sqrt(((z / D.spans) ** 2).sum(-1))  # (B, n)
    present = counts > 0
    comp = present & ~D.diverged[None, :]
    dc = np.where(comp, dist, np.nan)
    n_c = comp.sum(1)
    frac = np.clip(np.maximum(WINDOW_FRACTION, MIN_WINDOW / np.maximum(n_c, 1)), 0.0, 1.0)
    with np.errstate(all="ignore"):
        reach = np.array([np.nanquantile(dc[b], frac[b]) if n_c[b] else 1.0 for b in range(B)])
    h = np.maximum(KERNEL_STRETCH * reach, MIN_BANDWIDTH)
    kern = np.clip(1.0 - (dist / h[:, None]) ** 3, 0.0, 1.0) ** 3 if local else np.ones_like(dist)
    base = counts * kern
    # Divergence level per point: a quantile of the completed trials' metrics inside the window.
    pen = np.full((B, D.n_groups), np.nan)
    yc = np.where(comp & (kern > 0), D.y[None, :], np.nan)
    for g in range(D.n_groups):
        m = D.group == g
        if m.any():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no completed trial there
                pen[:, g] = np.nanquantile(yc[:, m], DIVERGED_LEVEL, axis=1)
    pen = np.where(np.isfinite(pen), pen, np.nanmax(np.where(np.isfinite(pen), pen, np.nan), axis=1, keepdims=True))
    pen = np.nan_to_num(pen, nan=0.0)
    w_lin = np.where(D.diverged[None, :], 0.0, base)
    H = len(D.names)
    W = _Weights(np.concatenate([base, np.ones((B, H))], axis=1), w_lin, pen, np.ones(B))
    r, _ = _residuals(D, L, Lin, th, W)
    r = r[:, : D.n]
    # soft-L1: weight 1/sqrt(1 + (r/s)^2), s from the completed in-window residuals' median absolute size.
    ar = np.where((base > 0) & ~D.diverged[None, :], np.abs(r), np.nan)
    with np.errstate(all="ignore"):
        sig = 1.4826 * np.nanmedian(ar, axis=1)
    sig = np.where(np.isfinite(sig) & (sig > 0), sig, 1.0)
    s = sig * ROBUST_SCALE
    rob = 1.0 / np.sqrt(1.0 + (r / s[:, None]) ** 2)
    w = base * rob
    return _Weights(np.concatenate([w, np.ones((B, H))], axis=1), np.where(D.diverged[None, :], 0.0, w), pen, sig)


def _cost(r: np.ndarray, W: _Weights) -> np.ndarray:
    return (W.w * r * r).sum(1)


def _clip(D: Design, L: Layout, th: np.ndarray) -> np.ndarray:
    th = th.copy()
    mu = L.mu0(th)
    lo, hi = D.lows - D.spans, D.highs + D.spans  # an optimum a whole range beyond the data is not a number
    th[..., : L.H] = np.clip(mu, lo, hi)
    s = slice(L.H, L.H + L.H * L.A)
    th[..., s] = np.clip(th[..., s], -SLOPE_BOUND, SLOPE_BOUND)
    th[..., L.curv_slice()] = np.clip(th[..., L.curv_slice()], *LOG_CURV_BOUNDS)
    return th


def _jacobian(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, W: _Weights, r: np.ndarray) -> np.ndarray:
    """d residuals / d theta (B, n + H, p), analytic, the offsets projected out as `_residuals` solves them.

    With r = y - f - Lin off(f) and off the weighted least-squares offsets, dr = -(I - P) df, P the weighted
    projection onto the offsets; a diverged trial's hinge has the opposite sign where active, 0 elsewhere."""
    B, p = th.shape
    z = _z(D, L, th)  # (B, n, H)
    lcm, lcp = L.log_curv(th)
    neg = z < 0
    c = np.where(neg, np.exp(np.clip(lcm, *LOG_CURV_BOUNDS))[:, None, :],
                 np.exp(np.clip(lcp, *LOG_CURV_BOUNDS))[:, None, :])
    sq = np.sqrt(c)
    dfdz = 2.0 * c * z  # (B, n, H)
    half = c * z * z  # what d f / d log c_j picks up from the diagonal term
    dfdt = []
    if L.H > 1:
        rr = L.corr(th)
        k = 0
        for j in range(L.H):
            for m in range(j + 1, L.H):
                rk = rr[:, k : k + 1]
                dfdz[..., j] += 2.0 * rk * sq[..., j] * sq[..., m] * z[..., m]
                dfdz[..., m] += 2.0 * rk * sq[..., j] * sq[..., m] * z[..., j]
                cross = rk * sq[..., j] * sq[..., m] * z[..., j] * z[..., m]
                half[..., j] += cross
                half[..., m] += cross
                dfdt.append(2.0 * (1.0 - rk**2) * sq[..., j] * sq[..., m] * z[..., j] * z[..., m])
                k += 1
    df = np.empty((B, D.n, p))
    df[:, :, : L.H] = -dfdz  # mu0
    for j in range(L.H):
        for a in range(L.A):
            df[:, :, L.slope_index(j, a)] = -dfdz[..., j] * D.x[None, :, a]  # slopes
    o = L.curv_slice().start
    df[:, :, o : o + L.H] = np.where(neg, half, 0.0)  # log c-
    df[:, :, o + L.H : o + 2 * L.H] = np.where(neg, 0.0, half)  # log c+
    for k, col in enumerate(dfdt):
        df[:, :, o + 2 * L.H + k] = col
    A = np.matmul(Lin.T[None, :, :] * W.w_lin[:, None, :], Lin)
    q = A.shape[1]
    ridge = 1e-9 * (np.trace(A, axis1=1, axis2=2) / q + 1e-12)[:, None, None] * np.eye(q)
    rhs = np.matmul(Lin.T[None, :, :] * W.w_lin[:, None, :], df)  # (B, q, p)
    proj = np.matmul(Lin[None, :, :], np.linalg.solve(A + ridge, rhs))  # (B, n, p)
    dpred = df - proj
    active = D.diverged[None, :] & (r[:, : D.n] < 0)
    J = np.where(D.diverged[None, :, None], np.where(active[:, :, None], dpred, 0.0), -dpred)
    prior = np.zeros((B, L.H, p))
    for j in range(L.H):
        prior[:, j, o + j] = -W.scale / ASYMMETRY_PRIOR
        prior[:, j, o + L.H + j] = W.scale / ASYMMETRY_PRIOR
    return np.concatenate([J, prior], axis=1)


def _lm(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, free: np.ndarray, counts: np.ndarray,
        outer: int, inner: int, global_first: bool = False) -> tuple[np.ndarray, _Weights, np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt under re-weighting. `free` (B, p) bool: the parameters each row may move.
    `global_first`: the first pass weighs every trial (no kernel), so the bowl's shape is set by the whole range
    before the window narrows onto the optimum: started locally, a window of near-equal trials let the bowl go
    flat and its centre run off (seen on synthetic sweeps: the optimum 15 octaves below the data).

    Returns theta, the final weights, J'WJ (B, p, p) and J (B, n, p) of the last step."""
    B, p = th.shape
    th = th.copy()
    lam = np.full(B, 1e-2)
    JtWJ = np.zeros((B, p, p))
    J = np.zeros((B, D.n + L.H, p))
    W = _weights(D, L, Lin, th, counts)
    for o in range(outer):
        W = _weights(D, L, Lin, th, counts, local=not (global_first and o == 0))
        r, _ = _residuals(D, L, Lin, th, W)
        cost = _cost(r, W)
        for _ in range(inner):
            J = np.where(free[:, None, :], _jacobian(D, L, Lin, th, W, r), 0.0)
            Jw = J * W.w[:, :, None]
            JtWJ = np.matmul(np.swapaxes(Jw, 1, 2), J)
            g = np.matmul(np.swapaxes(Jw, 1, 2), r[:, :, None])[:, :, 0]
            diag = np.einsum("bii->bi", JtWJ)
            damp = lam[:, None] * np.maximum(diag, 1e-12) + np.where(free, 0.0, 1.0)
            Areg = JtWJ + damp[:, :, None] * np.eye(p)
            try:
                delta = np.linalg.solve(Areg, g[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                delta = np.einsum("bij,bj->bi", np.linalg.pinv(Areg), g)
            # r = data - model, J = d r / d theta: the Gauss-Newton step is -(J'WJ)^-1 J'W r.
            cand = _clip(D, L, th - np.where(free, delta, 0.0))
            rc, _ = _residuals(D, L, Lin, cand, W)
            cc = _cost(rc, W)
            better = np.isfinite(cc) & (cc <= cost)
            th = np.where(better[:, None], cand, th)
            r = np.where(better[:, None], rc, r)
            cost = np.where(better, cc, cost)
            lam = np.where(better, np.maximum(lam / 3.0, 1e-7), np.minimum(lam * 4.0, 1e7))
    return th, W, JtWJ, J


# --------------------------------------------------------------------------------------------------------------
# Fit, select, bootstrap
# --------------------------------------------------------------------------------------------------------------


def _init(D: Design, L: Layout) -> np.ndarray:
    """mu0: the median over scale points of the best trial's u; slopes 0; curvature from the metric's spread."""
    th = np.zeros(L.p)
    comp = ~D.diverged
    best_u = []
    for g in range(D.n_groups):
        m = comp & (D.group == g)
        if m.any():
            best_u.append(D.u[m][np.argmin(D.y[m])])
    mu0 = np.median(np.array(best_u), axis=0) if best_u else 0.5 * (D.lows + D.highs)
    th[: L.H] = mu0
    yc = D.y[comp]
    rise = float(np.quantile(yc, 0.5) - yc.min()) if yc.size > 1 else 1.0
    c0 = max(rise, 1e-6) / np.maximum((0.25 * D.spans) ** 2, 1e-12)
    lcm, lcp = L.curv_slice().start, L.curv_slice().start + L.H
    th[lcm : lcm + L.H] = np.log(c0)
    th[lcp : lcp + L.H] = np.log(c0)
    return th


def _free_mask(D: Design, L: Layout, slopes_free: np.ndarray) -> np.ndarray:
    """(p,) bool: everything free but the slopes not in `slopes_free` (H, A)."""
    free = np.ones(L.p, dtype=bool)
    for j in range(L.H):
        for a in range(L.A):
            free[L.slope_index(j, a)] = bool(slopes_free[j, a])
    return free


def _wald(L: Layout, th: np.ndarray, JtWJ: np.ndarray, J: np.ndarray, W: _Weights, r: np.ndarray,
          free: np.ndarray, n_used: np.ndarray, q: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """var(slope) per row (B, H, A) (inf where the slope is not free). The sandwich (heteroskedasticity-robust) one,
    (J'WJ)^-1 J'W diag(r^2) WJ (J'WJ)^-1 with a small-sample factor n / (n - p): kernel and robust weights are not
    precision weights, and the plain sigma^2 (J'WJ)^-1 understated the variance (slopes kept on pure noise)."""
    B, p = th.shape
    out = np.zeros((B, L.H, L.A))
    k_free = free.sum(1) + q
    corr = n_used / np.maximum(n_used - k_free, 1)
    eye = np.eye(p)
    A = np.where(free[:, :, None] & free[:, None, :], JtWJ, 0.0) + np.where(free, 0.0, 1.0)[:, :, None] * eye
    A = A + 1e-12 * np.maximum(np.einsum("bii->b", A), 1e-12)[:, None, None] * eye
    try:
        Ainv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        Ainv = np.linalg.pinv(A)
    Jwr = J * (W.w * r)[:, :, None]
    if clusters is not None:
        # Cluster-robust: scores summed within a configuration (the same draw at every scale point, its seeds)
        # before the outer product, since a configuration's residuals share its misfit at every point.
        Jwr = np.matmul(clusters.T[None, :, :], Jwr)
    meat = np.matmul(np.swapaxes(Jwr, 1, 2), Jwr)
    cov = Ainv @ meat @ Ainv * corr[:, None, None]
    for j in range(L.H):
        for a in range(L.A):
            k = L.slope_index(j, a)
            var = cov[:, k, k]
            out[:, j, a] = np.where(free[:, k] & (var > 0), var, np.inf)
    return out


def _cluster_matrix(D: Design, L: Layout) -> np.ndarray:
    """(n + H, C) one-hot: which configuration each residual belongs to (the prior's rows, one cluster each)."""
    ids = list(dict.fromkeys(D.cluster.tolist()))
    M = np.zeros((D.n + L.H, len(ids) + L.H))
    M[np.arange(D.n), [ids.index(c) for c in D.cluster.tolist()]] = 1.0
    M[D.n + np.arange(L.H), len(ids) + np.arange(L.H)] = 1.0
    return M


def _fit_free(D: Design, L: Layout, Lin: np.ndarray, th0: np.ndarray, counts: np.ndarray, identifiable: np.ndarray,
              outer: int, inner: int, global_first: bool = False) -> dict[str, np.ndarray]:
    """The fit with every identifiable slope free, and each slope's (cluster-robust sandwich) variance."""
    B = counts.shape[0]
    free = np.broadcast_to(_free_mask(D, L, identifiable), (B, L.p)).copy()
    th, W, JtWJ, J = _lm(D, L, Lin, th0, free, counts, outer, inner, global_first)
    r, _ = _residuals(D, L, Lin, th, W)
    n_used = (W.w[:, : D.n] > 0).sum(1)
    var = _wald(L, th, JtWJ, J, W, r, free, n_used, Lin.shape[1], _cluster_matrix(D, L))
    return {"th": th, "var": var, "n_used": n_used}


def _refit(D: Design, L: Layout, Lin: np.ndarray, th_free: np.ndarray, th0_sel: np.ndarray, keep: np.ndarray,
           counts: np.ndarray, outer: int, inner: int, global_first: bool = False) -> dict[str, np.ndarray]:
    """The fit with only the kept slopes free (B, H, A), from th0_sel with the kept slopes' free estimates: a
    free fit that ran off along a flat direction does not drag the refit with it."""
    B = counts.shape[0]
    th = np.broadcast_to(th0_sel, (B, L.p)).copy()
    free = np.ones((B, L.p), dtype=bool)
    for j in range(L.H):
        for a in range(L.A):
            k = L.slope_index(j, a)
            th[:, k] = np.where(keep[:, j, a], th_free[:, k], 0.0)
            free[:, k] = keep[:, j, a]
    th, W, _, _ = _lm(D, L, Lin, th, free, counts, outer, inner, global_first)
    r, off = _residuals(D, L, Lin, th, W)
    comp_in = (W.w[:, : D.n] > 0) & ~D.diverged[None, :]
    ar = np.where(comp_in, np.abs(r[:, : D.n]), np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = 1.4826 * np.nanmedian(ar, axis=1)
    return {"th": th, "offsets": off[:, : D.n_groups], "sigma": sigma, "n_used": (W.w[:, : D.n] > 0).sum(1)}


def _robust_var(x: np.ndarray) -> np.ndarray:
    """Variance from the interquartile range (per column of the first axis): a few runaway replicates do not
    inflate it."""
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    return ((q75 - q25) / 1.349) ** 2


def bootstrap_counts(D: Design, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) resampling counts: within each scale point, configurations with replacement, then the seeds
    of each drawn configuration with replacement (a configuration with one seed: plain trial resampling)."""
    counts = np.zeros((n_boot, D.n), dtype=np.int64)
    if n_boot <= 0:
        return counts
    for g in range(D.n_groups):
        idx = np.flatnonzero(D.group == g)
        if idx.size == 0:
            continue
        clusters = [idx[D.cluster[idx] == c] for c in dict.fromkeys(D.cluster[idx].tolist())]
        picks = rng.multinomial(len(clusters), np.full(len(clusters), 1.0 / len(clusters)), size=n_boot)
        for c, members in enumerate(clusters):
            if members.size == 1:
                counts[:, members[0]] = picks[:, c]
            else:
                counts[:, members] = rng.multinomial(picks[:, c] * members.size,
                                                     np.full(members.size, 1.0 / members.size))
    return counts


def fit_joint(D: Design, *, n_boot: int, rng: np.random.Generator) -> JointFit:
    """The joint model of one parametrization's trials, its slopes selected, with a bootstrap of everything."""
    L = Layout(len(D.names), len(D.axes))
    Lin = _linear_design(D)
    identifiable = np.ones((L.H, L.A), dtype=bool)
    for a in range(L.A):
        identifiable[:, a] = len(np.unique(D.x[:, a])) >= 2
    ones = np.ones((1, D.n))
    th0 = _init(D, L)[None, :]
    free = _fit_free(D, L, Lin, th0, ones, identifiable, OUTER, INNER, global_first=True)
    slope = L.slopes(free["th"])  # (1, H, A)
    var = free["var"]
    counts = bootstrap_counts(D, n_boot, rng) if n_boot > 0 else np.zeros((0, D.n))
    if n_boot > 0:
        # Replicates start from the full-data free fit; the selection is redone on each.
        bfree = _fit_free(D, L, Lin, np.broadcast_to(free["th"], (n_boot, L.p)).copy(), counts, identifiable,
                          BOOT_OUTER, BOOT_INNER)
        b_slope = L.slopes(bfree["th"])
        # The sandwich variance understates the slope's spread on small sweeps (the kernel and robust weights
        # adapt to the data): measured on synthetic sweeps with a fixed optimum, the bootstrap spread was 1.4x
        # its square root, and slopes were kept on noise 3x as often as the criterion allows. So the test uses
        # the larger of the two, and each replicate's sandwich is scaled by the same factor.
        boot_var = _robust_var(b_slope)[None]
        inflate = np.where(np.isfinite(var) & (var > 0), np.maximum(boot_var / var, 1.0), 1.0)
        var = np.maximum(var, boot_var)
    n_used = free["n_used"]
    threshold = np.log(np.maximum(n_used, 2))
    with np.errstate(all="ignore"):
        wald = np.where(np.isfinite(var) & (var > 0), slope**2 / var, 0.0)
    keep = (wald > threshold[:, None, None]) & identifiable[None]
    full = _refit(D, L, Lin, free["th"], th0, keep, ones, OUTER, INNER, global_first=True)
    th = full["th"][0]
    lcm, lcp = L.log_curv(th)
    if n_boot > 0:
        b_var = bfree["var"] * inflate
        b_thr = np.log(np.maximum(bfree["n_used"], 2))
        with np.errstate(all="ignore"):
            b_wald = np.where(np.isfinite(b_var) & (b_var > 0), b_slope**2 / b_var, 0.0)
        b_keep = (b_wald > b_thr[:, None, None]) & identifiable[None]
        boot = _refit(D, L, Lin, bfree["th"], full["th"], b_keep, counts, BOOT_OUTER, BOOT_INNER)
        b_mu0, b_sl, b_free, b_off = (L.mu0(boot["th"]), L.slopes(boot["th"]), b_slope, boot["offsets"])
    else:
        b_mu0 = np.zeros((0, L.H))
        b_sl = b_free = np.zeros((0, L.H, L.A))
        b_off = np.zeros((0, D.n_groups))
    sigma = float(full["sigma"][0]) if math.isfinite(float(full["sigma"][0])) else float("nan")
    return JointFit(
        names=D.names,
        kinds=D.kinds,
        axes=D.axes,
        mu0=L.mu0(th).copy(),
        slopes=L.slopes(th).copy(),
        kept=keep[0],
        free_slopes=slope[0].copy(),
        wald=wald[0],
        threshold=float(threshold[0]),
        c_minus=np.exp(np.clip(lcm, *LOG_CURV_BOUNDS)),
        c_plus=np.exp(np.clip(lcp, *LOG_CURV_BOUNDS)),
        corr=L.corr(th).copy(),
        offsets=full["offsets"][0],
        sigma=sigma,
        n_used=int(full["n_used"][0]),
        boot_mu0=b_mu0,
        boot_slopes=b_sl,
        boot_free_slopes=b_free,
        boot_offsets=b_off,
        lows=D.lows,
        highs=D.highs,
    )


def subset(D: Design, keep: np.ndarray) -> Design:
    """The design of the trials in `keep` (bool, (n,)), scale points renumbered; axes left with a single value
    dropped (no slope can be fitted along them)."""
    groups = sorted(set(D.group[keep].tolist()))
    renum = {g: i for i, g in enumerate(groups)}
    x = D.x[keep]
    axes_keep = [a for a in range(len(D.axes)) if len(np.unique(x[:, a])) >= 2]
    return Design(D.names, D.kinds, D.lows, D.highs, tuple(D.axes[a] for a in axes_keep), D.u[keep],
                  x[:, axes_keep], np.array([renum[g] for g in D.group[keep].tolist()], dtype=int), len(groups),
                  D.cat[keep], D.n_cats, D.y[keep], D.diverged[keep], D.cluster[keep])


def predict_u(fit: JointFit, x: dict[str, float]) -> np.ndarray:
    """The optimum (fit coordinate, per hyperparameter) at a scale point given by x[axis] = log2(scale / base)."""
    mu = fit.mu0.copy()
    for a, axis in enumerate(fit.axes):
        mu = mu + fit.slopes[:, a] * x.get(axis, 0.0)
    return mu


def rise(fit: JointFit, j: int, dz: float) -> float:
    """The model's metric `dz` fit units from hyperparameter j's optimum (the others at theirs)."""
    c = fit.c_minus[j] if dz < 0 else fit.c_plus[j]
    return float(c * dz * dz)
