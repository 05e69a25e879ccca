"""The training loop: reports, learning, divergence, LR schedules relative per group, determinism."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mutransfer.data import load_dataset
from mutransfer.parametrization import build, count_params, make_optimizer
from mutransfer.plan import TrialSpec, plan
from mutransfer.recipe import Train, parse_recipe
from mutransfer.train import lr_factor, make_scheduler, train
from mutransfer.trial import TrialResult

MLP = """
name: t
model: {family: mlp, parametrization: [mup, sp], base_width: 32}
data: {kind: digits}
train: {steps: 40, eval_interval: 15, schedule: cosine, warmup_steps: 5}
search: {samples: 1, space: {lr: {loguniform: [1.0e-2, 2.0e-2]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32}, vary: {width: [128]}}
target: {width: 1024, depth: 2, batch_size: 256}
"""


def gpt(path: Path, steps: int = 30) -> str:
    return f"""
name: g
model: {{family: gpt, base_width: 32, head_dim: 8}}
data: {{kind: chars, path: {path}}}
train: {{steps: {steps}, eval_interval: 10, eval_batches: 2}}
search: {{samples: 1, space: {{lr: {{loguniform: [1.0e-2, 2.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 8, seq_len: 32}}}}
target: {{width: 1024, depth: 4, batch_size: 64, seq_len: 64}}
"""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _spec(text: str, parametrization: str = "mup", width: int | None = None, **hparams: Any) -> TrialSpec:
    specs = [s for s in plan(parse_recipe(text)) if s.parametrization == parametrization]
    spec = next(s for s in specs if width is None or s.scale.width == width)
    return replace(spec, hparams={**spec.hparams, **hparams}) if hparams else spec


def _run(spec: TrialSpec) -> tuple[TrialResult, list[dict[str, Any]]]:
    points: list[dict[str, Any]] = []
    return train(spec, points.append, threads=1), points


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_digits_reports_and_learns(parametrization: str) -> None:
    spec = _spec(MLP, parametrization, 128)
    result, points = _run(spec)
    assert [p["step"] for p in points] == [15, 30, 40]
    assert set(points[0]) == {"step", "train_loss", "val_loss", "lr", "tokens", "elapsed", "flops", "n_params"}
    assert {p["n_params"] for p in points} == {result.n_params}  # a trial stopped at any point knows its size
    assert points[-1]["tokens"] == 40 * 32
    # The FLOPs so far (what a trial stopped there cost): the outcome's, in proportion to the steps done.
    assert points[-1]["flops"] == pytest.approx(result.flops)
    assert points[0]["flops"] == pytest.approx(result.flops * 15 / 40)
    assert result.status == "completed" and result.steps == 40
    assert result.metric == points[-1]["val_loss"] and result.best_metric == min(p["val_loss"] for p in points)
    assert points[-1]["val_loss"] < 0.6 * math.log(10)  # well below chance
    assert points[-1]["train_loss"] < points[0]["train_loss"]
    # Cosine with warmup: the reported LR is the base LR times the schedule at the last step taken.
    assert points[-1]["lr"] == pytest.approx(spec.hparams["lr"] * spec.train.min_lr_frac)
    n = count_params(build(spec, load_dataset(spec.data, spec.model)))
    assert result.n_params == n and result.flops == pytest.approx(6 * n * 40 * 32)
    assert result.final == points[-1] and result.wall_time > 0


def test_chars_gpt_learns(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("abcdefgh" * 2000)
    result, points = _run(_spec(gpt(f)))
    assert [p["step"] for p in points] == [10, 20, 30]
    assert points[-1]["tokens"] == 30 * 8 * 32
    assert result.status == "completed"
    assert points[-1]["val_loss"] < 0.5 * math.log(8)  # a periodic text is learnable
    assert result.flops > 6 * result.n_params * 30 * 8 * 32  # plus the attention term


def test_metric_can_be_train_loss() -> None:
    spec = _spec(MLP.replace("warmup_steps: 5", "warmup_steps: 5, metric: train_loss"), "mup", 32)
    result, points = _run(spec)
    assert result.metric == points[-1]["train_loss"]


@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_huge_lr_diverges(lr: float) -> None:
    spec = _spec(MLP.replace("schedule: cosine, warmup_steps: 5", "schedule: constant"), "sp", 128, lr=lr)
    result, points = _run(spec)
    assert result.status == "diverged" and result.metric is None
    assert result.steps < spec.steps
    last = points[-1]
    loss = last["train_loss"]
    assert not math.isfinite(loss) or loss > spec.train.diverge_factor * 2.0  # type: ignore[operator]
    assert math.isnan(last["val_loss"]) and last["step"] == result.steps + 1


def test_same_spec_same_losses(tmp_path: Path) -> None:
    a = _run(_spec(MLP, "mup", 128))[1]
    b = _run(_spec(MLP, "mup", 128))[1]
    assert [(p["train_loss"], p["val_loss"]) for p in a] == [(p["train_loss"], p["val_loss"]) for p in b]
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox. " * 500)
    c, d = _run(_spec(gpt(f, steps=10)))[1], _run(_spec(gpt(f, steps=10)))[1]
    assert [p["val_loss"] for p in c] == [p["val_loss"] for p in d]


def test_schedule_scales_each_mup_group_relative_to_its_own_lr() -> None:
    spec = _spec(MLP, "mup", 128)
    model = build(spec, load_dataset(spec.data, spec.model))
    opt = make_optimizer(model, spec)
    initial = [g["lr"] for g in opt.param_groups]
    assert len(set(initial)) == 2  # MuAdam: hidden matrices at lr / width_mult, the rest at lr
    sched = make_scheduler(opt, spec.train, spec.steps)
    factor = lr_factor(spec.train, spec.steps)
    seen = []
    for step in range(spec.steps):
        ratios = [g["lr"] / lr0 for g, lr0 in zip(opt.param_groups, initial, strict=True)]
        assert ratios == pytest.approx([factor(step)] * len(ratios))
        seen.append(ratios[0])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1 / 5) and max(seen) == pytest.approx(1.0)
    assert seen[-1] == pytest.approx(spec.train.min_lr_frac)


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("constant", 0, [1, 1, 1, 1, 1, 1]),
        ("warmup", 2, [0.5, 1, 1, 1, 1, 1]),
        ("linear", 0, [1, 0.82, 0.64, 0.46, 0.28, 0.1]),
        ("cosine", 1, [1, 1, 0.868, 0.55, 0.232, 0.1]),  # warm-up step, then 0.1 + 0.45 (1 + cos(pi k / 4))
    ],
)
def test_schedule_shapes(schedule: str, warmup: int, expected: list[float]) -> None:
    f = lr_factor(Train(steps=6, schedule=schedule, warmup_steps=warmup, min_lr_frac=0.1), 6)  # type: ignore[arg-type]
    assert [f(s) for s in range(6)] == pytest.approx(expected, abs=1e-3)


def test_metric_window_averages_the_last_evaluations() -> None:
    spec = _spec(MLP)
    points: list[dict[str, Any]] = []
    res = train(replace(spec, train=spec.train.model_copy(update={"metric_window": 2})), points.append)
    vals = [p["val_loss"] for p in points]
    assert len(vals) >= 3 and res.status == "completed"
    assert res.metric == pytest.approx((vals[-1] + vals[-2]) / 2)  # not the last value alone
    assert res.metric != pytest.approx(vals[-1])
    last = train(spec, [].append)
    assert last.metric == pytest.approx(vals[-1])  # window 1: the last evaluation (same seed, same run)
