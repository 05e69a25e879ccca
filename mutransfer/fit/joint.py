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
  far above it diverges): trials are weighted by a tricube kernel in z that reaches where the fitted bowl has
  risen by RISE_SIGMAS noise sigmas (mutransfer.fit.model says why): narrow on a quiet sweep, wide on a noisy one.
- Robustness. soft-L1 (pseudo-Huber) weights with scale ROBUST_SCALE x the residuals' robust sigma: one broken run
  does not move the optimum.
- Diverged trials are censored evidence: the model must predict them at least as bad as the median completed
  trial of their scale point inside the window (a one-sided, hinge residual). They pull the optimum away from a
  divergence cliff without being given a made-up metric.
- Slopes are kept only where the data carry them: after the fit with every slope free, a slope whose Wald
  chi-square (slope^2 / its variance) is below log(n), n the parametrization's trials, is set to zero and the model
  refitted. That is the BIC's penalty for one parameter (the Wald statistic approximates the likelihood ratio);
  a µP model whose optimum does not move keeps slope 0 instead of extrapolating noise. The variance is the larger
  of the cluster-robust sandwich and the bootstrap spread of the free slope (the sandwich alone understated it).
- Uncertainty: a bootstrap that resamples trials within each scale point (configurations, then their seeds, when
  a configuration was repeated), each replicate refitted from the full-data estimate and re-selected: the
  intervals include the selection's own uncertainty. Nothing is widened to contain the point estimate.

Everything is vectorised over bootstrap replicates: a replicate is a row of weights, and a batched
Levenberg-Marquardt with analytic Jacobians (mutransfer.fit.model) fits all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mutransfer.fit.design import Design, bootstrap_counts, repeat_noise
from mutransfer.fit.model import (
    ASYMMETRY_PRIOR,
    CORRELATION_PRIOR,
    LOG_CURV_BOUNDS,
    Layout,
    Weights,
    linear_design,
    lm,
    residuals,
    row_quantile,
)

OUTER = 4  # passes that re-centre the window, the divergence levels and the robust weights
INNER = 12  # Levenberg-Marquardt steps per pass
BOOT_OUTER = 2  # replicates start at the full-data estimate: fewer passes suffice
BOOT_INNER = 4


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
    sigma: float  # robust residual sigma of completed trials in the window: the trial noise the model sees
    n_used: int  # trials with weight in the final fit
    # Bootstrap draws, after selection (mu0 (B, H), slopes (B, H, A)) and of the free slopes (B, H, A).
    boot_mu0: np.ndarray
    boot_slopes: np.ndarray
    boot_free_slopes: np.ndarray
    lows: np.ndarray  # (H,) the searched range, fit coordinate
    highs: np.ndarray
    # (G,) the bowl's lowest metric at each scale point (design group), and its bootstrap draws (B, G).
    floors: np.ndarray
    boot_floors: np.ndarray

    def index(self, name: str) -> int:
        return self.names.index(name)

    def span(self, j: int) -> float:
        return float(self.highs[j] - self.lows[j])

    def depth(self, j: int, dist: float) -> float:
        """The model's rise in metric `dist` fit units either side of the optimum, averaged over both sides."""
        return float(0.5 * (self.c_minus[j] + self.c_plus[j]) * dist**2)


def _init(D: Design, L: Layout) -> np.ndarray:
    """mu0: the median over scale points of the best trial's u; slopes 0; curvature from the metric's spread."""
    th = np.zeros(L.p)
    comp = ~D.censored
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


def _wald(L: Layout, th: np.ndarray, JtWJ: np.ndarray, J: np.ndarray, W: Weights, r: np.ndarray,
          free: np.ndarray, n_used: np.ndarray, q: int,
          clusters: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
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
        order, starts = clusters
        Jwr = np.add.reduceat(Jwr[:, order, :], starts, axis=1)
    meat = np.matmul(np.swapaxes(Jwr, 1, 2), Jwr)
    cov = Ainv @ meat @ Ainv * corr[:, None, None]
    for j in range(L.H):
        for a in range(L.A):
            k = L.slope_index(j, a)
            var = cov[:, k, k]
            out[:, j, a] = np.where(free[:, k] & (var > 0), var, np.inf)
    return out


def _cluster_matrix(D: Design, L: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The residuals' order by configuration and where each configuration starts (np.add.reduceat's indices);
    the prior's rows are a cluster each."""
    ids = np.concatenate([D.cluster.astype(np.int64) - D.cluster.min(), D.cluster.max() - D.cluster.min() + 1
                          + np.arange(L.n_prior)])
    order = np.argsort(ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])
    return order, starts


