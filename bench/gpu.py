"""On a GPU: a small sweep with `train.device: cuda`, then proxies/hour one at a time vs `train.batch_trials: K`.

    python3 bench/gpu.py [--budget-s 480] [--k 16] [--widths 64,128,256,512] [--steps 100] [--reps 3]
                         [--batch-size 32] [--seq-len 64] [--parts sweep,batched] [--out DIR]
    python3 bench/gpu.py --smoke          # a tiny version on the CPU: checks the script, writes nothing
    python3 bench/gpu.py --apply FILE     # copy the GPU section of FILE (a BENCHMARKS.md from the device) here

Part 1 (`sweep`): a small real sweep through `mutransfer.api` (open_store on a temporary SQLite file, sweep, fit,
export) of the µP GPT on characters (this checkout's `mutransfer/` sources) at widths 64, 128 and 256 with
`train.device: cuda` and `train.batch_trials: 8`, in a child process with its own time limit (a Ray that hangs
cannot take the rest of the budget): its wall time, trials by status, and the learning rate fit and export give.

Part 2 (`batched`): at each width, K trials of one shape (different lr and output_mult; bench/batched.py's GPT
recipe on CUDA) trained one at a time through `train.train` vs at once as one stacked model through
`batched.train_batch` (what a sweep with `train.batch_trials: K` runs per pack), model building included, a warm-up
of each variant first (excluded), repetitions interleaved, `torch.cuda.synchronize()` before each clock read; peak
memory is `torch.cuda.max_memory_allocated` per variant. Speedup = median of per-repetition ratios (one at a time /
batched) = batched trials/hour / one-at-a-time trials/hour. Goal (issue 19): >= 5x at every width <= 256.

The budget (`--budget-s`, wall clock from the start) covers both parts: before each width the script estimates
that width's time from the last one and stops adding widths when it would overrun, then writes what it measured and
names the widths it skipped. It writes the `gpu` section of BENCHMARKS.md (never a number it did not measure) and,
with `--out DIR`, copies BENCHMARKS.md, the section and the raw numbers (gpu.json) there after every width.
Without CUDA it exits with code 2 (unless `--smoke`).

On the device machine (tool `run`, kind nvidia-h200; /work/.library/device/README.md and KINDS.md): python3 there
is Python 3.12 with torch 2.11 (cu130), numpy, pandas, scipy, scikit-learn, pyyaml, rich, typer, attrs, markupsafe,
pyarrow, msgpack, grpcio and requests, but not mup, pydantic, ray, sqlalchemy, alembic or jsonschema, and nothing
can be fetched there: the missing packages travel as wheels in `.whl/` (ignored, carried). The venv here is Python
3.11, so it cannot travel. Once, here, in the root of the checkout the session sends (the tool sends the session's
own checkout, not a helper's worktree):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \\
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \\
        typing-extensions==4.16.0 ray==2.60.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 jsonschema==4.26.0 \\
        jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
    # mup is pure Python; PyPI may hold only its source release, so let pip make the wheel (py3-none-any):
    python3 -m pip wheel --no-deps -w .whl mup==1.0.0
    # Ray's wheel is about 75 MiB (zipping this venv's ray gave 79 MB), over the 64 MiB that travels. Its Java
    # jar (~31 MB) and the libraries no sweep imports come out; that left about 44 MB when tried on this venv's ray:
    zip -q -d .whl/ray-2.60.0-*.whl 'ray/jars/*' 'ray/rllib/*' 'ray/serve/*' 'ray/llm/*'
    du -ch .whl | tail -1    # with the checkout's files, under 64 MiB

(These are the versions this project's venv runs; if pip finds no matching distribution, add `--platform
manylinux_2_N_x86_64` for other N, as the device README says. Part 2 alone needs only mup and the first five: without
ray the script skips part 1 and says so; `--parts batched` skips it on purpose. Not tried from here: this session
could not run pip; the sizes above are estimates, and that pip installs a wheel with entries deleted is read from
pip's code, which does not check RECORD against the archive.) Then one call of `run`, with
carry [".whl"] and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT

The reply brings BENCHMARKS.md, gpu_section.md and gpu.json back from $OUT (under files_at); here,
`.venv/bin/python bench/gpu.py --apply FILES_AT/BENCHMARKS.md` puts the GPU section into this checkout's
BENCHMARKS.md and leaves the other sections as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BENCHMARKS, ROOT, interleaved, table, update_section  # noqa: E402
from batched import crossover, recipe, summarize, time_batched, time_one_by_one  # noqa: E402

NAME = "gpu"
TITLE = "GPU: batched trials and a CUDA sweep"
GOAL = 5.0  # batched trials/hour over one-at-a-time trials/hour ...
GOAL_WIDTH = 256  # ... at every width up to this one (issue 19)
GIB = 2**30
ONE, BATCHED = "one by one", "batched"  # the variants, as bench/batched.py's summarize names them
MIN_SWEEP_S = 30.0  # part 1 is not started with less time than this left for it

# Part 1: the sweep. µP GPT on this checkout's sources as characters; every trial on `device`.
SWEEP = """\
name: gpu-sweep
description: bench/gpu.py, part 1
model: {{family: gpt, parametrization: mup, base_width: {base}, head_dim: 16}}
data: {{kind: chars, path: {data}}}
train: {{steps: {steps}, optimizer: adamw, schedule: cosine, warmup_steps: {warmup}, eval_interval: {eval_every},
        eval_batches: 4, device: {device}, batch_trials: {batch_trials}}}
