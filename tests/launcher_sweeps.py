"""A real store holding a finished sweep, without running Ray: trials from the recipe's plan, a synthetic loss
whose µP optimum is lr = 2^-7 at every width, and the FLOPs `mutransfer.train` would have stored."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from mutransfer.plan import plan
from mutransfer.recipe import Recipe, parse_recipe
from mutransfer.storage import Store, TrialRecord

GPT = """
name: lg
model: {family: gpt, parametrization: mup, base_width: 32, head_dim: 8, attn_mult: 1.5, output_mult: 2.0}
data: {kind: chars, path: PATH}
train: {steps: 40, eval_interval: 10, optimizer: adamw, weight_decay: 0.05, schedule: cosine, warmup_steps: 4}
search: {samples: 12, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 8, seq_len: 16}, vary: {width: [32, 64, 128]}}
target: {width: 256, depth: 3, batch_size: 32, seq_len: 64, tokens: 2048000}
"""

MLP = """
name: lm
model: {family: mlp, parametrization: mup, base_width: 16}
data: {kind: digits}
train: {steps: 20, eval_interval: 10}
search: {samples: 12, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 16, depth: 2, batch_size: 32}, vary: {width: [16, 32, 64]}}
target: {width: 512, depth: 3, batch_size: 64, tokens: 640000}
"""

TEXT = "".join(chr(ord("a") + (i * 7) % 26) + (" " if i % 5 == 0 else "") for i in range(20_000))


def recipe(text: str, tmp_path: Path, **changes: object) -> Recipe:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    doc = yaml.safe_load(text.replace("PATH", str(corpus)))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_recipe(yaml.safe_dump(doc))


def trial_flops(i: int) -> float:
    """A distinct FLOP count per trial, so a sum that drops or repeats one is caught."""
    return 1.0e9 * (i + 1) + 0.5


def fill(store: Store, r: Recipe, *, verify: int = 0, failed: int = 1) -> int:
    """A sweep of `r` in `store`: every planned trial completed (the last `failed` failed, no FLOPs) plus `verify`
    verify trials. Returns the sweep id."""
    specs = plan(r)
    sweep = store.create_sweep(r.name or "s", yaml.safe_dump(r.model_dump(mode="json")), r.model_dump_json(),
                               r.hash(), len(specs), r.train.metric)
    store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in specs])
    rng = np.random.default_rng(0)
    for i, s in enumerate(specs):
        store.mark_running(sweep.id, s.key)
        if i >= len(specs) - failed:
            store.finish_trial(sweep.id, s.key, "failed", error="boom")
            continue
        u = math.log2(s.hparams["lr"])
        metric = 2.0 + 0.05 * (u + 7.0) ** 2 + 0.002 * rng.normal()
        store.finish_trial(sweep.id, s.key, "completed", metric=metric, best_metric=metric, steps=s.steps,
                           wall_time=0.25, flops=trial_flops(i), n_params=1000)
    if verify:
        base = specs[0]
        rows = [TrialRecord(key=f"verify/{j}", group="mup/verify", parametrization="mup", width=256, depth=2,
                            batch_size=base.scale.batch_size, seq_len=base.scale.seq_len, steps_planned=10,
                            sample=j, repeat=0, seed=j, hparams={"lr": 2.0**-7}, role="verify")
                for j in range(verify)]
        store.add_trials(sweep.id, rows)
        for j, row in enumerate(rows):
            store.mark_running(sweep.id, row.key)
            store.finish_trial(sweep.id, row.key, "completed", metric=2.0, steps=10, wall_time=1.0,
                               flops=7.0e10 * (j + 1), n_params=5000)
    return sweep.id


def make_db(tmp_path: Path) -> tuple[str, Recipe, Recipe]:
    """A SQLite database with a GPT sweep `lg` (target tokens given), the same without tokens (`lg-notok`) and an
    MLP sweep `lm`. Returns (url, gpt recipe, mlp recipe)."""
    url = f"sqlite:///{tmp_path}/x.db"
    g, m = recipe(GPT, tmp_path), recipe(MLP, tmp_path)
    with Store.open(url) as store:
        fill(store, g, verify=1)
        fill(store, recipe(GPT, tmp_path, name="lg-notok", target__tokens=None))
        fill(store, m)
    return url, g, m
