"""Depth scaling (depth-µP, CompleteP): recipe validation, residual multipliers, per-group LRs, coordinate check over depth."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import yaml

from mutransfer.coordcheck.measure import coord_check
from mutransfer.param_groups import describe_groups
from mutransfer.parametrization import BuildConfig, build_model, optimizer_for
from mutransfer.recipe import RecipeError, parse_recipe

GPT = dict(vocab_size=32, num_classes=32, seq_len=16, head_dim=16)
MLP = dict(input_dim=16, num_classes=10, residual=True)

RECIPE = """
name: d
model: {family: gpt, parametrization: mup, base_width: 32, head_dim: 8, depth_scaling: depth-mup, base_depth: 2}
data: {kind: chars}
train: {steps: 10, optimizer: adamw}
search: {samples: 2, space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 4, seq_len: 16}, vary: {depth: [2, 4]}}
target: {width: 128, depth: 16, batch_size: 4, seq_len: 16}
"""


def _recipe(**changes: object) -> str:
    doc = yaml.safe_load(RECIPE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model__base_depth": None}, "model.base_depth: depth_scaling 'depth-mup' needs base_depth"),
        ({"model__depth_scaling": "deep"}, "model.depth_scaling: Input should be 'none', 'depth-mup' or 'completep'"),
        ({"model__residual": True}, "model.residual: the gpt is residual already"),
        ({"train__optimizer": "sgd"}, "model.depth_scaling: the depth rules implemented are Adam's"),
        ({"model__eps_scaling": "depth"}, "model.eps_scaling: Input should be 'none' or 'width'"),
        ({"scales__vary": {"steps": [10, 20]}}, "scales.base.steps: varying steps needs the base proxy's steps"),
    ],
)
def test_bad_depth_recipes_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError) as e:
        parse_recipe(_recipe(**changes))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mlp_depth_scaling_needs_residual_blocks() -> None:
    text = """
