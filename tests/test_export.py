"""export.py: the target config from a recipe and a fit, and its YAML/JSON renders."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mutransfer import __version__
from mutransfer.export import export_config, render
from mutransfer.fit import FitResult, fit_sweep
from mutransfer.plan import plan
from mutransfer.recipe import Recipe, parse_recipe
from mutransfer.testing.recipes import edit

MLP = """
name: t
model: {family: mlp, parametrization: [mup, sp], base_width: 32, init_std: 0.02, output_mult: 2.0}
data: {kind: digits}
train: {steps: 100, eval_interval: 10, optimizer: adamw, weight_decay: 0.1, schedule: cosine, warmup_steps: 10}
search: {samples: 24, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32}, vary: {width: [32, 64, 128, 256]}}
target: {width: 1024, depth: 2, batch_size: 32, tokens: 320000}
"""

GPT = """
name: g
model: {family: gpt, parametrization: mup, base_width: 64, head_dim: 16, attn_mult: 2.0}
data: {kind: chars}
train: {steps: 50, eval_interval: 10, optimizer: adam}
search: {samples: 24, space: {lr: {loguniform: [1.0e-4, 1.0]}, embed_mult: {loguniform: [0.25, 4.0]}}}
scales: {base: {width: 64, depth: 2, batch_size: 16, seq_len: 32}, vary: {width: [64, 128]}}
target: {width: 512, depth: 4, batch_size: 64, seq_len: 256}
"""


def _recipe(text: str, **changes: Any) -> Recipe:
    return parse_recipe(edit(text, **changes))


def _fit(r: Recipe) -> FitResult:
    """A sweep whose µP optimum is lr = 2^-7 at every width; SP's drifts as width^-1."""
    rng = np.random.default_rng(0)
    rows = []
    for s in plan(r):
        u = math.log2(s.hparams["lr"])
        opt = -7.0 - (math.log2(s.scale.width / r.model.base_width) if s.parametrization == "sp" else 0.0)
        metric = 2.0 + 0.05 * (u - opt) ** 2 + 0.05 * (math.log2(s.hparams.get("embed_mult", 1.0))) ** 2
        rows.append(
            {
                "key": s.key,
                "parametrization": s.parametrization,
                **s.scale.model_dump(),
                "status": "completed",
                "metric": metric + 0.005 * rng.normal(),
                **{f"hp.{k}": v for k, v in s.hparams.items()},
            }
        )
    return fit_sweep(pd.DataFrame(rows), r)


@pytest.fixture(scope="module")
def mlp() -> tuple[Recipe, FitResult]:
    r = _recipe(MLP)
    return r, _fit(r)


def _export(r: Recipe, fit: FitResult, **kw: Any) -> dict[str, Any]:
    return export_config(r, fit, sweep_name="t", sweep_id=7, recipe_hash=r.hash(), **kw)


def _plain_only(x: Any) -> None:
    if isinstance(x, dict):
        assert all(isinstance(k, str) for k in x)
        for v in x.values():
            _plain_only(v)
    elif isinstance(x, list):
        for v in x:
            _plain_only(v)
    else:
        assert x is None or type(x) in (str, int, float, bool), (type(x), x)


def test_renders_parse_back_to_the_same_dict(mlp: tuple[Recipe, FitResult]) -> None:
    config = _export(*mlp)
    _plain_only(config)
    assert yaml.safe_load(render(config, "yaml")) == config
    assert json.loads(render(config, "json")) == config
    with pytest.raises(ValueError):
        render(config, "toml")  # type: ignore[arg-type]


