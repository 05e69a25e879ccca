"""µP with its multipliers tuned, against SP, on a real task: which exported config trains the better 512-wide model?

    .venv/bin/python bench/transfer_tuned.py [--workers 2]

The built-in GPT on this Python's standard library source (characters), as in bench/transfer_real.py, but the
proxies (widths 32, 64, 128) sweep lr together with output_mult and init_std (32 draws per width, the same at
every width, one seed, the metric the mean of the last three evaluations), both parametrizations. The recipe's
target is width 512. At width 512 it trains, with two seeds each: each parametrization's exported config (every
tuned hyperparameter at its transferred value), and a direct LR scan of SP at its default multipliers (the
baseline a user tuning the target directly would run). It reports each config's loss against the best found at
512 by either route, and the fit's predicted metric at 512 against the loss each exported config reached.

Everything trained is cached under bench/.transfer_tuned/ (the sweep's SQLite database, the width-512 runs):
a second run re-fits the same proxies and trains only what it has not seen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402
from _common import ROOT, run_key, table, train_at_width, update_section  # noqa: E402

WORK = HERE / ".transfer_tuned"
DB = f"sqlite:///{WORK / 'sweep.db'}"
RUNS = WORK / "runs.json"
TARGET_WIDTH = 512
SEEDS = (0, 1)
NAME = "transfer-tuned"
RECIPE = f"""\
name: {NAME}
description: the tuned-multiplier transfer benchmark's proxies (bench/transfer_tuned.py)
model: {{family: gpt, parametrization: [mup, sp], base_width: 32, head_dim: 8}}
data: {{kind: chars, max_chars: 1000000}}
train: {{steps: 200, optimizer: adamw, schedule: cosine, warmup_steps: 20, eval_interval: 25, eval_batches: 8,
        metric: val_loss, metric_window: 3}}
search:
  samples: 32
  seed: 0
  space:
    lr: {{loguniform: [1.0e-4, 1.0e-1]}}
    output_mult: {{loguniform: [0.125, 32.0]}}
    init_std: {{loguniform: [0.005, 0.5]}}
