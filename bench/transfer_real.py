"""Transfer on a real task: does the exported learning rate hold at a width the proxies never saw?

    .venv/bin/python bench/transfer_real.py [--label after] [--workers 2]

The built-in GPT on this Python's standard library source (characters), µP and SP proxies at widths 32, 64 and 128
through `mutransfer sweep` and `mutransfer fit`, then a direct LR scan at width 512 (2 seeds per value) as the
ground truth. The recipe's target is that width-512 model, so the exported value is the one the scan judges. Each
exported value (and, for comparison, the base proxy's optimum copied unchanged) is trained at width 512 with the
same two seeds, and its loss is compared with the direct scan's best. Compute: the FLOPs of the proxy sweep
against those of the direct scan.

Everything trained is cached under bench/.transfer_real/ (the sweep's SQLite database, the width-512 runs as JSON):
a second run with another `--label` (e.g. after a change to the fit) re-fits the same proxies and trains only the
exported values it has not seen. Every label's rows stay in the BENCHMARKS.md section, so a change shows up as a
before/after table measured against one scan.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402
from _common import table, update_section  # noqa: E402

WORK = HERE / ".transfer_real"
DB = f"sqlite:///{WORK / 'sweep.db'}"
RUNS = WORK / "runs.json"  # width-512 trainings: key -> result
LABELS = WORK / "labels.json"  # label -> exported values and the fit's readings
TARGET_WIDTH = 512
SEEDS = (0, 1)
RECIPE = """\
name: transfer-real
description: the transfer benchmark's proxies (bench/transfer_real.py)
model: {family: gpt, parametrization: [mup, sp], base_width: 32, head_dim: 8}
data: {kind: chars, max_chars: 1000000}
train: {steps: 200, optimizer: adamw, schedule: cosine, warmup_steps: 20, eval_interval: 50, eval_batches: 8,
        metric: val_loss}
