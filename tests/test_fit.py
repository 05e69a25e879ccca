"""fit.py on synthetic sweeps whose optimum is known: metric = c·(log2 lr − log2 lr*)² + noise."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from mutransfer.fit import FitResult, fit_law, fit_sweep, optimum_1d
from mutransfer.plan import plan
from mutransfer.recipe import Recipe, Scale, parse_recipe
from mutransfer.testing.recipes import mlp_recipe


def recipe(**changes: object) -> Recipe:
    """The base MLP recipe with dotted-path (`a__b`) changes applied."""
    return parse_recipe(mlp_recipe(**changes))


Metric = Callable[[Scale, str, dict[str, float]], float]


def trials(
    r: Recipe,
    metric: Metric,
    *,
    noise: float = 0.005,
    seed: int = 0,
    diverged: Callable[[Scale, dict[str, float]], bool] | None = None,
) -> pd.DataFrame:
    """A trials frame as the store hands it to the fit: one row per planned trial."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec in plan(r):
        hp = spec.hparams
        m = metric(spec.scale, spec.parametrization, hp) + noise * rng.normal()
        div = diverged is not None and diverged(spec.scale, hp)
        rows.append(
            {
                "key": spec.key,
                "parametrization": spec.parametrization,
                **spec.scale.model_dump(),
                "status": "diverged" if div else "completed",
                "metric": None if div else m,
                **{f"hp.{k}": v for k, v in hp.items()},
            }
        )
    return pd.DataFrame(rows)


def bowl(opt_log2: Callable[[Scale, str], float], c: float = 0.05) -> Metric:
    return lambda s, p, hp: 2.0 + c * (math.log2(hp["lr"]) - opt_log2(s, p)) ** 2


def test_mup_like_optimum_is_found_at_every_width_and_transfers_flat() -> None:
    r = recipe()
    fit = fit_sweep(trials(r, bowl(lambda s, p: -7.0)), r, seed=1)
    for p in fit.points:
        o = p.optima["lr"]
        assert o.method == "vertex"
        assert o.log2_value == pytest.approx(-7.0, abs=0.25), p.tag
        assert o.log2_lo <= -7.0 <= o.log2_hi, p.tag
        assert o.lo <= o.value <= o.hi
        assert o.value == pytest.approx(2.0**o.log2_value)
    law = fit.law("mup", "lr", "width")
    assert law.scales == (32, 64, 128, 256)
    assert abs(law.slope) < 0.1
    assert law.slope_lo <= 0.0 <= law.slope_hi
    assert not fit.warnings_with("mup_width_slope")
    t = fit.transfer("mup", "lr")
    assert t.log2_value == pytest.approx(-7.0, abs=0.3)
    assert t.log2_lo <= -7.0 <= t.log2_hi
    width = next(s for s in t.steps if s.axis == "width")
    assert width.swept and width.largest_proxy == 256
    assert width.extrapolation == 4.0 and width.doublings == pytest.approx(2.0)
    depth = next(s for s in t.steps if s.axis == "depth")
    assert not depth.swept and "not swept" in depth.note


def test_sp_like_drift_gives_slope_minus_one_and_a_mup_warning() -> None:
    def opt(s: Scale, p: str) -> float:
        return -5.0 - math.log2(s.width / 32)  # lr* ∝ width^-1

    r = recipe()
    fit = fit_sweep(trials(r, bowl(opt)), r)
    law = fit.law("mup", "lr", "width")
    assert law.slope == pytest.approx(-1.0, abs=0.1)
    assert law.slope_lo <= -1.0 <= law.slope_hi
    (w,) = fit.warnings_with("mup_width_slope")
    assert w.parametrization == "mup" and w.hparam == "lr" and "coordinate check" in w.message
    # The target is 4x wider than the widest proxy: the law says log2 lr* = -5 - log2(1024 / 32) = -10.
    t = fit.transfer("mup", "lr")
    assert t.log2_value == pytest.approx(-10.0, abs=0.3)
    assert t.log2_lo <= -10.0 <= t.log2_hi
    assert t.value == pytest.approx(2**-10, rel=0.25)

    # The same drift under SP is expected, not a warning.
    r_sp = recipe(model__parametrization="sp")
    fit_sp = fit_sweep(trials(r_sp, bowl(opt)), r_sp)
    assert fit_sp.law("sp", "lr", "width").slope == pytest.approx(-1.0, abs=0.1)
    assert not fit_sp.warnings_with("mup_width_slope")


