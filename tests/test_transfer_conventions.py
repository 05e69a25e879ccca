"""What transfers and how: the token-horizon axis, hyperparameters that do not transfer, the stated conventions,
and a target rebuilt from an export carrying the fitted multipliers and depth rules."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from mutransfer.conventions import conventions, does_not_transfer
from mutransfer.export import data_sizes, export_config, render, target_build_config
from mutransfer.fit import FitResult, fit_sweep
from mutransfer.param_groups import describe_groups
from mutransfer.parametrization import optimizer_for
from mutransfer.plan import plan
from mutransfer.recipe import Recipe, parse_recipe
from mutransfer.target import build_target, load_export
from mutransfer.testing.recipes import edit, mlp_recipe

HORIZON = mlp_recipe(name="h", train={"steps": 100, "optimizer": "adamw"},
                     scales={"base": {"width": 32, "depth": 2, "batch_size": 32, "steps": 100},
                             "vary": {"steps": [100, 200, 400, 800]}}, target__tokens=102400)


def _parse(text: str, **changes: Any) -> Recipe:
    return parse_recipe(edit(text, **changes))


def _frame(r: Recipe, opt_log2: Any, seed: int = 0) -> pd.DataFrame:
    """Trials as the store hands them over (steps_planned, no steps column), metric a bowl around opt_log2(spec)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in plan(r):
        scale = s.scale.model_dump()
        scale.pop("steps")
        u = math.log2(s.hparams["lr"])
        extra = sum(0.05 * math.log2(v / 0.1) ** 2 for k, v in s.hparams.items() if k != "lr")
        rows.append({
            "key": s.key, "parametrization": s.parametrization, **scale, "steps_planned": s.steps,
            "status": "completed", "metric": 2.0 + 0.05 * (u - opt_log2(s)) ** 2 + extra + 0.005 * rng.normal(),
            **{f"hp.{k}": v for k, v in s.hparams.items()},
        })
    return pd.DataFrame(rows)


def test_steps_is_a_scale_axis_with_its_own_trials() -> None:
    r = _parse(HORIZON)
    assert [p.steps for p in r.scales.points()] == [100, 200, 400, 800]
    specs = plan(r)
    assert {s.steps for s in specs} == {100, 200, 400, 800}
    assert {s.scale.tag() for s in specs} >= {"w32-d2-b32-s1-t100", "w32-d2-b32-s1-t800"}
    assert r.target_steps() == 3200  # 102400 examples / batch 32


def test_fit_recovers_the_horizon_law_and_extrapolates_to_the_target_steps() -> None:
    """log2 lr* = -6 - 0.5·log2(steps / 100): the optimum shrinks as the run gets longer."""
    r = _parse(HORIZON)
    fit = fit_sweep(_frame(r, lambda s: -6.0 - 0.5 * math.log2(s.steps / 100)), r)
    law = fit.law("mup", "lr", "steps")
    assert law.scales == (100, 200, 400, 800)
    assert law.slope_lo <= -0.5 <= law.slope_hi and abs(law.slope + 0.5) < 0.15
    t = fit.transfer("mup", "lr")
    step = next(s for s in t.steps if s.axis == "steps")
    assert (step.base, step.target, step.swept) == (100, 3200, True)
    want = -6.0 - 0.5 * 5  # 3200 = 100 · 2^5
    assert t.log2_lo <= want <= t.log2_hi and abs(t.log2_value - want) < 0.6
    assert not fit.warnings_with("token_horizon")  # the horizon is modelled, not just warned about
    again = FitResult.from_dict(fit.to_dict())
    assert again.law("mup", "lr", "steps").slope == law.slope


def test_a_diverged_trial_stays_at_its_planned_horizon() -> None:
    # The store hands over both steps_planned (the scale point) and steps (how far the trial got). A trial that
    # diverged at step 188 of 200 belongs to the 200-step point: it must not make a scale point of its own.
    r = _parse(HORIZON)
    frame = _frame(r, lambda s: -6.0 - 0.5 * math.log2(s.steps / 100))
    frame["steps"] = frame["steps_planned"]
    hot = frame.index[(frame["steps_planned"] == 200) & (frame["hp.lr"] > 0.3)]
    assert len(hot)
    frame.loc[hot, ["status", "metric", "steps"]] = ["diverged", np.nan, 188]
    fit = fit_sweep(frame, r)
    assert sorted({p.scale.steps for p in fit.points}) == [100, 200, 400, 800]
    at_200 = next(p for p in fit.points if p.scale.steps == 200)
    assert at_200.n_diverged == len(hot)
    assert not fit.warnings_with("all_diverged")