scales: {{base: {{width: 32, depth: 2, batch_size: 32, seq_len: 64}}, vary: {{width: [32, 64, 128]}}}}
target: {{width: {TARGET_WIDTH}, depth: 2, batch_size: 32, seq_len: 64, tokens: 409600}}
resources: {{cpus: 1}}
"""
SP_SCAN = [2.0 ** (-11 + i) for i in range(3)]  # 0.00049 .. 0.002: SP's optimum at 512 lay at 0.001 last round


def recipe_path() -> Path:
    WORK.mkdir(exist_ok=True)
    p = WORK / f"{NAME}.yaml"
    p.write_text(RECIPE)
    return p


def mutransfer(*args: str) -> str:
    return _common.mutransfer(DB, *args)


def mean_metric(runs: dict[str, Any], param: str, hp: dict[str, float]) -> tuple[float | None, str]:
    """(mean over the seeds, how far apart they are); NaN when not trained yet, None when a seed diverged."""
    ms = [runs.get(run_key(param, hp, s), {}).get("metric", math.nan) for s in SEEDS]
    if any(m is not None and isinstance(m, float) and math.isnan(m) for m in ms):
        return math.nan, "-"
    if any(m is None or not math.isfinite(m) for m in ms):
        return None, "-"
    return sum(ms) / len(ms), f"{max(ms) - min(ms):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("MUTRANSFER_THREADS", "1")
    t0 = time.perf_counter()
    path = recipe_path()
    mutransfer("sweep", str(path), "-q")  # resumes: finished trials are kept
    fit = json.loads(mutransfer("fit", NAME, "--json"))
    fit = fit.get("fit", fit)
    # The product's path: `mutransfer export`, first as a user runs it (the guard may refuse), then with
    # --allow-extrapolation, so that the refused values are measured too.
    exported: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, str]] = {}
    guard: dict[str, str] = {}
    exe = Path(sys.executable).parent / "mutransfer"
    for p in ("mup", "sp"):
        plain = subprocess.run([str(exe), "export", NAME, "--format", "json", "--parametrization", p, "--db", DB],
                               capture_output=True, text=True, cwd=ROOT)
        guard[p] = "exported" if plain.returncode == 0 else f"refused: {plain.stderr.strip().splitlines()[-1]}"
        doc = json.loads(mutransfer("export", NAME, "--format", "json", "--parametrization", p,
                                    "--allow-extrapolation"))
        for name, e in doc["hyperparameters"].items():
            if e.get("source") == "fit" and e.get("value") is not None:
                exported.setdefault(p, {})[name] = float(e["value"])
                lo, hi = (e.get("interval") or [None, None])
                intervals.setdefault(p, {})[name] = (f"{e['value']:.3g} [{lo:.3g}, {hi:.3g}]" if lo is not None
                                                     else f"{e['value']:.3g}")
    fit["guard"] = guard
    jobs = [(p, hp) for p, hp in exported.items()] + [("sp", {"lr": lr}) for lr in SP_SCAN]
    write = lambda runs: report(fit, exported, intervals, runs, t0)  # noqa: E731
    runs = train_at_width(jobs, recipe=path, width=TARGET_WIDTH, seeds=SEEDS, runs_path=RUNS, workers=args.workers,
                          on_run=write)
    write(runs)


def report(fit: dict[str, Any], exported: dict[str, dict[str, float]], intervals: dict[str, dict[str, str]],
           runs: dict[str, Any], t0: float) -> None:
    rows, results = [], []
    for p, hp in exported.items():
        m, apart = mean_metric(runs, p, hp)
        results.append((f"{p} exported", m))
        fc = next((f for f in fit.get("forecasts", []) if f["parametrization"] == p), None)
        pred = (f"{fc['value']:.3f} [{fc['lo']:.3f}, {fc['hi']:.3f}]" if fc and fc.get("lo") is not None else "-")
        held = ("-" if not fc or fc.get("lo") is None or m is None or math.isnan(m)
                else "yes" if fc["lo"] <= m <= fc["hi"] else "no")
        rows.append([f"{p} exported", "; ".join(f"{k} {v}" for k, v in intervals[p].items()), m, apart, pred, held])
    for lr in SP_SCAN:
        m, apart = mean_metric(runs, "sp", {"lr": lr})
        results.append((f"sp scan lr {lr:.3g}", m))
        rows.append(["sp direct scan", f"lr {lr:.3g} (multipliers at their defaults)", m, apart, "-", "-"])
    done = [(w, m) for w, m in results if m is not None and not math.isnan(m)]
    best_what, best = min(done, key=lambda x: x[1]) if done else ("-", None)
    table_rows = []
    for what, value, m, apart, pred, held in rows:
        loss = "diverged" if m is None else "not run" if math.isnan(m) else f"{m:.4f}"
        gap = "-" if m is None or math.isnan(m) or best is None else f"{100 * (m - best) / best:+.2f}%"
        table_rows.append([what, value, loss, apart, gap, pred, held])
    mup = next((m for w, m in results if w == "mup exported"), None)
    goal = ("-" if mup is None or best is None or math.isnan(mup)
            else f"**{'met' if (mup - best) / best <= 0.01 else 'missed'}** ({100 * (mup - best) / best:+.2f}%)")
    body = f"""The built-in GPT (depth 2, head size 8, batch 32 x 64 characters, 200 AdamW steps, cosine) on this Python's
standard library source. µP and SP proxies at widths 32/64/128 sweep lr, output_mult and init_std together (32
draws, the same at every width, one seed; the metric is the mean of the last 3 evaluations); `mutransfer fit`
exports each parametrization's config for width {TARGET_WIDTH}. At width {TARGET_WIDTH}, with 2 seeds each (the loss is their
mean): each exported config, and a direct LR scan of SP at its default multipliers. The fit's preference:
{fit.get('preferred_reason') or 'none stated'}. The export's guard: {'; '.join(f"{p}: {g}" for p, g in fit.get('guard', {}).items())}
(the configs below were exported with `--allow-extrapolation`).

{table(["config", "values at width 512 [95% interval]", "val loss at 512", "seeds apart", "vs best",
        "predicted at 512 (fit)", "inside"], table_rows)}

Best at width {TARGET_WIDTH}: {best_what} ({best if best is None else f'{best:.4f}'}). Goal (the exported µP config within 1% of the best
found by either route): {goal}. The prediction is at the proxies' training length, which is the target's here.

Wall time of this run: {time.perf_counter() - t0:.0f} s.
"""
    update_section("transfer_tuned", "Tuned multipliers on a real task: µP against SP at width 512",
                   ".venv/bin/python bench/transfer_tuned.py", body)


if __name__ == "__main__":
    main()
