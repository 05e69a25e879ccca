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


def _ray(n: int, reuse: bool = False) -> float:
    """A bare Ray Tune script calling the same `train()`, one trial per Ray trial: Tune's defaults, or with `reuse`
    Tune set up well for short trials (reuse_actors=True, no per-trial loggers, verbose=0, workers not niced)."""
    if reuse:
        # Read by Tune when a run starts and by Ray's workers when Ray starts: before `import ray`. Not niced: the
        # same as mutransfer's workers (init_ray), or a busy machine would slow this peer's trials, not its Tune.
        os.environ.update(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_worker_niceness="0")
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
        tune_config = tune.TuneConfig(reuse_actors=True) if reuse else None
        run_config = tune.RunConfig(storage_path=tmp, verbose=0) if reuse else tune.RunConfig(storage_path=tmp)
        tuner = tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(n)))}, tune_config=tune_config,
                           run_config=run_config)
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
    fn = {"bare": _bare, "ray": _ray, "ray-reuse": lambda n: _ray(n, reuse=True), "mutransfer": _mutransfer,
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


def fixed_and_marginal(t1: float, n1: int, t2: float, n2: int) -> tuple[float, float]:
    """A run's time as fixed + marginal x N, from two sizes: (fixed seconds, marginal seconds per trial)."""
    marginal = (t2 - t1) / (n2 - n1)
    return t1 - marginal * n1, marginal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ray-n", type=int, default=None,
                    help="trials for the bare Ray Tune run with Tune's defaults (default --n): it costs seconds per "
                         "trial")
    ap.add_argument("--n-large", type=int, default=400,
                    help="a second size for bare, mutransfer and ray-reuse, to split their time into a fixed part "
                         "and a part per trial (0: not run)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md as it is")
    ap.add_argument("--worker")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.out)
        return
    names = ["bare", "mutransfer", "mutransfer-batched", "ray-reuse", "ray"]
    n_of = {v: args.n for v in names} | {"ray": args.ray_n or args.n}
    jobs = {v: (lambda v=v: measure(v, n_of[v])["seconds"]) for v in names}
    split = ["bare", "mutransfer", "ray-reuse"] if args.n_large and args.n_large != args.n else []
    jobs |= {f"{v}@{args.n_large}": (lambda v=v: measure(v, args.n_large)["seconds"]) for v in split}
    runs = interleaved(jobs, args.reps)
    per = {v: median(runs[v]) / n_of[v] for v in names}
    over = {v: per[v] - per["bare"] for v in names}
    rows = [[v, n_of[v], per[v] * 1e3, over[v] * 1e3, ", ".join(f"{x:.1f}" for x in runs[v])] for v in names]
    ratio = over["mutransfer"] / over["ray-reuse"] if over["ray-reuse"] > 0 else float("nan")
    goal = "met" if ratio <= 0.5 else f"missed ({ratio:.2f}, {ratio / 0.5:.2f}x the allowed half)"
    tenth = over["mutransfer"] / over["ray"] if over["ray"] > 0 else float("nan")
    split_text = ""
    if split:
        fm = {v: fixed_and_marginal(median(runs[v]), args.n, median(runs[f"{v}@{args.n_large}"]), args.n_large)
              for v in split}
        big = {v: median(runs[f"{v}@{args.n_large}"]) / args.n_large for v in split}
        big_over = {v: big[v] - big["bare"] for v in split}
        big_ratio = big_over["mutransfer"] / big_over["ray-reuse"] if big_over["ray-reuse"] > 0 else float("nan")
        m_over = {v: fm[v][1] - fm["bare"][1] for v in split}
        rows2 = [[v, median(runs[v]), median(runs[f"{v}@{args.n_large}"]), fm[v][0], fm[v][1] * 1e3,
                  m_over[v] * 1e3, big_over[v] * 1e3, ", ".join(f"{x:.1f}" for x in runs[f"{v}@{args.n_large}"])]
                 for v in split]
        split_text = f"""
The same at {args.n_large} trials, and each run's time split into an intercept and a part per trial (a line through
the medians at {args.n} and {args.n_large} trials; marginal overhead = marginal − the bare loop's marginal; a cost per trial that grows with the number of trials in
a run lands in the slope and lowers the intercept, which is then no measure of the start-up):

{table(["variant", f"s at {args.n}", f"s at {args.n_large}", "intercept s", "marginal ms per trial",
        "marginal overhead ms per trial", f"overhead ms per trial at {args.n_large}", f"runs at {args.n_large} (s)"],
       rows2)}

At {args.n_large} trials mutransfer's overhead is {big_ratio:.2f} of ray-reuse's
({"within" if big_ratio <= 0.5 else "above"} the half); marginal overhead per trial,
{m_over["mutransfer"] * 1e3:.1f} ms against {m_over["ray-reuse"] * 1e3:.1f} ms.
"""
    body = f"""N trivial trials (µP MLP, width 16, one hidden layer, 5 steps, one evaluation on digits), {args.reps}
repetitions interleaved, medians. Per trial = wall time of the whole run (after `ray.init`, which is not timed) / N:
a sweep's fixed costs (Tune's set-up, the worker processes starting and importing torch) are spread over N;
overhead = per trial − bare loop per trial. `mutransfer` is `run_sweep` with a SQLite store (default recipe: runs
of up to 16 trials per Ray trial, both cores); `mutransfer-batched` the same with `train.batch_trials: 8`;
`ray-reuse` a bare `tune.Tuner` with a function trainable calling the same `train()`, one trial per Ray trial, set
up for short trials (`reuse_actors=True`, `TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`, `verbose=0`, workers not niced,
as mutransfer's); `ray` the same trainable with Tune's defaults (`reuse_actors=False`, per-trial result files and
checkpoint folders; files in a temp folder), on `--ray-n` trials (each starts a fresh worker process, seconds
each: its per-trial cost does not depend on N); `bare` the trials one after another in one process, one thread,
after one trial to warm it (the dataset, torch's first calls). Ray variants use both cores, the bare loop one: a
negative overhead means the two cores won more than orchestration cost.

{table(["variant", "trials", "ms per trial", "overhead ms per trial", "runs (s)"], rows)}

Goal: mutransfer's per-trial overhead at most half of Ray Tune's with `reuse_actors=True` (`ray-reuse`), both in
this run. Ratio {ratio:.3f}: **{goal}**. Against Ray Tune's defaults (`ray`): {tenth:.3f}.
{split_text}
{BREAKDOWN}
"""
    command = (f".venv/bin/python bench/orchestration.py --n {args.n} --ray-n {n_of['ray']} --n-large {args.n_large}"
               f" --reps {args.reps}")
    if args.no_write:
        print(body)
        return
    update_section("orchestration", "Orchestration overhead", command, body)


