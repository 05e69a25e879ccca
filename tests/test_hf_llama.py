"""The hf-llama family: transformers' own LlamaForCausalLM in µP, its recipe checks, the coordinate check, and its
export as the real LlamaConfig that mutransfer.runtime's optimizer accepts."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from launcher_sweeps import TEXT, fill
from mup import MuReadout, MuSharedReadout
from torch import nn

from mutransfer.parametrization import BuildConfig, build_model, build_with_shapes
from mutransfer.recipe import RecipeError, parse_recipe
from mutransfer.testing.recipes import edit

if importlib.util.find_spec("transformers") is None:  # the hf extra; not imported here (mutransfer.hf_llama does)
    pytest.skip("transformers is not installed (pip install 'mutransfer[hf]')", allow_module_level=True)

LLAMA = """
name: ll
model: {family: hf-llama, parametrization: mup, base_width: 32, head_dim: 8, ffn_ratio: 3.5, attn_mult: 1.5,
        output_mult: 2.0, options: {kv_heads: 2, rope_theta: 5000.0}}
data: {kind: chars, path: PATH}
train: {steps: 40, eval_interval: 10, optimizer: adamw, weight_decay: 0.05}
search: {samples: 12, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 8, seq_len: 16}, vary: {width: [32, 64, 128]}}
target: {width: 256, depth: 3, batch_size: 32, seq_len: 64, tokens: 2048000}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("llama") / "corpus.txt"
    f.write_text(TEXT, encoding="utf-8")
    return f


def llama_recipe(corpus: Path, **changes: Any) -> str:
    return edit(LLAMA.replace("PATH", str(corpus)), **changes)


def cfg_at(width: int, parametrization: str = "mup", **kw: Any) -> BuildConfig:
    sizes: dict[str, Any] = {"head_dim": 8, "options": {"kv_heads": 2}, "attn_mult": 1.5, "output_mult": 2.0,
                             "base_width": 32}
    sizes.update(kw)
    return BuildConfig(width=width, depth=2, parametrization=parametrization, vocab_size=40, num_classes=40,
                       seq_len=16, **sizes)


# --------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
@pytest.mark.parametrize("heads", [{"head_dim": 8}, {"n_heads": 4, "head_dim": None}])
def test_builds_transformers_llama_with_every_width_dimension_infinite(parametrization: str,
                                                                        heads: dict[str, Any]) -> None:
    from mutransfer.hf_llama import llama_classes

    _, llama_cls = llama_classes()
    for width in (32, 64):
        cfg = cfg_at(width, parametrization, **heads)
        model, shapes = build_with_shapes(cfg, "hf-llama", "cpu")
        assert type(model) is llama_cls and model.config.model_type == "llama"
        assert model.config._attn_implementation == "sdpa"
        c = model.config
        n_heads = width // 8 if "n_heads" not in heads else 4
        head_dim = width // n_heads
        assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_dim) == \
            (width, 4 * width, n_heads, head_dim)
        assert c.num_key_value_heads == n_heads // (4 // 2)  # 2 KV heads of 4 at the base width
        # The base and delta models differ in every width dimension: hidden, intermediate, heads or head size.
        base, delta = shapes["base"], shapes["delta"]
        for name, shape in base.items():
            if ".layers." in name and len(shape) == 2:
                assert all(a != b for a, b in zip(shape, delta[name], strict=True)), name
        # The base head size is 8 either way: head_dim 8, or 4 heads of base width 32.
        scale = 1.5 * math.sqrt(8) / head_dim if parametrization == "mup" else 1.5 / math.sqrt(head_dim)
        assert all(layer.self_attn.scaling == pytest.approx(scale) for layer in model.model.layers)
        q = [layer.self_attn.q_proj.weight for layer in model.model.layers]
        if parametrization == "mup":
            assert isinstance(model.lm_head, MuReadout) and model.lm_head.output_mult == 2.0
            assert all(p.infshape.ninf() == 2 for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2)
            assert not model.lm_head.weight.any() and not any(w.any() for w in q)  # µP: readout and query zero
        else:
            assert type(model.lm_head) is nn.Linear and model.lm_head.weight.std() > 0 and all(w.std() > 0 for w in q)
        hidden = model.model.layers[0].mlp.down_proj.weight  # N(0, 0.02 sqrt(base_fan_in / fan_in))
        assert float(hidden.detach().std()) == pytest.approx(0.02 * math.sqrt(32 / width), rel=0.15)
        assert float(model.model.embed_tokens.weight.detach().std()) == pytest.approx(0.02, rel=0.15)
        assert all(bool((n.weight == 1).all()) for n in (model.model.norm, model.model.layers[0].input_layernorm))
        out = model(torch.randint(40, (2, 16)))
        assert out.logits.shape == (2, 16, 40)


