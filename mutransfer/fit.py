"""Optima per scale point, transfer laws per scale axis, and the value at the target: pure numpy/pandas.

The input is one row per trial (see `fit_sweep`); the output a `FitResult` of frozen dataclasses that round-trips
through JSON. Choices made here, and why:

- Fit coordinate. A loguniform hyperparameter is fitted in u = log2(x) (one unit = one octave), a uniform one in
  u = x. Transfer laws are u(optimum) = a + b·log2(scale): a power law for log hyperparameters, a change per doubling
  of the scale for linear ones.
- Diverged trials are evidence that the value was too large, not missing data: their metric becomes a penalty,
  worse than the worst completed trial. For ranking (which trial is best, the lower envelope, a choice's mean) the
  penalty is the worst completed metric at that scale point plus half the completed spread (`_penalty`). Inside a
  local quadratic it is the worst completed metric *in the fit window* plus half the window's spread: a global
  penalty, set by trials several octaves away, swamps the local bowl and throws the vertex arbitrarily far, while a
  local one still bends the quadratic up where runs diverged. So an optimum half an octave below a divergence cliff
  moves down by one to two octaves, and a cliff three octaves away has no effect. Failed, pending and running
  trials carry no evidence and are left out; a "completed" trial with a non-finite metric counts as diverged.
- The optimum is a robust local fit: a quadratic in u, weighted by a tricube kernel over the max(5, 40%) trials
  nearest the best one (diverged neighbours included, with their penalty), re-centred on its own vertex up to
  three times. The vertex is used when the quadratic is convex and the vertex lies within the points it was fitted
  on; otherwise the best observed value (flagged: `edge` or `non_monotone`).
- Random search over several hyperparameters at once: the marginal of each is its lower envelope (the best trial
  in each of up to 16 equal bins of the searched range), since the other hyperparameters make every single trial a
  noisy measurement of it. The best joint configuration (the best trial) is reported besides.
- Uncertainty is a trial bootstrap (resampling the trials of a scale point, shared by all its hyperparameters and
  seeded from the sweep seed and the point's name), vectorised over resamples. Laws are weighted least squares
  with weights 1/σ², σ from each point's interval; the slope's interval comes from refitting the law on the
  bootstrap draws of the per-point optima, and the value at the target from pushing the same draws along the laws.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mutransfer.conventions import does_not_transfer
from mutransfer.recipe import AXES, Choice, LogUniform, Recipe, Scale, Target, Uniform

__all__ = [
    "AxisStep",
    "FitResult",
    "FitWarning",
    "Law",
    "LineFit",
    "Optimum",
    "PointFit",
    "Transfer",
    "fit_law",
    "fit_sweep",
    "optimum_1d",
    "quad_curve",
]

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
MUP_SLOPE_LOG = 0.25  # octaves per doubling of width
MUP_SLOPE_LINEAR = 0.05  # of the searched range per doubling of width
SIGMA_FLOOR = 0.01  # of the searched range: a noise-free point must not take all the weight of a law
HORIZON_RATIO = 2.0


# --------------------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitWarning:
    # edge, few_near_optimum, flat, noisy, non_monotone, all_diverged, no_completed, mup_width_slope,
    # does_not_transfer (mutransfer.conventions), no_target_steps, ...
    code: str
    message: str
    parametrization: str | None = None
    hparam: str | None = None
    scale: str | None = None  # Scale.tag() of the point
    axis: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitWarning:
        return cls(**d)


@dataclass(frozen=True)
class Optimum:
    """The optimum of one hyperparameter at one scale point (or of one 1-D sweep)."""

    hparam: str
    kind: str  # log | linear | choice
    value: Any = None  # float (numeric) or the choice's value; None: no optimum
    lo: float | None = None  # interval (numeric), in the hyperparameter's own units
    hi: float | None = None
    log2_value: float | None = None  # log kind only
    log2_lo: float | None = None
    log2_hi: float | None = None
    method: str = "none"  # vertex | best_observed | best_mean | none
    r2: float | None = None  # of the local quadratic
    # metric ≈ a + b·(u − u0) + c·(u − u0)², u the fit coordinate: (u0, a, b, c). For plotting the fit.
    quad: tuple[float, float, float, float] | None = None
    n_completed: int = 0
    n_diverged: int = 0
    n_near: int = 0  # completed trials within ±1 octave (log) or ±10% of the range (linear)
    # Share of bootstrap resamples that agree: numeric, whose fit found a vertex; choice, that pick the same value.
    support: float | None = None
    flags: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return self.value is not None

    @property
    def u(self) -> float | None:
        """The optimum in the fit coordinate (log2 for log hyperparameters)."""
        if self.value is None or self.kind == "choice":
            return None
        return self.log2_value if self.kind == "log" else float(self.value)

    @property
    def u_interval(self) -> tuple[float, float] | None:
        if self.value is None or self.kind == "choice" or self.lo is None or self.hi is None:
            return None
        if self.kind == "log":
            return (self.log2_lo, self.log2_hi)  # type: ignore[return-value]
        return (self.lo, self.hi)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Optimum:
        d = dict(d)
        d["quad"] = tuple(d["quad"]) if d.get("quad") is not None else None
        d["flags"] = tuple(d.get("flags") or ())
        return cls(**d)


@dataclass(frozen=True)
class PointFit:
    """One (parametrization, scale point): its trials, best trial and the optimum of each swept hyperparameter."""

    parametrization: str
    scale: Scale
    is_base: bool
    n_trials: int  # all rows, whatever their status
    n_completed: int
    n_diverged: int
    n_other: int  # failed, pending, running: not evidence
    best_key: str | None
    best_metric: float | None
    best_hparams: dict[str, Any]  # the best trial's values: the best joint configuration at this point
    optima: dict[str, Optimum]

    @property
    def tag(self) -> str:
        return self.scale.tag()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PointFit:
        d = dict(d)
        d["scale"] = Scale.model_validate(d["scale"])
        d["optima"] = {k: Optimum.from_dict(v) for k, v in d["optima"].items()}
        return cls(**d)


@dataclass(frozen=True)
class Law:
    """u(optimum) = intercept + slope·log2(scale) along one axis (the other axes at base)."""

    parametrization: str
    hparam: str
    axis: str
    coord: str  # log2 | linear: what u is
    scales: tuple[int, ...]  # the points used (with an optimum), ascending
    optima: tuple[float, ...]  # u at those points
    weights: tuple[float, ...]
    intercept: float | None
    slope: float  # 0 when there is no law (fewer than 2 points)
    slope_lo: float | None
    slope_hi: float | None
    note: str = ""

    @property
    def fitted(self) -> bool:
        return len(self.scales) >= 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Law:
        d = dict(d)
        for k in ("scales", "optima", "weights"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class AxisStep:
    """One axis's contribution to the value at the target."""

    axis: str
    base: int
    target: int
    largest_proxy: int
    swept: bool  # a law with at least two points moved the value
    slope: float
    shift: float  # in the fit coordinate: slope × (log2 target − log2 base)
    extrapolation: float  # target / largest proxy along this axis
    doublings: float  # log2 of that: how far beyond the largest proxy
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AxisStep:
        return cls(**d)


