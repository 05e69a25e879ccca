"""Compute to an answer: the FLOPs a search strategy needs before its transferred learning rate is within 0.5 octave
of the direct optimum at the p90 of its sweeps; random search, ASHA (search.early_stop), a refine round
(search.refine), and both. Writes the "compute_to_answer" section of BENCHMARKS.md.

    .venv/bin/python bench/compute_to_answer.py [--replicates 100] [--workers 2] [--synthetic-only]

Two tasks, one method: every strategy is replayed on trials whose whole learning curves are known in advance, so
that each of `--replicates` sweeps per budget costs a fit, not a training run.

- **Real**: bench/transfer_real.py's task (the built-in µP GPT, chars of this Python's standard library, widths
  32/64/128, 200 AdamW steps, cosine). Its proxies are trained once on a grid of learning rates a quarter octave
  apart over the recipe's range, for each of three seeds (the pool, cached under bench/.compute_to_answer/). A
  replayed sweep trains with one of the seeds, as a sweep with one repeat has one; it draws its learning rates as
  the recipe would (the same draws at every width), and each draw takes the curve of the nearest grid value (at
  most 1/8 octave away). The
  direct optimum at width 512 is the one bench/transfer_real.py measured (a quadratic plus per-seed levels through
  its 14 width-512 runs; training there is deterministic for a given lr and seed). A second answer, by loss: the
  transferred lr within 1% of the direct best's loss at width 512, read off that curve (bench/transfer_real.py's
  own goal), since at 512 the bowl is flat (1.7 octaves of lr lie within 1%) and the proxies' noisy optima drift
  upwards with width while 512's does not, so that half an octave asks for more than the loss can tell apart.
- **Synthetic**: the fit's calibration bowl (mutransfer.testing.synthetic) with learning curves: a run's excess
  over its final loss shrinks with training as (T/t)^ALPHA - 1, faster at higher learning rates (SPEED per octave),
  so that early losses favour larger learning rates than final ones (the short-horizon bias ASHA risks). Known
  optimum at every width, no drift under µP.

ASHA is Ray Tune's own AsyncHyperBandScheduler behind mutransfer.stopping.ByScalePoint, fed each trial's evaluations
in plan order (one worker: the order a sweep on one slot has); a stopped trial costs the steps it ran and enters
the fit as a sweep's stopped trial does (mutransfer.fit.stopped). The refine round is mutransfer.plan.refine_specs
centred by mutransfer.fit.sweep.joint_optima, as `mutransfer sweep` runs it. FLOPs: each trial's training FLOPs
(the pool's measured ones; 6·N per token plus attention for the synthetic task's GPT-sized stand-in) times the share
of its steps it ran.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402
from _common import table, update_section  # noqa: E402

WORK = HERE / ".compute_to_answer"
WIDTHS = (32, 64, 128)
TARGET_WIDTH = 512
# bench/transfer_real.py's measurement of µP's optimum at width 512 (BENCHMARKS.md, "Transfer on a real task"): the
# curve through its 14 width-512 runs.
DIRECT_LR_512 = 0.007546
# The same measurement's width-512 runs, each value's mean over its two seeds (BENCHMARKS.md lists them): a
# quadratic in log2(lr) through these means is bench/transfer_real.py's curve (the design is balanced, so its
# per-seed levels do not move the quadratic), optimum 0.00754 at val 2.2921. What a transferred lr costs at 512 is
# read off it: the real task's second answer, transfer_real's own goal (within 1% of the direct best by the curve).
WIDTH_512_MEANS = {0.00391: 2.319, 0.00552: 2.309, 0.00781: 2.295, 0.011: 2.322, 0.0156: 2.320, 0.01114: 2.3059,
                   0.008081: 2.2633}
SCAN_512 = (0.00391, 0.0156)  # the scanned range: outside it (by more than a quarter octave) no regret is read
REGRET = 1.0  # % of the direct best's loss at width 512
GRID_STEP = 0.25  # octaves between the pool's learning rates
LR_RANGE = (1e-4, 1e-1)
TOLERANCE = 0.5  # octaves: the answer is "within half an octave of the direct optimum"
QUANTILE = 0.9
RECIPE = """\
name: compute-to-answer
model: {family: gpt, parametrization: mup, base_width: 32, head_dim: 8}
data: {kind: chars, max_chars: 1000000}
train: {steps: 200, optimizer: adamw, schedule: cosine, warmup_steps: 20, eval_interval: 25, eval_batches: 8,
        metric: val_loss}