def test_the_attention_reads_its_scaling_and_the_multipliers_apply() -> None:
    # SP, so that the query is not zero and the scale shows in the logits.
    model = build_model(cfg_at(64, "sp"), "hf-llama")
    x = torch.randint(40, (2, 16))
    with torch.no_grad():
        before = model(x).logits
        for layer in model.model.layers:
            layer.self_attn.scaling *= 4.0
        assert not torch.allclose(model(x).logits, before)
    torch.manual_seed(0)
    plain = build_model(cfg_at(64, "sp", output_mult=1.0), "hf-llama")
    torch.manual_seed(0)
    doubled = build_model(cfg_at(64, "sp", output_mult=2.0), "hf-llama")
    with torch.no_grad():
        assert torch.allclose(doubled(x).logits, 2.0 * plain(x).logits, atol=1e-6)


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_tied_embeddings_share_one_parameter(parametrization: str) -> None:
    model = build_model(cfg_at(64, parametrization, tie_embeddings=True), "hf-llama")
    emb = model.model.embed_tokens.weight
    assert model.lm_head.weight is emb and model.config.tie_word_embeddings
    assert sum(1 for p in model.parameters() if p is emb) == 1
    if parametrization == "mup":
        assert isinstance(model.lm_head, MuSharedReadout)
    assert float(emb.detach().std()) == pytest.approx(0.02, rel=0.15)  # the embedding's init, not the readout's zero
    loss = model(torch.randint(40, (2, 16))).logits.square().mean()
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_depth_scaling_multiplies_the_branches_and_the_block_lr() -> None:
    from mutransfer.param_groups import describe_groups

    cfg = cfg_at(64, depth_scaling="depth-mup", base_depth=1)  # depth 2: branches x 2^-1/2, block LR x 2^-1/2
    model = build_model(cfg, "hf-llama")
    layer = model.model.layers[0]
    assert all(len(m._forward_hooks) == 1 for m in (layer.self_attn.o_proj, layer.mlp.down_proj))
    assert layer.mlp.up_proj.weight._mt_lr_mult == pytest.approx(2**-0.5)
    assert layer.input_layernorm.weight._mt_lr_mult == pytest.approx(2**-0.5)
    assert model.model.embed_tokens.weight._mt_lr_mult == 1.0 and model.lm_head.weight._mt_lr_mult == 1.0
    groups = {g.name: g for g in describe_groups(cfg, "hf-llama", "adamw")}
    assert groups["model.layers.*.mlp.down_proj.weight"].forward_mult == pytest.approx(2**-0.5)
    assert groups["model.layers.*.mlp.up_proj.weight"].forward_mult == 1.0
    assert groups["lm_head.weight"].forward_mult == pytest.approx(2.0 / 2)  # output_mult / width_mult


def test_builds_on_meta_at_a_large_width() -> None:
    model = build_model(cfg_at(4096, head_dim=64, base_width=256, options={"kv_heads": 1}), "hf-llama", "meta")
    # 1 KV head for the 4 heads at the base width: 16 for the 64 at width 4096.
    assert model.lm_head.weight.is_meta and model.config.num_key_value_heads == 16


def test_torchvision_is_left_as_it_was() -> None:
    from mutransfer.hf_llama import llama_classes

    llama_classes()
    # Hidden from transformers while it imported, visible again: the rest of the process imports it as before.
    assert sys.modules.get("torchvision", "absent") is not None


# --------------------------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize(("changes", "field"), [
    ({"data__kind": "digits", "data__path": None}, "data.kind"),
    ({"model__options": {"kv_heads": 3}}, "model.options.kv_heads"),
    ({"model__options": {"kv_heads": 2, "rope": 1.0}}, "model.options.rope"),
    ({"model__options": {"rms_norm_eps": -1.0}}, "model.options.rms_norm_eps"),
    ({"model__head_dim": None}, "model.head_dim"),
    ({"train__batch_trials": 4}, "train.batch_trials"),
    ({"model__residual": True}, "model.residual"),
    # Heads of 8 at width 40 are 5, not a multiple of the 2 query heads per KV head of the base width.
    ({"scales__vary__width": [32, 40]}, "scales.width"),
])
def test_recipe_mistakes_are_one_line_naming_the_field(corpus: Path, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecipeError) as e:
        parse_recipe(llama_recipe(corpus, **changes))
    assert f": {field}" in str(e.value) or str(e.value).startswith(field), str(e.value)
    assert "\n" not in str(e.value)


def test_verify_refuses_a_width_whose_heads_the_kv_heads_do_not_group(corpus: Path) -> None:
    from mutransfer.verify import VerifyError, verify_scale

    r = parse_recipe(llama_recipe(corpus))
    assert verify_scale(r, {"width": 512}).width == 512
    with pytest.raises(VerifyError, match="width 136 has 17 heads, not a multiple of the 2 query heads per KV head"):
        verify_scale(r, {"width": 136})


