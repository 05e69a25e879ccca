"""Verification plans and the µP-vs-SP comparison, on synthetic sweeps with a known optimum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mutransfer.fit import fit_sweep, value_at
from mutransfer.recipe import parse_recipe
from mutransfer.tables import compare_rows
from mutransfer.testing.recipes import mlp_recipe
from mutransfer.verify import VerifyError, parse_factors, plan_verification, report, verify_scale

RECIPE = mlp_recipe(model__parametrization=["mup", "sp"], search__samples=24, target__batch_size=256)


def synthetic(recipe, sp_slope: float = -1.0, seed: int = 0) -> pd.DataFrame:
    """µP optimum at lr 1e-2 at every width; SP optimum falling as width^sp_slope."""
    rng = np.random.default_rng(seed)
    rows = []
    for param in ("mup", "sp"):
        for p in recipe.scales.points():
            opt = np.log2(1e-2) + (sp_slope * np.log2(p.width / 32) if param == "sp" else 0.0)
            for i, u in enumerate(np.linspace(np.log2(1e-4), 0, 24)):
                rows.append({"key": f"{param}/{p.tag()}/{i:03d}", "parametrization": param, "width": p.width,
                             "depth": p.depth, "batch_size": p.batch_size, "seq_len": 1, "status": "completed",
                             "metric": 0.1 * (u - opt) ** 2 + 1 + rng.normal(0, 0.01), "hp.lr": 2.0**u,
                             "role": "sweep"})
    return pd.DataFrame(rows)


def test_value_at_follows_the_law_and_compare_reads_it() -> None:
    recipe = parse_recipe(RECIPE)
    fit = fit_sweep(synthetic(recipe), recipe)
    big = recipe.scales.base.model_copy(update={"width": 2048})
    assert value_at(fit, "mup", "lr", big) == pytest.approx(1e-2, rel=0.3)
    # SP: 1e-2 at width 32 falls by 2x per doubling: 64x down at 2048.
    assert value_at(fit, "sp", "lr", big) == pytest.approx(1e-2 / 64, rel=0.5)
    (row,) = compare_rows(fit)
    assert row["axis"] == "width"
    assert abs(row["mup"].slope) < 0.15 and row["sp"].slope == pytest.approx(-1.0, abs=0.15)


def test_plan_verification_brackets_the_transferred_value() -> None:
    recipe = parse_recipe(RECIPE)
    fit = fit_sweep(synthetic(recipe), recipe)
    scale = verify_scale(recipe, {"width": 1024})
    specs = plan_verification(recipe, fit, scale, parametrization="mup", hparam="lr", factors=(0.25, 4.0))
    assert [s.key.rsplit("/", 1)[1] for s in specs] == ["verify-lr-x0.25", "verify-lr-x1", "verify-lr-x4"]
    lrs = [s.hparams["lr"] for s in specs]
    assert lrs[1] == pytest.approx(value_at(fit, "mup", "lr", scale))
    assert lrs[0] == pytest.approx(lrs[1] / 4) and lrs[2] == pytest.approx(lrs[1] * 4)
    assert all(s.scale.width == 1024 for s in specs)

    frame = pd.DataFrame([{"key": s.key, "status": "completed", "metric": m} for s, m in zip(specs, [1.2, 1.0, 1.5], strict=True)])
    rep = report(frame, specs, "lr")
    assert rep.transferred_is_best and rep.gap == 0 and "held" in rep.summary()
    frame["metric"] = [0.9, 1.0, 1.5]
    rep = report(frame, specs, "lr")
    assert not rep.transferred_is_best and rep.gap == pytest.approx(0.1) and "x0.25" in rep.summary()


def test_verify_refuses_bad_requests() -> None:
    recipe = parse_recipe(RECIPE)
    with pytest.raises(VerifyError, match="larger than every proxy"):
        verify_scale(recipe, {"width": 128})
    with pytest.raises(VerifyError, match="give the size"):
        verify_scale(recipe, {})
    fit = fit_sweep(synthetic(recipe), recipe)
    with pytest.raises(VerifyError, match="was not swept"):
        plan_verification(recipe, fit, verify_scale(recipe, {"width": 512}), parametrization="mup", hparam="wd")
    with pytest.raises(VerifyError, match="positive multipliers"):
        parse_factors("0,2")


def test_both_transferred_configs_side_by_side_with_the_fits_prediction() -> None:
    from mutransfer.verify import predicted_at, side_by_side

    recipe = parse_recipe(RECIPE)
    df = synthetic(recipe)
    # SP's floor falls with width, µP's stays: the fit prefers SP, and the verification agrees.
    sp = df["parametrization"] == "sp"
    df.loc[sp, "metric"] -= 0.05 * np.log2(df.loc[sp, "width"] / 32)
    fit = fit_sweep(df, recipe)
    scale = verify_scale(recipe, {"width": 512})
    reps = []
    for p, metrics in (("mup", [1.3, 1.0, 1.2]), ("sp", [0.9, 0.8, 0.95])):
        specs = plan_verification(recipe, fit, scale, parametrization=p, hparam="lr")
        frame = pd.DataFrame([{"key": s.key, "status": "completed", "metric": m}
                              for s, m in zip(specs, metrics, strict=True)])
        reps.append(report(frame, specs, "lr"))
    rows, line = side_by_side(reps, fit, scale)
    assert [r["parametrization"] for r in rows] == ["mup", "sp"]
    assert rows[0]["metric"] == "1.0000" and rows[1]["metric"] == "0.8000"
    assert line.startswith("at w512-d2-b32-s1, sp's transferred config trained the better model (0.8000 against")
    assert fit.preferred == "sp" and line.endswith("the fit had predicted so")
    # The law's value at 512 lies between the largest proxy's floor and the target's prediction.
    f = fit.forecast("sp")
    at = predicted_at(f, fit, scale)
    assert f.value < at < dict(f.floors)["w256-d2-b32-s1"]
