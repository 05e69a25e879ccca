"""fit_sweep: a sweep's trials -> per-point optima (a view), the joint model per parametrization, laws, the value
at the target, noise readings, backtests and warnings, as one `FitResult`."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from mutransfer.conventions import does_not_transfer
from mutransfer.fit.backtest import backtests
from mutransfer.fit.design import Design
from mutransfer.fit.forecast import forecast, prefer
from mutransfer.fit.joint import JointFit, fit_joint
from mutransfer.fit.laws import along, axis_law, choice_transfer, fit_axes, has_steps, numeric_transfer
from mutransfer.fit.noise import noise_readings
from mutransfer.fit.optima import bootstrap_counts, choice_optimum, diverged_penalty, numeric_optimum
from mutransfer.fit.result import (
    Backtest,
    FitResult,
    FitWarning,
    Forecast,
    Law,
    Noise,
    PointFit,
    Transfer,
)
from mutransfer.fit.warnings import point_warnings
from mutransfer.recipe import AXES, Choice, LogUniform, Recipe, Scale, Uniform
from mutransfer.values import finite_or_none


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



def prepare(trials: pd.DataFrame, with_steps: bool = False) -> pd.DataFrame:
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
    # A stopped trial is evidence through its floor (mutransfer.fit.stopped), the caller's `floor` column.
    floor = pd.to_numeric(df["floor"], errors="coerce").to_numpy(dtype=float) if "floor" in df else np.nan
    df["_stopped"] = (status == "stopped").to_numpy() & np.isfinite(floor)
    df["_floor"] = np.where(df["_stopped"], floor, np.nan)
    return df



def fit_sweep(trials: pd.DataFrame, recipe: Recipe, *, seed: int = 0, n_boot: int = 200) -> FitResult:
    """Per-point optima, the joint model, laws per varied axis and the value at the target, per parametrization.

    `trials`: one row per trial with columns key, parametrization, width, depth, batch_size, seq_len, status,
    metric (lower is better; NaN for diverged) and `hp.<name>` per searched hyperparameter (and, from a store,
    group and sample: seeds of one configuration are resampled together).
    """
    with_steps = has_steps(recipe)
    df = prepare(trials, with_steps)
    space = recipe.search.space
    kinds = {name: _kind(dist) for name, dist in space.items()}
    base = recipe.scales.base
    axes_all = fit_axes(recipe)
    axes = tuple(a for a in axes_all if a in recipe.scales.vary)
    warnings: list[FitWarning] = []

    params = list(recipe.model.parametrizations)
    params += [p for p in dict.fromkeys(df["parametrization"].astype(str)) if p not in params]
    recipe_points = recipe.scales.points()
    data_points = [
        Scale(**dict(zip(axes_all, (int(v) for v in values), strict=True)))
        for values in dict.fromkeys(df[list(axes_all)].itertuples(index=False, name=None))
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
    laws: list[Law] = []
    transfers: list[Transfer] = []
    noise: list[Noise] = []
    tests: list[Backtest] = []
    forecasts: list[Forecast] = []
    model: dict[str, Any] = {}
    for param in params:
        in_param = df[df["parametrization"].astype(str) == param]
        rows_of: dict[Scale, pd.DataFrame] = {}
        for scale in all_points:
            rows = _at(in_param, scale, axes_all)
            if rows.empty and scale not in recipe_points:
                continue
            pf = _fit_point(param, scale, rows, recipe, present_hp, kinds, seed, n_boot, warnings)
            points.append(pf)
            rows_of[scale] = rows
        by_scale = {p.scale: p for p in points if p.parametrization == param}
        if not by_scale:
            continue

        numeric = [n for n in present_hp if kinds[n] != "choice"]
        choices = [n for n in present_hp if kinds[n] == "choice"]
        D, groups = _design(param, rows_of, numeric, kinds, choices, recipe, axes)
        jf = None
        if D is not None:
            jf = fit_joint(D, n_boot=n_boot, rng=_joint_rng(seed, param))
            model[param] = _model_summary(jf)
            usable = pd.concat([r for r in rows_of.values()])
            noise.extend(noise_readings(param, jf, usable[usable["_completed"] | usable["_diverged"]], recipe,
                                        warnings))
            tests.extend(backtests(param, D, jf, groups, by_scale, {a: along(a, by_scale, base) for a in axes},
                                   base))
            forecasts.append(forecast(param, jf, groups, recipe))

        for name in present_hp:
            kind = kinds[name]
            if kind == "choice":
                transfers.append(choice_transfer(param, name, by_scale, recipe, axes, warnings))
                continue
            b_u = _bounds_u(space[name])
            span = b_u[1] - b_u[0]
            name_laws = {axis: axis_law(param, name, kind, axis, by_scale, base, jf, span, warnings) for axis in axes}
            laws.extend(name_laws.values())
            transfers.append(numeric_transfer(param, name, kind, by_scale, name_laws, jf, recipe, b_u, warnings))

    # What the literature says does not transfer under the recipe's conventions is still reported (the proxies'
    # optimum is information), but flagged, and its transfer says why: the export marks it rather than copy it.
    for i, t in enumerate(transfers):
        reason = does_not_transfer(recipe, t.hparam)
        if reason is None:
            continue
        warnings.append(FitWarning("does_not_transfer", reason, t.parametrization, t.hparam))
        transfers[i] = replace(t, note="; ".join(x for x in (t.note, f"does not transfer: {reason}") if x))

    preferred, reason = prefer(forecasts)
    return FitResult(
        recipe_name=recipe.name,
        metric=recipe.train.metric,
        seed=seed,
        n_boot=n_boot,
        base=base,
        target=recipe.target,
        hparams={name: kinds[name] for name in space},
        axes=axes,
        parametrizations=tuple(params),
        points=tuple(points),
        laws=tuple(laws),
        transfers=tuple(transfers),
        warnings=tuple(warnings),
        noise=tuple(noise),
        backtests=tuple(tests),
        model=model,
        forecasts=tuple(forecasts),
        preferred=preferred,
        preferred_reason=reason,
    )


def _at(frame: pd.DataFrame, scale: Scale, axes: tuple[str, ...]) -> pd.DataFrame:
    """The rows of `frame` at scale point `scale`."""
    mask = np.ones(len(frame), dtype=bool)
    for a in axes:
        mask &= (frame[a] == getattr(scale, a)).to_numpy()
    return frame[mask]


def _joint_rng(seed: int, param: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"joint/{param}".encode())])


def joint_optima(trials: pd.DataFrame, recipe: Recipe, *, seed: int = 0,
                 n_boot: int = 200) -> dict[str, dict[Scale, dict[str, float]]]:
    """The joint model's optimum of each fitted numeric hyperparameter at every scale point of the recipe, per
    parametrization: mu0 + the kept slopes x log2(point / base), in the fit coordinate (log2 for a loguniform
    hyperparameter). The same model, seeds and selection as fit_sweep's (what a refine round centres on). A
    parametrization with nothing to fit is left out."""
    df = prepare(trials, has_steps(recipe))
    space = recipe.search.space
    kinds = {name: _kind(dist) for name, dist in space.items()}
    present = [n for n in space if f"hp.{n}" in df]
    numeric = [n for n in present if kinds[n] != "choice"]
    choices = [n for n in present if kinds[n] == "choice"]
    axes_all = fit_axes(recipe)
    axes = tuple(a for a in axes_all if a in recipe.scales.vary)
    base = recipe.scales.base
    out: dict[str, dict[Scale, dict[str, float]]] = {}
    for param in recipe.model.parametrizations:
        in_param = df[df["parametrization"].astype(str) == param]
        rows_of = {s: r for s in recipe.scales.points() if not (r := _at(in_param, s, axes_all)).empty}
        D, _ = _design(param, rows_of, numeric, kinds, choices, recipe, axes)
        if D is None:
            continue
        jf = fit_joint(D, n_boot=n_boot, rng=_joint_rng(seed, param))
        out[param] = {}
        for s in recipe.scales.points():
            x = np.array([math.log2(getattr(s, a) / getattr(base, a)) for a in jf.axes], dtype=float)
            u = jf.mu0 + (jf.slopes @ x if x.size else 0.0)
            out[param][s] = {name: float(u[j]) for j, name in enumerate(jf.names)}
    return out


def _model_summary(jf: JointFit) -> dict[str, Any]:
    """The joint model's shape, JSON-clean: what the dashboard and the export show of it."""
    return {
        "hparams": {
            name: {"mu0": float(jf.mu0[j]), "c_minus": float(jf.c_minus[j]), "c_plus": float(jf.c_plus[j])}
            for j, name in enumerate(jf.names)
        },
        "axes": list(jf.axes),
        "sigma": finite_or_none(jf.sigma),
        "n_used": jf.n_used,
        "slope_threshold": float(jf.threshold),
        "criterion": "BIC: a slope is kept when its Wald chi-square exceeds log(n), n the parametrization's trials",
    }