def test_without_transformers_the_family_is_one_line(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mutransfer.hf_llama as hf

    monkeypatch.setitem(sys.modules, "transformers", None)  # find_spec: not installed
    monkeypatch.setattr(hf, "_CLASSES", None)
    with pytest.raises(RecipeError, match=r"model.family: the hf-llama family needs transformers, which is not "
                                          r"installed: pip install 'mutransfer\[hf\]'$"):
        parse_recipe(llama_recipe(corpus))
    with pytest.raises(RecipeError, match=r"pip install 'mutransfer\[hf\]'"):
        build_model(cfg_at(32), "hf-llama", "meta")


# --------------------------------------------------------------------------------------------- coordinate check


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_the_coordinate_check_passes_under_mup_and_flags_sp(corpus: Path, parametrization: str) -> None:
    from mutransfer.api import coord_check

    r = parse_recipe(llama_recipe(corpus, model__parametrization=parametrization, scales__base__batch_size=4))
    rep = coord_check(r, widths=[32, 64, 128, 256]).report
    if parametrization == "mup":
        assert rep.passed and rep.stable, rep.headline("recipe")
    else:
        assert not rep.stable  # SP's blocks and logits grow with width: the check sees it (and informs, not fails)
        assert {x.name for x in rep.layers if x.bad} >= {"logits", "model.layers.1"}


# --------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The `ll` sweep's µP export (synthetic trials with a known optimum: no training), tied and untied."""
    from mutransfer.api import export
    from mutransfer.storage import Store

    tmp = tmp_path_factory.mktemp("llama-export")
    out = {}
    with Store.open(f"sqlite:///{tmp}/x.db") as store:
        for name, tie in (("ll", False), ("ll-tied", True)):
            fill(store, parse_recipe(llama_recipe(corpus, name=name, model__tie_embeddings=tie)))
            out[name] = export(store, name, allow_extrapolation=True, save=False).config
    return out


def test_the_export_carries_what_rebuilds_the_llama(exported: dict[str, Any]) -> None:
    from mutransfer.target import build_target

    c = exported["ll"]
    t = c["target"]
    assert (t["width"], t["head_dim"], t["n_heads"], t["kv_heads"], t["intermediate_size"]) == (256, 8, 32, 16, 896)
    assert c["model"]["options"] == {"kv_heads": 2, "rope_theta": 5000.0}
    assert c["mup"]["rules"]["attention"]["scale"] == pytest.approx(1.5 * math.sqrt(8) / 8)
    tm = build_target(c)  # on meta: the target rebuilt from the file alone
    assert tm.family == "hf-llama" and tm.model.config.num_key_value_heads == 16
    assert tm.model.config.intermediate_size == 896 and tm.model.config.rope_parameters["rope_theta"] == 5000.0
    assert exported["ll-tied"]["model"]["tie_embeddings"] is True


@pytest.mark.parametrize("name", ["ll", "ll-tied"])
def test_hf_export_is_the_real_llama_config_that_the_runtime_optimizes(exported: dict[str, Any], name: str) -> None:
    from mutransfer import runtime
    from mutransfer.hf_llama import llama_classes
    from mutransfer.launchers import render_format

    LlamaConfig, LlamaForCausalLM = llama_classes()  # transformers' own classes, torchvision kept out of the way

    hf = json.loads(render_format(exported[name], "hf"))
    cfg = hf["config.json"]
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_key_value_heads"], cfg["intermediate_size"]) == (256, 16, 896)
    assert cfg["tie_word_embeddings"] is (name == "ll-tied")
    assert cfg["mup_enabled"] and cfg["mup_width_mult"] == 8.0
    model = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    assert LlamaConfig(**cfg).to_dict()["num_key_value_heads"] == 16
    runtime.prepare(model, hf)
    assert all(layer.self_attn.scaling == pytest.approx(1.5 * math.sqrt(8) / 8) for layer in model.model.layers)
    opt = runtime.hf_optimizer(model, hf)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    lr = hf["training_args.json"]["learning_rate"]
    k = model.model.layers[0].self_attn.k_proj.weight  # grouped-query: (16 x 8, 256), a hidden matrix all the same
    assert lrs[id(k)] == pytest.approx(lr / 8) and lrs[id(model.model.embed_tokens.weight)] == pytest.approx(lr)
    assert len(lrs) == len(list(model.parameters()))


@pytest.mark.parametrize("fmt", ["nanogpt", "nanogpt-mup", "torchrun", "litgpt", "megatron"])
def test_formats_that_cannot_write_a_llama_refuse_in_one_line(exported: dict[str, Any], fmt: str) -> None:
    from mutransfer.launchers import LauncherError, render_format

    with pytest.raises(LauncherError, match=r"^model.family: the .* format writes a GPT-2-shaped model .*: use hf, "
                                            r"yaml or json$"):
        render_format(exported["ll"], fmt)


# End to end (sweep with the coordinate gate -> fit -> hf export loaded back into LlamaForCausalLM): the transfer
# test, tests/test_transfer_hf_llama.py, whose sweep is that end-to-end run too.
