"""The joint model's curve and its solver: the metric as a shared bowl shifted per scale point, fitted by a batched
Levenberg-Marquardt (one row of theta per bootstrap replicate) under re-weighting (kernel, robust, divergence
levels). See mutransfer.fit.joint for the model and why it is built this way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mutransfer.fit.design import Design, take

# The kernel's reach per hyperparameter: where the fitted bowl has risen by RISE_SIGMAS trial-noise sigmas, i.e.
# sqrt(RISE_SIGMAS * sigma / c). Halfway out (where a trial still counts 2/3) the rise is RISE_SIGMAS / 4 = 4 sigmas.
# Why a rise and not a share of the trials: the vertex of a quadratic fitted to a bowl that is not one (asymmetric,
# flattening far from the optimum) is biased by about the window's width, while its noise grows as the window
# narrows; both balance where the window scales as sqrt(noise / curvature). So a quiet sweep looks closely at the
# optimum, a noisy one looks wide, and a flat bowl (c small) gets a wide window instead of a centre that runs off.
RISE_SIGMAS = 16.0
MIN_WINDOW = 6  # completed trials the window holds at least ...
MIN_PER_POINT = 3  # ... and at least this many per scale point on average, so every offset is pinned
# A diverged trial is at least as bad as this quantile of the completed trials of its scale point inside the
# window. Not the worst of them: the worst is often a barely-trained run octaves below the optimum, and a bowl
# forced up to it right past the optimum bends the whole fit (measured: the optimum moved up by an octave).
DIVERGED_LEVEL = 0.5
ROBUST_SCALE = 2.0  # soft-L1 scale in robust sigmas of the residuals: within it, a residual counts in full
# The two sides' curvatures differ only as far as the data say: a zero-centred Gaussian prior on log(c+ / c-) with
# this standard deviation (a factor 1.4 at one sd). With a dozen draws per point, fully free sides traded the
# optimum's place against the curvatures (optimum sd 0.7 octave on synthetic sweeps at noise 0.08, against 0.2
# with this prior). Looser (0.7) was measured and rejected: on a real sweep (the quickstart: a flat bottom between
# a gentle low-LR wall and a steep divergence wall, a gap in the draws between them) the bowl went 27:1 and put
# its optimum in the gap beside the steep wall, 2.5 octaves above every point's own optimum. The price of 0.35 is
# a bias of 0.1-0.2 octave towards the shallow side on truly asymmetric bowls, which quiet sweeps' intervals miss.
ASYMMETRY_PRIOR = 0.35
# The interaction terms likewise: a zero-centred Gaussian prior on atanh(correlation) with this sd. With a few dozen
# draws in three dimensions, a free correlation of 0.5-0.8 coupled a flat hyperparameter to the LR and moved the
# LR's optimum by 1.5 octaves from every point's own (a real GPT sweep of lr, output_mult and init_std).
CORRELATION_PRIOR = 0.5
LOG_CURV_BOUNDS = (-25.0, 15.0)  # log curvature: metric units per squared fit unit
# No optimum moves by more than this many fit units per doubling of scale (SP's LR drifts by about one octave):
# beyond it, a free slope is the optimizer running off along a flat direction, not a reading of the data.
SLOPE_BOUND = 4.0
CONVERGED = 1e-9  # relative cost gain of an accepted step below which a row stops iterating


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

    @property
    def inter_start(self) -> int:
        """Where the interaction parameters (atanh of each pair's correlation) start in theta: they run to the end."""
        return self.H + self.H * self.A + 2 * self.H

    def corr(self, th: np.ndarray) -> np.ndarray:
        return np.tanh(th[..., self.inter_start :])

    @property
    def K(self) -> int:
        """Interaction terms (pairs of hyperparameters)."""
        return self.H * (self.H - 1) // 2

    @property
    def n_prior(self) -> int:
        """Prior rows after the data's: one per asymmetry, one per interaction."""
        return self.H + self.K

    def curv_slice(self) -> slice:
        o = self.H + self.H * self.A
        return slice(o, o + 2 * self.H)


def shift(D: Design, L: Layout, th: np.ndarray) -> np.ndarray:
    mu = L.mu0(th)[:, None, :] + np.matmul(D.x[None, :, :], np.swapaxes(L.slopes(th), 1, 2))  # (B, n, H)
    return D.u[None, :, :] - mu


def shape(D: Design, L: Layout, th: np.ndarray, z: np.ndarray) -> np.ndarray:
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


def linear_design(D: Design) -> np.ndarray:
    """One-hot scale points, then one-hot choice combinations but the first: the offsets d and e."""
    cols = [np.eye(D.n_groups)[D.group]]
    if D.n_cats > 1:
        cols.append(np.eye(D.n_cats)[D.cat][:, 1:])
    return np.concatenate(cols, axis=1)


def offsets(Lin: np.ndarray, resid: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of resid (B, n) on the offset design, per row: (B, q). Completed trials only (w)."""
    A = np.matmul(Lin.T[None, :, :] * w[:, None, :], Lin)  # (B, q, q); matmul, not einsum: BLAS speed
    rhs = (w * resid) @ Lin
    q = A.shape[1]
    ridge = 1e-9 * (np.trace(A, axis1=1, axis2=2) / q + 1e-12)[:, None, None] * np.eye(q)
    return np.linalg.solve(A + ridge, rhs[:, :, None])[:, :, 0]


def row_quantile(a: np.ndarray, q: float) -> np.ndarray:
    """np.nanquantile(a, q, axis=1) (linear interpolation), NaN for an all-NaN row; vectorised: numpy's goes row
    by row, and it was a third of a large sweep's fit."""
    a = np.sort(a, axis=1)  # NaN last
    k = (~np.isnan(a)).sum(1)
    pos = q * np.maximum(k - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
    rows = np.arange(a.shape[0])
    frac = pos - lo
    out = a[rows, lo] * (1.0 - frac) + a[rows, hi] * frac
    return np.where(k > 0, out, np.nan)


@dataclass
class Weights:
    w: np.ndarray  # (B, n + n_prior) resampling count x kernel x robust weight (0 outside the window); 1: the priors
    w_lin: np.ndarray  # (B, n) the same for completed trials only: what the offsets are solved on
    pen: np.ndarray  # (B, n_groups) the level a diverged trial must be predicted at least at
    scale: np.ndarray  # (B,) the residuals' robust sigma: the unit of the prior's residuals
    # (B,) the same over the window's inner half only (kernel weight >= 1/2): what the next window is sized by. The
    # whole window's residuals carry the bowl's misfit where the curve is not a bowl (a flat bottom between steep
    # walls), and sizing by them fed back: a wider window, more misfit, a wider window (seen on the quickstart).
    noise: np.ndarray | None = None
    # (B, n_prior) where each prior row is centred (0: at the prior's own centre, the full-data fit). A bootstrap
    # replicate draws its centres from the priors themselves: resampling the trials alone treats the priors as
    # known, and where a prior's pull dominates (a quiet sweep, an asymmetric bowl fitted near-symmetric) the
    # intervals then miss its bias (no-drift coverage 57% at noise 0.04, 16 draws).
    centre: np.ndarray | None = None


def residuals(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, W: Weights) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (B, n) (data - model for completed; the hinge for diverged) and the offsets (B, q)."""
    f = shape(D, L, th, shift(D, L, th))
    y = np.where(D.censored, 0.0, D.y)[None, :]
    off = offsets(Lin, y - f, W.w_lin)
    pred = f + off @ Lin.T
    r = y - pred
    # A diverged trial's level is its point's (W.pen); a stopped one's is its own floor.
    pen = np.where(np.isfinite(D.floor)[None, :], D.floor[None, :], W.pen[:, D.group])
    hinge = np.minimum(pred - pen, 0.0)  # negative when the model calls a censored trial better than its level
    r = np.where(D.censored[None, :], hinge, r)
    # The asymmetry's prior, as H extra residuals: log(c+ / c-) / ASYMMETRY_PRIOR in units of the noise.
    lcm, lcp = L.log_curv(th)
    c = W.centre if W.centre is not None else np.zeros((th.shape[0], L.n_prior))
    prior = W.scale[:, None] * (lcp - lcm - c[:, : L.H]) / ASYMMETRY_PRIOR
    # The interactions' prior: atanh(correlation) / CORRELATION_PRIOR, in units of the noise.
    inter = W.scale[:, None] * (th[:, L.inter_start :] - c[:, L.H :]) / CORRELATION_PRIOR
    return np.concatenate([r, prior, inter], axis=1), off


def weights(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, counts: np.ndarray,
            sigma: np.ndarray | None, centre: np.ndarray | None = None) -> Weights:
    """Kernel, divergence levels and robust weights at theta. `sigma` (B,): the trial noise the window is sized
    by (see RISE_SIGMAS); None weighs every trial in full (no kernel)."""
    B = th.shape[0]
    z = shift(D, L, th)
    present = counts > 0
    comp = present & ~D.censored[None, :]
    if sigma is None:
        kern = np.ones((B, D.n))
    else:
        lcm, lcp = L.log_curv(th)
        c = np.exp(0.5 * (np.clip(lcm, *LOG_CURV_BOUNDS) + np.clip(lcp, *LOG_CURV_BOUNDS)))  # (B, H)
        reach = np.sqrt(RISE_SIGMAS * sigma[:, None] / c)  # (B, H) fit units
        dist = np.sqrt(((z / reach[:, None, :]) ** 2).sum(-1))  # (B, n): 1 at the reach
        n_c = comp.sum(1)
        need = np.minimum(np.maximum(MIN_WINDOW, MIN_PER_POINT * D.n_groups), n_c)
        # Too few trials inside: stretch the reach to hold `need` of them (with a margin, as the tricube fades).
        dc = np.sort(np.where(comp, dist, np.inf), axis=1)
        kth = dc[np.arange(B), np.maximum(need - 1, 0)]
        h = np.maximum(1.0, np.where(np.isfinite(kth), 1.25 * kth, 1.0))
        kern = np.clip(1.0 - (dist / h[:, None]) ** 3, 0.0, 1.0) ** 3
    base = counts * kern
    # Divergence level per point: a quantile of the completed trials' metrics inside the window.
    pen = np.full((B, D.n_groups), np.nan)
    yc = np.where(comp & (kern > 0), D.y[None, :], np.nan)
    for g in range(D.n_groups):
        m = D.group == g
        if m.any():
            pen[:, g] = row_quantile(yc[:, m], DIVERGED_LEVEL)  # NaN: a replicate with no completed trial there
    # A point with no completed trial in the window takes the highest level of the others (0 if none has one).
    finite = np.isfinite(pen)
    top = np.max(np.where(finite, pen, -np.inf), axis=1, keepdims=True)
    pen = np.where(finite, pen, np.where(np.isfinite(top), top, 0.0))
    w_lin = np.where(D.censored[None, :], 0.0, base)
    W = Weights(np.concatenate([base, np.ones((B, L.n_prior))], axis=1), w_lin, pen, np.ones(B), centre=centre)
    r, _ = residuals(D, L, Lin, th, W)
    r = r[:, : D.n]
    # soft-L1: weight 1/sqrt(1 + (r/s)^2), s from the completed in-window residuals' median absolute size.
    ar = np.where((base > 0) & ~D.censored[None, :], np.abs(r), np.nan)
    sig = 1.4826 * row_quantile(ar, 0.5)
    sig = np.where(np.isfinite(sig) & (sig > 0), sig, 1.0)
    inner = np.isfinite(ar) & (kern >= 0.5)
    noise = 1.4826 * row_quantile(np.where(inner, ar, np.nan), 0.5)
    noise = np.where((inner.sum(1) >= MIN_WINDOW) & np.isfinite(noise) & (noise > 0), noise, sig)
    s = sig * ROBUST_SCALE
    rob = 1.0 / np.sqrt(1.0 + (r / s[:, None]) ** 2)
    w = base * rob
    return Weights(np.concatenate([w, np.ones((B, L.n_prior))], axis=1), np.where(D.censored[None, :], 0.0, w), pen, sig,
                   noise, centre)


def weighted_cost(r: np.ndarray, W: Weights) -> np.ndarray:
    return (W.w * r * r).sum(1)


def clip(D: Design, L: Layout, th: np.ndarray) -> np.ndarray:
    th = th.copy()
    mu = L.mu0(th)
    # The base optimum stays inside the searched range: beyond it the data say only "further out" (the per-point
    # view flags `edge`, the export's guard refuses a value at the edge). Free, a flat direction ran off: a 3-
    # hyperparameter fit of a real sweep put init_std's optimum 7 octaves below the range while every point's
    # best was at its top.
    th[..., : L.H] = np.clip(mu, D.lows, D.highs)
    s = slice(L.H, L.H + L.H * L.A)
    th[..., s] = np.clip(th[..., s], -SLOPE_BOUND, SLOPE_BOUND)
    th[..., L.curv_slice()] = np.clip(th[..., L.curv_slice()], *LOG_CURV_BOUNDS)
    return th


def jacobian(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, W: Weights, r: np.ndarray) -> np.ndarray:
    """d residuals / d theta (B, n + H, p), analytic, the offsets projected out as `_residuals` solves them.

    With r = y - f - Lin off(f) and off the weighted least-squares offsets, dr = -(I - P) df, P the weighted
    projection onto the offsets; a diverged trial's hinge has the opposite sign where active, 0 elsewhere."""
    B, p = th.shape
    z = shift(D, L, th)  # (B, n, H)
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
        df[:, :, L.inter_start + k] = col
    M = Lin.T[None, :, :] * W.w_lin[:, None, :]  # (B, q, n)
    A = np.matmul(M, Lin)
    q = A.shape[1]
    ridge = 1e-9 * (np.trace(A, axis1=1, axis2=2) / q + 1e-12)[:, None, None] * np.eye(q)
    df -= np.matmul(Lin[None, :, :], np.linalg.solve(A + ridge, np.matmul(M, df)))  # d pred, in place
    # dr = -dpred for a completed trial; +dpred for a diverged one whose hinge is active; 0 otherwise.
    sign = np.where(D.censored[None, :], (r[:, : D.n] < 0).astype(float), -1.0)
    out = np.empty((B, D.n + L.n_prior, p))
    np.multiply(df, sign[:, :, None], out=out[:, : D.n])
    out[:, D.n :] = 0.0
    for j in range(L.H):
        out[:, D.n + j, o + j] = -W.scale / ASYMMETRY_PRIOR
        out[:, D.n + j, o + L.H + j] = W.scale / ASYMMETRY_PRIOR
    for k in range(L.K):
        out[:, D.n + L.H + k, L.inter_start + k] = W.scale / CORRELATION_PRIOR
    return out


def lm(D: Design, L: Layout, Lin: np.ndarray, th: np.ndarray, free: np.ndarray, counts: np.ndarray,
        outer: int, inner: int, global_first: bool = False, sigma: np.ndarray | None = None,
        fixed_sigma: bool = False, centre: np.ndarray | None = None
        ) -> tuple[np.ndarray, Weights, np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt under re-weighting. `free` (B, p) bool: the parameters each row may move.
    `global_first`: the first pass weighs every trial (no kernel), so the bowl's shape and the noise are read off the
    whole range before the window narrows onto the optimum: started locally, a window of near-equal trials let the
    bowl go flat and its centre run off (seen on synthetic sweeps: the optimum 15 octaves below the data).
    `sigma` (B,): the noise the first local window is sized by (a replicate starts from the full fit's); each pass
    then sizes the next one's window by its own residuals, unless `fixed_sigma` (the noise read off repeats).

    Returns theta, the final weights, J'WJ (B, p, p) and J (B, n, p) of the last step."""
    B, p = th.shape
    th = th.copy()
    JtWJ = np.zeros((B, p, p))
    sig = sigma
    if sig is None and not global_first:
        sig = weights(D, L, Lin, th, counts, None, centre).noise
    idx = np.arange(D.n)
    for o in range(outer):
        Wf = weights(D, L, Lin, th, counts, None if (global_first and o == 0) else sig, centre)
        if not fixed_sigma:
            sig = Wf.noise
        # The pass looks only at trials some row weighs: outside every window a trial adds nothing to the cost,
        # the gradient or J'WJ, and the kernel's compact support leaves most of a large sweep out.
        idx = np.flatnonzero((Wf.w[:, : D.n] > 0).any(0))
        Ds, Lins = take(D, idx), Lin[idx]
        W = Weights(np.concatenate([Wf.w[:, idx], Wf.w[:, D.n :]], axis=1), Wf.w_lin[:, idx], Wf.pen, Wf.scale,
                    centre=Wf.centre)
        J = np.zeros((B, idx.size + L.n_prior, p))
        r, _ = residuals(Ds, L, Lins, th, W)
        cost = weighted_cost(r, W)
        lam = np.full(B, 1e-2)
        act = np.arange(B)  # rows still moving: a row whose accepted step gains almost nothing is done
        for _ in range(inner):
            if act.size == 0:
                break
            Wa = Weights(W.w[act], W.w_lin[act], W.pen[act], W.scale[act],
                         centre=None if W.centre is None else W.centre[act])
            ta, ra, fa = th[act], r[act], free[act]
            Ja = jacobian(Ds, L, Lins, ta, Wa, ra)
            Ja *= fa[:, None, :]
            Jw = Ja * Wa.w[:, :, None]
            A = np.matmul(np.swapaxes(Jw, 1, 2), Ja)
            J[act], JtWJ[act] = Ja, A
            g = np.matmul(np.swapaxes(Jw, 1, 2), ra[:, :, None])[:, :, 0]
            diag = np.einsum("bii->bi", A)
            damp = lam[act, None] * np.maximum(diag, 1e-12) + np.where(fa, 0.0, 1.0)
            Areg = A + damp[:, :, None] * np.eye(p)
            try:
                delta = np.linalg.solve(Areg, g[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                delta = np.einsum("bij,bj->bi", np.linalg.pinv(Areg), g)
            # r = data - model, J = d r / d theta: the Gauss-Newton step is -(J'WJ)^-1 J'W r.
            cand = clip(D, L, ta - np.where(fa, delta, 0.0))
            rc, _ = residuals(Ds, L, Lins, cand, Wa)
            cc = weighted_cost(rc, Wa)
            better = np.isfinite(cc) & (cc <= cost[act])
            gain = np.where(better, cost[act] - cc, 0.0)
            th[act] = np.where(better[:, None], cand, ta)
            r[act] = np.where(better[:, None], rc, ra)
            cost[act] = np.where(better, cc, cost[act])
            lam[act] = np.where(better, np.maximum(lam[act] / 3.0, 1e-7), np.minimum(lam[act] * 4.0, 1e7))
            done = (better & (gain <= CONVERGED * np.maximum(cost[act], 1e-12))) | (lam[act] >= 1e7)
            act = act[~done]
    # J over every trial (zero rows outside the last pass's windows), as the callers index it.
    J_full = np.zeros((B, D.n + L.n_prior, p))
    J_full[:, idx] = J[:, : idx.size]
    J_full[:, D.n :] = J[:, idx.size :]
    return th, Wf, JtWJ, J_full
