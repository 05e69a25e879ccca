"""Batched trials give the losses, curves and outcomes of the same trials run one by one through train.train."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mutransfer.batched import batch_key, pack, train_batch
from mutransfer.models import FAMILIES, STACK_LAYOUTS
from mutransfer.parametrization import BuildConfig, build_model
from mutransfer.plan import TrialSpec, plan
from mutransfer.recipe import BUILTINS, parse_recipe
from mutransfer.train import train
from mutransfer.trial import TrialResult

MLP = """
name: t
model: {{family: mlp, parametrization: {param}, base_width: 32}}
data: {{kind: digits}}
train: {{steps: 12, eval_interval: 5, schedule: cosine, warmup_steps: 2, optimizer: {opt}{extra}}}
search:
  samples: 3
  seed: 1
  space: {{lr: {{loguniform: [{lo}, {hi}]}}, output_mult: {{loguniform: [0.5, 2.0]}}, init_std: {{uniform: [0.1, 0.3]}}}}
scales: {{base: {{width: 64, depth: 2, batch_size: 16}}}}
target: {{width: 1024, depth: 2, batch_size: 256}}
"""


def gpt(path: Path, param: str, opt: str, tied: bool = False) -> str:
    return f"""
name: g
model: {{family: gpt, parametrization: {param}, base_width: 16, head_dim: 8, tie_embeddings: {str(tied).lower()}}}
data: {{kind: chars, path: {path}}}
train: {{steps: 8, eval_interval: 4, eval_batches: 2, optimizer: {opt}, weight_decay: 0.01}}
search:
  samples: 3
  seed: 2
  space: {{lr: {{loguniform: [3.0e-3, 3.0e-2]}}, attn_mult: {{uniform: [0.5, 2.0]}}, embed_mult: {{uniform: [0.5, 2.0]}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 4, seq_len: 16}}}}