def _design(param: str, rows_of: dict[Scale, pd.DataFrame], numeric: list[str], kinds: dict[str, str],
            choices: list[str], recipe: Recipe, axes: tuple[str, ...]) -> tuple[Design | None, list[Scale]]:
    """The joint model's arrays for one parametrization: completed trials, and diverged and stopped ones as censored
    evidence, with every numeric hyperparameter that varies. None when there is nothing to fit (no completed trial,
    nothing varies)."""
    base = recipe.scales.base
    space = recipe.search.space
    groups = [s for s, r in rows_of.items() if (r["_completed"] | r["_diverged"] | r["_stopped"]).any()]
    if not groups:
        return None, []
    frame = pd.concat([rows_of[s].assign(_g=i) for i, s in enumerate(groups)])
    frame = frame[frame["_completed"] | frame["_diverged"] | frame["_stopped"]]
    cols: dict[str, np.ndarray] = {}
    for name in numeric:
        x = pd.to_numeric(frame[f"hp.{name}"], errors="coerce").to_numpy(dtype=float)
        cols[name] = np.log2(np.where(x > 0, x, np.nan)) if kinds[name] == "log" else x
    ok = np.all([np.isfinite(v) for v in cols.values()], axis=0) if cols else np.ones(len(frame), dtype=bool)
    frame = frame[ok]
    cols = {k: v[ok] for k, v in cols.items()}
    names = tuple(n for n in numeric if len(np.unique(cols[n][frame["_completed"].to_numpy()])) > 1)
    if not names or not frame["_completed"].any():
        return None, groups
    u = np.column_stack([cols[n] for n in names])
    bounds = [_bounds_u(space[n]) for n in names]
    group = frame["_g"].to_numpy(dtype=int)
    x_axes = tuple(a for a in axes if len({getattr(groups[g], a) for g in set(group.tolist())}) >= 2)
    per_group = np.array([[math.log2(getattr(s, a) / getattr(base, a)) for a in x_axes] for s in groups],
                         dtype=float).reshape(len(groups), len(x_axes))
    x = per_group[group]  # each trial's point's coordinates
    if choices:
        # Each distinct combination of choice values, numbered in order of first appearance.
        combo = pd.MultiIndex.from_frame(frame[[f"hp.{c}" for c in choices]].astype(str))
        codes, uniques = pd.factorize(combo)
        cat, n_cats = np.asarray(codes, dtype=int), len(uniques)
    else:
        cat, n_cats = np.zeros(len(frame), dtype=int), 1
    if "sample" in frame and frame["sample"].notna().all():
        cluster = pd.to_numeric(frame["sample"], errors="coerce").fillna(-1).to_numpy(dtype=int)
    else:
        cluster = np.arange(len(frame))
    y = frame["metric"].to_numpy(dtype=float)
    censored = frame["_diverged"].to_numpy(dtype=bool) | frame["_stopped"].to_numpy(dtype=bool)
    D = Design(names, tuple(kinds[n] for n in names), np.array([b[0] for b in bounds]),
               np.array([b[1] for b in bounds]), x_axes, u, x, group, len(groups), cat, n_cats,
               np.where(censored, np.nan, y), censored, cluster, frame["_floor"].to_numpy(dtype=float))
    return D, groups


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
) -> PointFit:
    """One scale point's own optima (the per-point view) and its best trial."""
    space = recipe.search.space
    usable = rows[rows["_completed"] | rows["_diverged"] | rows["_stopped"]]
    comp_all = usable["_completed"].to_numpy()
    # A stopped trial counts at its floor here (a view: it would have ended at least that high), so that a point
    # whose trials on one side were all stopped does not read as an optimum at the edge of what was tried.
    y_all = np.where(usable["_stopped"].to_numpy(), usable["_floor"].to_numpy(dtype=float),
                     usable["metric"].to_numpy(dtype=float))
    div_all = usable["_diverged"].to_numpy()
    penalty = diverged_penalty(y_all[comp_all]) if comp_all.any() else None
    # Resampling trials once per point and sharing the draw across hyperparameters keeps their intervals coherent;
    # seeding by the point's name keeps a point's interval independent of which other points are in the frame.
    rng = np.random.default_rng([seed, zlib.crc32(f"{param}/{scale.tag()}".encode())])
    counts_all = bootstrap_counts(len(usable), n_boot, rng)
    # Several hyperparameters varying together make each trial a noisy look at one of them: fit envelopes then.
    varying = [n for n in names if usable[f"hp.{n}"].nunique(dropna=True) > 1]
    envelope = len(varying) > 1

    optima = {}
    for name in names:
        kind = kinds[name]
        col = usable[f"hp.{name}"]
        if kind == "choice":
            vals = _match_choice(col, list(space[name].choice))  # type: ignore[union-attr]
            keep = np.array([v is not None for v in vals], dtype=bool)
            opt, _ = choice_optimum(name, vals[keep], y_all[keep], div_all[keep], counts_all[:, keep], penalty)
        else:
            x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(x) & ((x > 0) if kind == "log" else True)
            u = np.log2(np.where(keep, x, 1.0))[keep] if kind == "log" else x[keep]
            opt, _ = numeric_optimum(name, kind, u, y_all[keep], div_all[keep], bounds_u=_bounds_u(space[name]),
                                     envelope=envelope, counts=counts_all[:, keep], penalty=penalty)
        optima[name] = opt
        warnings.extend(point_warnings(param, scale, opt, _bounds_u(space[name]) if kind != "choice" else None))

    best_key = best_metric = None
    best_hparams: dict[str, Any] = {}
    if comp_all.any():
        best = usable[usable["_completed"]].sort_values("metric", kind="stable").iloc[0]
        best_key, best_metric = str(best["key"]), finite_or_none(best["metric"])
        best_hparams = {n: _py(best[f"hp.{n}"]) for n in names}
    return PointFit(
        parametrization=param,
        scale=scale,
        is_base=scale == recipe.scales.base,
        n_trials=len(rows),
        n_completed=int(comp_all.sum()),
        n_diverged=int(div_all.sum()),
        n_other=len(rows) - len(usable),
        best_key=best_key,
        best_metric=best_metric,
        best_hparams=best_hparams,
        optima=optima,
    )
