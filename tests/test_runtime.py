"""runtime.py: an exported µP config applied to plain PyTorch models (no mup) reproduces mup's training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer import runtime
from mutransfer.export import export_config
from mutransfer.fit import fit_sweep
from mutransfer.launchers import hf_files
from mutransfer.parametrization import build_model, init_builtin, optimizer_for
from mutransfer.plan import plan
from mutransfer.recipe import Recipe, parse_recipe
from mutransfer.runtime import RuntimeConfigError
from mutransfer.target import build_config_from_export
from mutransfer.testing.recipes import edit
from mutransfer.train import make_scheduler

GPT = """
name: rt
model: {family: gpt, parametrization: mup, base_width: 32, head_dim: 8, init_std: 0.03, output_mult: 2.0,
        embed_mult: 1.5, attn_mult: 1.5}
data: {kind: chars}
train: {steps: 40, eval_interval: 10, optimizer: adamw, weight_decay: 0.05, schedule: cosine, warmup_steps: 4,
        grad_clip: 1.0}
search: {samples: 6, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 8, seq_len: 16}, vary: {width: [32, 64]}}
target: {width: 256, depth: 2, batch_size: 8, seq_len: 16, tokens: 12800}
"""
VOCAB = 27


def _export(vocab: int = VOCAB, **changes: Any) -> tuple[Recipe, dict[str, Any]]:
    """A recipe and its export, from a synthetic sweep whose optimum is lr = 2^-7 at every width."""
    r = parse_recipe(edit(GPT, **changes))
    rng = np.random.default_rng(0)
    rows = [{"key": s.key, "parametrization": s.parametrization, **s.scale.model_dump(), "status": "completed",
             "metric": 2.0 + 0.05 * (math.log2(s.hparams["lr"]) + 7.0) ** 2 + 0.002 * rng.normal(),
             **{f"hp.{k}": v for k, v in s.hparams.items()}} for s in plan(r)]
    config = export_config(r, fit_sweep(pd.DataFrame(rows), r), sweep_name="rt", sweep_id=1, recipe_hash=r.hash(),
                           data_sizes={"input_dim": None, "vocab_size": vocab, "num_classes": vocab})
    return r, json.loads(json.dumps(config))  # as a launcher reads it back


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """One torch thread: on a loaded 2-core machine two threads run these small models 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gpt256() -> tuple[Recipe, dict[str, Any]]:
    return _export()


def _models(config: dict[str, Any]) -> tuple[nn.Module, nn.Module, Any]:
    """(the µP proxy built by mutransfer with mup, the same GPT built in SP with every multiplier 1, its cfg)."""
    cfg, _, _ = build_config_from_export(config)
    torch.manual_seed(0)
    ref = build_model(cfg, "gpt")
    plain_cfg = replace(cfg, parametrization="sp", output_mult=1.0, embed_mult=1.0, attn_mult=1.0,
                        depth_scaling="none", base_depth=None, eps_scaling="none")
    plain = build_model(plain_cfg, "gpt")
    return ref, plain, cfg


def _per_param(model: nn.Module, groups: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g.get("eps", 0.0)) for g in groups for p in g["params"]}


def _train(model: nn.Module, opt: torch.optim.Optimizer, r: Recipe, steps: int = 20) -> list[float]:
    """train.py's loop: the same batches for every model (a learnable token map), clip, schedule."""
    gen = torch.Generator().manual_seed(3)
    sched = make_scheduler(opt, r.train, steps)
    losses = []
    for _ in range(steps):
        x = torch.randint(VOCAB, (8, 16), generator=gen)
        y = (3 * x + 1) % VOCAB
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.train.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _equivalence(r: Recipe, config: dict[str, Any]) -> float:
    ref, plain, cfg = _models(config)
    # init_ draws what mutransfer's µP init draws, from the same seed.
    base_shapes = {n: p.shape for n, p in build_model(cfg.at_width(cfg.base_width), "gpt", "meta").named_parameters()}
    torch.manual_seed(1)
    init_builtin(ref, cfg, "gpt", base_shapes=base_shapes)
    torch.manual_seed(1)
    runtime.init_(plain, config)
    for (n, a), b in zip(ref.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0, msg=n)
    plain.load_state_dict(ref.state_dict())  # the training below then tests the optimizer and multipliers alone
    runtime.apply_multipliers(plain, config)

    o = config["optimizer"]
    mu = optimizer_for(ref.parameters(), "mup", o["name"], lr=o["lr"], weight_decay=o["weight_decay"],
                       betas=tuple(o["betas"]), eps=o["eps"])  # MuAdamW, as mutransfer.train builds it
    opt = torch.optim.AdamW(runtime.param_groups(plain, config), lr=o["lr"], betas=tuple(o["betas"]))
    want, got = _per_param(ref, mu.param_groups), _per_param(plain, opt.param_groups)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-12), n
    a, b = _train(ref, mu, r), _train(plain, opt, r)
    assert a[-1] < a[0] - 0.5  # it trains
    np.testing.assert_allclose(b, a, rtol=1e-4)
    return float(np.max(np.abs(np.subtract(a, b))))


