"""The metric to expect at the target (a power law through the joint model's floors) and the choice of
parametrization it supports, on synthetic sweeps whose floors are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mutransfer.fit import FitResult, fit_sweep
from mutransfer.recipe import parse_recipe
from mutransfer.testing.recipes import edit, mlp_recipe
from mutransfer.testing.synthetic import LEVEL, synthetic_trials

RECIPE = mlp_recipe(name="f", train={"steps": 100}, search__samples=16,
                    search__space={"lr": {"loguniform": [1.0e-4, 1.0e-1]}})


def sweep(params: str, exponent: dict[str, float], *, seed: int = 0, noise: float = 0.02) -> tuple[pd.DataFrame, object]:
    """Trials whose floor is LEVEL * (width / 32) ** exponent[param] (a power law), optimum lr 2^-7."""
    r = parse_recipe(edit(RECIPE, model__parametrization=yaml.safe_load(params), search__seed=seed))  # "[mup, sp]"
    df = synthetic_trials(r, lambda s, p: -7.0, noise=noise, rng=np.random.default_rng(seed))
    for p, b in exponent.items():
        m = (df["parametrization"] == p) & df["metric"].notna()
        df.loc[m, "metric"] += LEVEL * ((df.loc[m, "width"] / 32.0) ** b - 1.0)
    return df, r


def test_a_power_law_floor_is_predicted_at_the_target_within_its_interval() -> None:
    df, r = sweep("mup", {"mup": -0.05})
    f = fit_sweep(df, r).forecast("mup")
    truth = LEVEL * (1024 / 32) ** -0.05
    assert f is not None and f.form == "power"
    assert f.lo <= truth <= f.hi, f
    assert abs(f.value / truth - 1) < 0.03
    # The exponent: near the truth, and its interval says the floor falls (one sweep's interval misses the truth
    # 5% of the time by design, here by 1e-5; the next test checks the rate).
    assert abs(f.exponents["width"] + 0.05) < 0.01 and f.exponents_hi["width"] < 0
    assert f.doublings == {"width": 2.0}
    assert "training length" in f.note  # the target trains longer than the proxies: said, not hidden
    # The backtest: the largest proxy's floor from the three below it.
    assert f.backtest_scale.startswith("w256") and abs(f.backtest_error) < 0.02


def test_the_interval_holds_power_law_truths_about_as_often_as_it_says() -> None:
    held = []
    for seed in range(12):
        df, r = sweep("mup", {"mup": -0.04}, seed=seed, noise=0.04)
        f = fit_sweep(df, r, seed=seed, n_boot=100).forecast("mup")
        held.append(f.lo <= LEVEL * 32**-0.04 <= f.hi)
    assert 0.75 <= np.mean(held) <= 1.0  # a 95% interval: 12 sweeps cannot tell 90% from 98%, but can tell 50%


def test_the_parametrization_whose_floor_falls_faster_is_preferred_and_said_why() -> None:
    df, r = sweep("[mup, sp]", {"mup": -0.06, "sp": 0.0})
    res = fit_sweep(df, r)
    assert res.preferred == "mup", res.preferred_reason
    assert "mup is predicted to train the better target" in res.preferred_reason
    mup, sp = res.forecast("mup"), res.forecast("sp")
    assert mup.hi < sp.lo


def test_overlapping_predictions_prefer_neither() -> None:
    df, r = sweep("[mup, sp]", {"mup": -0.03, "sp": -0.03}, noise=0.04)
    res = fit_sweep(df, r)
    assert res.preferred is None and "overlap" in res.preferred_reason


def test_forecasts_round_trip_through_json_and_old_fits_load() -> None:
    df, r = sweep("mup", {"mup": -0.05})
    res = fit_sweep(df, r, n_boot=50)
    back = FitResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.forecasts == res.forecasts and back.preferred == res.preferred
    old = res.to_dict()
    for k in ("forecasts", "preferred", "preferred_reason"):
        del old[k]
    assert FitResult.from_dict(old).forecasts == ()


@pytest.mark.parametrize("widths", [[32], [32, 64]])
def test_too_few_points_say_so_instead_of_predicting(widths: list[int]) -> None:
    df, r = sweep("mup", {"mup": -0.05})
    df = df[df["width"].isin(widths)]
    f = fit_sweep(df, r, n_boot=50).forecast("mup")
    if len(widths) == 1:
        assert f is None or f.value is None
    else:
        assert f.value is not None and f.backtest_scale is None  # two points: a law, but nothing left to backtest


def test_the_export_carries_the_prediction_and_says_which_parametrization_and_why() -> None:
    from mutransfer.export import default_parametrization, export_config

    df, r = sweep("[mup, sp]", {"mup": 0.0, "sp": -0.06})
    res = fit_sweep(df, r)
    assert res.preferred == "sp" and default_parametrization(res) == "sp"
    cfg = export_config(r, res, sweep_name="f", sweep_id=1, recipe_hash="h", parametrization="sp")
    assert cfg["parametrization_choice"]["chosen"] == "sp"
    assert "sp is predicted to train the better target" in cfg["parametrization_choice"]["why"]
    pm = cfg["predicted_metric"]
    assert pm["lo"] <= pm["value"] <= pm["hi"] and pm["metric"] == "val_loss"
    assert pm["extrapolates"] == "2.0 doublings of width beyond the largest proxy"
    asked = export_config(r, res, sweep_name="f", sweep_id=1, recipe_hash="h", parametrization="mup")
    assert asked["parametrization_choice"]["why"].startswith("asked for, although sp is predicted")
    # Every tuned value says how it is applied at the target.
    assert asked["hyperparameters"]["lr"]["rule"].startswith("the base-width LR: MuAdam")
    assert cfg["hyperparameters"]["lr"]["rule"].startswith("used as it is")


def test_forecast_picture_data_runs_the_law_through_the_floors_to_the_target() -> None:
    from dashboard.figures.forecast import forecast_data, forecast_figure

    df, r = sweep("mup", {"mup": -0.05})
    res = fit_sweep(df, r, n_boot=50)
    d = forecast_data(res, "mup")
    assert d is not None and d.sizes == [32, 64, 128, 256] and d.target_x == 1024
    assert d.line_x[0] == 32 and abs(d.line_x[-1] - 1024) < 1e-6 and abs(d.line_y[-1] - d.target_y) < 1e-12
    # The law passes through the floors (a power law fitted to a power-law truth).
    line = np.interp(np.log2(d.sizes), np.log2(d.line_x), d.line_y)
    assert np.allclose(line, d.floors, rtol=0.01)
    roles = [t.meta["role"] for t in forecast_figure([d]).data]
    assert roles == ["law", "floors", "target"]