def test_both_parametrizations_side_by_side() -> None:
    def opt(s: Scale, p: str) -> float:
        return -6.0 - (0.5 * math.log2(s.width / 32) if p == "sp" else 0.0)

    r = recipe(model__parametrization=["mup", "sp"])
    fit = fit_sweep(trials(r, bowl(opt)), r)
    assert fit.parametrizations == ("mup", "sp")
    assert abs(fit.law("mup", "lr", "width").slope) < 0.1
    assert fit.law("sp", "lr", "width").slope == pytest.approx(-0.5, abs=0.1)
    assert fit.transfer("sp", "lr").log2_value == pytest.approx(-6.0 - 0.5 * 5, abs=0.3)


def test_diverged_trials_above_a_cliff_push_the_optimum_down() -> None:
    rng = np.random.default_rng(0)
    u = np.linspace(-13, 0, 40)
    y = 2.0 + 0.05 * (u + 6) ** 2 + 0.005 * rng.normal(size=u.size)
    cliff = u > -5.5  # half an octave above the true optimum
    x = 2.0**u
    penalised = optimum_1d(x, np.where(cliff, np.nan, y), cliff, bounds=(1e-4, 1.0))
    missing = optimum_1d(x[~cliff], y[~cliff], bounds=(1e-4, 1.0))
    assert penalised.n_diverged == cliff.sum() and missing.n_diverged == 0
    assert missing.log2_value == pytest.approx(-6.0, abs=0.3)
    assert penalised.log2_value < missing.log2_value - 0.5
    assert penalised.log2_value < -5.5

    # Through the sweep too: the same cliff at every width.
    r = recipe()
    df = trials(r, bowl(lambda s, p: -6.0), diverged=lambda s, hp: math.log2(hp["lr"]) > -5.5)
    fit = fit_sweep(df, r)
    kept = fit_sweep(df[df["status"] == "completed"], r)
    for p in fit.points:
        assert p.n_diverged > 0
        assert p.optima["lr"].log2_value < kept.point("mup", p.scale).optima["lr"].log2_value


def test_optimum_at_the_edge_of_the_range_warns() -> None:
    r = recipe()
    fit = fit_sweep(trials(r, bowl(lambda s, p: 0.5)), r)  # lr* above the searched range
    edges = fit.warnings_with("edge")
    assert {w.scale for w in edges} == {p.tag for p in fit.points}
    assert all("widen the range upwards" in w.message for w in edges)
    o = fit.points[0].optima["lr"]
    assert o.log2_value > -1.5


def test_flat_metric_warns() -> None:
    r = recipe()
    fit = fit_sweep(trials(r, lambda s, p, hp: 2.0, noise=1e-4), r)
    assert {w.scale for w in fit.warnings_with("flat", hparam="lr")} == {p.tag for p in fit.points}
    assert not fit.warnings_with("edge")  # a flat metric says nothing about the range


def test_noisy_metric_warns() -> None:
    r = recipe()
    fit = fit_sweep(trials(r, bowl(lambda s, p: -7.0, c=0.002), noise=0.2), r)
    assert fit.warnings_with("noisy")


def test_all_diverged_points_have_no_optimum_and_do_not_crash() -> None:
    r = recipe()
    df = trials(r, bowl(lambda s, p: -7.0), diverged=lambda s, hp: s.width == 256)
    fit = fit_sweep(df, r)
    p = fit.point("mup", "w256-d2-b32-s1")
    assert not p.optima["lr"].found and p.optima["lr"].method == "none" and p.best_key is None
    assert [w.scale for w in fit.warnings_with("all_diverged")] == ["w256-d2-b32-s1"]
    assert fit.law("mup", "lr", "width").scales == (32, 64, 128)

    everything = fit_sweep(trials(r, bowl(lambda s, p: -7.0), diverged=lambda s, hp: True), r)
    assert len(everything.warnings_with("all_diverged")) == 4
    law = everything.law("mup", "lr", "width")
    assert law.slope == 0.0 and not law.fitted and "no law" in law.note
    t = everything.transfer("mup", "lr")
    assert t.value is None and everything.warnings_with("no_base_optimum")
    json.dumps(everything.to_dict(), allow_nan=False)