def test_runtime_on_a_plain_gpt_trains_like_mup_at_width_256(gpt256: tuple[Recipe, dict[str, Any]]) -> None:
    r, config = gpt256
    assert config["mup"]["width_mult"] == 8.0
    diff = _equivalence(r, config)
    assert diff < 1e-4


def test_depth_scaling_and_eps_scaling_follow_the_proxy() -> None:
    r, config = _export(model__depth_scaling="depth-mup", model__base_depth=2, model__eps_scaling="width",
                        target__depth=4, target__width=64)
    assert config["model"]["depth"]["block_lr_scale"] == pytest.approx(2**-0.5)
    assert runtime.branch_multiplier(config) == pytest.approx(2**-0.5)
    groups = {g["name"]: g for g in runtime.param_groups(_models(config)[1], config)}
    assert set(groups) == {"hidden/block", "vector_like", "vector_like/block"}
    assert groups["vector_like"]["eps"] == pytest.approx(1e-8 / 2 * 2**-0.5)
    _equivalence(r, config)


def test_hf_files_carry_the_depth_and_eps_factors() -> None:
    from mutransfer.launchers import hf_files

    _, config = _export(model__depth_scaling="depth-mup", model__base_depth=2, model__eps_scaling="width",
                        target__depth=4, target__width=64)
    want, got = runtime.load_rules(config), runtime.load_rules(hf_files(config))
    assert want.block_lr_scale == pytest.approx(2**-0.5) and want.eps_mult == pytest.approx(0.5 * 2**-0.5)
    for field in ("eps_mult", "block_lr_scale", "branch_mult", "query_zero", "width_mult", "hidden_lr_scale"):
        assert getattr(got, field) == pytest.approx(getattr(want, field)), field


def test_sgd_export_gets_mup_sgd_learning_rates() -> None:
    _, config = _export(train__optimizer="sgd", train__weight_decay=0.01, target__width=64)
    ref, plain, _ = _models(config)
    o = config["optimizer"]
    mu = optimizer_for(ref.parameters(), "mup", "sgd", lr=o["lr"], weight_decay=o["weight_decay"],
                       momentum=o["momentum"])  # MuSGD
    opt = runtime.make_optimizer(plain, config)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == o["momentum"]
    want = {n: v[:2] for n, v in _per_param(ref, mu.param_groups).items()}
    got = {n: v[:2] for n, v in _per_param(plain, opt.param_groups).items()}
    assert got.keys() == want.keys() and all(got[n] == pytest.approx(want[n], rel=1e-12) for n in want)
    assert got["wte.weight"] == pytest.approx((2 * o["lr"], o["weight_decay"] / 2))


def test_init_statistics_per_group(gpt256: tuple[Recipe, dict[str, Any]]) -> None:
    _, config = gpt256
    plain = _models(config)[1]
    torch.manual_seed(5)
    runtime.init_(plain, config)
    kinds = runtime.classify(plain, config)
    params = dict(plain.named_parameters())
    hidden = torch.cat([params[n].flatten() for n, (k, role) in kinds.items() if k == "hidden" and role != "query"])
    assert float(hidden.detach().std()) == pytest.approx(0.03 / math.sqrt(8), rel=0.02)
    emb = torch.cat([params[n].flatten() for n, (_, role) in kinds.items() if role == "embedding"])
    assert float(emb.detach().std()) == pytest.approx(0.03, rel=0.05)
    for n, (_, role) in kinds.items():
        if role in ("readout", "query"):
            assert not params[n].any(), n
        if role == "norm":
            assert torch.all(params[n] == (0.0 if n.endswith("bias") else 1.0)), n
    assert kinds["head.weight"] == ("vector_like", "readout")
    assert kinds["blocks.0.attn.q.weight"] == ("hidden", "query")
    assert kinds["blocks.1.mlp.proj.weight"] == ("hidden", "weight")
    assert kinds["wpe.weight"] == ("vector_like", "embedding")


