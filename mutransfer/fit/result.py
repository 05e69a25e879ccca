"""The fit's results: frozen dataclasses that round-trip through JSON (`FitResult.to_dict` / `from_dict`).

A fit stored by an older mutransfer lacks the fields added since (the joint model's slope selection, the noise
readings, the backtest): `from_dict` gives them their defaults, so old fits still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mutransfer.recipe import Scale, Target
from mutransfer.values import plain


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


@dataclass(frozen=True, kw_only=True)
class Law:
    """u(optimum) = intercept + slope·log2(scale) along one axis (the other axes at base), from the joint model.

    `slope` is the slope the fit uses (0 when the data do not carry one: `kept` False), with the bootstrap
    interval of that post-selection estimate; `free_slope` is the estimate with the slope left free, and `wald`
    its chi-square against `threshold` (log n, the BIC's penalty): the evidence the choice was made on. `scales`
    and `optima` are the per-point optima (a view, drawn as stars), not what the line was fitted to."""

    parametrization: str
    hparam: str
    axis: str
    coord: str  # log2 | linear: what u is
    scales: tuple[int, ...]  # the points along the axis with a per-point optimum, ascending
    optima: tuple[float, ...]  # the per-point optima (u) at those points
    weights: tuple[float, ...]  # completed trials per point
    intercept: float | None = None
    slope: float  # 0 when there is no law (fewer than 2 points) or the slope was dropped
    slope_lo: float | None = None
    slope_hi: float | None = None
    note: str = ""
    kept: bool = True
    free_slope: float | None = None
    free_slope_lo: float | None = None
    free_slope_hi: float | None = None
    wald: float | None = None
    threshold: float | None = None
    unstable: bool = False  # the slope lies outside its own bootstrap interval

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
    swept: bool  # the axis has a law (at least two points); its slope may be 0 (see the law: kept)
    slope: float
    shift: float  # in the fit coordinate: slope × (log2 target − log2 base)
    extrapolation: float  # target / largest proxy along this axis
    doublings: float  # log2 of that: how far beyond the largest proxy
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AxisStep:
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """A hyperparameter's value at the target: the base-scale optimum moved along each axis's law."""

    parametrization: str
    hparam: str
    kind: str
    value: Any = None  # None when the base point has no optimum
    lo: float | None = None
    hi: float | None = None
    log2_value: float | None = None
    log2_lo: float | None = None
    log2_hi: float | None = None
    base_value: Any = None
    base_lo: float | None = None
    base_hi: float | None = None
    steps: tuple[AxisStep, ...]
    note: str = ""
    unstable: bool = False  # the value lies outside its own bootstrap interval: the estimator is unstable
    source: str = "joint"  # joint (the joint model) | per_point (a choice: the base point's best mean)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transfer:
        d = dict(d)
        d["steps"] = tuple(AxisStep.from_dict(s) for s in d["steps"])
        return cls(**d)


@dataclass(frozen=True)
class Noise:
    """Trial noise against the depth of the curve near one hyperparameter's optimum, for one parametrization."""

    parametrization: str
    hparam: str
    sigma: float | None  # the metric's standard deviation between trials that should score alike
    source: str  # repeats (seeds of one configuration) | residuals (of the joint model, robust)
    depth: float | None  # the joint model's rise of the metric `distance` away from the optimum (both sides' mean)
    distance: str  # "1 octave" | "10% of the range"
    ratio: float | None  # sigma / depth: above ~0.5, single trials cannot tell the optimum from its neighbours
    advice: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Noise:
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class Backtest:
    """The largest proxy along an axis left out: the law from the other points, against that point's own data."""

    parametrization: str
    hparam: str
    axis: str
    held_out: int  # the left-out proxy's size along the axis
    fitted_on: tuple[int, ...]
    predicted: float | None = None  # the value the law from the other points gives there (hyperparameter units)
    observed: float | None = None  # that point's own optimum (the per-point view)
    observed_lo: float | None = None
    observed_hi: float | None = None
    error: float | None = None  # predicted - observed in the fit coordinate: octaves for a log hyperparameter
    regret: float | None = None  # metric at the predicted value minus at the observed optimum (the joint model's curve)
    relative_regret: float | None = None  # regret / the point's best metric
    slope: float | None = None  # the slope the left-out fit used (0: dropped)
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Backtest:
        d = dict(d)
        d["fitted_on"] = tuple(d["fitted_on"])
        return cls(**d)


@dataclass(frozen=True)
class Forecast:
    """The best metric to expect at the target for one parametrization: a law through the scale points' floors
    (mutransfer.fit.forecast)."""

    parametrization: str
    value: float | None  # the predicted metric at the target; None: no prediction (the note says why)
    lo: float | None
    hi: float | None
    form: str  # power: log2(metric) linear in log2(scale)
    exponents: dict[str, float]  # per axis: d log2(metric) / d log2(scale)
    exponents_lo: dict[str, float]
    exponents_hi: dict[str, float]
    floors: tuple[tuple[str, float], ...]  # (scale point tag, the joint model's lowest metric there)
    doublings: dict[str, float]  # how far the target lies beyond the largest proxy, per axis (log2)
    backtest_scale: str | None = None  # the largest proxy left out, its floor predicted from the others'
    backtest_predicted: float | None = None
    backtest_observed: float | None = None
    backtest_error: float | None = None  # (predicted - observed) / |observed|
    unstable: bool = False
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Forecast:
        d = dict(d)
        d["floors"] = tuple(tuple(x) for x in d.get("floors") or ())
        for k in ("exponents", "exponents_lo", "exponents_hi", "doublings"):
            d[k] = dict(d.get(k) or {})
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
    noise: tuple[Noise, ...] = ()
    backtests: tuple[Backtest, ...] = ()
    # The joint model's shape per parametrization: {param: {hparam: {c_minus, c_plus, mu0}, "sigma": s, ...}}.
    model: dict[str, Any] = field(default_factory=dict)
    forecasts: tuple[Forecast, ...] = ()
    # The parametrization predicted to train the better target (None: one parametrization, or they overlap).
    preferred: str | None = None
    preferred_reason: str = ""

    def target_size(self, axis: str) -> int | None:
        """The target's size along an axis; its steps as the fit worked them out (tokens over tokens per step)."""
        if axis != "steps":
            return getattr(self.target, axis, None)
        return next((s.target for t in self.transfers for s in t.steps if s.axis == "steps"), None)

    def forecast(self, parametrization: str) -> Forecast | None:
        return next((f for f in self.forecasts if f.parametrization == parametrization), None)

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
        return plain(self)

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
            noise=tuple(Noise.from_dict(x) for x in d.get("noise") or ()),
            backtests=tuple(Backtest.from_dict(x) for x in d.get("backtests") or ()),
            model=dict(d.get("model") or {}),
            forecasts=tuple(Forecast.from_dict(x) for x in d.get("forecasts") or ()),
            preferred=d.get("preferred"),
            preferred_reason=d.get("preferred_reason") or "",
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