def test_dashboard_draws_transfer_curves_along_the_training_length() -> None:
    from dashboard.figures import style, transfer_curves, transfer_fit

    r = _parse(HORIZON)
    frame = _frame(r, lambda s: -6.0 - 0.5 * math.log2(s.steps / 100)).assign(role="sweep")
    frame["steps"] = frame["steps_planned"]
    frame.loc[frame.index[(frame["steps_planned"] == 400) & (frame["hp.lr"] > 0.3)], ["status", "metric", "steps"]] = [
        "diverged", np.nan, 377]
    base = r.scales.base
    assert transfer_curves.varied_axes(frame, base) == ["steps"]
    fit = fit_sweep(frame, r)
    data = transfer_curves.curves_data(frame, fit, parametrization="mup", hparam="lr", kind="log", axis="steps", base=base)
    assert data.scales == [100, 200, 400, 800]  # one curve per planned length, diverged trials included in theirs
    assert sum(len(s.x) + len(s.diverged_x) for s in data.series) == len(frame)
    assert all(s.opt_x is not None for s in data.series)  # each length has the fit's optimum
    assert style.count_traces(transfer_curves.transfer_curves_figure(data), "trials") == 4
    assert transfer_fit.law_axes(fit) == ["steps"]
    law = transfer_fit.law_data(fit, "mup", "lr", "steps")
    assert law is not None and list(law.scales) == [100, 200, 400, 800]


def test_without_target_tokens_the_horizon_law_is_not_applied() -> None:
    r = _parse(HORIZON, target={"width": 1024, "depth": 2, "batch_size": 32})
    fit = fit_sweep(_frame(r, lambda s: -6.0 - 0.5 * math.log2(s.steps / 100)), r)
    assert fit.warnings_with("no_target_steps", hparam="lr")
    assert abs(fit.transfer("mup", "lr").log2_value + 6.0) < 0.5


def test_regularizers_are_flagged_and_marked_in_the_export() -> None:
    r = _parse(HORIZON, train__optimizer="adam", search__space={
        "lr": {"loguniform": [1.0e-4, 1.0]}, "weight_decay": {"loguniform": [1.0e-3, 10.0]}})
    fit = fit_sweep(_frame(r, lambda s: -6.0 - 0.5 * math.log2(s.steps / 100)), r)
    flagged = fit.warnings_with("does_not_transfer", hparam="weight_decay")
    assert flagged and "coupled" not in flagged[0].message and "L2" in flagged[0].message
    assert not fit.warnings_with("does_not_transfer", hparam="lr")
    assert "does not transfer" in fit.transfer("mup", "weight_decay").note
    config = export_config(r, fit, sweep_name="h", sweep_id=1, recipe_hash=r.hash())
    assert config["hyperparameters"]["weight_decay"]["transfers"] is False
    assert "transfers" not in config["hyperparameters"]["lr"]
    assert any(w["code"] == "does_not_transfer" for w in config["warnings"])


def test_does_not_transfer_rules() -> None:
    adamw = _parse(HORIZON)
    assert does_not_transfer(adamw, "lr") is None
    assert "regularizer" in (does_not_transfer(adamw, "dropout") or "")
    assert "regularizer" in (does_not_transfer(adamw, "attn_dropout") or "")
    # AdamW over the same horizon keeps lr·wd under MuAdamW: weight decay transfers across width...
    same = _parse(HORIZON, scales={"base": {"width": 32, "depth": 2, "batch_size": 32}, "vary": {"width": [32, 64]}},
                  target={"width": 1024, "depth": 2, "batch_size": 32, "tokens": 3200})
    assert does_not_transfer(same, "weight_decay") is None
    # ...but not to a run 32x longer whose horizon the sweep did not vary.
    longer = _parse(HORIZON, scales={"base": {"width": 32, "depth": 2, "batch_size": 32}, "vary": {"width": [32, 64]}})
    assert "1/(lr·wd)" in (does_not_transfer(longer, "weight_decay") or "")