def test_failed_and_pending_trials_are_not_evidence() -> None:
    r = recipe()
    df = trials(r, bowl(lambda s, p: -7.0))
    df.loc[df.index[:10], "status"] = "failed"
    df.loc[df.index[10:12], "status"] = "pending"
    df.loc[df.index[10:12], "metric"] = None
    fit = fit_sweep(df, r)
    base = fit.point("mup", r.scales.base)
    assert base.n_other == 12 and base.n_completed == 32 - 12
    assert base.optima["lr"].log2_value == pytest.approx(-7.0, abs=0.3)


def test_depth_law_recovers_minus_one_half() -> None:
    r = recipe(scales__vary={"depth": [2, 4, 8, 16]}, target__depth=64)
    fit = fit_sweep(trials(r, bowl(lambda s, p: -6.0 - 0.5 * math.log2(s.depth / 2))), r)
    law = fit.law("mup", "lr", "depth")
    assert law.scales == (2, 4, 8, 16)
    assert law.slope == pytest.approx(-0.5, abs=0.1)
    assert law.slope_lo <= -0.5 <= law.slope_hi
    t = fit.transfer("mup", "lr")
    assert t.log2_value == pytest.approx(-6.0 - 0.5 * 5, abs=0.4)  # depth 2 -> 64: five doublings
    depth = next(s for s in t.steps if s.axis == "depth")
    assert depth.doublings == pytest.approx(2.0)  # 64 / 16
    assert fit.axes == ("depth",)
    with pytest.raises(KeyError):
        fit.law("mup", "lr", "width")


def test_an_axis_that_is_not_swept_is_said_so() -> None:
    r = recipe(target__batch_size=256)
    fit = fit_sweep(trials(r, bowl(lambda s, p: -7.0)), r)
    (w,) = fit.warnings_with("not_swept", axis="batch_size")
    assert "batch_size" in w.message
    step = next(s for s in fit.transfer("mup", "lr").steps if s.axis == "batch_size")
    assert not step.swept and step.shift == 0.0 and step.doublings == pytest.approx(3.0)


def test_random_search_over_several_hparams_fits_each_marginal() -> None:
    r = recipe(
        search__samples=160,
        search__space={"lr": {"loguniform": [1e-4, 1.0]}, "output_mult": {"loguniform": [1 / 16, 16.0]}},
        scales__vary={"width": [32, 128]},
    )

    def metric(s: Scale, p: str, hp: dict[str, float]) -> float:
        return 2.0 + 0.05 * (math.log2(hp["lr"]) + 7) ** 2 + 0.05 * (math.log2(hp["output_mult"]) - 1) ** 2

    df = trials(r, metric)
    fit = fit_sweep(df, r)
    for p in fit.points:
        assert p.optima["lr"].log2_value == pytest.approx(-7.0, abs=0.75)
        assert p.optima["output_mult"].log2_value == pytest.approx(1.0, abs=0.75)
        best = df[df["key"] == p.best_key].iloc[0]
        assert p.best_metric == pytest.approx(best["metric"])
        assert p.best_hparams == {"lr": best["hp.lr"], "output_mult": best["hp.output_mult"]}
        at = df[(df["width"] == p.scale.width) & (df["status"] == "completed")]
        assert p.best_metric == pytest.approx(at["metric"].min())
    assert set(fit.hparams) == {"lr", "output_mult"}


def test_choice_hparam_picks_the_better_value() -> None:
    r = recipe(
        train__optimizer="sgd",
        search__samples=64,
        search__space={"lr": {"loguniform": [1e-4, 1.0]}, "momentum": {"choice": [0.0, 0.9]}},
    )

    def metric(s: Scale, p: str, hp: dict[str, float]) -> float:
        return 2.0 + 0.05 * (math.log2(hp["lr"]) + 7) ** 2 + (0.1 if hp["momentum"] == 0.0 else 0.0)

    fit = fit_sweep(trials(r, metric), r)
    for p in fit.points:
        o = p.optima["momentum"]
        assert o.kind == "choice" and o.value == 0.9 and o.method == "best_mean"
        assert o.support is not None and o.support > 0.5
    t = fit.transfer("mup", "momentum")
    assert t.value == 0.9 and t.lo is None