def test_multiplier_helpers(gpt256: tuple[Recipe, dict[str, Any]]) -> None:
    _, config = gpt256
    assert runtime.readout_multiplier(config) == pytest.approx(2.0 / 8)
    assert runtime.embedding_multiplier(config) == 1.5
    assert runtime.attention_scale(config) == pytest.approx(1.5 * math.sqrt(8) / 8)
    assert runtime.branch_multiplier(config) == 1.0
    plain = _models(config)[1]
    handles = runtime.apply_multipliers(plain, config)
    assert len(handles) == 3 and all(b.attn.scale == runtime.attention_scale(config) for b in plain.blocks)
    x = torch.randint(VOCAB, (2, 16))
    plain.double()  # the two paths round differently in float32 (by 3e-4 relative on some CPUs' kernels)
    with torch.no_grad():
        nn.init.normal_(plain.head.weight)
        hooked = plain(x)
        for h in handles:
            h.remove()
        h0 = plain.ln_f(plain.blocks[1](plain.blocks[0](1.5 * (plain.wte(x) + plain.wpe(torch.arange(16))))))
    torch.testing.assert_close(hooked, plain.head(h0) * 0.25, rtol=1e-4, atol=1e-6)


def _gpt2(tmp_path: Path) -> tuple[dict[str, Any], Path, Any]:
    sys.modules.setdefault("torchvision", None)  # type: ignore[arg-type]  # its build does not match this torch
    transformers = pytest.importorskip("transformers")
    _, config = _export(vocab=64, model__head_dim=None, model__n_heads=4, model__output_mult=0.5,
                        target__width=64)
    files = hf_files(config)
    d = tmp_path / "hf"
    d.mkdir()
    for name, doc in files.items():  # as `mutransfer export --format hf -o DIR` writes them
        (d / name).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["model_type"], cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["vocab_size"]) == ("gpt2", 64, 4, 2, 64)
    return cfg, d, transformers


def test_hf_gpt2_gets_mup_adamw_learning_rates(tmp_path: Path) -> None:
    import mup

    cfg, d, tf = _gpt2(tmp_path)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(**cfg))
    got = _per_param(model, runtime.hf_optimizer(model, d).param_groups)
    kinds = runtime.classify(model, d)
    assert kinds["transformer.h.0.attn.c_attn.weight"] == ("hidden", "qkv")  # Conv1D (in, out) = (64, 192)
    assert kinds["lm_head.weight"] == ("vector_like", "readout") and kinds["transformer.wte.weight"][1] == "embedding"
    assert runtime.classify(model, d, readout="lm_head", embedding=("wte", "wpe")) == kinds

    # mup on the same model: base shapes from GPT-2 at the export's base width (heads fixed at 4).
    base = tf.GPT2LMHeadModel(tf.GPT2Config(**{**cfg, "n_embd": cfg["mup_base_width"], "n_inner": 4 * 32}))
    mup.set_base_shapes(model, base, do_assert=False)  # lm_head is no MuReadout: its forward is the runtime's hook
    for n, p in model.named_parameters():
        assert kinds[n][0] == ("fixed", "vector_like", "hidden")[p.infshape.ninf()], n
    args = json.loads((d / "training_args.json").read_text())
    mu = mup.MuAdamW(model.parameters(), lr=args["learning_rate"], weight_decay=args["weight_decay"],
                     eps=args["adam_epsilon"])
    want = _per_param(model, mu.param_groups)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-12), n
    hidden = [v for n, v in got.items() if kinds[n][0] == "hidden"]
    assert len(hidden) == 8 and all(v == pytest.approx((args["learning_rate"] / 2, args["weight_decay"] * 2, 1e-8))
                                    for v in hidden)

    # MuTrainer: the same groups, from TrainingArguments and the model's own config (mup_* keys).
    targs = tf.TrainingArguments(**{**args, "output_dir": str(tmp_path / "out")}, use_cpu=True, report_to="none")
    trainer = runtime.MuTrainer(model=model, args=targs)
    from_trainer = _per_param(model, trainer.create_optimizer().param_groups)
    assert from_trainer.keys() == got.keys() and all(from_trainer[n] == pytest.approx(got[n]) for n in got)