@dataclass(frozen=True)
class Transfer:
    """A hyperparameter's value at the target: the base-scale optimum moved along each axis's law."""

    parametrization: str
    hparam: str
    kind: str
    value: Any  # None when the base point has no optimum
    lo: float | None
    hi: float | None
    log2_value: float | None
    log2_lo: float | None
    log2_hi: float | None
    base_value: Any
    base_lo: float | None
    base_hi: float | None
    steps: tuple[AxisStep, ...]
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transfer:
        d = dict(d)
        d["steps"] = tuple(AxisStep.from_dict(s) for s in d["steps"])
        return cls(**d)


@dataclass(frozen=True)
class FitResult:
    recipe_name: str | None
    metric: str
    seed: int
    n_boot: int
    base: Scale
    target: Target
    hparams: dict[str, str]  # name -> kind (log, linear, choice), in the recipe's order
    axes: tuple[str, ...]  # the scale axes the recipe varies
    parametrizations: tuple[str, ...]
    points: tuple[PointFit, ...]
    laws: tuple[Law, ...]
    transfers: tuple[Transfer, ...]
    warnings: tuple[FitWarning, ...]

    def point(self, parametrization: str, scale: Scale | str) -> PointFit:
        tag = scale if isinstance(scale, str) else scale.tag()
        for p in self.points:
            if p.parametrization == parametrization and p.tag == tag:
                return p
        raise KeyError(f"no scale point {parametrization}/{tag}")

    def law(self, parametrization: str, hparam: str, axis: str) -> Law:
        for law in self.laws:
            if (law.parametrization, law.hparam, law.axis) == (parametrization, hparam, axis):
                return law
        raise KeyError(f"no {axis} law for {parametrization}/{hparam}")

    def transfer(self, parametrization: str, hparam: str) -> Transfer:
        for t in self.transfers:
            if (t.parametrization, t.hparam) == (parametrization, hparam):
                return t
        raise KeyError(f"no transferred value for {parametrization}/{hparam}")

    def warnings_with(self, code: str, **match: Any) -> list[FitWarning]:
        return [w for w in self.warnings if w.code == code and all(getattr(w, k) == v for k, v in match.items())]

    def to_dict(self) -> dict[str, Any]:
        """JSON-clean: plain Python scalars, lists and dicts; non-finite floats become None."""
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitResult:
        return cls(
            recipe_name=d.get("recipe_name"),
            metric=d["metric"],
            seed=int(d["seed"]),
            n_boot=int(d["n_boot"]),
            base=Scale.model_validate(d["base"]),
            target=Target.model_validate(d["target"]),
            hparams=dict(d["hparams"]),
            axes=tuple(d["axes"]),
            parametrizations=tuple(d["parametrizations"]),
            points=tuple(PointFit.from_dict(p) for p in d["points"]),
            laws=tuple(Law.from_dict(x) for x in d["laws"]),
            transfers=tuple(Transfer.from_dict(x) for x in d["transfers"]),
            warnings=tuple(FitWarning.from_dict(w) for w in d["warnings"]),
        )

    def optima_frame(self) -> pd.DataFrame:
        """One row per (parametrization, scale point, hyperparameter): for tables and plots."""
        rows = []
        for p in self.points:
            for name, o in p.optima.items():
                rows.append(
                    {
                        "parametrization": p.parametrization,
                        **p.scale.model_dump(),
                        "hparam": name,
                        "value": o.value,
                        "lo": o.lo,
                        "hi": o.hi,
                        "method": o.method,
                        "flags": ",".join(o.flags),
                    }
                )
        return pd.DataFrame(rows)