def test_uniform_hparam_is_fitted_on_a_linear_axis() -> None:
    r = recipe(
        search__samples=40,
        search__space={"weight_decay": {"uniform": [0.0, 0.2]}},
        train__lr=0.01,
        scales__vary={"width": [32, 64]},
    )
    fit = fit_sweep(trials(r, lambda s, p, hp: 2.0 + 20 * (hp["weight_decay"] - 0.1) ** 2, noise=0.001), r)
    o = fit.points[0].optima["weight_decay"]
    assert o.kind == "linear" and o.log2_value is None
    assert o.value == pytest.approx(0.1, abs=0.02)
    assert fit.law("mup", "weight_decay", "width").coord == "linear"


def test_a_missing_hparam_column_is_a_warning() -> None:
    r = recipe()
    fit = fit_sweep(trials(r, bowl(lambda s, p: -7.0)).drop(columns=["hp.lr"]), r)
    assert fit.warnings_with("missing_column", hparam="lr")
    assert fit.transfers == ()


def test_json_round_trip() -> None:
    r = recipe(
        model__parametrization=["mup", "sp"],
        train__optimizer="sgd",
        search__space={"lr": {"loguniform": [1e-4, 1.0]}, "momentum": {"choice": [0.0, 0.9]}},
    )
    fit = fit_sweep(trials(r, bowl(lambda s, p: -7.0), diverged=lambda s, hp: hp["lr"] > 0.5), r)
    text = json.dumps(fit.to_dict(), allow_nan=False)
    back = FitResult.from_dict(json.loads(text))
    assert back == fit
    assert back.to_dict() == fit.to_dict()


def test_bootstrap_is_seeded() -> None:
    r = recipe()
    df = trials(r, bowl(lambda s, p: -7.0), noise=0.05)
    a, b, c = fit_sweep(df, r, seed=3), fit_sweep(df, r, seed=3), fit_sweep(df, r, seed=4)
    assert a == b
    assert a.transfer("mup", "lr").log2_lo != c.transfer("mup", "lr").log2_lo


def test_fit_law_recovers_a_line() -> None:
    line = fit_law([32, 64, 128, 256], [-5.0, -5.5, -6.0, -6.5], [1.0, 1.0, 2.0, 1.0])
    assert line.slope == pytest.approx(-0.5) and line.intercept == pytest.approx(-5.0 + 0.5 * 5)
    assert line.slope_se == pytest.approx(0.0, abs=1e-9)
    assert fit_law([32, 64], [-5.0, -6.0], [1.0, 1.0]).slope_se is None
    with pytest.raises(ValueError):
        fit_law([32, 32], [-5.0, -6.0], [1.0, 1.0])


def five_thousand_trials() -> tuple[Recipe, pd.DataFrame]:
    """5,000 synthetic trials (µP and SP, 4 widths, 625 samples of lr, output_mult and momentum; lr >= 1/8
    diverges): µP's optimum lr = 2^-7 at every width, SP's drifting as width^-1. Also bench/fit.py's sweep."""
    r = recipe(
        model__parametrization=["mup", "sp"],
        train__optimizer="sgd",
        search__samples=625,
        search__space={
            "lr": {"loguniform": [1e-4, 1.0]},
            "output_mult": {"loguniform": [1 / 16, 16.0]},
            "momentum": {"choice": [0.0, 0.9]},
        },
    )

    def metric(s: Scale, p: str, hp: dict[str, float]) -> float:
        drift = math.log2(s.width / 32) if p == "sp" else 0.0
        return 2.0 + 0.05 * (math.log2(hp["lr"]) + 7 + drift) ** 2 + 0.03 * (math.log2(hp["output_mult"]) - 1) ** 2

    return r, trials(r, metric, noise=0.01, diverged=lambda s, hp: math.log2(hp["lr"]) > -3)


def test_five_thousand_trials() -> None:
    r, df = five_thousand_trials()
    assert len(df) == 5000
    fit = fit_sweep(df, r)
    assert len(fit.points) == 8 and len(fit.laws) == 4 and len(fit.transfers) == 6
    assert abs(fit.law("mup", "lr", "width").slope) < 0.2
    assert fit.law("sp", "lr", "width").slope == pytest.approx(-1.0, abs=0.2)