def test_hf_gpt2_init_and_multipliers(tmp_path: Path) -> None:
    cfg, d, tf = _gpt2(tmp_path)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(**cfg))
    torch.manual_seed(0)
    handles = runtime.prepare(model, d)
    attn = model.transformer.h[0].attn
    assert attn.scaling == pytest.approx(cfg["mup_attn_scale"]) == pytest.approx(1.5 * math.sqrt(8) / 16)
    w = attn.c_attn.weight
    assert not w[:, :64].any() and float(w[:, 64:].detach().std()) == pytest.approx(cfg["mup_hidden_init_std"], rel=0.05)
    assert not model.lm_head.weight.any() and not attn.c_attn.bias.any()
    assert runtime.readout_multiplier(d) == cfg["mup_readout_mult"] == 0.25
    x = torch.randint(64, (2, 16))
    with torch.no_grad():
        nn.init.normal_(model.lm_head.weight)
        h = model.transformer(x).last_hidden_state
        torch.testing.assert_close(model(x).logits, model.lm_head.weight.new_tensor(0.25) * (h @ model.lm_head.weight.T),
                                   rtol=1e-4, atol=1e-5)
    assert len(handles) == 3  # lm_head pre-hook, wte and wpe output hooks

    # Tied: lm_head's weight is wte's; it is in one group, keeps the embedding's init, and the readout is hooked.
    tied = tf.GPT2LMHeadModel(tf.GPT2Config(**{**cfg, "tie_word_embeddings": True}))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert "lm_head.weight" not in runtime.classify(tied, d)
    assert sum(len(g["params"]) for g in runtime.param_groups(tied, d)) == len(list(tied.parameters()))
    assert len(runtime.prepare(tied, d)) == 3 and float(tied.lm_head.weight.detach().std()) > 0.02


def _tiny_rules(**over: Any) -> dict[str, Any]:
    """The mup_* keys of a Hugging Face config.json, at width 8 (base 4)."""
    return {"mup_enabled": True, "mup_width_mult": 2.0, "mup_base_width": 4, "n_embd": 8, "n_head": 2, "n_inner": 32,
            "mup_init_std": 0.02, "mup_hidden_init_std": 0.02 / math.sqrt(2), "mup_hidden_lr": 0.005,
            "mup_attn_scale": 0.25, **over}


def _one_line(excinfo: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_errors_are_one_line_and_name_the_parameter(gpt256: tuple[Recipe, dict[str, Any]]) -> None:
    rules = _tiny_rules()

    class Net(nn.Module):
        def __init__(self, extra: tuple[int, ...]) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.extra = nn.Parameter(torch.zeros(extra))

    with pytest.raises(RuntimeConfigError) as e:
        runtime.param_groups(Net((7, 5)), rules)
    _one_line(e, "extra", "(7, 5)", "width_sizes=", "fixed='extra'")
    assert runtime.classify(Net((7, 5)), rules, fixed="extra")["extra"] == ("fixed", "weight")
    assert runtime.classify(Net((7, 5)), rules, width_sizes=(7,))["extra"][0] == "vector_like"
    with pytest.raises(RuntimeConfigError) as e:
        runtime.param_groups(Net((8, 8, 8)), rules)
    _one_line(e, "extra", "3 dimensions")
    with pytest.raises(RuntimeConfigError) as e:
        runtime.init_(Net((8,)), rules, readout="lm_hed")
    _one_line(e, "readout='lm_hed'", "matches no parameter")
    with pytest.raises(RuntimeConfigError) as e:
        runtime.apply_multipliers(Net((8,)), rules)
    _one_line(e, "attention", "attention=")

    _, config = gpt256
    with pytest.raises(RuntimeConfigError) as e:
        runtime.param_groups(Net((8,)), {**config, "parametrization": "sp"})
    _one_line(e, "parametrization", "'sp'")
    with pytest.raises(RuntimeConfigError) as e:
        runtime.param_groups(Net((8,)), {**config, "mup": {**config["mup"], "rules": None}})
    _one_line(e, "mup.rules: missing")
    with pytest.raises(RuntimeConfigError) as e:
        runtime.param_groups(Net((8,)), _tiny_rules(mup_enabled=False))
    _one_line(e, "mup_enabled is false")


def test_sgd_rules_from_hf_keys() -> None:
    net = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 10))
    groups = runtime.param_groups(net, {"config.json": _tiny_rules(), "training_args.json": {
        "learning_rate": 0.1, "weight_decay": 0.01, "optim": "sgd", "optim_args": "momentum=0.9"}})
    by = {g["name"]: (g["lr"], g["weight_decay"], g["param_names"]) for g in groups}
    # MuSGD: vector-like LR x width_mult, weight decay / width_mult; hidden and fixed unchanged.
    assert by["hidden"] == (0.1, 0.01, ["1.weight"])
    assert by["vector_like"][:2] == (0.2, 0.005) and "3.weight" in by["vector_like"][2]
    assert by["fixed"] == (0.1, 0.01, ["3.bias"])
    assert all("eps" not in g for g in groups)


def test_import_stays_light() -> None:
    code = "import sys, mutransfer.runtime; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