def test_conventions_state_each_rule() -> None:
    r = _parse(HORIZON)
    c = conventions(r)
    assert set(c) == {"weight_decay", "adam_eps", "schedule", "depth", "token_horizon", "multipliers"}
    assert all(isinstance(v, str) and v for v in c.values())
    assert "lr·wd" in c["weight_decay"] and "MuAdamW" in c["weight_decay"]
    assert "LambdaLR" in c["schedule"] and "steps swept" in c["token_horizon"]
    assert c["depth"].startswith("none")
    gpt = parse_recipe("""
model: {family: gpt, base_width: 32, head_dim: 8, depth_scaling: completep, base_depth: 2, eps_scaling: width}
data: {kind: chars}
train: {steps: 10, optimizer: adam}
search: {space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 4, seq_len: 16}}
target: {width: 64, depth: 8, batch_size: 4, seq_len: 16}
""")
    c = conventions(gpt)
    assert "(depth/2)^-1" in c["depth"] and "CompleteP" in c["depth"]
    assert "1/width_mult" in c["adam_eps"] and "(depth/2)^-1" in c["adam_eps"]
    assert "coupled L2" in c["weight_decay"]


GPT = """
name: g
model: {{family: gpt, parametrization: mup, base_width: 32, head_dim: 8, depth_scaling: depth-mup, base_depth: 2,
        eps_scaling: width}}
data: {{kind: chars, path: {path}}}
train: {{steps: 20, optimizer: adamw, weight_decay: 0.1}}
search:
  samples: 48
  space:
    lr: {{loguniform: [1.0e-4, 1.0]}}
    output_mult: {{loguniform: [0.0625, 16.0]}}
    attn_mult: {{loguniform: [0.0625, 16.0]}}
    embed_mult: {{loguniform: [0.0625, 16.0]}}
    init_std: {{loguniform: [0.001, 1.0]}}
scales: {{base: {{width: 32, depth: 2, batch_size: 4, seq_len: 16}}, vary: {{depth: [2, 4]}}}}
target: {{width: 128, depth: 8, batch_size: 4, seq_len: 16}}
"""


def test_target_built_from_the_export_has_the_multipliers_and_group_lrs(corpus: Path, tmp_path: Path) -> None:
    r = parse_recipe(GPT.format(path=corpus))
    fit = fit_sweep(_frame(r, lambda s: -6.0), r, n_boot=50)
    mults = {k: fit.transfer("mup", k).value for k in ("output_mult", "attn_mult", "embed_mult", "init_std")}
    assert all(v is not None for v in mults.values())
    cfg = target_build_config(r, "mup", fit)
    groups = [g.to_dict() for g in describe_groups(cfg, "gpt", "adamw")]
    config = export_config(r, fit, sweep_name="g", sweep_id=1, recipe_hash=r.hash(), param_groups=groups,
                           data_sizes=data_sizes(cfg))
    assert config["model"]["depth"]["branch_multiplier"] == pytest.approx(4.0**-0.5)
    assert config["model"]["depth"]["block_lr_scale"] == pytest.approx(4.0**-0.5)
    assert config["conventions"] == conventions(r)
    path = tmp_path / "target.yaml"
    path.write_text(render(config, "yaml"))
    tm = build_target(load_export(path), device="cpu")
    model = tm.model
    # The fitted multipliers, applied at the target width through µP's rules.
    assert model.head.output_mult == pytest.approx(mults["output_mult"])
    assert model.embed_mult == pytest.approx(mults["embed_mult"])
    assert model.blocks[0].attn.scale == pytest.approx(mults["attn_mult"] * math.sqrt(8) / 8)
    std = model.blocks[0].mlp.fc.weight.std().item()
    assert std == pytest.approx(mults["init_std"] * math.sqrt(32 / 128), rel=0.05)
    # The depth rule at depth 8 from base depth 2.
    assert all(b.branch_mult == pytest.approx(0.5) for b in model.blocks)
    # Per-group LRs of the rebuilt target: what the export's param_groups say, and what training would use.
    exported = {g["name"]: g["lr"] for g in config["mup"]["param_groups"]}
    rebuilt = {g["name"]: g["lr"] for g in tm.param_groups}
    assert exported == pytest.approx(rebuilt)
    lr = config["optimizer"]["lr"]
    assert rebuilt["blocks.*.mlp.fc.weight"] == pytest.approx(lr / 4.0 * 0.5)
    assert rebuilt["blocks.*.ln1.weight"] == pytest.approx(lr * 0.5)
    assert rebuilt["wte.weight"] == pytest.approx(lr)
    opt = optimizer_for(model.parameters(), "mup", "adamw", lr=lr, weight_decay=0.1, eps=1e-8)
    got = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert got[id(model.blocks[3].mlp.fc.weight)] == pytest.approx(rebuilt["blocks.*.mlp.fc.weight"])
    assert all(g["eps"] == pytest.approx(1e-8 / 4.0 * 0.5) for g in opt.param_groups)
    assert torch.isfinite(model(torch.zeros(1, 16, dtype=torch.long))).all()