target: {{width: 1024, depth: 4, batch_size: 64, seq_len: 64}}
"""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _one_by_one(specs: list[TrialSpec]) -> tuple[list[TrialResult], list[list[dict[str, Any]]]]:
    results, curves = [], []
    for s in specs:
        points: list[dict[str, Any]] = []
        results.append(train(s, points.append, threads=1))
        curves.append(points)
    return results, curves


def _batched(specs: list[TrialSpec]) -> tuple[list[TrialResult], list[list[dict[str, Any]]]]:
    curves: dict[str, list[dict[str, Any]]] = {s.key: [] for s in specs}
    results = train_batch(specs, lambda s, p: curves[s.key].append(p), threads=1)
    return results, [curves[s.key] for s in specs]


def _same(specs: list[TrialSpec], rtol: float = 2e-4) -> list[TrialResult]:
    want, want_curves = _one_by_one(specs)
    got, got_curves = _batched(specs)
    for w, g, wc, gc in zip(want, got, want_curves, got_curves, strict=True):
        assert g.status == w.status and g.steps == w.steps and g.n_params == w.n_params and g.flops == w.flops
        assert [p["step"] for p in gc] == [p["step"] for p in wc]
        for wp, gp in zip(wc, gc, strict=True):
            assert gp["lr"] == pytest.approx(wp["lr"])
            for name in ("train_loss", "val_loss"):
                if wp[name] == wp[name]:  # NaN for the val loss of a diverged trial
                    assert gp[name] == pytest.approx(wp[name], rel=rtol, abs=1e-5), (name, wp["step"])
        if w.metric is not None:
            assert g.metric == pytest.approx(w.metric, rel=rtol)
    return got


@pytest.mark.parametrize(("param", "opt"), [("mup", "adam"), ("sp", "adam"), ("mup", "adamw"), ("sp", "sgd"),
                                            ("mup", "sgd")])
def test_mlp_batch_equals_one_by_one(param: str, opt: str) -> None:
    lo, hi = (1e-2, 1e-1) if opt == "sgd" else (1e-3, 1e-2)
    extra = ", weight_decay: 0.01" if opt != "adam" else ""
    specs = plan(parse_recipe(MLP.format(param=param, opt=opt, lo=lo, hi=hi, extra=extra)))
    assert len({batch_key(s) for s in specs}) == 1 and len(specs) == 3
    got = _same(specs)
    assert all(r.status == "completed" for r in got)
    assert len({r.metric for r in got}) == 3  # three different trials, not one trained three times


@pytest.mark.parametrize(("param", "opt", "tied"), [("mup", "adam", False), ("sp", "adamw", False),
                                                    ("mup", "adamw", True), ("sp", "adam", True)])
def test_gpt_batch_equals_one_by_one(tmp_path: Path, param: str, opt: str, tied: bool) -> None:
    # Tied: the stacked readout is the stacked token embedding (its lookup and its logits share one tensor).
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    specs = plan(parse_recipe(gpt(f, param, opt, tied)))
    got = _same(specs)
    assert all(r.status == "completed" for r in got)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("parametrization", ["mup", "sp"])
@pytest.mark.parametrize(("width", "depth"), [(32, 1), (64, 3)])
def test_stack_layouts_name_every_parameter_of_the_models(parametrization: str, width: int, depth: int,
                                                          tied: bool) -> None:
    # batched.py's forward reads the built-in models' parameters by the names in STACK_LAYOUTS: a renamed
    # attribute in mutransfer.models must fail here, not silently in a batched sweep.
    sizes = {"mlp": {"input_dim": 64}, "gpt": {"vocab_size": 50, "num_classes": 50, "seq_len": 8, "head_dim": 8}}
    # The families the recipe says stack (its trait, which train.batch_trials checks) are those batched.py can read.
    assert set(STACK_LAYOUTS) == {f for f, traits in BUILTINS.items() if traits.stacks} and set(STACK_LAYOUTS) < set(FAMILIES)
    for family, layout in STACK_LAYOUTS.items():
        if tied and layout.tied_to is None:
            continue  # the mlp has no token embedding to tie (model.tie_embeddings is refused for it)
        cfg = BuildConfig(width=width, depth=depth, parametrization=parametrization, base_width=32,
                          tie_embeddings=tied, **sizes[family])
        model = build_model(cfg, family, "meta")
        names = [n for n, _ in model.named_parameters()]
        want = layout.names(depth, tied)
        assert set(names) == want and len(names) == len(want), family
        assert layout.lookup_names() <= set(names)
        readout = model.get_submodule(layout.readout)
        assert readout.weight.shape == (cfg.num_classes, width)
        if tied:
            assert readout.weight is model.get_parameter(layout.top[layout.tied_to])
        assert hasattr(readout, "output_mult") == (parametrization == "mup")
        if layout.attention is not None:
            for i in range(depth):
                attn = model.get_submodule(layout.attention.format(i=i))
                assert attn.n_heads * attn.head_dim == width and attn.scale > 0


def test_divergence_and_seeds_per_trial() -> None:
    # One trial diverges (huge LR), the others go on unchanged; a different seed (a repeat) draws its own batches.
    specs = plan(parse_recipe(MLP.format(param="sp", opt="adam", lo=1e-3, hi=1e-2, extra="")))
    specs = [specs[0], replace(specs[1], hparams={**specs[1].hparams, "lr": 1e4}), replace(specs[2], seed=7)]
    got = _same(specs)
    assert [r.status for r in got] == ["completed", "diverged", "completed"]
    assert got[1].metric is None


def test_pack_groups_compatible_trials() -> None:
    r = parse_recipe(MLP.format(param="[mup, sp]", opt="adam", lo=1e-3, hi=1e-2, extra="").replace(
        "samples: 3", "samples: 5").replace("batch_size: 16}}", "batch_size: 16}, vary: {width: [32]}}"))
    specs = plan(r)  # 2 parametrizations x 2 widths x 5 samples
    packs = pack(specs, 2)
    assert sorted(len(p) for p in packs) == [1, 1, 1, 1] + [2] * 8
    assert all(len({batch_key(s) for s in p}) == 1 for p in packs)
    assert sorted(s.key for p in packs for s in p) == sorted(s.key for s in specs)
    assert pack(specs, 1) == [[s] for s in specs]


def test_batch_trials_key_is_validated_and_left_out_of_the_hash() -> None:
    from mutransfer.recipe import RecipeError

    text = MLP.format(param="mup", opt="adam", lo=1e-3, hi=1e-2, extra="")
    batched = text.replace("optimizer: adam}", "optimizer: adam, batch_trials: 4}")
    assert parse_recipe(batched).train.batch_trials == 4
    assert parse_recipe(batched).hash() == parse_recipe(text).hash()  # how trials run is not what they compute
    with pytest.raises(RecipeError, match="batch_trials"):
        parse_recipe(text.replace("optimizer: adam}", "optimizer: adam, batch_trials: 0}"))


def test_packs_for_the_sweep() -> None:
    from mutransfer.sweep import TRIALS_PER_TASK, packs_for

    text = MLP.format(param="[mup, sp]", opt="adam", lo=1e-3, hi=1e-2, extra="").replace("samples: 3", "samples: 50")
    r = parse_recipe(text)
    specs = plan(r)
    # One by one: runs of consecutive trials, at most TRIALS_PER_TASK, four or more runs per slot.
    runs = packs_for(r, specs, slots=2)
    assert [s for p in runs for s in p] == specs and max(len(p) for p in runs) <= TRIALS_PER_TASK
    assert len(runs) >= 8
    assert all(len(p) == 1 for p in packs_for(r, specs[:8], slots=2))  # a small sweep: one trial per Ray trial
    r8 = parse_recipe(text.replace("optimizer: adam}", "optimizer: adam, batch_trials: 8}"))
    packs = packs_for(r8, plan(r8), slots=2)
    assert sorted(len(p) for p in packs) == [2, 2] + [8] * 12
    assert all(len({s.parametrization for s in p}) == 1 for p in packs)


@pytest.mark.slow
def test_sweep_with_batch_trials_stores_each_trial(tmp_path: Path) -> None:
    from mutransfer.storage import Store
    from mutransfer.sweep import run_sweep

    text = MLP.format(param="mup", opt="adam", lo=1e-3, hi=1e-2, extra=", batch_trials: 4").replace(
        "samples: 3", "samples: 5").replace("batch_size: 16}}", "batch_size: 16}, vary: {width: [32]}}")
    r = parse_recipe(text)
    specs = plan(r)
    store = Store.open(f"sqlite:///{tmp_path / 'mt.db'}")
    summary = run_sweep(r, store, recipe_text=text, progress=False, storage_dir=str(tmp_path / "ray"))
    assert summary.total == 10 and summary.counts == {"completed": 10}
    trials = store.trials_frame(summary.sweep_id)
    assert (trials["status"] == "completed").all() and trials["node"].notna().all()
    assert trials["metric"].nunique() == 10 and (trials["steps"] == 12).all() and (trials["wall_time"] > 0).all()
    curves = store.curves_frame(summary.sweep_id)
    per_trial = curves[curves["name"] == "val_loss"].groupby("key").size()
    assert (per_trial == 3).all() and len(per_trial) == 10  # steps 5, 10, 12
    # The same losses as the trial run alone.
    one = specs[0]
    points: list[dict[str, Any]] = []
    alone = train(one, points.append, threads=1)
    stored = trials.set_index("key").loc[one.key, "metric"]
    assert stored == pytest.approx(alone.metric, rel=2e-4)
