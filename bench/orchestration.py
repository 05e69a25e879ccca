"""Orchestration overhead: N trivial trials through mutransfer's sweep, through a bare Ray Tune script with default
settings, and through a bare loop in one process. Writes the "orchestration" section of BENCHMARKS.md.

    .venv/bin/python bench/orchestration.py [--n 100] [--reps 3]

Each variant runs in a fresh process (mutransfer's init_ray sets Tune environment variables, which must not
leak into the bare Ray Tune run); only the run itself is timed, not Python start-up or `ray.init`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median, table, update_section  # noqa: E402

# The smallest proxy: a 16-wide, one-hidden-layer MLP on digits, 5 steps, one evaluation.
RECIPE = """
name: orch{tag}
model: {{family: mlp, parametrization: mup, base_width: 16}}
data: {{kind: digits}}
train: {{steps: 5, eval_interval: 5, eval_batches: 1, batch_trials: {batch}}}
search: {{samples: {n}, seed: 0, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 16, depth: 1, batch_size: 16}}}}
target: {{width: 1024, depth: 1, batch_size: 16}}
"""


def recipe_text(n: int, batch: int = 1, tag: str = "") -> str:
    return RECIPE.format(n=n, batch=batch, tag=tag)


def _bare(n: int) -> float:
    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe
    from mutransfer.train import train

    specs = plan(parse_recipe(recipe_text(n)))
    train(specs[0], lambda p: None, threads=1)  # warm: dataset cache and first-call costs, as a Ray worker has them
    t = time.perf_counter()
    for spec in specs:
        train(spec, lambda p: None, threads=1)
    return time.perf_counter() - t


def _ray(n: int) -> float:
    import ray
    from ray import tune

    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe

    specs = plan(parse_recipe(recipe_text(n)))

    def trainable(config: dict) -> None:
        from mutransfer.train import train

        result = train(specs[config["i"]], lambda p: tune.report(p), threads=1)
        tune.report({"step": result.steps, "metric": result.metric, "done": True})

    ray.init(include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        # Tune's defaults, except where its files go (a temp folder instead of ~/ray_results: the same files).
        tuner = tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(n)))},
                           run_config=tune.RunConfig(storage_path=tmp))
        t = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - t


def _mutransfer(n: int, batch: int = 1) -> float:
    from mutransfer.ray_setup import init_ray
    from mutransfer.recipe import parse_recipe
    from mutransfer.storage import Store
    from mutransfer.sweep import run_sweep

    text = recipe_text(n, batch)
    recipe = parse_recipe(text)
    init_ray(recipe, None)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/mt.db")
        t = time.perf_counter()
        summary = run_sweep(recipe, store, recipe_text=text, progress=False, storage_dir=f"{tmp}/ray")
        took = time.perf_counter() - t
        assert summary.counts.get("completed", 0) + summary.counts.get("diverged", 0) == n, summary.counts
        store.close()
    return took


def worker(variant: str, n: int, out: str) -> None:
    fn = {"bare": _bare, "ray": _ray, "mutransfer": _mutransfer,
          "mutransfer-batched": lambda n: _mutransfer(n, batch=8)}[variant]
    seconds = fn(n)
    # Peak resident memory of this (the driver's) process: bench/memory.py reads it.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))
    sys.stdout.flush()
    os._exit(0)  # skip Ray's slow shutdown: nothing is left to save


def measure(variant: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        res = subprocess.run([sys.executable, __file__, "--worker", variant, "--n", str(n), "--out", str(out)],
                             capture_output=True, text=True, timeout=3600)
        if not out.exists():
            raise RuntimeError(f"{variant} failed:\n{res.stderr[-4000:]}")
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ray-n", type=int, default=None,
                    help="trials for the bare Ray Tune run (default --n): it costs seconds per trial")
    ap.add_argument("--worker")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.out)
        return
    names = ["bare", "mutransfer", "mutransfer-batched", "ray"]
    n_of = {v: args.n for v in names} | {"ray": args.ray_n or args.n}
    runs = interleaved({v: (lambda v=v: measure(v, n_of[v])["seconds"]) for v in names}, args.reps)
    per = {v: median(runs[v]) / n_of[v] for v in names}
    over = {v: per[v] - per["bare"] for v in names}
    rows = [[v, n_of[v], per[v] * 1e3, over[v] * 1e3, ", ".join(f"{x:.1f}" for x in runs[v])] for v in names]
    ratio = over["mutransfer"] / over["ray"] if over["ray"] > 0 else float("nan")
    goal = "met" if ratio <= 0.1 else f"missed ({ratio:.2f}, {ratio / 0.1:.1f}x the allowed tenth)"
    body = f"""N trivial trials (µP MLP, width 16, one hidden layer, 5 steps, one evaluation on digits), {args.reps}
repetitions interleaved, medians. The bare Ray Tune run gets fewer trials when `--ray-n` says so (each of its
trials starts a fresh worker process, seconds each): its per-trial cost does not depend on N. Per trial = wall
time of the whole run (after `ray.init`, which is not timed) / N: a sweep's fixed costs (Tune's set-up, the first
worker processes importing torch) are spread over N; overhead = per trial − bare loop per
trial. `mutransfer` is `run_sweep` with a SQLite store (default recipe: runs of up to 16 trials per Ray trial,
both cores); `mutransfer-batched` the same with `train.batch_trials: 8`; `ray` a bare `tune.Tuner` with a function
trainable calling the same `train()` and Tune's defaults (`reuse_actors=False`, per-trial result files and
checkpoint folders; files in a temp folder); `bare` the trials one after another in one process, one thread.
Ray variants use both cores, the bare loop one: a negative overhead means the two cores won more than
orchestration cost.

{table(["variant", "trials", "ms per trial", "overhead ms per trial", "runs (s)"], rows)}

Goal: mutransfer's per-trial overhead at most a tenth of Ray Tune's default. Ratio {ratio:.3f}: **{goal}**.
"""
    update_section("orchestration", "Orchestration overhead", f".venv/bin/python bench/orchestration.py --n {args.n}"
                   f" --ray-n {n_of['ray']} --reps {args.reps}", body)


if __name__ == "__main__":
    main()