search: {samples: 12, seed: 0, space: {lr: {loguniform: [1.0e-4, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32, seq_len: 64}, vary: {width: [32, 64, 128]}}
target: {width: 512, depth: 2, batch_size: 32, seq_len: 64, tokens: 409600}
resources: {cpus: 1}
"""


def grid() -> list[float]:
    lo, hi = (math.log2(v) for v in LR_RANGE)
    n = int(math.floor((hi - lo) / GRID_STEP + 1e-9))
    return [2.0 ** (lo + GRID_STEP * k) for k in range(n + 1)]


@functools.cache
def _curve_512() -> tuple[tuple[float, float, float], float]:
    """The quadratic through WIDTH_512_MEANS (coefficients, highest power first) and its minimum inside the scanned
    range: fitted once, read for every replayed sweep."""
    import numpy as np

    c = np.polyfit(np.log2(list(WIDTH_512_MEANS)), list(WIDTH_512_MEANS.values()), 2)
    lo, hi = (math.log2(v) for v in SCAN_512)
    return tuple(float(v) for v in c), float(np.polyval(c, np.linspace(lo, hi, 401)).min())


def regret_512(u: float) -> float:
    """The loss at width 512 of log2 lr `u` against the curve's minimum inside the scanned range, in % of it; inf
    outside the scanned range (by more than a quarter octave): a quadratic is no guide there, so such a value counts
    as missing the answer."""
    lo, hi = (math.log2(v) for v in SCAN_512)
    if not (math.isfinite(u) and lo - 0.25 <= u <= hi + 0.25):
        return math.inf
    (a, b, c), best = _curve_512()
    return 100.0 * (a * u * u + b * u + c - best) / best


def recipe_path() -> Path:
    WORK.mkdir(exist_ok=True)
    p = WORK / "compute-to-answer.yaml"
    p.write_text(RECIPE)
    return p


POOL_SEEDS = (0, 1, 2)  # the pool's training seeds: a replayed sweep draws one of them, as a sweep has one seed


def train_pool(workers: int) -> dict[int, dict[str, Any]]:
    """The real task's pool: every grid learning rate at every proxy width, for each of POOL_SEEDS, with its curve;
    cached per width (bench/.compute_to_answer/pool-w{width}.json: a seed added trains only its own runs)."""
    pool: dict[int, dict[str, Any]] = {}
    for seed in POOL_SEEDS:  # seed by seed: a partial pool is still a pool of whole seeds
        for width in WIDTHS:
            pool[width] = _common.train_at_width([("mup", {"lr": lr}) for lr in grid()], recipe=recipe_path(),
                                                 width=width, seeds=(seed,), runs_path=WORK / f"pool-w{width}.json",
                                                 workers=workers)
    return pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool-only", action="store_true", help="train the real task's pool and stop")
    ap.add_argument("--synthetic-only", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    if not args.synthetic_only:
        train_pool(args.workers)
        print(f"pool trained ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.pool_only:
        return
    from replay import run_benchmark  # noqa: E402

    body = run_benchmark(args, t0)
    update_section("compute_to_answer", "Compute to an answer: early stopping and refine rounds",
                   f".venv/bin/python bench/compute_to_answer.py --replicates {args.replicates}", body)


if __name__ == "__main__":
    main()
    _ = table  # the report is built in replay.py