model: {family: mlp, depth_scaling: completep, base_depth: 2}
train: {steps: 10}
search: {space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2}}
target: {width: 64, depth: 8, batch_size: 32}
"""
    with pytest.raises(RecipeError, match="model.residual: depth scaling acts on residual branches"):
        parse_recipe(text)
    assert parse_recipe(text.replace("base_depth: 2}", "base_depth: 2, residual: true}")).model.residual


@pytest.mark.parametrize(("scaling", "alpha"), [("depth-mup", 0.5), ("completep", 1.0), ("none", 0.0)])
def test_residual_multiplier_is_applied_at_build_time(scaling: str, alpha: float) -> None:
    torch.manual_seed(0)
    cfg = BuildConfig(width=32, depth=8, base_width=32, base_depth=2, depth_scaling=scaling, **GPT)
    model = build_model(cfg, "gpt")
    mult = 4.0**-alpha
    assert all(b.branch_mult == pytest.approx(mult) for b in model.blocks)
    # The block's forward is x + m·attn(ln1(x)), then + m·mlp(ln2(x)): check it against the branches themselves.
    block = model.blocks[3]
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        h = x + mult * block.attn(block.ln1(x))
        want = h + mult * block.mlp(block.ln2(h))
        assert torch.allclose(block(x), want, atol=1e-6)
    mlp = build_model(BuildConfig(width=32, depth=8, base_width=32, base_depth=2, depth_scaling=scaling, **MLP), "mlp")
    assert mlp.branch_mult == pytest.approx(mult) and mlp.residual


def test_residual_mlp_forward_is_the_tensor_programs_vi_network() -> None:
    torch.manual_seed(0)
    cfg = BuildConfig(width=32, depth=3, base_width=32, base_depth=1, depth_scaling="depth-mup", **MLP)
    model = build_model(cfg, "mlp")
    x = torch.randn(5, 16)
    with torch.no_grad():
        h = model.inp(x) * model.embed_mult
        for layer in model.hidden:
            h = h + 3**-0.5 * layer(torch.relu(h))
        assert torch.allclose(model(x), model.out(torch.relu(h)), atol=1e-6)


@pytest.mark.parametrize(("scaling", "alpha"), [("depth-mup", 0.5), ("completep", 1.0)])
def test_optimizer_groups_carry_the_depth_lr_factor(scaling: str, alpha: float) -> None:
    """Adam LR: hidden matrices lr / width_mult · (L/L0)^(alpha-1); LayerNorms in blocks lr · (L/L0)^(alpha-1)."""
    cfg = BuildConfig(width=64, depth=8, base_width=32, base_depth=2, depth_scaling=scaling, eps_scaling="width", **GPT)
    model = build_model(cfg, "gpt")
    opt = optimizer_for(model.parameters(), "mup", "adamw", lr=1e-2, weight_decay=0.1, eps=1e-8)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    depth_f = 4.0 ** (alpha - 1.0)
    eps = 1e-8 / 2.0 * 4.0**-alpha  # CompleteP's eps rule: / width_mult · depth_mult^-alpha
    checks = {
        "blocks.5.attn.k.weight": 1e-2 / 2.0 * depth_f,
        "blocks.0.mlp.proj.weight": 1e-2 / 2.0 * depth_f,
        "blocks.7.ln1.weight": 1e-2 * depth_f,
        "wte.weight": 1e-2,
        "ln_f.weight": 1e-2,
        "head.weight": 1e-2,
    }
    params = dict(model.named_parameters())
    for name, lr in checks.items():
        g = by_param[id(params[name])]
        assert g["lr"] == pytest.approx(lr), name
        assert g["eps"] == pytest.approx(eps), name
    # MuAdamW's width rule on weight decay is untouched by depth: wd · width_mult on matrices.
    assert by_param[id(params["blocks.5.attn.k.weight"])]["weight_decay"] == pytest.approx(0.2)
    # A schedule (LambdaLR) multiplies each group's own LR: the depth ratio survives every step.
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)  # sets every group's lr to its initial lr x 0.5
    assert by_param[id(params["blocks.7.ln1.weight"])]["lr"] == pytest.approx(0.5e-2 * depth_f)


def test_describe_groups_report_the_depth_factors() -> None:
    cfg = BuildConfig(width=256, depth=32, base_width=32, base_depth=4, depth_scaling="depth-mup", **GPT)
    rows = {g.name: g for g in describe_groups(cfg, "gpt", "adam")}
    f = 8.0**-0.5
    assert rows["blocks.*.attn.proj.weight"].forward_mult == pytest.approx(f)  # branch multiplier
    assert rows["blocks.*.mlp.proj.weight"].forward_mult == pytest.approx(f)
    assert rows["blocks.*.attn.q.weight"].forward_mult == 1.0
    assert rows["blocks.*.mlp.fc.weight"].lr_mult == pytest.approx(f / 8.0)  # 1/width_mult · depth factor
    assert rows["blocks.*.mlp.fc.weight"].depth_lr_mult == pytest.approx(f)
    assert rows["blocks.*.ln2.weight"].lr_mult == pytest.approx(f)
    assert rows["wte.weight"].lr_mult == 1.0 and rows["wte.weight"].depth_lr_mult == 1.0
    plain = {g.name: g for g in describe_groups(replace(cfg, depth_scaling="none"), "gpt", "adam")}
    assert plain["blocks.*.mlp.fc.weight"].lr_mult == pytest.approx(1 / 8.0)
    assert plain["blocks.*.attn.proj.weight"].forward_mult == 1.0


def _depth_check(scaling: str, family: str, extra: dict[str, object]) -> dict[str, float]:
    base = BuildConfig(width=64, depth=2, base_width=64, base_depth=2, depth_scaling=scaling, **extra)  # type: ignore[arg-type]
    cc = coord_check(lambda d: replace(base, depth=d), [2, 4, 8, 16], family, axis="depth", steps=3, lr=1e-2,
                     batch_size=8, seeds=(0,))
    assert cc.axis == "depth" and cc.widths == [2, 4, 8, 16]
    return cc.slopes


@pytest.mark.slow
def test_gpt_coordinate_check_over_depth() -> None:
    """The residual stream's change after 3 Adam steps: ~depth^1 with plain sums, flat under depth-µP/CompleteP.

    Measured (width 64, depths 2..16, lr 1e-2): slope of the last block's output change 1.18 without scaling,
    0.00 under depth-µP, -0.02 under CompleteP.
    """
    torch.set_num_threads(1)
    none = _depth_check("none", "gpt", GPT)
    assert none["blocks.last"] > 0.8
    for scaling in ("depth-mup", "completep"):
        s = _depth_check(scaling, "gpt", GPT)
        assert abs(s["blocks.last"]) < 0.2, (scaling, s["blocks.last"])
        assert abs(s["logits"]) < 0.2


def test_residual_mlp_coordinate_check_over_depth() -> None:
    """The logits' change: slope 0.89 with plain residual sums, 0.15 (depth-µP) and 0.06 (CompleteP)."""
    torch.set_num_threads(1)
    assert _depth_check("none", "mlp", MLP)["logits"] > 0.6
    for scaling in ("depth-mup", "completep"):
        assert abs(_depth_check(scaling, "mlp", MLP)["logits"]) < 0.3


def test_coord_check_axis_is_checked() -> None:
    with pytest.raises(ValueError, match="axis"):
        coord_check(lambda w: BuildConfig(width=w, depth=1, **MLP), [32, 64], "mlp", axis="batch")


def test_depth_factors_are_one_at_the_base_depth() -> None:
    cfg = BuildConfig(width=32, depth=4, base_width=32, base_depth=4, depth_scaling="completep", **GPT)
    assert (cfg.branch_mult, cfg.depth_lr_mult, cfg.depth_mult) == (1.0, 1.0, 1.0)
    assert math.isclose(replace(cfg, depth=16).branch_mult, 0.25)
    assert replace(cfg, depth=16).depth_lr_mult == 1.0  # CompleteP: alpha = 1, no LR change with depth
