"""The joint model (mutransfer.fit.joint) on synthetic sweeps with a known optimum and slope: flat, drifting, noisy,
with divergences, two hyperparameters; the slope selection, the unclamped intervals and the backtest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mutransfer.fit import fit_sweep
from mutransfer.fit.optima import interval, outside
from mutransfer.recipe import Recipe, Scale, parse_recipe
from mutransfer.testing.recipes import edit, mlp_recipe
from mutransfer.testing.synthetic import CLIFF, synthetic_trials

BASE = mlp_recipe(name="j", train={"steps": 100}, search__samples=16,
                  search__space={"lr": {"loguniform": [1.0e-4, 1.0e-1]}}, target__width=2048)


def recipe(**changes: object) -> Recipe:
    return parse_recipe(edit(BASE, **changes))


def drift(slope: float, at: float = -7.0):  # noqa: ANN201
    return lambda s, p: at + slope * math.log2(s.width / 32)


def test_flat_optimum_drops_the_slope_and_transfers_the_base_value() -> None:
    r = recipe()
    df = synthetic_trials(r, drift(0.0), noise=0.04, rng=np.random.default_rng(0))
    fit = fit_sweep(df, r)
    law = fit.law("mup", "lr", "width")
    assert not law.kept and law.slope == 0.0  # the data do not carry a slope: none is extrapolated
    assert law.wald is not None and law.threshold is not None and law.wald < law.threshold
    assert "set to 0" in law.note and law.free_slope is not None
    t = fit.transfer("mup", "lr")
    assert t.log2_value == pytest.approx(-7.0, abs=0.5)
    assert t.log2_lo <= -7.0 <= t.log2_hi
    assert t.log2_value == pytest.approx(math.log2(t.base_value))  # slope 0: the base optimum, moved nowhere
    assert not fit.warnings_with("mup_width_slope")


@pytest.mark.parametrize("slope", [0.0, -1.0])
def test_the_95_percent_interval_holds_the_truth_at_about_that_rate(slope: float) -> None:
    # What an interval promises is a rate, so it is checked over many sweeps (bench/transfer_quality.py measures it
    # on 100 per cell; here 30, with fewer resamples). Before the replicates drew their priors' centres, the no-drift
    # interval here held the truth in 57% of sweeps: the asymmetry prior's pull was treated as known.
    r = recipe()
    truth = -7.0 + slope * math.log2(2048 / 32)
    held = []
    for seed in range(30):
        df = synthetic_trials(r, drift(slope), noise=0.04, rng=np.random.default_rng([seed, int(-slope)]))
        t = fit_sweep(df, r, seed=seed, n_boot=100).transfer("mup", "lr")
        held.append(t.log2_lo <= truth <= t.log2_hi)
    assert np.mean(held) >= 0.8, np.mean(held)  # binomial sd at 95% over 30 sweeps: 4%


def test_a_drifting_optimum_keeps_its_slope_and_moves_the_value() -> None:
    r = recipe()
    df = synthetic_trials(r, drift(-1.0), noise=0.02, rng=np.random.default_rng(1))
    fit = fit_sweep(df, r)
    law = fit.law("mup", "lr", "width")
    assert law.kept and law.wald > law.threshold
    assert law.slope == pytest.approx(-1.0, abs=0.2)
    assert law.slope_lo <= -1.0 <= law.slope_hi
    t = fit.transfer("mup", "lr")
    truth = -7.0 - math.log2(2048 / 32)
    assert t.log2_value == pytest.approx(truth, abs=0.8)
    assert fit.warnings_with("mup_width_slope")  # a µP optimum that moves is news


def test_divergences_are_censored_evidence() -> None:
    # The cliff sits 2.5 octaves above the optimum: every trial above it diverged, none has a metric.
    r = recipe()
    df = synthetic_trials(r, drift(0.0), noise=0.02, rng=np.random.default_rng(2))
    assert (df["status"] == "diverged").any()
    fit = fit_sweep(df, r)
    t = fit.transfer("mup", "lr")
    assert t.log2_value == pytest.approx(-7.0, abs=0.5)
    assert t.log2_value < -7.0 + CLIFF


def test_noise_is_read_and_advised_on() -> None:
    r = recipe(search__repeats=2)
    df = synthetic_trials(r, drift(0.0), noise=0.3, rng=np.random.default_rng(3))
    fit = fit_sweep(df, r)
    (n,) = [x for x in fit.noise if x.hparam == "lr"]
    assert n.source == "repeats" and n.sigma == pytest.approx(0.3, rel=0.3)  # seeds of one configuration
    assert n.ratio is not None and n.ratio > 0.5
    (w,) = fit.warnings_with("noise", hparam="lr")
    assert "search.repeats: 3" in w.message and "train.metric_window" in w.message

    quiet = fit_sweep(synthetic_trials(recipe(), drift(0.0), noise=0.005, rng=np.random.default_rng(3)), recipe())
    (q,) = quiet.noise
    assert q.source == "residuals" and q.ratio is not None and q.ratio < 0.5
    assert not quiet.warnings_with("noise")


def test_two_hyperparameters_at_once() -> None:
    r = recipe(search__samples=60,
               search__space={"lr": {"loguniform": [1e-4, 1e-1]}, "output_mult": {"loguniform": [1 / 16, 16.0]}})

    def extra(s: Scale, hp: dict[str, float]) -> float:
        return 0.05 * (math.log2(hp["output_mult"]) - 1.0) ** 2

    df = synthetic_trials(r, drift(-0.5), noise=0.01, rng=np.random.default_rng(4), extra=extra)
    fit = fit_sweep(df, r)
    assert fit.law("mup", "lr", "width").slope == pytest.approx(-0.5, abs=0.2)
    om = fit.transfer("mup", "output_mult")
    assert om.log2_value == pytest.approx(1.0, abs=0.5)
    assert not fit.law("mup", "output_mult", "width").kept  # it does not move with width
    assert set(fit.model["mup"]["hparams"]) == {"lr", "output_mult"}


def test_the_backtest_predicts_the_largest_proxy_from_the_others() -> None:
    r = recipe()
    df = synthetic_trials(r, drift(-1.0), noise=0.01, rng=np.random.default_rng(5))
    fit = fit_sweep(df, r)
    (b,) = fit.backtests
    assert (b.axis, b.held_out, b.fitted_on) == ("width", 256, (32, 64, 128))
    assert b.slope == pytest.approx(-1.0, abs=0.3)
    assert abs(b.error) < 0.75 and b.predicted == pytest.approx(2.0 ** (-7.0 - 3.0), rel=0.7)
    assert b.regret is not None and b.regret >= 0 and b.relative_regret < 0.05

    # Copying the base value (a flat law) to a drifting optimum misses by the drift: the backtest shows it.
    two = recipe(scales__vary={"width": [32, 256]})
    assert not fit_sweep(synthetic_trials(two, drift(-1.0), noise=0.01, rng=np.random.default_rng(5)), two).backtests


def test_intervals_are_never_widened_to_hold_the_estimate() -> None:
    draws = np.array([1.0, 1.1, 1.2, 1.3, 1.4])
    lo, hi = interval(draws, 5.0)
    assert hi < 5.0 and outside(5.0, lo, hi) and not outside(1.2, lo, hi)


def test_the_fit_round_trips_with_its_new_parts() -> None:
    import json

    from mutransfer.fit import FitResult

    r = recipe()
    fit = fit_sweep(synthetic_trials(r, drift(-1.0), noise=0.02, rng=np.random.default_rng(6)), r)
    back = FitResult.from_dict(json.loads(json.dumps(fit.to_dict(), allow_nan=False)))
    assert back.noise == fit.noise and back.backtests == fit.backtests and back.laws == fit.laws
    # A fit stored before these parts existed still loads.
    old = fit.to_dict()
    for k in ("noise", "backtests", "model"):
        del old[k]
    for law in old["laws"]:
        for k in ("kept", "free_slope", "free_slope_lo", "free_slope_hi", "wald", "threshold", "unstable"):
            del law[k]
    assert FitResult.from_dict(old).laws[0].kept


def test_three_hyperparameters_with_repeats() -> None:
    r = recipe(search__samples=48, search__repeats=2,
               search__space={"lr": {"loguniform": [1e-4, 1e-1]}, "output_mult": {"loguniform": [1 / 16, 16.0]},
                              "init_std": {"loguniform": [1e-3, 1.0]}})

    def extra(s: Scale, hp: dict[str, float]) -> float:  # optima: output_mult 2, init_std 2^-5
        return 0.04 * (math.log2(hp["output_mult"]) - 1.0) ** 2 + 0.03 * (math.log2(hp["init_std"]) + 5.0) ** 2

    df = synthetic_trials(r, drift(0.0), noise=0.02, rng=np.random.default_rng(5), extra=extra)
    fit = fit_sweep(df, r)
    assert fit.transfer("mup", "lr").log2_value == pytest.approx(-7.0, abs=0.6)
    assert fit.transfer("mup", "output_mult").log2_value == pytest.approx(1.0, abs=0.6)
    assert fit.transfer("mup", "init_std").log2_value == pytest.approx(-5.0, abs=0.6)
    assert not any(fit.law("mup", h, "width").kept for h in ("lr", "output_mult", "init_std"))


def test_a_real_flat_bottomed_sweep_is_placed_in_its_bottom_and_exportable() -> None:
    """Trials of a real `./dev quickstart` sweep (tests/data: µP MLP on digits, 5 widths, 12 LRs x 2 seeds): the loss
    is flat from lr 0.004 to 0.02, rises gently below and steeply above, with no draw between 0.022 and 0.11. Every
    point's own optimum is 0.007-0.010. Sized by residuals that carry the walls' misfit, the window spread over the
    whole range: with a loose asymmetry prior the bowl put its optimum at 0.044 beside the steep wall, with the
    tight one its interval spanned 5.7 octaves (refused by the export's guard). Sized by the repeats' noise near
    the optimum, it is placed in the bottom, precisely enough to export."""
    from mutransfer.export import GUARD_OCTAVES

    r = parse_recipe((Path(__file__).parents[1] / "recipes" / "quickstart.yaml").read_text())
    df = pd.read_csv(Path(__file__).parent / "data" / "quickstart_trials.csv")
    t = fit_sweep(df, r).transfer("mup", "lr")
    assert 0.004 <= t.value <= 0.016, t
    assert t.log2_hi - t.log2_lo < GUARD_OCTAVES, t