# Where the time goes: measured once by hand (cProfile of the driver, timings of the store callback, of `train()` and
# of `tune.report` in the workers, import timestamps in the workers), not by this script.
BREAKDOWN = """Where the time goes (measured once by hand at 100 trials, on this 2-core machine when it was quiet:
cProfile of the driver, timings of the store callback and, in the workers, of `train()` and `tune.report`, and import
timestamps; not by this script):

- Before this round (7.9 s, 79 ms per trial): the driver set up for 0.12 s and Tune for 0.17 s; Tune starts its
  actors in fresh worker processes (its `runtime_env`), which booted Ray (0.5 s), imported `ray.tune` (0.55 s) and,
  in the trainable, torch (1.0-1.6 s, both workers at once); each worker's first trial then took 2.5-3.3 s, of which
  importing scikit-learn for the digits took 1.4 s and torch._dynamo (imported by torch.optim's first optimizer)
  1.15 s. The first two packs ended at 6.5 s: **about 65 of the 79 ms per trial were that fixed start**, not
  per-trial orchestration. The other 76 trials took 1.2 s (16 ms each with two workers): per trial on a worker
  9-10 ms in `train()` and two `tune.report` round trips of 5-8 ms each (a function trainable's report returns only
  once the driver has processed the result, callbacks included). The driver spent 0.58 s in the store callback
  (three transactions per trial, each checking the lease: mark_running 2.3 ms, add_points 1.7 ms, as the first
  point of every trial was written at once, finish_trial 2.0 ms) and 0.7 s in Tune's handling of 209 results; it
  waited on the workers for the rest (`ray.wait` 6.7 s).
- Changed: a pack's reports leave from a thread of their own, what has come in one `tune.report` (the trials do
  not wait for the driver: 9 results for 100 trials instead of 200); the driver writes what one result brings in
  one transaction (`Store.record_trials`: 18 transactions instead of 300, 79 ms instead of 580); the digits are
  read from scikit-learn's file without importing scikit-learn (every variant gains this: they share `train()`).
  This command on the code before this round, in one run on a machine as busy (load average 9): overhead per
  trial at 100 trials 143 ms against `ray-reuse`'s 115 (ratio 1.24), at 1000 trials 12.4 against 47.2 (0.26).
- After (3.8 s, 38 ms per trial): actor processes start at 0.30 s, the trainable runs at 1.42 s, torch is imported
  at 2.46 s, the first trial of each worker (torch._dynamo, 0.7 s) ends at 3.33 s, the other 76 trials take 0.37 s
  (5 ms each with two workers, about the bare loop's 5-6 ms on one). Of the 3.3 s fixed part, 3.0 s is the actor
  processes starting and importing Ray Tune, torch and torch._dynamo, which `ray-reuse` pays the same (the same
  `train()` in the same kind of Tune actor), and which is 30 ms per trial at 100 trials: more than half of
  `ray-reuse`'s whole overhead at that size (43 ms in a quiet run). **That start is what stands between
  mutransfer and the goal at 100 trials** (its floor there is about 0.7 of `ray-reuse`). Beyond it
  mutransfer's marginal overhead is a few ms per trial at most (-1.7 and 1.3 ms in two runs) against
  `ray-reuse`'s 8-35 ms (the busier the machine, the more), so the ratio falls with the number of trials and
  under the half between 400 and 1000 of them (0.57 at 400 in another run, 0.21 at 1000 here)."""


if __name__ == "__main__":
    main()