def test_provenance_target_and_schedule(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    c = _export(r, fit)
    prov = c["provenance"]
    assert prov["sweep"] == {"name": "t", "id": 7}
    assert prov["recipe_hash"] == r.hash() and prov["mutransfer_version"] == __version__
    assert prov["created"].endswith("+00:00")
    assert c["target"] == {"width": 1024, "depth": 2, "batch_size": 32, "seq_len": 1, "tokens": 320000}
    assert c["optimizer"]["name"] == "adamw" and c["optimizer"]["betas"] == [0.9, 0.95]
    assert c["optimizer"]["eps"] == 1e-8 and c["optimizer"]["weight_decay"] == 0.1
    sched = c["schedule"]
    assert sched["kind"] == "cosine" and sched["warmup_steps"] == 10 and sched["proxy_steps"] == 100
    assert sched["target_steps"] == 10000 and sched["target_warmup_steps"] == 1000


def test_mup_rules_at_the_target_width(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    c = _export(r, fit)
    lr = fit.transfer("mup", "lr").value
    hp = c["hyperparameters"]["lr"]
    assert hp["source"] == "fit" and hp["value"] == lr
    assert hp["interval"][0] <= lr <= hp["interval"][1]
    assert math.log2(lr) == pytest.approx(-7.0, abs=0.4)
    assert hp["laws"]["width"]["swept"] and hp["laws"]["width"]["doublings_beyond_largest_proxy"] == 2.0
    assert hp["laws"]["depth"]["swept"] is False
    assert c["hyperparameters"]["init_std"] == {"source": "recipe", "value": 0.02}
    assert c["optimizer"]["lr"] == lr

    mup = c["mup"]
    assert mup["base_width"] == 32 and mup["width_mult"] == 32.0
    rules = mup["rules"]
    assert rules["hidden"]["lr"] == pytest.approx(lr / 32)
    assert rules["hidden"]["init_std"] == pytest.approx(0.02 / math.sqrt(32))
    assert rules["hidden"]["weight_decay"] == pytest.approx(0.1 * 32)  # MuAdamW: lr·wd stays constant
    assert rules["vector_like"]["lr"] == lr and rules["vector_like"]["init_std"] == 0.02
    assert rules["readout"] == {
        "init": "zeros",
        "output_multiplier": pytest.approx(2.0 / 32),
        "formula": "logits = readout(h) * output_mult / width_mult",
    }
    assert rules["embedding"]["multiplier"] == 1.0
    assert "attention" not in rules  # no attention in an MLP


def test_sgd_scales_vector_like_lr_instead() -> None:
    r = _recipe(MLP, train__optimizer="sgd", model__parametrization="mup")
    fit = _fit(r)
    rules = _export(r, fit)["mup"]["rules"]
    lr = fit.transfer("mup", "lr").value
    assert rules["hidden"]["lr"] == pytest.approx(lr)
    assert rules["vector_like"]["lr"] == pytest.approx(lr * 32)
    assert rules["vector_like"]["weight_decay"] == pytest.approx(0.1 / 32)
    assert rules["fixed"]["lr"] == pytest.approx(lr)


def test_gpt_heads_and_attention_scale() -> None:
    r = _recipe(GPT)
    fit = _fit(r)
    c = _export(r, fit)
    assert c["target"]["head_dim"] == 16 and c["target"]["n_heads"] == 32
    att = c["mup"]["rules"]["attention"]
    assert att["scale"] == pytest.approx(2.0 * math.sqrt(16) / 16) and att["query_init"] == "zeros"
    embed = fit.transfer("mup", "embed_mult").value
    assert c["mup"]["rules"]["embedding"]["multiplier"] == embed
    assert c["hyperparameters"]["embed_mult"]["source"] == "fit"

    # A fixed head count: head size grows with width, so does the 1/d scale's denominator.
    r2 = _recipe(GPT, model__head_dim=None, model__n_heads=4)
    c2 = _export(r2, _fit(r2))
    assert c2["target"]["head_dim"] == 128 and c2["target"]["n_heads"] == 4
    att2 = c2["mup"]["rules"]["attention"]
    assert att2["base_head_dim"] == 16 and att2["scale"] == pytest.approx(2.0 * 4 / 128)


def test_sp_export_has_no_mup_scaling(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    c = _export(r, fit, parametrization="sp", param_groups=[{"name": "w", "lr_mult": 0.5}])
    assert "mup" not in c and "standard parametrization" in c["scaling"]
    assert c["parametrization"] == "sp"
    lr = fit.transfer("sp", "lr").value
    assert c["optimizer"]["lr"] == lr and c["hyperparameters"]["lr"]["value"] == lr
    assert math.log2(lr) == pytest.approx(-7.0 - 5, abs=0.5)  # SP's optimum fell with width
    assert "param_groups" not in c and "left out" in c["scaling"]


def test_param_groups_get_absolute_lrs(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    groups = [
        {"name": "layers.0.weight", "shape": [1024, 64], "kind": "vector_like", "width_mult": 32.0, "lr_mult": 1.0, "init_std": 0.02},
        {"name": "layers.1.weight", "shape": [1024, 1024], "kind": "hidden", "width_mult": 32.0, "lr_mult": 1 / 32, "init_std": 0.02 / math.sqrt(32)},
        {"name": "readout.weight", "shape": [10, 1024], "kind": "readout", "width_mult": 32.0, "lr_mult": 1.0, "init_std": 0.0},
    ]
    c = _export(r, fit, param_groups=groups)
    lr = fit.transfer("mup", "lr").value
    out = c["mup"]["param_groups"]
    assert [g["name"] for g in out] == [g["name"] for g in groups]
    for g, o in zip(groups, out, strict=True):
        assert o["lr"] == pytest.approx(lr * g["lr_mult"])
        assert all(o[k] == g[k] for k in g)
    assert "lr" not in groups[0]  # the caller's dicts are not modified
    with pytest.raises(ValueError):
        _export(r, fit, param_groups=[{"name": "x"}])


def test_warnings_are_carried(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    c = _export(r, fit)
    mup_codes = sorted(w.code for w in fit.warnings if w.parametrization in (None, "mup"))
    assert sorted(w["code"] for w in c["warnings"]) == mup_codes
    sp_codes = [w["code"] for w in _export(r, fit, parametrization="sp")["warnings"]]
    assert sp_codes.count("mup_width_slope") == 0
    assert all(w.get("parametrization") in (None, "mup") for w in c["warnings"])


def test_width_drift_under_mup_is_warned_in_the_export() -> None:
    r = _recipe(MLP, model__parametrization="mup")
    rng = np.random.default_rng(1)
    rows = []
    for s in plan(r):
        opt = -5.0 - math.log2(s.scale.width / 32)
        rows.append(
            {
                "key": s.key,
                "parametrization": "mup",
                **s.scale.model_dump(),
                "status": "completed",
                "metric": 2.0 + 0.05 * (math.log2(s.hparams["lr"]) - opt) ** 2 + 0.005 * rng.normal(),
                "hp.lr": s.hparams["lr"],
            }
        )
    c = _export(r, fit_sweep(pd.DataFrame(rows), r))
    assert "mup_width_slope" in [w["code"] for w in c["warnings"]]
    assert c["hyperparameters"]["lr"]["laws"]["width"]["slope"] == pytest.approx(-1.0, abs=0.1)


def test_unknown_parametrization_is_refused(mlp: tuple[Recipe, FitResult]) -> None:
    r, fit = mlp
    only_mup = _recipe(MLP, model__parametrization="mup")
    with pytest.raises(ValueError, match="no 'sp' trials"):
        _export(only_mup, _fit(only_mup), parametrization="sp")
    assert r.model.parametrizations == ("mup", "sp")
