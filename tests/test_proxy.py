"""Built-in families in µP and SP, user builders, and the per-group report for the target."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import mup
import pytest
import torch
from torch import nn

from mutransfer.data import load_dataset
from mutransfer.param_groups import describe_groups
from mutransfer.parametrization import (
    BuildConfig,
    build,
    build_config,
    build_model,
    count_params,
    make_optimizer,
)
from mutransfer.plan import TrialSpec, plan
from mutransfer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent

MLP = """
name: t
model: {family: mlp, parametrization: [mup, sp], base_width: 32}
data: {kind: digits}
train: {steps: 20, eval_interval: 10}
search: {samples: 1, space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32}, vary: {width: [256]}}
target: {width: 1024, depth: 2, batch_size: 256}
"""


def gpt_recipe(path: Path, heads: str = "head_dim: 8") -> str:
    return f"""
name: g
model: {{family: gpt, parametrization: [mup, sp], base_width: 32, {heads}}}
data: {{kind: chars, path: {path}}}
train: {{steps: 10, eval_interval: 5}}
search: {{samples: 1, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 4, seq_len: 16}}, vary: {{width: [128]}}}}
target: {{width: 1024, depth: 4, batch_size: 64, seq_len: 64}}
"""


def _spec(text: str, parametrization: str, width: int) -> TrialSpec:
    return next(s for s in plan(parse_recipe(text)) if s.parametrization == parametrization and s.scale.width == width)


def test_mup_mlp_has_base_shapes_and_zero_readout() -> None:
    spec = _spec(MLP, "mup", 256)
    ds = load_dataset(spec.data, spec.model)
    model = build(spec, ds)
    assert all(hasattr(p, "infshape") for p in model.parameters())
    assert model.hidden[0].weight.infshape.width_mult() == 256 / 32
    assert isinstance(model.out, mup.MuReadout) and torch.count_nonzero(model.out.weight) == 0
    # Init: hidden N(0, σ sqrt(base_fan_in / fan_in)) with σ = base_width ** -0.5; input N(0, σ).
    sigma = 32**-0.5
    assert model.hidden[0].weight.std().item() == pytest.approx(sigma * math.sqrt(32 / 256), rel=0.05)
    assert model.inp.weight.std().item() == pytest.approx(sigma, rel=0.05)
    x, _ = ds.get_batch("train", 5, 1, torch.Generator().manual_seed(0))
    assert model(x).shape == (5, 10)
    # MuAdam: hidden matrices get lr / width_mult, the rest the base lr.
    opt = make_optimizer(model, spec)
    lr = spec.hparams["lr"]
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([lr * 32 / 256, lr])


def test_sp_mlp_has_plain_linear_readout() -> None:
    spec = _spec(MLP, "sp", 256)
    model = build(spec, load_dataset(spec.data, spec.model))
    assert type(model.out) is nn.Linear and not hasattr(model.out.weight, "infshape")
    assert model.out.weight.std().item() == pytest.approx(32**-0.5 * math.sqrt(32 / 256), rel=0.1)
    opt = make_optimizer(model, spec)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1


def test_gpt_mup_zero_query_readout_and_one_over_d_attention(corpus: Path) -> None:
    spec = _spec(gpt_recipe(corpus), "mup", 128)
    ds = load_dataset(spec.data, spec.model)
    model = build(spec, ds)
    assert all(hasattr(p, "infshape") for p in model.parameters())
    assert isinstance(model.head, mup.MuReadout) and torch.count_nonzero(model.head.weight) == 0
    for block in model.blocks:
        assert torch.count_nonzero(block.attn.q.weight) == 0
        assert block.attn.k.weight.std().item() == pytest.approx(0.02 * math.sqrt(32 / 128), rel=0.05)
        assert block.attn.n_heads == 128 // 8 and block.attn.scale == pytest.approx(1 / math.sqrt(8))
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    x, y = ds.get_batch("train", 3, 16, torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 16, ds.vocab_size)
    # n_heads fixed: the head size grows with width and the 1/d rule shows.
    spec = _spec(gpt_recipe(corpus, "n_heads: 2"), "mup", 128)
    attn = build(spec, ds).blocks[0].attn
    assert attn.head_dim == 64 and attn.scale == pytest.approx(math.sqrt(16) / 64)
    sp = build(_spec(gpt_recipe(corpus, "n_heads: 2"), "sp", 128), ds).blocks[0].attn
    assert sp.scale == pytest.approx(1 / math.sqrt(64)) and torch.count_nonzero(sp.q.weight) > 0


def test_gpt_sp_plain_readout(corpus: Path) -> None:
    spec = _spec(gpt_recipe(corpus), "sp", 128)
    model = build(spec, load_dataset(spec.data, spec.model))
    assert type(model.head) is nn.Linear and torch.count_nonzero(model.head.weight) > 0


def test_build_config_carries_hparams(corpus: Path) -> None:
    spec = _spec(gpt_recipe(corpus), "mup", 32)
    spec = replace(spec, hparams={**spec.hparams, "output_mult": 2.5})
    cfg = build_config(spec, load_dataset(spec.data, spec.model))
    assert cfg.output_mult == 2.5 and cfg.hparams["output_mult"] == 2.5 and cfg.hparams["lr"] == spec.hparams["lr"]
    assert cfg.seq_len == 16 and cfg.head_dim == 8 and cfg.num_classes == cfg.vocab_size
    assert build(spec, load_dataset(spec.data, spec.model)).head.output_mult == 2.5


def test_describe_groups_on_a_large_target_is_free() -> None:
    cfg = BuildConfig(width=4096, depth=32, parametrization="mup", vocab_size=50304, num_classes=50304,
                      seq_len=2048, head_dim=128, base_width=256)
    groups = describe_groups(cfg, "gpt", "adamw")  # on meta: a 7B-size model, no memory
    by = {g.name: g for g in groups}
    assert len(groups) == len(by) < 20  # layers folded into `blocks.*` patterns
    for name in ("blocks.*.attn.k.weight", "blocks.*.attn.proj.weight", "blocks.*.mlp.fc.weight",
                 "blocks.*.mlp.proj.weight"):
        g = by[name]
        assert g.count == 32 and g.kind == "matrix-like"
        assert g.lr_mult == pytest.approx(256 / 4096) and g.wd_mult == pytest.approx(4096 / 256)
        assert g.init_std == pytest.approx(0.02 * math.sqrt(256 / 4096))
    assert by["blocks.*.attn.q.weight"].init_std == 0 and by["blocks.*.attn.q.weight"].lr_mult == 256 / 4096
    for name in ("wte.weight", "wpe.weight"):
        assert by[name].kind == "vector-like" and by[name].lr_mult == 1 and by[name].init_std == 0.02
    head = by["head.weight"]
    assert head.kind == "readout" and head.lr_mult == 1 and head.init_std == 0
    assert head.forward_mult == pytest.approx(256 / 4096) and head.width_mult == 16
    assert by["blocks.*.ln1.weight"].init == "ones"
    n = count_params(cfg, "gpt")
    assert n == sum(math.prod(g.shape) * g.count for g in groups) and n > 6e9

    sp = {g.name: g for g in describe_groups(replace(cfg, parametrization="sp"), "gpt", "adam")}
    assert {g.lr_mult for g in sp.values()} == {1.0} and {g.width_mult for g in sp.values()} == {1.0}
    assert sp["head.weight"].init_std == pytest.approx(0.02 * math.sqrt(256 / 4096))
    assert sp["blocks.*.attn.q.weight"].init_std > 0


def test_a_users_builder_still_imports_from_proxy() -> None:
    # The README first documented mutransfer.proxy.BuildConfig; users' builders import it (and mark_block) there.
    from mutransfer import models, parametrization, proxy

    assert proxy.BuildConfig is parametrization.BuildConfig and proxy.mark_block is models.mark_block


def test_describe_groups_mlp_sgd_follows_musgd() -> None:
    cfg = BuildConfig(width=512, depth=3, parametrization="mup", input_dim=64, base_width=32)
    by = {g.name: g for g in describe_groups(cfg, "mlp", "sgd")}
    # MuSGD: vector-like LR x width_mult, hidden matrices (fan-in/fan-out ratio 1) unchanged.
    assert by["inp.weight"].lr_mult == 16 and by["hidden.*.weight"].lr_mult == 1
    assert by["out.weight"].kind == "readout" and by["out.bias"].lr_mult == 1


@pytest.fixture
def user_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    sys.modules.pop("userbuilders", None)


USER = MLP.replace("family: mlp", "family: 'userbuilders:mlp', options: {scale: 2.0}").replace(
    "space: {lr:", "space: {my_knob: {uniform: [0, 1]}, lr:")


@pytest.mark.usefixtures("user_path")
def test_user_builder_under_mup_and_sp() -> None:
    spec = _spec(USER, "mup", 256)
    ds = load_dataset(spec.data, spec.model)
    model = build(spec, ds)
    assert type(model).__name__ == "TwoLayer" and model.scale == 2.0
    assert all(hasattr(p, "infshape") for p in model.parameters())
    assert model.fc2.weight.infshape.width_mult() == 8 and isinstance(model.head, mup.MuReadout)
    opt = make_optimizer(model, spec)
    assert len({g["lr"] for g in opt.param_groups}) == 2
    cfg = build_config(spec, ds)
    assert "my_knob" in cfg.hparams and cfg.options == {"scale": 2.0}
    groups = {g.name: g for g in describe_groups(replace(cfg, width=2048), "userbuilders:mlp", "adam")}
    assert groups["fc2.weight"].lr_mult == pytest.approx(32 / 2048) and groups["head.weight"].kind == "readout"
    assert groups["fc2.weight"].init is None

    spec = _spec(USER, "sp", 256)
    model = build(spec, ds)
    assert not hasattr(model.fc2.weight, "infshape") and type(model.head) is nn.Linear
    x, _ = ds.get_batch("train", 4, 1, torch.Generator().manual_seed(0))
    assert model(x).shape == (4, 10)


@pytest.mark.usefixtures("user_path")
def test_user_builder_must_return_a_module() -> None:
    cfg = BuildConfig(width=64, depth=1, input_dim=64, base_width=32)
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_model(cfg, "userbuilders:not_a_module")


def test_hidden_gradients_shrink_with_width_so_adam_eps_must_too(corpus: Path) -> None:
    """Why `model.eps_scaling: width` (Adam's epsilon over width_mult; Everett et al. 2024, "Scaling exponents
    across parameterizations and optimizers", and CompleteP's reference code): under µP a hidden matrix's gradient
    entries shrink like 1 / width, so a fixed epsilon weighs more in Adam's update the wider the model, until it
    damps the update µP sized. Measured here on the built-in GPT after a few steps: 8x the width, about 1/8 the
    gradient, and the scaled epsilon keeps eps / |gradient| where it was at the base width."""
    from mutransfer.parametrization import optimizer_for

    ds = None
    rms, eps = {}, {}
    for width in (32, 256):
        text = gpt_recipe(corpus, "head_dim: 8, eps_scaling: width").replace("width: [128]", "width: [256]")
        spec = _spec(text, "mup", width)
        ds = ds or load_dataset(spec.data, spec.model)
        torch.manual_seed(0)
        model = build(spec, ds)
        opt = optimizer_for(model.parameters(), "mup", "adamw", lr=3e-3)
        x, y = ds.get_batch("train", 8, 16, torch.Generator().manual_seed(0))
        for _ in range(4):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
        w = next(p for n, p in model.named_parameters() if n.startswith("blocks.0.mlp") and p.ndim == 2)
        rms[width] = w.grad.pow(2).mean().sqrt().item()
        eps[width] = getattr(w, "_mt_eps_mult", None)
    ratio = rms[32] / rms[256]
    assert 4.0 < ratio < 16.0, rms  # ~8: the gradient shrinks like 1 / width
    assert eps[32] == pytest.approx(1.0) and eps[256] == pytest.approx(1 / 8)  # the scaled epsilon follows it
