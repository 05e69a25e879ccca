"""Training throughput: steps/s of a built-in GPT proxy inside a sweep trial (Ray Tune trainable, reporting to the
store) vs a minimal plain-PyTorch loop training the same model on the same batches.

    .venv/bin/python bench/throughput.py [--reps 3] [--steps 200]

Both run one thread in a fresh process. Steps/s is taken over the second half of the run (steps S/2+1 .. S), so
start-up (imports, data, model build, Ray worker start) is out of both: the trial's own points say when steps S/2
and S ended (`elapsed`); the plain loop is timed over the same steps. The trial also evaluates once in that span
(one validation batch, about a third of a step): counted against it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ROOT, interleaved, median, table, update_section  # noqa: E402

RECIPE = """
name: tput
model: {{family: gpt, parametrization: mup, base_width: 64, head_dim: 32}}
data: {{kind: chars, path: {data}}}
train: {{steps: {steps}, eval_interval: {half}, eval_batches: 1, optimizer: adamw, schedule: cosine}}
search: {{samples: 1, space: {{lr: {{loguniform: [1.0e-3, 3.0e-3]}}}}}}
scales: {{base: {{width: {width}, depth: 2, batch_size: 16, seq_len: 64}}}}
target: {{width: 1024, depth: 2, batch_size: 16, seq_len: 64}}
"""


def recipe_text(steps: int, width: int) -> str:
    return RECIPE.format(data=ROOT / "mutransfer", steps=steps, half=steps // 2, width=width)


def sweep_trial(steps: int, width: int) -> float:
    from mutransfer.recipe import parse_recipe
    from mutransfer.storage import Store
    from mutransfer.sweep import run_sweep

    text = recipe_text(steps, width)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/mt.db")
        run_sweep(parse_recipe(text), store, recipe_text=text, progress=False, storage_dir=f"{tmp}/ray")
        sid = store.get_sweep("tput").id
        curves = store.curves_frame(sid)
        el = curves[curves["name"] == "elapsed"].set_index("step")["value"]
        return (steps - steps // 2) / float(el.loc[steps] - el.loc[steps // 2])


def plain(steps: int, width: int) -> float:
    import torch
    import torch.nn.functional as F

    from mutransfer.data import load_dataset
    from mutransfer.parametrization import build, make_optimizer
    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe

    torch.set_num_threads(1)
    spec = plan(parse_recipe(recipe_text(steps, width)))[0]
    torch.manual_seed(spec.seed)
    data = load_dataset(spec.data, spec.model)
    model = build(spec, data)
    opt = make_optimizer(model, spec)
    gen = torch.Generator().manual_seed(spec.seed)
    b, t = spec.scale.batch_size, spec.scale.seq_len
    t0 = 0.0
    for step in range(1, steps + 1):
        if step == steps // 2 + 1:
            t0 = time.perf_counter()
        x, y = data.get_batch("train", b, t, gen)
        loss = F.cross_entropy(model(x).reshape(-1, data.num_classes), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (steps - steps // 2) / (time.perf_counter() - t0)


def measure(variant: str, steps: int, width: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        res = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(steps), "--width",
                              str(width), "--out", str(out)], capture_output=True, text=True, timeout=3600, cwd=ROOT)
        if not out.exists():
            raise RuntimeError(f"{variant} failed:\n{res.stderr[-4000:]}")
        return float(json.loads(out.read_text())["steps_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--widths", default="64,256")
    ap.add_argument("--worker")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        sps = {"sweep": sweep_trial, "plain": plain}[args.worker](args.steps, args.width)
        Path(args.out).write_text(json.dumps({"steps_per_s": sps}))
        sys.stdout.flush()
        os._exit(0)  # skip Ray's slow shutdown
    rows = []
    ratios = []
    for width in [int(w) for w in args.widths.split(",")]:
        runs = interleaved({v: (lambda v=v, w=width: measure(v, args.steps, w)) for v in ("sweep", "plain")}, args.reps)
        # Ratio per repetition (the two ran next to each other), then the median of the ratios.
        ratio = median([s / p for s, p in zip(runs["sweep"], runs["plain"], strict=True)])
        ratios.append(ratio)
        rows.append([width, median(runs["sweep"]), median(runs["plain"]), ratio,
                     ", ".join(f"{s:.1f}/{p:.1f}" for s, p in zip(runs["sweep"], runs["plain"], strict=True))])
    worst = min(ratios)
    goal = "met" if worst >= 0.95 else f"missed by {0.95 - worst:.3f} (worst {worst:.3f})"
    body = f"""A µP GPT proxy (depth 2, head_dim 32, batch 16 x 64 characters, AdamW, cosine schedule) trained
{args.steps} steps; steps/s over steps {args.steps // 2 + 1}..{args.steps}. `sweep`: one trial of `run_sweep` (Ray
Tune trainable, reports, SQLite store; steps/s from the trial's own `elapsed` points, which include one evaluation
of one batch). `plain`: build the same model (same seed), the same optimizer (MuAdamW), the same batches, then
`loss.backward(); opt.step()`, nothing else (no clipping, schedule, divergence check or reports). One thread each,
{args.reps} repetitions interleaved; ratio = median of per-repetition ratios.

{table(["width", "sweep steps/s", "plain steps/s", "sweep / plain", "runs (sweep/plain)"], rows)}

Goal: ≥ 0.95x plain PyTorch: **{goal}**.
"""
    update_section("throughput", "Training throughput", f".venv/bin/python bench/throughput.py --reps {args.reps} "
                   f"--steps {args.steps} --widths {args.widths}", body)


if __name__ == "__main__":
    main()
