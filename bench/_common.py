"""Shared by the benchmarks: machine details, interleaved repetitions, and BENCHMARKS.md sections.

The CPU may be shared with other jobs, so no benchmark reports an absolute number alone: every comparison is a ratio
of variants measured side by side in the same run, repetitions interleaved (A B C A B C ...), medians taken.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
PYTHON = sys.executable


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """One line: CPU, cores, memory, Python, torch and Ray versions, date (UTC)."""
    import ray
    import torch

    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu_model()}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"ray {ray.__version__}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; load average at start "
            f"{load:.1f} (the CPU is shared with other jobs: compare ratios, not absolute times)")


def interleaved(variants: dict[str, Callable[[], float]], reps: int, log: bool = True) -> dict[str, list[float]]:
    """Run each variant `reps` times, round-robin, so slow spells of a shared CPU hit every variant alike."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(reps):
        for name, fn in variants.items():
            v = fn()
            out[name].append(v)
            if log:
                print(f"  rep {r + 1}/{reps} {name}: {v:.4g}", file=sys.stderr, flush=True)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def run_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run a Python helper in a fresh process (its own imports and environment) and read its last stdout line."""
    res = subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def update_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) this benchmark's section of BENCHMARKS.md; the other sections stay as they are."""
    head = ("# Benchmarks\n\nEach section is written by its script under `bench/` (run it again to refresh it). The "
            "machine is shared with other jobs, so each number that matters is a ratio of variants run side by side, "
            "repetitions interleaved, medians reported.\n")
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else head
    section = (f"<!-- bench:{name} -->\n## {title}\n\nCommand: `{command}`\n\nMachine: {machine()}\n\n"
               f"{body.strip()}\n<!-- /bench:{name} -->\n")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n?", re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    BENCHMARKS.write_text(text)
    print(section)


def table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def calibration() -> float:
    """Seconds for a fixed CPU workload (numpy matmuls and a Python loop), timed next to a benchmark's own runs:
    a benchmark that has no rival to compare with reports its time in these units too, so runs on a busier or
    a faster machine can be compared."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 128))
    t = time.perf_counter()
    for _ in range(50):
        a = np.tanh(a @ a.T / 128)
    s = 0
    for i in range(100_000):
        s += i % 7
    return time.perf_counter() - t


# --------------------------------------------------------------- transfer benchmarks: the CLI, runs at the target


def mutransfer(db: str, *args: str) -> str:
    """`mutransfer ARGS --db DB` from this venv; its stdout, or exit with what it printed."""
    exe = Path(PYTHON).parent / "mutransfer"
    res = subprocess.run([str(exe), *args, "--db", db], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"mutransfer {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                         f"{res.stderr[-3000:]}")
    return res.stdout


def run_key(param: str, hp: dict[str, float], seed: int) -> str:
    """The cache key of one run at the target width: its parametrization, hyperparameters and seed."""
    return f"{param}/" + "/".join(f"{k}{v:.6g}" for k, v in sorted(hp.items())) + f"/s{seed}"


def _train_at_width(job: dict[str, Any]) -> dict[str, Any]:
    """One trial of the recipe's base proxy at job["width"], in a worker process (one thread: two of them share
    the two cores)."""
    import time
    from dataclasses import replace

    from mutransfer.plan import spec_for
    from mutransfer.recipe import load_recipe
    from mutransfer.train import train

    recipe = load_recipe(job["recipe"])
    scale = recipe.scales.base.model_copy(update={"width": job["width"]})
    spec = replace(spec_for(recipe, job["param"], scale, 0, 0, job["hp"]), seed=job["seed"], key=job["key"])
    t = time.perf_counter()
    curve: list[dict[str, float]] = []  # every evaluation, kept so the noise of the metric can be read afterwards
    res = train(spec, lambda p: curve.append({k: p[k] for k in ("step", "train_loss", "val_loss")}), threads=1)
    return {"key": job["key"], "param": job["param"], "hp": job["hp"], "seed": job["seed"], "status": res.status,
            "metric": res.metric, "flops": res.flops, "wall_s": time.perf_counter() - t, "curve": curve}


def train_at_width(jobs: list[tuple[str, dict[str, float]]], *, recipe: Path, width: int, seeds: tuple[int, ...],
                   runs_path: Path, workers: int, on_run: Callable[[dict[str, Any]], None] | None = None
                   ) -> dict[str, Any]:
    """Train the (parametrization, hyperparameters) jobs at `width`, each with every seed, in order, skipping those
    already in `runs_path` (key -> result, rewritten after every run: an interrupted scan resumes); `on_run(runs)`
    after each one, so a section can be rewritten as results arrive."""
    from concurrent.futures import ProcessPoolExecutor

    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    todo = [{"key": run_key(p, hp, s), "param": p, "hp": hp, "seed": s, "recipe": str(recipe), "width": width}
            for p, hp in jobs for s in seeds if run_key(p, hp, s) not in runs]
    todo = list({j["key"]: j for j in todo}.values())
    if todo:
        print(f"training {len(todo)} width-{width} runs on {workers} workers", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(workers) as pool:
            for i, r in enumerate(pool.map(_train_at_width, todo), 1):
                runs[r["key"]] = r
                runs_path.write_text(json.dumps(runs, indent=1))
                print(f"  [{i}/{len(todo)}] {r['key']}: {r['status']} {r['metric']} ({r['wall_s']:.0f} s)",
                      file=sys.stderr, flush=True)
                if on_run is not None:
                    on_run(runs)
    return runs