def _plain(x: Any) -> Any:
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in fields(x)}
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return _plain(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _f(x: Any) -> float | None:
    """A plain finite float, or None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------------------------
# The local quadratic, batched over bootstrap resamples
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Local:
    u: np.ndarray  # (B,) optimum in u; NaN when the resample has no completed trial
    vertex: np.ndarray  # (B,) bool: from an accepted vertex (else the best observed)
    r2: np.ndarray  # (B,)
    quad: np.ndarray  # (B, 4): u0, a, b, c of the pass that gave u (the first pass for a fallback)
    at_data_edge: np.ndarray  # (B,) bool: the best observed value is the lowest or highest point


def _penalty(y_completed: np.ndarray) -> float:
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


def _bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n == 0 or n_boot <= 0:
        return np.zeros((0, n), dtype=np.int64)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def _interval(draws: np.ndarray, point: float) -> tuple[float, float]:
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return point, point
    lo, hi = np.percentile(d, [50 * (1 - CI), 50 * (1 + CI)])
    # A percentile interval need not contain the estimate when the fit switches method between resamples.
    return min(float(lo), point), max(float(hi), point)


def _numeric_optimum(
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
    pen = _penalty(y[comp]) if penalty is None else penalty
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
    lo, hi = _interval(draws, u_star)

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
    r2 = _f(full.r2[0])
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
        support=_f(np.mean(boot.vertex)) if n_boot else None,
        flags=tuple(flags),
    )
    return opt, draws


def _choice_optimum(
    hparam: str, cats: np.ndarray, y: np.ndarray, diverged: np.ndarray, counts: np.ndarray, penalty: float | None
) -> tuple[Optimum, np.ndarray]:
    comp = ~diverged
    n_c, n_d = int(comp.sum()), int(diverged.sum())
    if n_c == 0:
        flag = "all_diverged" if n_d else "no_completed"
        return Optimum(hparam, "choice", n_diverged=n_d, flags=(flag,)), np.full(counts.shape[0], np.nan)
    pen = _penalty(y[comp]) if penalty is None else penalty
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
    finite = full_means[np.isfinite(full_means)]
    flags = []
    level = abs(float(np.median(finite)))
    if len(finite) >= 2 and float(finite.max() - finite.min()) <= FLAT_REL * max(level, 1e-12):
        flags.append("flat")
    opt = Optimum(
        hparam=hparam,
        kind="choice",
        value=labels[win],
        method="best_mean",
        n_completed=n_c,
        n_diverged=n_d,
        n_near=int(((cats == labels[win]) & comp).sum()),
        support=_f(np.mean(draws == win)) if counts.shape[0] else None,
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
    counts = _bootstrap_counts(len(u), n_boot, np.random.default_rng(seed))
    opt, _ = _numeric_optimum(
        hparam, "log" if log else "linear", u, ya, div, bounds_u=b_u, envelope=envelope, counts=counts
    )
    return opt


# --------------------------------------------------------------------------------------------------------------
# Transfer laws
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFit:
    intercept: float
    slope: float
    slope_se: float | None  # analytic WLS standard error; None with two points (no residual degrees of freedom)


def _law_operator(log_scales: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The (2, P) matrix L with (intercept, slope) = L @ optima for weighted least squares."""
    X = np.column_stack([np.ones_like(log_scales), log_scales])
    XtW = X.T * weights
    return np.linalg.solve(XtW @ X, XtW)


def fit_law(
    scales: Sequence[float] | np.ndarray, optima: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray
) -> LineFit:
    """Weighted least squares of optima (in the fit coordinate, e.g. log2 lr) on log2(scales)."""
    s = np.log2(np.asarray(scales, dtype=float))
    y = np.asarray(optima, dtype=float)
    w = np.asarray(weights, dtype=float)
    if len(np.unique(s)) < 2:
        raise ValueError("a law needs at least two distinct scales")
    a, b = _law_operator(s, w) @ y
    se = None
    if len(s) > 2:
        X = np.column_stack([np.ones_like(s), s])
        resid = y - X @ np.array([a, b])
        sigma2 = float((w * resid**2).sum() / (len(s) - 2))
        cov = sigma2 * np.linalg.inv((X.T * w) @ X)
        se = float(math.sqrt(max(cov[1, 1], 0.0)))
    return LineFit(float(a), float(b), se)


# --------------------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------------------


def _kind(dist: Any) -> str:
    if isinstance(dist, LogUniform):
        return "log"
    if isinstance(dist, Uniform):
        return "linear"
    if isinstance(dist, Choice):
        return "choice"
    raise TypeError(dist)


def _bounds_u(dist: Any) -> tuple[float, float]:
    if isinstance(dist, LogUniform):
        return math.log2(dist.loguniform[0]), math.log2(dist.loguniform[1])
    return float(dist.uniform[0]), float(dist.uniform[1])


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _py(x: Any) -> Any:
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _match_choice(values: pd.Series, choices: list[Any]) -> np.ndarray:
    """Map stored values back to the recipe's typed choices (a store may hand back strings or floats)."""
    by_str = {str(c): c for c in choices}
    numeric = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    out: list[Any] = []
    for v in values.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        exact = [c for c in choices if type(c) is type(v) and c == v]
        if exact:
            out.append(exact[0])
        elif str(v) in by_str:
            out.append(by_str[str(v)])
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and any(c == v for c in numeric):
            out.append(next(c for c in numeric if c == v))
        else:
            out.append(v)
    return np.array(out, dtype=object)


_WARN_TEXT = {
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
}


def _point_warnings(param: str, scale: Scale, opt: Optimum, bounds: tuple[float, float] | None) -> list[FitWarning]:
    out = []
    for flag in opt.flags:
        ctx: dict[str, Any] = {
            "hp": opt.hparam,
            "val": _fmt(opt.value),
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
                lo=_fmt(conv(lo_u)),
                hi=_fmt(conv(hi_u)),
            )
        elif flag == "edge":
            ctx.update(side="outer", dir="", lo="?", hi="?")
        text = _WARN_TEXT.get(flag, flag).format(**ctx)
        out.append(FitWarning(flag, text, param, opt.hparam, scale.tag()))
    return out


def _has_steps(recipe: Recipe) -> bool:
    """Whether the recipe's scale points carry their own training steps (the token-horizon axis)."""
    return any(p.steps is not None for p in recipe.scales.points())


def _fit_axes(recipe: Recipe) -> tuple[str, ...]:
    """The scale axes a point is identified by: AXES, and steps when the recipe gives proxies their own steps."""
    return (*AXES, "steps") if _has_steps(recipe) else AXES


def _target_at(recipe: Recipe, axis: str) -> int | None:
    """The target's size along an axis; its steps are its tokens over tokens per step (None without tokens)."""
    return recipe.target_steps() if axis == "steps" else getattr(recipe.target, axis)


def _prepare(trials: pd.DataFrame, with_steps: bool = False) -> pd.DataFrame:
    need = {"parametrization", "width", "depth", "batch_size", "status", "metric"}
    missing = sorted(need - set(trials.columns))
    if missing:
        raise ValueError(f"trials frame lacks columns {', '.join(missing)}")
    df = trials.copy()
    if "role" in df:
        # Verification trials check the transferred value at a larger size: evidence about the fit, not for it.
        df = df[df["role"].fillna("sweep") == "sweep"].copy()
    if "seq_len" not in df:
        df["seq_len"] = 1
    if "key" not in df:
        df["key"] = df.index.astype(str)
    for axis in AXES:
        df[axis] = pd.to_numeric(df[axis], errors="coerce").fillna(1).astype(int)
    if with_steps:
        # The scale point is the planned length (steps_planned); the store's `steps` is how far a trial got, which
        # for a diverged trial is where it stopped. A synthetic frame may name the planned column steps.
        if "steps_planned" in df:
            df["steps"] = df["steps_planned"]
        elif "steps" not in df:
            raise ValueError("trials frame lacks a steps (or steps_planned) column: the recipe varies steps")
        df["steps"] = pd.to_numeric(df["steps"], errors="coerce").fillna(1).astype(int)
    df["metric"] = pd.to_numeric(df["metric"], errors="coerce").astype(float)
    status = df["status"].astype(str)
    finite = np.isfinite(df["metric"].to_numpy())
    df["_completed"] = (status == "completed").to_numpy() & finite
    # A completed trial with a NaN/inf metric blew up at the end: the same evidence as a divergence.
    df["_diverged"] = (status == "diverged").to_numpy() | ((status == "completed").to_numpy() & ~finite)
    return df


def fit_sweep(trials: pd.DataFrame, recipe: Recipe, *, seed: int = 0, n_boot: int = 200) -> FitResult:
    """Optima per scale point, laws per varied axis and the value at the target, for every parametrization.

    `trials`: one row per trial with columns key, parametrization, width, depth, batch_size, seq_len, status,
    metric (lower is better; NaN for diverged) and `hp.<name>` per searched hyperparameter.
    """
    with_steps = _has_steps(recipe)
    df = _prepare(trials, with_steps)
    space = recipe.search.space
    kinds = {name: _kind(dist) for name, dist in space.items()}
    base = recipe.scales.base
    target = recipe.target
    fit_axes = _fit_axes(recipe)
    axes = tuple(a for a in fit_axes if a in recipe.scales.vary)
    warnings: list[FitWarning] = []

    params = list(recipe.model.parametrizations)
    params += [p for p in dict.fromkeys(df["parametrization"].astype(str)) if p not in params]
    recipe_points = recipe.scales.points()
    data_points = [
        Scale(**dict(zip(fit_axes, (int(v) for v in values), strict=True)))
        for values in dict.fromkeys(df[list(fit_axes)].itertuples(index=False, name=None))
    ]
    all_points = list(dict.fromkeys([*recipe_points, *data_points]))

    present_hp = []
    for name in space:
        if f"hp.{name}" in df:
            present_hp.append(name)
        else:
            warnings.append(
                FitWarning("missing_column", f"the trials have no column hp.{name}: {name} is not fitted", hparam=name)
            )

    points: list[PointFit] = []
    draws: dict[tuple[str, Scale, str], np.ndarray] = {}
    for param in params:
        in_param = df[df["parametrization"].astype(str) == param]
        for scale in all_points:
            rows = in_param[
                (in_param["width"] == scale.width)
                & (in_param["depth"] == scale.depth)
                & (in_param["batch_size"] == scale.batch_size)
                & (in_param["seq_len"] == scale.seq_len)
                & ((in_param["steps"] == scale.steps) if with_steps else True)
            ]
            if rows.empty and scale not in recipe_points:
                continue
            pf, pdraws = _fit_point(param, scale, rows, recipe, present_hp, kinds, seed, n_boot, warnings)
            points.append(pf)
            for name, d in pdraws.items():
                draws[(param, scale, name)] = d

    laws: list[Law] = []
    transfers: list[Transfer] = []
    for param in params:
        by_scale = {p.scale: p for p in points if p.parametrization == param}
        if not by_scale:
            continue
        for name in present_hp:
            kind = kinds[name]
            if kind == "choice":
                transfers.append(_choice_transfer(param, name, by_scale, base, recipe, axes, warnings))
                continue
            b_u = _bounds_u(space[name])
            param_laws = {
                axis: _fit_axis_law(param, name, kind, axis, by_scale, draws, base, b_u, n_boot, warnings)
                for axis in axes
            }
            laws.extend(law for law, _ in param_laws.values())
            transfers.append(
                _numeric_transfer(param, name, kind, by_scale, draws, param_laws, base, target, recipe, b_u, warnings)
            )

    # What the literature says does not transfer under the recipe's conventions is still reported (the proxies'
    # optimum is information), but flagged, and its transfer says why: the export marks it rather than copy it.
    for i, t in enumerate(transfers):
        reason = does_not_transfer(recipe, t.hparam)
        if reason is None:
            continue
        warnings.append(FitWarning("does_not_transfer", reason, t.parametrization, t.hparam))
        transfers[i] = replace(t, note="; ".join(x for x in (t.note, f"does not transfer: {reason}") if x))

    return FitResult(
        recipe_name=recipe.name,
        metric=recipe.train.metric,
        seed=seed,
        n_boot=n_boot,
        base=base,
        target=target,
        hparams={name: kinds[name] for name in space},
        axes=axes,
        parametrizations=tuple(params),
        points=tuple(points),
        laws=tuple(laws),
        transfers=tuple(transfers),
        warnings=tuple(warnings),
    )


def _fit_point(
    param: str,
    scale: Scale,
    rows: pd.DataFrame,
    recipe: Recipe,
    names: list[str],
    kinds: dict[str, str],
    seed: int,
    n_boot: int,
    warnings: list[FitWarning],
) -> tuple[PointFit, dict[str, np.ndarray]]:
    space = recipe.search.space
    usable = rows[rows["_completed"] | rows["_diverged"]]
    comp_all = usable["_completed"].to_numpy()
    y_all = usable["metric"].to_numpy(dtype=float)
    div_all = usable["_diverged"].to_numpy()
    penalty = _penalty(y_all[comp_all]) if comp_all.any() else None
    # Resampling trials once per point and sharing the draw across hyperparameters keeps their intervals coherent;
    # seeding by the point's name keeps a point's interval independent of which other points are in the frame.
    rng = np.random.default_rng([seed, zlib.crc32(f"{param}/{scale.tag()}".encode())])
    counts_all = _bootstrap_counts(len(usable), n_boot, rng)
    # Several hyperparameters varying together make each trial a noisy look at one of them: fit envelopes then.
    varying = [n for n in names if usable[f"hp.{n}"].nunique(dropna=True) > 1]
    envelope = len(varying) > 1

    optima: dict[str, Optimum] = {}
    pdraws: dict[str, np.ndarray] = {}
    for name in names:
        kind = kinds[name]
        col = usable[f"hp.{name}"]
        if kind == "choice":
            vals = _match_choice(col, list(space[name].choice))  # type: ignore[union-attr]
            keep = np.array([v is not None for v in vals], dtype=bool)
            opt, d = _choice_optimum(name, vals[keep], y_all[keep], div_all[keep], counts_all[:, keep], penalty)
        else:
            x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(x) & ((x > 0) if kind == "log" else True)
            u = np.log2(np.where(keep, x, 1.0))[keep] if kind == "log" else x[keep]
            opt, d = _numeric_optimum(
                name,
                kind,
                u,
                y_all[keep],
                div_all[keep],
                bounds_u=_bounds_u(space[name]),
                envelope=envelope,
                counts=counts_all[:, keep],
                penalty=penalty,
            )
        optima[name] = opt
        pdraws[name] = d
        warnings.extend(_point_warnings(param, scale, opt, _bounds_u(space[name]) if kind != "choice" else None))

    best_key = best_metric = None
    best_hparams: dict[str, Any] = {}
    if comp_all.any():
        best = usable[usable["_completed"]].sort_values("metric", kind="stable").iloc[0]
        best_key, best_metric = str(best["key"]), _f(best["metric"])
        best_hparams = {n: _py(best[f"hp.{n}"]) for n in names}
    n_div = int(div_all.sum())
    return (
        PointFit(
            parametrization=param,
            scale=scale,
            is_base=scale == recipe.scales.base,
            n_trials=len(rows),
            n_completed=int(comp_all.sum()),
            n_diverged=n_div,
            n_other=len(rows) - len(usable),
            best_key=best_key,
            best_metric=best_metric,
            best_hparams=best_hparams,
            optima=optima,
        ),
        pdraws,
    )


def _along(axis: str, by_scale: dict[Scale, PointFit], base: Scale) -> list[Scale]:
    """Points that differ from the base only along `axis` (the base included), ascending."""
    others = [a for a in (*AXES, "steps") if a != axis]
    pts = [s for s in by_scale if all(getattr(s, a) == getattr(base, a) for a in others)]
    return sorted(pts, key=lambda s: getattr(s, axis))


def _sigma(opt: Optimum, span: float) -> float:
    iv = opt.u_interval
    width = (iv[1] - iv[0]) if iv is not None else span
    z = 1.959963984540054  # two-sided 95% normal quantile: the interval width in standard deviations is 2z
    return max(width / (2 * z), SIGMA_FLOOR * span)


def _fit_axis_law(
    param: str,
    name: str,
    kind: str,
    axis: str,
    by_scale: dict[Scale, PointFit],
    draws: dict[tuple[str, Scale, str], np.ndarray],
    base: Scale,
    b_u: tuple[float, float],
    n_boot: int,
    warnings: list[FitWarning],
) -> tuple[Law, np.ndarray]:
    """The law along one axis and the bootstrap draws of its slope (zeros when there is no law)."""
    span = b_u[1] - b_u[0]
    pts = [s for s in _along(axis, by_scale, base) if by_scale[s].optima[name].found]
    coord = "log2" if kind == "log" else "linear"
    if len(pts) < 2:
        note = f"fewer than 2 {axis} points with a {name} optimum: no law, slope 0"
        warnings.append(FitWarning("no_law", note, param, name, axis=axis))
        law = Law(
            param,
            name,
            axis,
            coord,
            tuple(getattr(s, axis) for s in pts),
            tuple(float(by_scale[s].optima[name].u) for s in pts),  # type: ignore[arg-type]
            tuple(1.0 for _ in pts),
            None,
            0.0,
            None,
            None,
            note,
        )
        return law, np.zeros(n_boot)
    sc = np.array([getattr(s, axis) for s in pts], dtype=float)
    opts = [by_scale[s].optima[name] for s in pts]
    y = np.array([o.u for o in opts], dtype=float)
    w = np.array([1.0 / _sigma(o, span) ** 2 for o in opts])
    L = _law_operator(np.log2(sc), w)
    a, b = L @ y
    if n_boot:
        # A resample without an optimum at some point falls back on that point's estimate rather than dropping.
        D = np.stack([draws[(param, s, name)] for s in pts])  # (P, B)
        D = np.where(np.isfinite(D), D, y[:, None])
        slope_draws = (L @ D)[1]
        b_lo, b_hi = _interval(slope_draws, float(b))
    else:
        slope_draws = np.zeros(0)
        b_lo = b_hi = float(b)
    law = Law(
        param,
        name,
        axis,
        coord,
        tuple(int(v) for v in sc),
        tuple(float(v) for v in y),
        tuple(float(v) for v in w),
        float(a),
        float(b),
        b_lo,
        b_hi,
    )
    if param == "mup" and axis == "width":
        limit = MUP_SLOPE_LOG if kind == "log" else MUP_SLOPE_LINEAR * span
        if abs(b) > limit and (b_lo > 0 or b_hi < 0):
            unit = "octaves" if kind == "log" else "units"
            warnings.append(
                FitWarning(
                    "mup_width_slope",
                    f"under µP the {name} optimum moves {b:+.2f} {unit} per doubling of width "
                    f"(interval [{b_lo:+.2f}, {b_hi:+.2f}] excludes 0): the model may not be in µP: run the coordinate check",
                    param,
                    name,
                    axis="width",
                )
            )
    return law, slope_draws


def _numeric_transfer(
    param: str,
    name: str,
    kind: str,
    by_scale: dict[Scale, PointFit],
    draws: dict[tuple[str, Scale, str], np.ndarray],
    laws: dict[str, tuple[Law, np.ndarray]],
    base: Scale,
    target: Target,
    recipe: Recipe,
    b_u: tuple[float, float],
    warnings: list[FitWarning],
) -> Transfer:
    base_pf = by_scale.get(base)
    base_opt = base_pf.optima.get(name) if base_pf is not None else None
    steps = []
    for axis in _fit_axes(recipe):
        b_val, t_val = getattr(base, axis), _target_at(recipe, axis)
        law = laws[axis][0] if axis in laws else None
        proxies = [getattr(s, axis) for s in _along(axis, by_scale, base)] if law is not None else [b_val]
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
                warnings.append(
                    FitWarning(
                        "not_swept",
                        f"{axis} was not swept: {name} keeps its base-scale value at the target's {axis} "
                        f"{t_val} ({math.log2(t_val / b_val):+.1f} doublings from the base)",
                        param,
                        name,
                        axis=axis,
                    )
                )
            steps.append(AxisStep(axis, b_val, t_val, largest, False, 0.0, 0.0, ratio, dbl, note))
            continue
        shift = law.slope * (math.log2(t_val) - math.log2(b_val))
        note = law.note or (f"extrapolated {dbl:.1f} doublings beyond the largest proxy" if dbl > 0 else "")
        steps.append(AxisStep(axis, b_val, t_val, largest, law.fitted, law.slope, shift, ratio, dbl, note))

    if base_opt is None or not base_opt.found:
        note = "no optimum at the base scale point: nothing to transfer"
        warnings.append(FitWarning("no_base_optimum", note, param, name, base.tag()))
        return Transfer(param, name, kind, None, None, None, None, None, None, None, None, None, tuple(steps), note)

    u0 = float(base_opt.u)  # type: ignore[arg-type]
    u_t = u0 + sum(s.shift for s in steps)
    d0 = draws.get((param, base, name), np.zeros(0))
    if d0.size:
        total = np.where(np.isfinite(d0), d0, u0)
        for s in steps:
            if s.swept:
                total = total + laws[s.axis][1] * (math.log2(s.target) - math.log2(s.base))
        lo, hi = _interval(total, u_t)
    else:
        lo = hi = u_t

    def val(t: float) -> float:
        return float(2.0**t) if kind == "log" else float(t)

    notes = []
    if not (b_u[0] <= u_t <= b_u[1]):
        msg = f"the transferred {name} {_fmt(val(u_t))} lies outside the searched range [{_fmt(val(b_u[0]))}, {_fmt(val(b_u[1]))}]"
        warnings.append(FitWarning("outside_range", msg, param, name))
        notes.append(msg)
    if name == "lr" and target.tokens is not None and "steps" not in laws:
        proxy_tokens = recipe.steps_at(base) * base.batch_size * base.seq_len
        ratio = target.tokens / proxy_tokens
        if ratio >= HORIZON_RATIO:
            msg = (
                f"the target trains on {ratio:.3g}x the base proxy's tokens; the optimal learning rate usually "
                "shrinks with the training horizon, which this sweep does not model"
            )
            warnings.append(FitWarning("token_horizon", msg, param, name))
            notes.append(msg)
    return Transfer(
        parametrization=param,
        hparam=name,
        kind=kind,
        value=val(u_t),
        lo=val(lo),
        hi=val(hi),
        log2_value=u_t if kind == "log" else None,
        log2_lo=lo if kind == "log" else None,
        log2_hi=hi if kind == "log" else None,
        base_value=base_opt.value,
        base_lo=base_opt.lo,
        base_hi=base_opt.hi,
        steps=tuple(steps),
        note="; ".join(notes),
    )


def _choice_transfer(
    param: str,
    name: str,
    by_scale: dict[Scale, PointFit],
    base: Scale,
    recipe: Recipe,
    axes: tuple[str, ...],
    warnings: list[FitWarning],
) -> Transfer:
    steps = []
    for axis in _fit_axes(recipe):
        b_val = getattr(base, axis)
        t_val = _target_at(recipe, axis)
        t_val = b_val if t_val is None else t_val
        proxies = [getattr(s, axis) for s in _along(axis, by_scale, base)] if axis in axes else [b_val]
        largest = max(proxies) if proxies else b_val
        note = "a choice has no law: kept the base value" if axis in axes else "not swept: kept the base value"
        steps.append(AxisStep(axis, b_val, t_val, largest, False, 0.0, 0.0, t_val / largest, math.log2(t_val / largest), note))
    base_pf = by_scale.get(base)
    base_opt = base_pf.optima.get(name) if base_pf is not None else None
    if base_opt is None or not base_opt.found:
        note = "no optimum at the base scale point: nothing to transfer"
        warnings.append(FitWarning("no_base_optimum", note, param, name, base.tag()))
        return Transfer(param, name, "choice", None, None, None, None, None, None, None, None, None, tuple(steps), note)
    chosen = {s.tag(): pf.optima[name].value for s, pf in by_scale.items() if name in pf.optima and pf.optima[name].found}
    note = ""
    if len({repr(v) for v in chosen.values()}) > 1:
        note = "the best choice differs between scale points: " + ", ".join(f"{k}: {v}" for k, v in chosen.items())
        warnings.append(FitWarning("choice_varies", note, param, name))
    return Transfer(
        param, name, "choice", base_opt.value, None, None, None, None, None, base_opt.value, None, None, tuple(steps), note
    )


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



def value_at(result: FitResult, parametrization: str, hparam: str, scale: Scale) -> Any:
    """The fitted value of `hparam` at any `scale`: the base optimum moved along each fitted axis law.

    The same rule as the transfer to the target, for a size of the user's choosing (`mutransfer verify`).
    None when the base point has no optimum for it.
    """
    kind = result.hparams.get(hparam)
    if kind is None:
        raise KeyError(f"{hparam!r} was not swept")
    if kind == "choice":
        return result.transfer(parametrization, hparam).value
    opt = result.point(parametrization, result.base).optima.get(hparam)
    if opt is None or not opt.found or opt.u is None:
        return None
    u = float(opt.u)
    for law in result.laws:
        if getattr(scale, law.axis, None) is None or getattr(result.base, law.axis, None) is None:
            continue  # e.g. a steps law asked about a size without its own steps: the base horizon
        if (law.parametrization, law.hparam) == (parametrization, hparam) and law.fitted:
            u += law.slope * (math.log2(getattr(scale, law.axis)) - math.log2(getattr(result.base, law.axis)))
    return float(2.0**u) if kind == "log" else float(u)
