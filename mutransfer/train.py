"""One trial: build the proxy, train it, evaluate, report. Knows nothing of Ray: `report` is any callable."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mutransfer.data import Dataset, load_dataset
from mutransfer.logits import logits_of
from mutransfer.parametrization import build, count_params, make_optimizer
from mutransfer.plan import TrialSpec
from mutransfer.recipe import Train, is_decoder
from mutransfer.trial import TrialLog, TrialResult

THREADS_ENV = "MUTRANSFER_THREADS"
# Validation batches are drawn with this seed in every trial: all trials of a sweep are scored on the same data.
VAL_SEED = 1_234_567


def load_data(spec: TrialSpec) -> tuple[Dataset, int, int]:
    """The trial's dataset, batch size and tokens per example (1 for a non-sequence dataset), checked."""
    dataset = load_dataset(spec.data, spec.model)
    seq_len = spec.scale.seq_len if dataset.input_dim is None else 1
    if dataset.input_dim is None:
        dataset.check(seq_len)
    return dataset, spec.scale.batch_size, seq_len


def validation_batches(spec: TrialSpec, dataset: Dataset, seq_len: int,
                       device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """train.eval_batches validation batches drawn with VAL_SEED: the same data for every trial of the sweep."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    return [tuple(t.to(device) for t in dataset.get_batch("val", spec.scale.batch_size, seq_len, gen))
            for _ in range(spec.train.eval_batches)]


def train_flops_per_token(spec: TrialSpec, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N, plus attention scores and values for the gpt (PaLM's estimate:
    12 · layers · context · width per token, forward and backward; hf-llama likewise)."""
    flops = 6.0 * n_params
    if is_decoder(spec.model.family):
        flops += 12.0 * spec.scale.depth * seq_len * spec.scale.width
    return flops


def lr_factor(train: Train, steps: int) -> Callable[[int], float]:
    """The schedule as a factor of each group's own LR (mup's groups have different LRs), for LambdaLR.

    `constant` ignores warmup_steps; `warmup` ramps linearly over warmup_steps then holds; `cosine` and `linear`
    ramp over warmup_steps (if any) then decay to min_lr_frac at the last step. Step s is the 0-based index of
    the optimizer step the factor applies to.
    """
    warm = train.warmup_steps
    floor = train.min_lr_frac
    kind = train.schedule
    decay_len = max(1, steps - 1 - warm)

    def factor(s: int) -> float:
        if kind == "constant":
            return 1.0
        if s < warm:
            return (s + 1) / warm
        if kind == "warmup":
            return 1.0
        progress = min(1.0, (s - warm) / decay_len)
        if kind == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - floor) * progress  # linear

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, train: Train, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR sets each group's LR to its own initial LR times the factor: mup's per-group ratios survive."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train, steps))


def thread_count(threads: int | None) -> int:
    """Torch threads of a trial: `threads`, else $MUTRANSFER_THREADS, else 1 (trials run side by side)."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        threads = int(env) if env.isdigit() else 1
    return max(1, threads)


def device_for(train: Train) -> torch.device:
    """Where trials train: train.device, `auto` being CUDA when there is one."""
    if train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(train.device)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def train(
    spec: TrialSpec, report: Callable[[dict[str, Any]], None], *, threads: int | None = None
) -> TrialResult:
    """Train one proxy for spec.steps steps, calling `report` at every evaluation.

    Threads: `threads`, else $MUTRANSFER_THREADS, else 1 (trials run side by side; more would oversubscribe).
    A diverged trial (loss NaN/inf, or above diverge_factor x the first loss) stops at once: its last report
    carries the loss as it was (NaN/inf possible) and val_loss NaN; the result has status "diverged", metric None.
    """
    start = time.perf_counter()
    torch.set_num_threads(thread_count(threads))
    torch.manual_seed(spec.seed)
    cfg = spec.train
    device = device_for(cfg)
    dataset, batch_size, seq_len = load_data(spec)

    model = build(spec, dataset, device)
    n_params = count_params(model)
    opt = make_optimizer(model, spec)
    sched = make_scheduler(opt, cfg, spec.steps)
    flops_per_token = train_flops_per_token(spec, n_params, seq_len)
    log = TrialLog(base_lr=float(spec.hparam("lr")), factor=lr_factor(cfg, spec.steps),
                   tokens_per_step=batch_size * seq_len, metric=cfg.metric, window=cfg.metric_window,
                   diverge_factor=cfg.diverge_factor, start=start, flops_per_token=flops_per_token,
                   n_params=n_params)

    gen = torch.Generator().manual_seed(spec.seed)
    val_batches = validation_batches(spec, dataset, seq_len, device)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total = sum(float(_loss(logits_of(model(x)), y)) for x, y in val_batches)
        model.train()
        return total / len(val_batches)

    model.train()
    for step in range(1, spec.steps + 1):
        x, y = (t.to(device, non_blocking=True) for t in dataset.get_batch("train", batch_size, seq_len, gen))
        loss = _loss(logits_of(model(x)), y)
        # One sync per step: the divergence test needs the value, and on CPU it costs nothing.
        lv = loss.item()
        if log.diverges(step, lv):
            report(log.last)
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        log.stepped(step, lv)
        if step % cfg.eval_interval == 0 or step == spec.steps:
            goes_on = log.evaluated(step, evaluate())
            report(log.last)
            if not goes_on:
                break

    return log.result(wall_time=time.perf_counter() - start, flops_per_token=flops_per_token, n_params=n_params)