def _fit_free(D: Design, L: Layout, Lin: np.ndarray, th0: np.ndarray, counts: np.ndarray, identifiable: np.ndarray,
              outer: int, inner: int, global_first: bool = False, sigma: np.ndarray | None = None,
              fixed_sigma: bool = False, centre: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The fit with every identifiable slope free, and each slope's (cluster-robust sandwich) variance."""
    B = counts.shape[0]
    free = np.broadcast_to(_free_mask(D, L, identifiable), (B, L.p)).copy()
    th, W, JtWJ, J = lm(D, L, Lin, th0, free, counts, outer, inner, global_first, sigma, fixed_sigma, centre)
    r, _ = residuals(D, L, Lin, th, W)
    n_used = (W.w[:, : D.n] > 0).sum(1)
    var = _wald(L, th, JtWJ, J, W, r, free, n_used, Lin.shape[1], _cluster_matrix(D, L))
    return {"th": th, "var": var, "n_used": n_used, "noise": W.noise}


def _refit(D: Design, L: Layout, Lin: np.ndarray, th_free: np.ndarray, th0_sel: np.ndarray, keep: np.ndarray,
           counts: np.ndarray, outer: int, inner: int, global_first: bool = False,
           sigma: np.ndarray | None = None, fixed_sigma: bool = False,
           centre: np.ndarray | None = None) -> dict[str, np.ndarray]:
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
    th, W, _, _ = lm(D, L, Lin, th, free, counts, outer, inner, global_first, sigma, fixed_sigma, centre)
    r, off = residuals(D, L, Lin, th, W)
    comp_in = (W.w[:, : D.n] > 0) & ~D.censored[None, :]
    ar = np.where(comp_in, np.abs(r[:, : D.n]), np.nan)
    sigma = 1.4826 * row_quantile(ar, 0.5)
    return {"th": th, "sigma": sigma, "n_used": (W.w[:, : D.n] > 0).sum(1), "floors": _floors(D, off, W.w_lin)}


def _floors(D: Design, off: np.ndarray, w_lin: np.ndarray) -> np.ndarray:
    """(B, n_groups) the bowl's lowest metric at each scale point: its offset plus the best choice combination's
    (the first combination's is 0). NaN where no completed trial of the point is inside the window."""
    d = off[:, : D.n_groups]
    e = off[:, D.n_groups :]
    best_e = np.minimum(e.min(axis=1), 0.0) if e.shape[1] else np.zeros(off.shape[0])
    seen = np.stack([(w_lin[:, D.group == g] > 0).any(1) for g in range(D.n_groups)], axis=1)
    return np.where(seen, d + best_e[:, None], np.nan)


def _robust_var(x: np.ndarray) -> np.ndarray:
    """Variance from the interquartile range (per column of the first axis): a few runaway replicates do not
    inflate it."""
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    return ((q75 - q25) / 1.349) ** 2


def _select(slope: np.ndarray, var: np.ndarray, n: int, identifiable: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The BIC choice per row: (Wald chi-square slope^2 / var, log(n), which slopes to keep), (B, H, A) each.
    n is every trial of the parametrization, not those inside the window: a narrow window on a quiet sweep must
    not lower the bar a slope has to clear."""
    threshold = np.full(slope.shape[0], np.log(max(n, 2)))
    with np.errstate(all="ignore"):
        wald = np.where(np.isfinite(var) & (var > 0), slope**2 / var, 0.0)
    return wald, threshold, (wald > threshold[:, None, None]) & identifiable[None]


def fit_joint(D: Design, *, n_boot: int, rng: np.random.Generator) -> JointFit:
    """The joint model of one parametrization's trials, its slopes selected, with a bootstrap of everything."""
    L = Layout(len(D.names), len(D.axes))
    Lin = linear_design(D)
    identifiable = np.ones((L.H, L.A), dtype=bool)
    for a in range(L.A):
        identifiable[:, a] = len(np.unique(D.x[:, a])) >= 2
    ones = np.ones((1, D.n))
    th0 = _init(D, L)[None, :]
    # The window is sized by the noise: read off repeats when the sweep has them (fixed), else off the residuals.
    noise = repeat_noise(D)
    fixed = noise is not None
    sig1 = np.array([noise]) if fixed else None
    free = _fit_free(D, L, Lin, th0, ones, identifiable, OUTER, INNER, global_first=True, sigma=sig1,
                     fixed_sigma=fixed)
    slope = L.slopes(free["th"])  # (1, H, A)
    var = free["var"]
    counts = bootstrap_counts(D, n_boot, rng) if n_boot > 0 else np.zeros((0, D.n))
    # Each replicate's priors are centred on a draw from themselves (see model.Weights.centre): with the trials
    # resampled too, a replicate is then a draw of the estimate under both sources of its uncertainty.
    centre = rng.normal(size=(n_boot, L.n_prior)) * np.array([ASYMMETRY_PRIOR] * L.H + [CORRELATION_PRIOR] * L.K)
    boot_sigma = np.full(n_boot, noise) if fixed else None  # None: each replicate reads its own residuals
    if n_boot > 0:
        # Replicates start from the full-data free fit; the selection is redone on each.
        bfree = _fit_free(D, L, Lin, np.broadcast_to(free["th"], (n_boot, L.p)).copy(), counts, identifiable,
                          BOOT_OUTER, BOOT_INNER, sigma=free["noise"].repeat(n_boot) if boot_sigma is None
                          else boot_sigma, fixed_sigma=fixed, centre=centre)
        b_slope = L.slopes(bfree["th"])
        # The sandwich variance understates the slope's spread on small sweeps (the kernel and robust weights
        # adapt to the data): measured on synthetic sweeps with a fixed optimum, the bootstrap spread was 1.4x
        # its square root, and slopes were kept on noise 3x as often as the criterion allows. So the test uses
        # the larger of the two.
        boot_var = _robust_var(b_slope)[None]
        var = np.maximum(var, boot_var)
    wald, threshold, keep = _select(slope, var, D.n, identifiable)
    full = _refit(D, L, Lin, free["th"], th0, keep, ones, OUTER, INNER, global_first=True, sigma=sig1,
                  fixed_sigma=fixed)
    th = full["th"][0]
    lcm, lcp = L.log_curv(th)
    if n_boot > 0:
        # Each replicate's selection judges its own slope against the full data's variance (the estimator's, the
        # larger of sandwich and bootstrap): a replicate's own sandwich, with duplicated trials, is itself noisy,
        # and on a real SP sweep (Wald 47 against log n = 3.6) 4% of replicates dropped a slope of -1 on an
        # inflated sandwich alone, which put 0 inside the slope's 95% interval.
        _, _, b_keep = _select(b_slope, np.broadcast_to(var, b_slope.shape), D.n, identifiable)
        boot = _refit(D, L, Lin, bfree["th"], full["th"], b_keep, counts, BOOT_OUTER, BOOT_INNER,
                      sigma=bfree["noise"] if boot_sigma is None else boot_sigma, fixed_sigma=fixed, centre=centre)
        b_mu0, b_sl, b_free, b_floors = L.mu0(boot["th"]), L.slopes(boot["th"]), b_slope, boot["floors"]
    else:
        b_mu0 = np.zeros((0, L.H))
        b_sl = b_free = np.zeros((0, L.H, L.A))
        b_floors = np.zeros((0, D.n_groups))
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
        sigma=float(full["sigma"][0]),
        n_used=int(full["n_used"][0]),
        boot_mu0=b_mu0,
        boot_slopes=b_sl,
        boot_free_slopes=b_free,
        lows=D.lows,
        highs=D.highs,
        floors=full["floors"][0],
        boot_floors=b_floors,
    )


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
