"""Seeded synthetic sweeps, written through the real `Store` API: for the dashboard's tests and its benchmark.

The loss model has a known optimum. Under µP the optimal learning rate is `LR_STAR` at every width; under SP it
falls by `SP_DRIFT` octaves per doubling of width (the drift µP removes). A learning rate more than
`DIVERGE_OCTAVES` above the optimum diverges. Learning curves decay exponentially to the final loss, with the
metric names the real trainer reports (`train_loss`, `val_loss`, `lr`, `tokens`, `elapsed`).

    python -m mutransfer.testing.seeded_sweeps sqlite:////tmp/demo.db      # a small demo database with every case
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mutransfer.plan import plan
from mutransfer.recipe import Recipe
from mutransfer.storage import Store, SweepInfo, TrialRecord
from mutransfer.testing.recipes import make_recipe

__all__ = ["LR_STAR", "SP_DRIFT", "Seeded", "seed_demo", "seed_sweep", "true_optimum"]

LR_STAR = 0.01
SP_DRIFT = 0.5  # octaves per doubling of width, downwards, under SP
DIVERGE_OCTAVES = 2.5
OUTPUT_MULT_STAR = 2.0
METRICS = ("train_loss", "val_loss", "lr", "tokens", "elapsed")


def true_optimum(parametrization: str, width: int, base_width: int) -> float:
    """The learning rate with the lowest expected loss."""
    if parametrization == "mup":
        return LR_STAR
    return LR_STAR * 2.0 ** (-SP_DRIFT * math.log2(width / base_width))


@dataclass(frozen=True)
class Seeded:
    sweep: SweepInfo
    n_trials: int
    n_points: int  # metric rows written
    fit_id: int | None


def _outcome(rec: TrialRecord, base_width: int, rng: np.random.Generator) -> tuple[str, float | None]:
    lr = float(rec.hparams.get("lr", LR_STAR))
    d = math.log2(lr) - math.log2(true_optimum(rec.parametrization, rec.width, base_width))
    if d > DIVERGE_OCTAVES:
        return "diverged", None
    floor = 0.15 + 0.6 * (rec.width / base_width) ** -0.3 + 0.05 * (rec.depth - 2) ** 2 / rec.depth
    loss = floor + 0.04 * d * d
    if "output_mult" in rec.hparams:
        loss += 0.03 * (math.log2(float(rec.hparams["output_mult"])) - math.log2(OUTPUT_MULT_STAR)) ** 2
    return "completed", float(loss + rng.normal(0.0, 0.004))


def _curve(final: float | None, steps: int, n_points: int, lr: float, tokens_per_step: int, rng: np.random.Generator,
           metrics: Sequence[str]) -> list[dict[str, Any]]:
    n = max(1, n_points)
    grid = np.unique(np.linspace(steps / n, steps, n).round().astype(int).clip(1, steps))
    if final is None:  # diverged: the curve stops early on an inf/NaN loss
        grid = grid[: max(1, int(len(grid) * rng.uniform(0.1, 0.6)))]
    start = 2.3
    end = final if final is not None else 1.0
    rows = []
    for i, step in enumerate(grid):
        frac = step / steps
        val = end + (start - end) * math.exp(-5.0 * frac) + float(rng.normal(0, 0.002))
        point: dict[str, Any] = {
            "step": int(step), "train_loss": val - 0.02, "val_loss": val, "lr": lr,
            "tokens": float(step * tokens_per_step), "elapsed": float(step) * 0.01,
        }
        if final is None and i == len(grid) - 1:
            point["train_loss"], point["val_loss"] = math.inf, math.nan
        rows.append({k: v for k, v in point.items() if k == "step" or k in metrics})
    return rows


def seed_sweep(
    store: Store,
    recipe: Recipe,
    *,
    points: int = 20,
    metrics: Sequence[str] = METRICS,
    outcome: str = "normal",
    finished: float = 1.0,
    verify: bool = False,
    fit: bool = True,
    n_boot: int = 50,
    seed: int = 0,
) -> Seeded:
    """Plan `recipe`, store its trials with made-up results and curves, and optionally a fit.

    outcome: "normal" (the loss model above), "all_diverged" (every trial diverges) or "pending" (nothing has run).
    finished: the share of trials that have finished (the rest stay pending, one running: a live sweep).
    verify: add three verification trials (x0.5, x1, x2 of the µP optimum) at twice the widest proxy.
    """
    rng = np.random.default_rng(seed)
    specs = plan(recipe)
    records = [TrialRecord.from_spec(s) for s in specs]
    sweep = store.create_sweep(recipe.name or "sweep", recipe.model_dump_json(indent=2), recipe.model_dump_json(),
                               recipe.hash(), len(records), recipe.train.metric)
    if verify:
        widest = max(r.width for r in records)
        base = recipe.scales.base
        for i, f in enumerate((0.5, 1.0, 2.0)):
            group = f"mup/w{widest * 2}-d{base.depth}-b{base.batch_size}-s{base.seq_len}"
            records.append(TrialRecord(
                key=f"{group}/verify-lr-x{f:g}", group=group, parametrization="mup", width=widest * 2,
                depth=base.depth, batch_size=base.batch_size, seq_len=base.seq_len, steps_planned=specs[0].steps,
                sample=i, repeat=0, seed=0, hparams={"lr": LR_STAR * f}, role="verify",
            ))
    store.add_trials(sweep.id, records)
    if outcome == "pending":
        return Seeded(store.get_sweep(sweep.id), len(records), 0, None)  # type: ignore[arg-type]
    store.set_sweep_status(sweep.id, "running")
    base_width = recipe.model.base_width
    n_done = len(records) if finished >= 1.0 else int(len(records) * finished)
    n_points = 0
    for i, rec in enumerate(records):
        if i >= n_done:
            if i == n_done:
                store.mark_running(sweep.id, rec.key, node="seed")
            continue
        status, metric = _outcome(rec, base_width, rng)
        if outcome == "all_diverged":
            status, metric = "diverged", None
        lr = float(rec.hparams.get("lr", LR_STAR))
        curve = _curve(metric, rec.steps_planned, points, lr, rec.batch_size, rng, metrics)
        n_points += sum(len(p) - 1 for p in curve)
        finals = [p["val_loss"] for p in curve if "val_loss" in p and math.isfinite(p["val_loss"])]
        store.finish_trial(
            sweep.id, rec.key, status, metric=metric, best_metric=min(finals) if finals and metric else None,
            steps=curve[-1]["step"], wall_time=0.02 * rec.width ** 0.5 * rec.depth, n_params=rec.width ** 2 * rec.depth,
            points=curve,
        )
    store.set_sweep_status(sweep.id, "done" if n_done == len(records) else "running")
    if verify and hasattr(store, "save_check"):  # checks arrived with migration 0002's table
        store.save_check(sweep.id, "coord", "mup", True, "activation change flat in width (slope 0.01)",
                         {"slope": 0.01})
        store.save_check(sweep.id, "verify", "mup", True, "the transferred lr was the best of x0.5, x1, x2",
                         {"factors": [0.5, 1.0, 2.0]})
    fit_id = None
    if fit and outcome == "normal" and n_done:
        from mutransfer.fit import fit_sweep

        result = fit_sweep(store.trials_frame(sweep.id), recipe, n_boot=n_boot)
        fit_id = store.save_fit(sweep.id, result.to_dict())
    info = store.get_sweep(sweep.id)
    assert info is not None
    return Seeded(info, len(records), n_points, fit_id)


def seed_demo(url: str) -> dict[str, Seeded]:
    """A database with the cases the dashboard must handle: a good µP/SP sweep (with verification trials), one
    without a stored fit, a live one, one with no completed trial, one where every trial diverged, and one whose
    hyperparameters each have a single value."""
    store = Store.open(url)
    try:
        out = {
            "good": seed_sweep(store, make_recipe("good", samples=12), verify=True),
            "unfitted": seed_sweep(store, make_recipe("unfitted", samples=8, widths=(64, 256), depths=(2, 4),
                                                      parametrizations=("mup",)), fit=False),
            "live": seed_sweep(store, make_recipe("live", samples=8, parametrizations=("mup",)), finished=0.5,
                               fit=False),
            "pending": seed_sweep(store, make_recipe("pending", samples=4), outcome="pending"),
            "diverged": seed_sweep(store, make_recipe("diverged", samples=4), outcome="all_diverged"),
            "single": seed_sweep(store, make_recipe(
                "single", samples=1, parametrizations=("mup",),
                space={"lr": {"loguniform": [1e-3, 1e-1]}, "output_mult": {"choice": [2.0]}}), fit=False),
        }
    finally:
        store.close()
    return out


if __name__ == "__main__":  # pragma: no cover
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///demo.db"
    for name, s in seed_demo(target).items():
        print(f"{name}: sweep {s.sweep.id}, {s.n_trials} trials, {s.n_points} metric values, fit {s.fit_id}")