search: {{samples: {samples}, seed: 0, space: {{lr: {{loguniform: [1.0e-4, 1.0e-1]}}}}}}
scales: {{base: {{width: {base}, depth: 2, batch_size: {batch_size}, seq_len: 64}}, vary: {{width: {widths}}}}}
target: {{width: 1024, depth: 2, batch_size: {batch_size}, seq_len: 64}}
resources: {{cpus: 1}}
"""


def sweep_settings(smoke: bool) -> dict[str, Any]:
    if smoke:
        return dict(base=32, widths=[32, 64], steps=20, warmup=2, eval_every=10, samples=2, batch_trials=2,
                    batch_size=8, device="cpu")
    return dict(base=64, widths=[64, 128, 256], steps=200, warmup=20, eval_every=50, samples=8, batch_trials=8,
                batch_size=32, device="cuda")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of both parts (default 480)")
    ap.add_argument("--sweep-timeout-s", type=float, default=200.0, help="the most part 1 may take (default 200)")
    ap.add_argument("--k", type=int, default=16, help="trials per batch in part 2 (default 16)")
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--steps", type=int, default=100, help="steps per trial in part 2 (default 100)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per step in part 2 (default 32)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--parts", default="sweep,batched", help="sweep, batched or both (default)")
    ap.add_argument("--out", type=Path, default=None, help="also copy BENCHMARKS.md, the section and gpu.json here")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run on the CPU (widths 32,64, 10 steps, K=2): prints the section, writes nothing")
    ap.add_argument("--apply", type=Path, default=None, metavar="FILE",
                    help="copy the GPU section of FILE (a BENCHMARKS.md the device wrote) into BENCHMARKS.md")
    ap.add_argument("--sweep-child", action="store_true", help=argparse.SUPPRESS)  # part 1, in its own process
    args = ap.parse_args(argv)
    if args.smoke:
        args.widths, args.steps, args.k, args.reps, args.batch_size = "32,64", 10, 2, 1, 8
        args.budget_s = min(args.budget_s, 150.0)
        args.sweep_timeout_s = min(args.sweep_timeout_s, 100.0)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"sweep", "batched"}:
        ap.error(f"--parts: {args.parts!r}: give sweep, batched or sweep,batched")
    args.parts = parts
    return args


def command(args: argparse.Namespace) -> str:
    """The command line of this run, for the section."""
    return (f"python3 bench/gpu.py --budget-s {args.budget_s:g} --sweep-timeout-s {args.sweep_timeout_s:g} "
            f"--k {args.k} --widths {args.widths} --steps {args.steps} --reps {args.reps} --batch-size "
            f"{args.batch_size} --seq-len {args.seq_len} --parts {','.join(sorted(args.parts, reverse=True))}")


# ------------------------------------------------------------------------------------------------ part 1: a sweep


def sweep_child(smoke: bool) -> None:
    """Part 1 in this process: sweep, fit, export through mutransfer.api; one JSON line on stdout, last."""
    from mutransfer import api

    cfg = sweep_settings(smoke)
    text = SWEEP.format(data=ROOT / "mutransfer", **cfg)
    out: dict[str, Any] = {"settings": cfg}
    with tempfile.TemporaryDirectory(prefix="mutransfer-gpu-") as tmp:
        os.environ.setdefault("MUTRANSFER_RAY_DIR", str(Path(tmp) / "ray"))
        path = Path(tmp) / "gpu-sweep.yaml"
        path.write_text(text)
        store = api.open_store(f"sqlite:///{Path(tmp) / 'sweep.db'}")
        notes: list[str] = []
        t = time.perf_counter()
        summary = api.sweep(path, store=store, progress=False, notify=notes.append)
        out["sweep_s"] = time.perf_counter() - t
        out["trials_s"] = summary.wall_time
        out["total"], out["ran"], out["counts"] = summary.total, summary.ran, dict(summary.counts)
        out["notes"] = [n for n in notes if n.startswith("coordinate check")]
        t = time.perf_counter()
        fitted = api.fit(store, summary.name)
        exp = api.export(store, summary.name, allow_extrapolation=True)
        out["fit_export_s"] = time.perf_counter() - t
        out["fit_id"] = fitted.fit_id
        searched = set(fitted.recipe.search.space)  # the other hyperparameters are the recipe's fixed values
        out["exported"] = {name: hp.get("value") for name, hp in exp.config["hyperparameters"].items()
                           if name in searched}
        out["target_width"] = exp.config["target"]["width"]
        out["problem"] = exp.problem
        store.close()
    print(json.dumps(out, default=str), flush=True)


def run_sweep_part(args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Part 1 in a child process (its own session: on timeout its Ray goes with it); what it measured, or why not."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "ray is not installed here (the device docstring's wheels bring it)"}
    if timeout < MIN_SWEEP_S:
        return {"skipped": f"the budget left {timeout:.0f} s for it"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--sweep-child"] + (["--smoke"] if args.smoke else [])
    # Ray's memory monitor kills workers when the machine's memory looks nearly full; the device machine's RAM
    # starts small and grows as it is used (device docs, H200.md), so its first reading would mislead it.
    env = dict(os.environ)
    env.setdefault("RAY_memory_monitor_refresh_ms", "0")  # Ray's own name for it (a RAY_ config, lower case)
    print(f"part 1: sweep (at most {timeout:.0f} s)", file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT first: the sweep marks itself interrupted and stops Ray; then the whole group, whatever is left
        # (Ray's agents outlive an interrupted start).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"failed": f"did not finish within its {timeout:.0f} s (stopped)", "wall_s": time.perf_counter() - t}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its Ray still there
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        return {"failed": f"the child exited with code {proc.returncode} (its error is in the log above)",
                "wall_s": time.perf_counter() - t}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"failed": f"the child's last line is not JSON: {lines[-1][:200]}", "wall_s": time.perf_counter() - t}


def sweep_text(res: dict[str, Any], smoke: bool) -> str:
    cfg = res.get("settings") or sweep_settings(smoke)
    what = (f"µP GPT on characters (`mutransfer/` sources), depth 2, head_dim 16, batch {cfg['batch_size']} x 64, "
            f"AdamW, cosine, {cfg['steps']} steps; widths {', '.join(map(str, cfg['widths']))}, {cfg['samples']} "
            f"learning rates each; `train.device: {cfg['device']}`, `train.batch_trials: {cfg['batch_trials']}`, "
            "`resources.cpus: 1`; SQLite in a temporary folder")
    head = f"**Part 1: a sweep through `mutransfer.api`** ({what}).\n\n"
    if "skipped" in res:
        return head + f"Not run: {res['skipped']}.\n"
    if "failed" in res:
        return head + f"Failed after {res['wall_s']:.0f} s: {res['failed']}. No sweep numbers are reported.\n"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(res["counts"].items()) if n)
    exported = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in res["exported"].items())
    flagged = f"; the extrapolation guard flagged it: {res['problem']}" if res.get("problem") else \
        "; within the searched range (no extrapolation flagged)"
    lines = [f"- sweep: {res['total']} trials ({counts}) in {res['sweep_s']:.1f} s wall for `api.sweep`, of which "
             f"{res['trials_s']:.1f} s in `run_sweep` (Ray's start and the trials; the rest: the recipe, data and "
             "model checks and the coordinate check)",
             *(f"- {n}" for n in res.get("notes", [])),
             f"- fit + export: {res['fit_export_s']:.1f} s; exported for width {res['target_width']}: {exported}"
             f"{flagged}"]
    return head + "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ part 2: batched


def measure_width(width: int, args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """K trials at `width`, one at a time vs batched: runs (s), trials/hour, speedup, peak memory; or the error."""
    import torch

    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    text = recipe("gpt", width=width, steps=args.steps, k=args.k, device="cuda" if cuda else "cpu",
                  batch_trials=args.k, batch_size=args.batch_size, seq_len=args.seq_len)
    specs = plan(parse_recipe(text))
    assert len(specs) == args.k, f"the recipe planned {len(specs)} trials, not {args.k}"
    peak: dict[str, int] = {}

    def timed(name: str, fn: Any, todo: list[Any]) -> float:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        s = fn(todo, sync)
        if cuda:
            peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())
        return s

    res: dict[str, Any] = {"width": width}
    if cuda:
        torch.cuda.empty_cache()  # the last width's cached blocks (not inside the timings: a sweep keeps its cache)
    t = time.perf_counter()
    variants = {ONE: partial(timed, ONE, time_one_by_one, specs), BATCHED: partial(timed, BATCHED, time_batched, specs)}
    try:  # warm-up, not counted: CUDA context and kernels, cuBLAS handles, the data cache
        res["warm_s"] = {ONE: timed(ONE, time_one_by_one, specs[:1]), BATCHED: timed(BATCHED, time_batched, specs)}
    except Exception as e:  # an error is a result: it goes into the table
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        print(f"  width {width}: {res['error']}", file=sys.stderr, flush=True)
        if cuda:
            torch.cuda.empty_cache()
        res["wall_s"] = time.perf_counter() - t
        return res
    print(f"width {width}: K={args.k}, {args.steps} steps", file=sys.stderr, flush=True)
    runs = interleaved(variants, args.reps)
    sp, per_hour = summarize(runs, args.k)
    res.update(runs=runs, speedup=sp, per_hour=per_hour, peak=peak, wall_s=time.perf_counter() - t)
    return res


def goal_cell(width: int, sp: float) -> str:
    if width > GOAL_WIDTH:
        return f"n/a (goal is for width ≤ {GOAL_WIDTH})"
    return "met" if sp >= GOAL else "missed"


def batched_text(results: list[dict[str, Any]], skipped: list[int], args: argparse.Namespace, cuda: bool) -> str:
    gib = (lambda b: f"{b / GIB:.2f}") if cuda else (lambda b: "-")
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["width"], "-", "-", "-", f"not measured: {r['error']}", "-", "-", "-"])
            continue
        rows.append([r["width"], f"{r['per_hour'][ONE]:,.0f}", f"{r['per_hour'][BATCHED]:,.0f}",
                     f"{r['speedup']:.2f}x", goal_cell(r["width"], r["speedup"]),
                     gib(r["peak"].get(ONE, 0)), gib(r["peak"].get(BATCHED, 0)),
                     ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["runs"][ONE], r["runs"][BATCHED], strict=True))])
    where = "CUDA" if cuda else "the CPU (smoke)"
    head = (f"**Part 2: proxies/hour, one at a time vs `train.batch_trials: {args.k}`** on {where}: {args.k} trials "
            f"of one shape (µP GPT, depth 2, head_dim 16, batch {args.batch_size} x {args.seq_len} characters, AdamW, "
            f"cosine, different lr and output_mult), {args.steps} steps each and one evaluation, trained one at a "
            "time through `train.train` vs at once through `batched.train_batch`, model building included; a "
            f"warm-up of each variant first (not counted); {args.reps} repetition{'s' * (args.reps != 1)} interleaved"
            + (", `torch.cuda.synchronize()` before each clock read; peak = `torch.cuda.max_memory_allocated` "
               "(one trial / the K stacked)" if cuda else "") + "; speedup = median of per-repetition ratios = "
            "batched trials/hour ÷ one-at-a-time trials/hour.\n\n")
    header = ["width", "trials/hour one at a time", f"trials/hour batched (K={args.k})", "speedup",
              f"goal ≥ {GOAL:g}x", "peak GiB one trial", f"peak GiB K={args.k}", "runs s (one at a time/batched)"]
    notes = []
    ok = [r for r in results if "error" not in r]
    small = [r for r in ok if r["width"] <= GOAL_WIDTH]
    unmeasured = [w for w in [*skipped, *(r["width"] for r in results if "error" in r)] if w <= GOAL_WIDTH]
    if small:
        low = min(small, key=lambda r: r["speedup"])
        verdict = "met" if low["speedup"] >= GOAL else "missed"
        where_low = f"lowest {low['speedup']:.2f}x at width {low['width']}"
        tail = f"; not settled for width {', '.join(map(str, sorted(unmeasured)))} (not measured)" if unmeasured else ""
        notes.append(f"goal ≥ {GOAL:g}x at every width ≤ {GOAL_WIDTH}: **{verdict}** over the widths measured "
                     f"({where_low}){tail}")
    else:
        notes.append(f"goal ≥ {GOAL:g}x at every width ≤ {GOAL_WIDTH}: not settled (no width ≤ {GOAL_WIDTH} measured)")
    if len(ok) >= 2:
        ws, sps = [r["width"] for r in ok], [r["speedup"] for r in ok]
        notes.append(f"{GOAL:g}x up to width {crossover(ws, sps, GOAL)}; batched no faster from width "
                     f"{crossover(ws, sps, 1.0)} (log-interpolated between measured widths)")
    if skipped:
        notes.append(f"skipped, the budget ({args.budget_s:g} s) running low: width {', '.join(map(str, skipped))}")
    return head + (table(header, rows) if rows else "No width was measured.") + "\n\n" + \
        "\n".join(f"- {n}" for n in notes) + "\n"


# ------------------------------------------------------------------------------------------------ the section


def device_text(cuda: bool) -> str:
    import torch

    if not cuda:
        return f"Device: the CPU (smoke run); torch {torch.__version__}."
    props = torch.cuda.get_device_properties(0)
    tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off (torch's default)"
    return (f"Device: {torch.cuda.get_device_name(0)} ({props.total_memory / GIB:.0f} GiB, {props.multi_processor_count}"
            f" multiprocessors), CUDA {torch.version.cuda}, torch {torch.__version__}; float32 throughout, TF32 "
            f"matmuls {tf32}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def body(args: argparse.Namespace, cuda: bool, sweep: dict[str, Any] | None, results: list[dict[str, Any]],
         skipped: list[int], elapsed: float) -> str:
    parts = [device_text(cuda), f"Whole run {elapsed:.0f} s of a {args.budget_s:g} s budget."]
    parts.append(sweep_text(sweep, args.smoke) if sweep is not None else "**Part 1 (sweep)**: not asked for "
                 "(`--parts`).\n")
    parts.append(batched_text(results, skipped, args, cuda) if "batched" in args.parts else
                 "**Part 2 (batched)**: not asked for (`--parts`).\n")
    return "\n\n".join(p.strip() for p in parts) + "\n"


def write_section(args: argparse.Namespace, text: str) -> None:
    """update_section's machine line names ray's version: without ray (part 2 alone), it says so."""
    stub = None
    try:
        import ray  # noqa: F401
    except ImportError:
        import types

        stub = sys.modules["ray"] = types.SimpleNamespace(__version__="not installed")  # type: ignore[assignment]
    try:
        update_section(NAME, TITLE, command(args), text)
    finally:
        if stub is not None:
            del sys.modules["ray"]


def save(args: argparse.Namespace, data: dict[str, Any], section: str | None) -> None:
    """Into --out: gpu.json (raw numbers) and, once written, the section and BENCHMARKS.md."""
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(data, indent=1, default=str))
    if section is not None:
        (args.out / "gpu_section.md").write_text(section)
        if not args.smoke and BENCHMARKS.exists():
            shutil.copyfile(BENCHMARKS, args.out / "BENCHMARKS.md")


def section_of(text: str) -> str | None:
    m = re.search(rf"<!-- bench:{NAME} -->.*?<!-- /bench:{NAME} -->\n?", text, re.S)
    return m.group(0) if m else None


def apply(path: Path) -> None:
    """Put the GPU section of `path` into this checkout's BENCHMARKS.md, the other sections untouched."""
    new = section_of(path.read_text())
    if new is None:
        raise SystemExit(f"{path}: no <!-- bench:{NAME} --> section in it")
    text = BENCHMARKS.read_text()
    old = section_of(text)
    text = text.replace(old, new) if old is not None else text.rstrip("\n") + "\n\n" + new
    BENCHMARKS.write_text(text)
    print(new)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.apply is not None:
        apply(args.apply)
        return 0
    if args.sweep_child:
        sweep_child(args.smoke)
        return 0
    start = time.perf_counter()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench/gpu.py needs a CUDA device: torch.cuda.is_available() is False (run it on the GPU machine as "
              "its docstring says, or --smoke for a tiny check on the CPU)", file=sys.stderr)
        return 2
    cuda = cuda and not args.smoke
    torch.set_num_threads(1)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    def snapshot(section: str | None = None) -> None:
        save(args, {"command": command(args), "sweep": sweep, "widths": results, "skipped": skipped,
                    "elapsed_s": time.perf_counter() - start}, section)

    sweep: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    if "sweep" in args.parts:
        sweep = run_sweep_part(args, min(args.sweep_timeout_s, left() - 30))
        print(f"part 1: {json.dumps(sweep, default=str)[:600]}", file=sys.stderr, flush=True)
        snapshot()
    if "batched" in args.parts:
        if cuda:  # the CUDA context and cuBLAS's first handle: not in the first width's time (nor its estimate)
            torch.ones(64, 64, device="cuda").matmul(torch.ones(64, 64, device="cuda")).sum().item()
        widths = [int(w) for w in args.widths.split(",")]
        last: list[float] = []  # wall time of each measured width
        for i, width in enumerate(widths):
            # The next width takes the last one's time times the growth seen so far (at least 1.2, at most 4; 1.5
            # after one width: a small proxy's time is mostly fixed costs); the first width is always tried. 5 s
            # are kept for writing.
            if last:
                growth = min(4.0, max(1.2, last[-1] / last[-2])) if len(last) >= 2 else 1.5
                need = last[-1] * growth
                if need > left() - 5:
                    skipped = widths[i:]
                    print(f"budget: {left():.0f} s left, width {width} needs about {need:.0f} s: skipping "
                          f"{skipped}", file=sys.stderr, flush=True)
                    break
            r = measure_width(width, args, cuda)
            results.append(r)
            last.append(r["wall_s"])
            snapshot()
    text = body(args, cuda, sweep, results, skipped, time.perf_counter() - start)
    if args.smoke:
        section = f"## {TITLE} (smoke run on the CPU: not written to BENCHMARKS.md)\n\n{text}"
        print(section)
    else:
        write_section(args, text)
        section = section_of(BENCHMARKS.read_text())
    snapshot(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