search: {samples: 12, repeats: 2, seed: 0, space: {lr: {loguniform: [1.0e-4, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32, seq_len: 64}, vary: {width: [32, 64, 128]}}
target: {width: 512, depth: 2, batch_size: 32, seq_len: 64, tokens: 409600}
resources: {cpus: 1}
"""
# The direct scan at width 512: half an octave apart around where µP's proxies put the optimum, an octave apart
# for SP (whose optimum moves with width; its range covers where SP's proxies and its drift point). Sized for a
# 2-core CPU, where one width-512 run takes 3-5 minutes.
SCAN = {
    "mup": [2.0 ** (-8 + 0.5 * i) for i in range(5)],  # 0.0039 .. 0.0156
    "sp": [2.0 ** (-11 + i) for i in range(4)],  # 0.00049 .. 0.0039
}


def recipe_path() -> Path:
    WORK.mkdir(exist_ok=True)
    p = WORK / "transfer-real.yaml"
    p.write_text(RECIPE)
    return p


def mutransfer(*args: str) -> str:
    return _common.mutransfer(DB, *args)


def run_key(param: str, lr: float, seed: int) -> str:
    return _common.run_key(param, {"lr": lr}, seed)


def train_at_target(jobs: list[tuple[str, float]], workers: int, on_run: Any = None) -> dict[str, Any]:
    """Train the (parametrization, lr) jobs at width 512, each with every seed, in order; `on_run(runs)` after
    each one (the section is rewritten as results arrive: an interrupted run still leaves what it measured)."""
    return _common.train_at_width([(p, {"lr": lr}) for p, lr in jobs], recipe=recipe_path(), width=TARGET_WIDTH,
                                  seeds=SEEDS, runs_path=RUNS, workers=workers, on_run=on_run)


def seed_spread(runs: dict[str, Any], param: str, lr: float) -> str:
    ms = [runs.get(run_key(param, lr, s), {}).get("metric") for s in SEEDS]
    if any(m is None or not math.isfinite(m) for m in ms):
        return "-"
    return f"{max(ms) - min(ms):.3f}"


def mean_metric(runs: dict[str, Any], param: str, lr: float) -> float | None:
    if any(run_key(param, lr, s) not in runs for s in SEEDS):
        return math.nan  # not trained (yet)
    ms = [runs[run_key(param, lr, s)]["metric"] for s in SEEDS]
    if any(m is None or not math.isfinite(m) for m in ms):
        return None  # a diverged seed: the value does not train
    return sum(ms) / len(ms)


def lr_curve(runs: dict[str, Any], param: str, n_boot: int = 2000) -> dict[str, Any] | None:
    """A quadratic in log2(lr) through every completed width-512 run of `param` (the scan's and the evaluated
    values', each seed its own point) plus a level per seed, and a wild bootstrap of its residuals: the direct
    optimum and the loss any lr gets by the curve.

    Why: one run's loss varies by up to 0.15 between seeds at one lr here, more than the 1% (0.023) the goal asks
    about, and much of that is the seed itself (its init and data order: one seed lower at every lr), which the
    per-seed level takes out since every value is trained with the same seeds. The scan's best mean, a minimum over
    noisy means, also reads low; the curve pools every run near the optimum. The curve's coefficients are
    (quadratic, linear, one level per seed). None with fewer than 6 runs or a fitted curve that is not convex."""
    import numpy as np

    pts = [(math.log2(r["hp"]["lr"]), SEEDS.index(r["seed"]), r["metric"]) for r in runs.values()
           if r["param"] == param and r["seed"] in SEEDS and r["metric"] is not None and math.isfinite(r["metric"])]
    if len(pts) < 6:
        return None
    u, s, y = (np.array(c) for c in zip(*pts, strict=True))
    s = s.astype(int)
    lo, hi = min(math.log2(v) for v in SCAN[param]), max(math.log2(v) for v in SCAN[param])

    X = np.column_stack([u**2, u, np.eye(len(SEEDS))[s]])
    c = np.linalg.lstsq(X, y, rcond=None)[0]
    if c[0] <= 0:
        return None
    # A wild bootstrap (each residual's sign flipped at random, the design kept): resampling the half-dozen
    # learning rates themselves left replicates with two or three distinct values and a curve fitted to noise.
    fitted = X @ c
    resid = (y - fitted) * np.sqrt(len(y) / max(len(y) - X.shape[1], 1))  # the fit's degrees of freedom
    rng = np.random.default_rng(0)
    boots = [np.linalg.lstsq(X, fitted + resid * rng.choice([-1.0, 1.0], len(y)), rcond=None)[0]
             for _ in range(n_boot)]
    return {"coef": c, "boots": boots, "lo": lo, "hi": hi, "n": len(u)}


def curve_at(c: Any, x: Any) -> Any:
    """The curve's loss at log2 lr `x`, at the seeds' mean level."""
    import numpy as np

    return c[0] * np.asarray(x) ** 2 + c[1] * np.asarray(x) + float(np.mean(c[2:]))


def curve_min(curve: dict[str, Any], c: Any) -> float:
    """Where the curve `c` is lowest inside the scanned range (log2 lr); a replicate need not be convex."""
    import numpy as np

    grid = np.linspace(curve["lo"], curve["hi"], 401)
    return float(grid[np.argmin(curve_at(c, grid))])


def curve_gap(curve: dict[str, Any], lr: float) -> tuple[float, float, float] | None:
    """The curve's loss at `lr` against its minimum, in % of that minimum: the estimate and a 95% interval over the
    bootstrap. None outside the scanned range (a quadratic is no guide there)."""
    import numpy as np

    x = math.log2(lr)
    if not curve["lo"] - 0.25 <= x <= curve["hi"] + 0.25:
        return None

    def gap(c: np.ndarray) -> float:
        best = curve_at(c, curve_min(curve, c))
        return float(100.0 * (curve_at(c, x) - best) / best)

    gs = np.array([gap(b) for b in curve["boots"]])
    return gap(curve["coef"]), float(np.percentile(gs, 2.5)), float(np.percentile(gs, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="current", help="name of this run's fit code in the before/after table")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from what is cached under "
                    "bench/.transfer_real/, training nothing (e.g. after a run was stopped)")
    args = ap.parse_args()
    os.environ.setdefault("MUTRANSFER_THREADS", "1")
    t0 = time.perf_counter()
    if args.report_only:
        report(args.label, json.loads(LABELS.read_text()), json.loads(RUNS.read_text()), None)
        return
    path = recipe_path()

    mutransfer("sweep", str(path))  # resumes: finished trials are kept
    fit = json.loads(mutransfer("fit", "transfer-real", "--json"))
    fit_res = fit.get("fit", fit)
    readings: dict[str, Any] = {}
    for t in fit_res["transfers"]:
        if t["hparam"] == "lr":
            law = next((x for x in fit_res["laws"] if x["parametrization"] == t["parametrization"]
                        and x["hparam"] == "lr" and x["axis"] == "width"), {})
            readings[t["parametrization"]] = {"exported": t["value"], "lo": t["lo"], "hi": t["hi"],
                                              "base_optimum": t["base_value"], "slope": law.get("slope"),
                                              "slope_lo": law.get("slope_lo"), "slope_hi": law.get("slope_hi")}
    labels = json.loads(LABELS.read_text()) if LABELS.exists() else {}
    labels[args.label] = readings
    LABELS.write_text(json.dumps(labels, indent=1))

    # Exported values first, then the scan nearest them: on a slow machine the runs that decide come first.
    jobs: list[tuple[str, float]] = []
    for lab in labels.values():
        for p, r in lab.items():
            for v in (r["exported"], r["base_optimum"] if p == "mup" else None):
                if v is not None and math.isfinite(v) and 1e-7 < v < 10:
                    jobs.append((p, float(v)))
    ref = {p: (labels.get(args.label, {}).get(p) or {}).get("exported") or 1e-2 for p in SCAN}
    scan = sorted(((p, lr) for p, lrs in SCAN.items() for lr in lrs),
                  key=lambda j: (j[0] != "mup", abs(math.log2(j[1] / ref[j[0]]))))
    jobs += scan
    write = lambda runs: report(args.label, labels, runs, t0)  # noqa: E731
    runs = train_at_target(jobs, args.workers, on_run=write)
    write(runs)


def report(label: str, labels: dict[str, Any], runs: dict[str, Any], t0: float | None) -> None:
    """Rewrite the section; `t0` None: re-rendered from the cache (the wall time is then the runs' own)."""
    from mutransfer.storage import Store

    store = Store.open(DB)
    sweep = store.get_sweep("transfer-real")
    trials = store.trials_frame(sweep.id)
    store.close()
    scan_keys = [run_key(p, lr, s) for p, lrs in SCAN.items() for lr in lrs for s in SEEDS]
    n_scan = sum(k in runs for k in scan_keys)
    compute = []
    for p in SCAN:
        proxy = float(trials.loc[trials["parametrization"] == p, "flops"].fillna(0).sum())
        keys = [run_key(p, lr, s) for lr in SCAN[p] for s in SEEDS]
        done = [runs[k]["flops"] or 0 for k in keys if k in runs]
        # A scan not finished yet is counted at its mean run's cost: the full scan's compute.
        direct = sum(done) / len(done) * len(keys) if done else float("nan")
        compute.append(f"{p}: proxies {proxy:.3g} FLOPs, direct scan ({len(keys)} runs) {direct:.3g}: "
                       f"**{proxy / direct:.2f}x**")

    rows = []
    summary = []
    for p in ("mup", "sp"):
        curve = lr_curve(runs, p)
        scan = [(lr, mean_metric(runs, p, lr)) for lr in SCAN[p]]
        done = [(lr, m) for lr, m in scan if m is not None and not math.isnan(m)]
        best_lr, best = min(done, key=lambda x: x[1]) if done else (None, None)
        shown = ", ".join(f"{lr:.3g}: " + ("diverged" if m is None else "not run" if math.isnan(m) else
                                             f"{m:.3f} (seeds {seed_spread(runs, p, lr)} apart)")
                          for lr, m in scan)
        summary.append(f"{p}: direct best lr {best_lr:.4g} (val {best:.4f}); scan {shown}" if best is not None
                       else f"{p}: scan not run yet ({shown})")
        if curve is not None:
            c = curve["coef"]
            v = curve_min(curve, c)
            summary.append(f"{p}: the curve through its {curve['n']} width-{TARGET_WIDTH} runs: optimum lr "
                           f"{2 ** v:.4g}, val {float(curve_at(c, v)):.4f} (the seeds' levels "
                           f"{', '.join(f'{a:+.3f}' for a in c[2:] - c[2:].mean())} about their mean)")
        for lab, readings_l in labels.items():
            r = readings_l.get(p)
            if r is None:
                continue
            copied = (("base optimum copied", r["base_optimum"]),) if p == "mup" else ()
            for what, v in (("exported", r["exported"]), *copied):
                m = mean_metric(runs, p, float(v)) if v is not None else math.nan
                interval = (f"[{r['lo']:.3g}, {r['hi']:.3g}]" if what == "exported" and r["lo"] is not None
                            else "")
                slope = (f"{r['slope']:+.2f} [{r['slope_lo']:+.2f}, {r['slope_hi']:+.2f}]"
                         if what == "exported" and r.get("slope_lo") is not None else "")
                loss = "diverged" if m is None else "not run" if math.isnan(m) else f"{m:.4f}"
                gap = ("-" if m is None or math.isnan(m) or best is None else f"{100 * (m - best) / best:+.2f}%")
                spread = seed_spread(runs, p, float(v)) if v is not None else "-"
                cg = curve_gap(curve, float(v)) if curve is not None and v is not None and m is not None \
                    and not math.isnan(m) else None
                by_curve = "-" if cg is None else f"{cg[0]:+.2f}% [{cg[1]:+.2f}, {cg[2]:+.2f}]"
                rows.append([lab, p, what, "-" if v is None else f"{v:.4g} {interval}".strip(), slope, loss, spread,
                             gap, by_curve])
    worker_s = sum(r.get("wall_s", 0.0) for r in runs.values())
    wall = (f"Wall time of this run: {time.perf_counter() - t0:.0f} s." if t0 is not None else
            f"Re-rendered from the cache (`--report-only`); the width-{TARGET_WIDTH} runs took {worker_s:.0f} s of "
            "worker time in all.")
    body = f"""The built-in GPT (depth 2, head size 8, batch 32 x 64 characters, 200 AdamW steps, cosine) on this Python's
standard library source; µP and SP proxies at widths 32/64/128, 12 LR draws in [1e-4, 1e-1] x 2 seeds ({len(trials)}
proxy trials) through `mutransfer sweep` and `mutransfer fit`; ground truth: a direct LR scan at width
{TARGET_WIDTH} (the recipe's target), 2 seeds per value. Every value below was trained at width {TARGET_WIDTH} with
the same 2 seeds; the loss is their mean, compared with the scan's best. Each label is a version of the fit run on
the same proxies and judged against the same scan ("before": the fit of revision fb59df4, per-point quadratics and
a line through them; "after": the joint model).

{chr(10).join('- ' + s for s in summary)}

{table(["fit", "parametrization", "value", "lr at width 512 [95% interval]", "width slope [95%]", "val loss at 512",
        "seeds apart", "vs direct best", "by the curve [95%]"], rows)}

The two seeds of one value differ by up to the "seeds apart" column: a gap to the direct best smaller than that is
within seed noise. "By the curve": a quadratic in log2(lr) plus a level per seed through every width-{TARGET_WIDTH} run of
that parametrization, its value at the exported lr against its minimum inside the scanned range, with a 95%
interval from a wild bootstrap of its residuals: what the goal (within 1% of the direct best) is judged on, because one
run's noise is larger than 1% here (much of it the seed's own level, the same at every lr) and the best of the
scan's means reads low.

Compute of each route (the µTransfer route: that parametrization's proxy trials; direct: the width-{TARGET_WIDTH}
scan, {n_scan} of {len(scan_keys)} runs done at the time of writing, the rest counted at the mean run's cost):
{chr(10).join('- ' + c for c in compute)}

{wall}
"""
    update_section("transfer_real", "Transfer on a real task (GPT, chars, width 512)",
                   f".venv/bin/python bench/transfer_real.py --label {label}", body)


if __name__ == "__main__":
    main()
