"""Batched trials: trials/hour when K trials of one shape train at once as one stacked model (mutransfer.batched)
vs the same K trials one by one through train.train, per width; the crossover width where batching stops paying.

    .venv/bin/python bench/batched.py [--reps 3] [--k 8] [--widths 32,64,128,256,512] [--families gpt,mlp]
                                      [--mlp-steps 200] [--gpt-steps 30]

In one process, one thread (a sweep's trial gets one CPU by default), model building included (it is part of a
trial's cost); variants interleaved per repetition, speedup = median of per-repetition ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ROOT, interleaved, median, table, update_section  # noqa: E402

GPT = """
name: b
model: {{family: gpt, parametrization: mup, base_width: 32, head_dim: 16}}
data: {{kind: chars, path: {data}}}
train: {{steps: {steps}, eval_interval: {steps}, eval_batches: 2, optimizer: adamw, schedule: cosine,
        device: {device}, batch_trials: {batch_trials}}}
search: {{samples: {k}, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}, output_mult: {{loguniform: [0.5, 4.0]}}}}}}
scales: {{base: {{width: {width}, depth: 2, batch_size: {batch_size}, seq_len: {seq_len}}}}}
target: {{width: 4096, depth: 2, batch_size: {batch_size}, seq_len: {seq_len}}}
"""

MLP = """
name: b
model: {{family: mlp, parametrization: mup, base_width: 32}}
data: {{kind: digits}}
train: {{steps: {steps}, eval_interval: {steps}, eval_batches: 2, optimizer: adam, device: {device},
        batch_trials: {batch_trials}}}
search: {{samples: {k}, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}, output_mult: {{loguniform: [0.5, 4.0]}}}}}}
scales: {{base: {{width: {width}, depth: 2, batch_size: {batch_size}}}}}
target: {{width: 4096, depth: 2, batch_size: {batch_size}}}
"""


def recipe(family: str, *, width: int, steps: int, k: int, device: str = "auto", batch_trials: int = 1,
           batch_size: int | None = None, seq_len: int = 64) -> str:
    """The benchmark's recipe for `family` (gpt: a µP GPT on characters, mlp: a µP MLP on digits) at `width`:
    `k` trials of one shape (different lr and output_mult), `steps` steps, one evaluation at the end. The batch size
    defaults to 8 sequences for the gpt and 32 examples for the mlp."""
    template = GPT if family == "gpt" else MLP
    return template.format(data=ROOT / "mutransfer", steps=steps, k=k, width=width, device=device,
                           batch_trials=batch_trials, seq_len=seq_len,
                           batch_size=batch_size or (8 if family == "gpt" else 32))


def _no_sync() -> None:
    pass


def time_one_by_one(specs: list[Any], sync: Callable[[], None] = _no_sync) -> float:
    """Seconds to train `specs` one after another through `train.train` (model building included); `sync` waits
    for the device (torch.cuda.synchronize on a GPU) before each clock read."""
    from mutransfer.train import train

    sync()
    t = time.perf_counter()
    for s in specs:
        train(s, lambda p: None, threads=1)
    sync()
    return time.perf_counter() - t


def time_batched(specs: list[Any], sync: Callable[[], None] = _no_sync) -> float:
    """Seconds to train `specs` at once, as one stacked model, through `batched.train_batch` (building included)."""
    from mutransfer.batched import train_batch

    sync()
    t = time.perf_counter()
    train_batch(specs, lambda s, p: None, threads=1)
    sync()
    return time.perf_counter() - t


def summarize(runs: dict[str, list[float]], k: int) -> tuple[float, dict[str, float]]:
    """The speedup (median of per-repetition ratios, one by one over batched) and trials/hour of each variant
    (k trials over the median run) of interleaved runs {"one by one": [s, ...], "batched": [s, ...]}."""
    sp = median([a / b for a, b in zip(runs["one by one"], runs["batched"], strict=True)])
    return sp, {name: k / median(v) * 3600 for name, v in runs.items()}


def crossover(widths: list[int], speedups: list[float], level: float) -> str:
    """The width where the speedup falls through `level`, log-interpolated between measured widths."""
    import math

    for (w0, s0), (w1, s1) in zip(zip(widths, speedups, strict=True), zip(widths[1:], speedups[1:], strict=True),
                                  strict=False):
        if s0 >= level > s1:
            f = (s0 - level) / (s0 - s1)
            return f"≈{math.exp(math.log(w0) + f * (math.log(w1) - math.log(w0))):.0f}"
    return f"above {widths[-1]}" if speedups[-1] >= level else f"below {widths[0]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    # An MLP step on digits takes well under a millisecond: 8 trials of 20 steps are over in 0.05 s, less than the
    # timer's noise on a shared machine. Each family gets a length that takes seconds.
    ap.add_argument("--mlp-steps", type=int, default=200)
    ap.add_argument("--gpt-steps", type=int, default=30)
    ap.add_argument("--widths", default="32,64,128,256,512")
    ap.add_argument("--families", default="gpt,mlp")
    args = ap.parse_args()

    import torch

    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe

    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    sections = []
    summary = []
    for family in args.families.split(","):
        rows = []
        speedups = []
        for width in widths:
            steps = args.gpt_steps if family == "gpt" else args.mlp_steps
            specs = plan(parse_recipe(recipe(family, width=width, steps=steps, k=args.k)))
            time_batched(specs)  # warm: data cache, first calls
            print(f"{family} width {width}", file=sys.stderr)
            runs = interleaved({"one by one": partial(time_one_by_one, specs), "batched": partial(time_batched, specs)},
                               args.reps)
            sp, per_hour = summarize(runs, args.k)
            speedups.append(sp)
            rows.append([width, f"{per_hour['one by one']:,.0f}", f"{per_hour['batched']:,.0f}", f"{sp:.2f}x",
                         ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(runs["one by one"], runs["batched"],
                                                                        strict=True))])
        small = [s for w, s in zip(widths, speedups, strict=True) if w <= 256]
        goal = "met" if small and min(small) >= 2 else f"missed (lowest {min(small):.2f}x at width ≤ 256)"
        summary.append(f"{family}: crossover (batched no faster) at width {crossover(widths, speedups, 1.0)}, "
                       f"2x up to width {crossover(widths, speedups, 2.0)}; goal ≥ 2x for width ≤ 256 **{goal}**")
        shape = ("µP GPT, depth 2, head_dim 16, batch 8 x 64 characters, AdamW, cosine" if family == "gpt"
                 else "µP MLP on digits, depth 2, batch 32, Adam")
        sections.append(f"**{family}** ({shape}; {args.k} trials, {steps} steps each, one evaluation)\n\n"
                        + table(["width", "trials/hour one by one", "trials/hour batched", "speedup",
                                 "runs s (one by one/batched)"], rows))
    body = (f"{args.k} trials of one shape (different lr and output_mult) trained one by one through `train.train`"
            f" vs at once through `batched.train_batch`, one thread, model building included; {args.reps} "
            "repetitions interleaved; speedup = median of per-repetition ratios.\n\n" + "\n\n".join(sections)
            + "\n\n" + "\n".join(f"- {s}" for s in summary) + "\n")
    update_section("batched", "Batched trials", f".venv/bin/python bench/batched.py --reps {args.reps} --k {args.k}"
                   f" --mlp-steps {args.mlp_steps} --gpt-steps {args.gpt_steps} --widths {args.widths} --families {args.families}", body)


if __name__ == "__main__":
    main()
