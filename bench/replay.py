"""Replayed sweeps for bench/compute_to_answer.py: a sweep's plan, trained from curves known in advance, stopped by
Ray Tune's ASHA as `mutransfer sweep` stops it, refined as it refines, fitted by `mutransfer fit`'s fit_sweep."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from _common import table
from compute_to_answer import (
    DIRECT_LR_512,
    LR_RANGE,
    QUANTILE,
    RECIPE,
    REGRET,
    TARGET_WIDTH,
    TOLERANCE,
    WIDTHS,
    WORK,
    grid,
    regret_512,
)
from ray.tune.schedulers import TrialScheduler

from mutransfer.fit.stopped import stopped_floors
from mutransfer.fit.sweep import fit_sweep, joint_optima
from mutransfer.plan import TrialSpec, plan, point_costs, refine_specs
from mutransfer.recipe import EarlyStop, Recipe, parse_recipe
from mutransfer.stopping import ByScalePoint
from mutransfer.testing.synthetic import CLIFF, LEVEL, bowl

REFINE_SPAN = 0.15  # of the 10-octave range: within 1.5 octaves of the optimum
# The strategies: ASHA with its first rung at a quarter of the run (Ray Tune's usual shape) and at half of it; a
# refine round of as many draws as the first; the half-run ASHA and a refine round together.
ASHA_QUARTER = {"method": "asha", "grace_steps": 50, "reduction_factor": 3}
ASHA_HALF = {"method": "asha", "grace_steps": 100, "reduction_factor": 3}
# Each: (search.early_stop, the refine round, search.sampler). A refine round is (rounds, its samples as a share
# of the first round's, span, allocate); EVEN is one round of as many draws at every width.
# latin+refine-by-cost: a Latin first round, then one round of twice as many draws at width 32, and at 64 and 128
# as many as the same compute buys there (refine.allocate: by_cost: 2n x 1 / 3.2 and 2n x 1 / 11 rounded down).
EVEN = (1, 1.0, REFINE_SPAN, "even")
STRATEGY = {"random": (None, None, "random"), "asha-1/4": (ASHA_QUARTER, None, "random"),
            "asha-1/2": (ASHA_HALF, None, "random"), "refine": (None, EVEN, "random"),
            "asha-1/2+refine": (ASHA_HALF, EVEN, "random"), "latin": (None, None, "latin"),
            "latin+refine-by-cost": (None, (1, 2.0, REFINE_SPAN, "by_cost"), "latin")}
STRATEGIES = tuple(STRATEGY)
N_BOOT = 50  # bootstrap replicates per fit: the point estimate and the slope's selection, not the intervals
BUDGETS = {"random": (4, 6, 8, 12, 16, 24), "asha-1/4": (6, 8, 12, 16, 24), "asha-1/2": (6, 8, 12, 16, 24),
           "refine": (3, 4, 6, 8, 12), "asha-1/2+refine": (4, 6, 8, 12), "latin": (4, 6, 8, 12, 16),
           "latin+refine-by-cost": (3, 4, 6, 8)}

# The synthetic task's learning curves: excess over the final loss D·((T/t)^ALPHA - 1)·2^(-SPEED·z), z the
# octaves above the optimum: larger learning rates are ahead early (the short-horizon bias), all end where the bowl
# says. Per-trial noise NOISE on the final loss; each evaluation adds EVAL_NOISE of its own.
CURVE_D, ALPHA, SPEED = 0.25, 0.7, 0.35
NOISE, EVAL_NOISE = 0.08, 0.01
SYNTH_OPTIMUM = math.log2(0.008)  # µP: the same at every width (no drift)


@dataclass(frozen=True)
class _Trial:
    trial_id: str
    group: str


@dataclass
class Run:
    status: str  # completed | diverged
    metric: float | None
    curve: list[tuple[int, float]]  # (step, val_loss), every evaluation
    per_step: float  # training FLOPs per step
    done: int  # the steps it ran (a diverged run stops where it blew up)


class RealSource:
    """The pool: each width's grid of learning rates, trained once per seed (bench/compute_to_answer.py
    train_pool). A replayed sweep trains with one seed, as a sweep does: `use(sweep)` picks it."""

    def __init__(self) -> None:
        self.grid = np.log2(np.array(grid()))
        self.runs: dict[tuple[int, int], list[Run]] = {}  # (width, seed) -> a run per grid lr
        for w in WIDTHS:
            raw = json.loads((WORK / f"pool-w{w}.json").read_text())
            by = {(round(math.log2(r["hp"]["lr"]), 6), int(r["seed"])): r for r in raw.values()}
            for seed in sorted({s for _, s in by}):
                runs = []
                for u in self.grid:
                    r = by[(round(float(u), 6), seed)]
                    curve = [(int(p["step"]), float(p["val_loss"])) for p in r["curve"]]
                    done = curve[-1][0] if curve else 1
                    runs.append(Run(r["status"], r["metric"], curve, float(r["flops"]) / done, done))
                self.runs[(w, seed)] = runs
        # Only the seeds trained at every width.
        self.seeds = sorted(set.intersection(*({s for (w2, s) in self.runs if w2 == w} for w in WIDTHS)))
        self.seed = self.seeds[0]

    def use(self, sweep: int) -> None:
        self.seed = self.seeds[sweep % len(self.seeds)]

    def truth(self) -> float:
        return math.log2(DIRECT_LR_512)

    def run(self, spec: TrialSpec, rng: np.random.Generator) -> Run:
        k = int(np.argmin(np.abs(self.grid - math.log2(spec.hparams["lr"]))))
        return self.runs[(spec.scale.width, self.seed)][k]


class SyntheticSource:
    """The calibration bowl with learning curves (module constants); FLOPs as the real task's GPT at that width."""

    def __init__(self, flops_of: dict[int, float]) -> None:
        self.flops_of = flops_of

    def use(self, sweep: int) -> None:
        pass  # every sweep draws its own noise (the rng)

    def truth(self) -> float:
        return SYNTH_OPTIMUM

    def run(self, spec: TrialSpec, rng: np.random.Generator) -> Run:
        z = math.log2(spec.hparams["lr"]) - SYNTH_OPTIMUM
        steps, every = spec.steps, spec.train.eval_interval
        per_step = self.flops_of[spec.scale.width] / steps
        if z > CLIFF:
            return Run("diverged", None, [(every, math.nan)], per_step, every)
        final = LEVEL + bowl(z) + NOISE * rng.normal()
        curve = [(t, final + CURVE_D * ((steps / t) ** ALPHA - 1.0) * 2.0 ** (-SPEED * z) + EVAL_NOISE * rng.normal())
                 for t in range(every, steps + 1, every)]
        return Run("completed", curve[-1][1], curve, per_step, steps)


def _rows(spec: TrialSpec, run: Run, stop_at: int | None) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """The trial's row (as Store.trials_frame has it), its curve rows and the FLOPs it cost."""
    curve = run.curve if stop_at is None else [(t, v) for t, v in run.curve if t <= stop_at]
    status = "stopped" if stop_at is not None else run.status
    metric = curve[-1][1] if stop_at is not None else run.metric
    reached = curve[-1][0] if curve else 0
    flops = run.per_step * (reached if status == "stopped" else run.done)
    row = {"key": spec.key, "group": spec.group, "sample": spec.sample, "repeat": spec.repeat,
           "parametrization": spec.parametrization, **spec.scale.model_dump(), "steps_planned": spec.steps,
           "steps": reached, "status": status, "metric": metric, "role": "sweep", "round": spec.round,
           "hp.lr": spec.hparams["lr"], "flops": flops}
    points = [{"key": spec.key, "step": t, "name": "val_loss", "value": v} for t, v in curve]
    return row, points, flops


def _train(specs: Sequence[TrialSpec], source: Any, rng: np.random.Generator, early_stop: EarlyStop | None,
           history: dict[str, list[list[tuple[int, float]]]]) -> tuple[list[dict], list[dict], float]:
    """Run `specs` in plan order; with `early_stop`, each evaluation goes through the sweep's scheduler."""
    sched = None
    if early_stop is not None:
        sched = ByScalePoint(early_stop, {s.group: s.steps for s in specs}, lambda t: t.group, history=history)
    rows, points, flops = [], [], 0.0
    for spec in specs:
        run = source.run(spec, rng)
        stop_at = None
        if sched is not None:
            t = _Trial(spec.key, spec.group)
            sched.on_trial_add(None, t)
            for step, value in run.curve:
                objective = value if math.isfinite(value) else 1e9
                if sched.on_trial_result(None, t, {"step": step, "objective": objective}) == TrialScheduler.STOP:
                    stop_at = step
                    break
        row, pts, f = _rows(spec, run, stop_at)
        rows.append(row)
        points.extend(pts)
        flops += f
    return rows, points, flops


def _frame(rows: list[dict], points: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.DataFrame(rows)
    curves = pd.DataFrame(points, columns=["key", "step", "name", "value"])
    if (frame["status"] == "stopped").any():
        frame["floor"] = stopped_floors(frame, curves, "val_loss")
    return frame, curves


def replay(task: str, strategy: str, n: int, rep: int) -> tuple[float, float, float, float]:
    """One replayed sweep: (error of the transferred lr in octaves, its FLOPs, fit seconds, the transferred lr's
    log2; NaN when the fit transferred none)."""
    source = _SOURCES[task]
    source.use(rep)
    base = parse_recipe(RECIPE)
    stop, refine, sampler = STRATEGY[strategy]
    search = {**base.search.model_dump(), "samples": n, "seed": 1 + rep, "sampler": sampler}
    es = EarlyStop(**stop) if stop is not None else None
    if stop is not None:
        search["early_stop"] = stop
    if refine:
        rounds, share, span, allocate = refine
        search["refine"] = {"rounds": rounds, "samples": max(1, math.ceil(share * n)), "span": span,
                            "allocate": allocate}
    recipe = Recipe.model_validate({**base.model_dump(), "search": search})
    rng = np.random.default_rng([rep, n, STRATEGIES.index(strategy)])
    rows, points, flops = _train(plan(recipe), source, rng, es, {})
    t = time.perf_counter()
    for k in range(1, (refine[0] if refine else 0) + 1):
        # Each round is centred on the fit of every trial before it, and its trials compete with their curves.
        frame, curves = _frame(rows, points)
        centres = joint_optima(frame, recipe, n_boot=N_BOOT)
        history: dict[str, list[list[tuple[int, float]]]] = {}
        for key, c in curves.groupby("key", sort=False):
            history.setdefault(str(key).rsplit("/", 1)[0], []).append(list(zip(c["step"], c["value"], strict=True)))
        more = refine_specs(recipe, k, centres, point_costs(frame))
        r2, p2, f2 = _train(more, source, rng, es, history)
        rows, points, flops = rows + r2, points + p2, flops + f2
    frame, _ = _frame(rows, points)
    fit = fit_sweep(frame, recipe, n_boot=N_BOOT)
    value = next((x.value for x in fit.transfers if x.hparam == "lr" and x.parametrization == "mup"), None)
    u = math.log2(value) if value else math.nan
    err = abs(u - source.truth()) if value else math.inf
    return err, flops, time.perf_counter() - t, u


_SOURCES: dict[str, Any] = {}


def _init(tasks: dict[str, Any]) -> None:
    _SOURCES.update(tasks)


def _job(args: tuple[str, str, int, int]) -> tuple[str, str, int, int, float, float, float, float]:
    return (*args, *replay(*args))


def target_trial_flops() -> float:
    """One width-512 trial of the real task's recipe: its training FLOPs as the sweep counts them."""
    from dataclasses import replace as dc_replace

    import torch

    from mutransfer.data import load_dataset
    from mutransfer.parametrization import build, count_params
    from mutransfer.plan import spec_for
    from mutransfer.train import train_flops_per_token

    r = parse_recipe(RECIPE)
    spec = spec_for(r, "mup", r.scales.base.model_copy(update={"width": TARGET_WIDTH}), 0, 0, {"lr": 1e-3})
    spec = dc_replace(spec)
    ds = load_dataset(spec.data, spec.model)
    n = count_params(build(spec, ds, torch.device("meta")))
    s = spec.scale
    return train_flops_per_token(spec, n, s.seq_len) * spec.steps * s.batch_size * s.seq_len


def direct_draws(band: float = 2 * TOLERANCE) -> int:
    """Random draws at the target that put one inside a `band` octaves wide (by default within TOLERANCE octaves of
    its optimum) with probability QUANTILE: a lower bound on direct tuning (it assumes the draw nearest the optimum
    is recognised as the best, noise-free)."""
    lo, hi = (math.log2(v) for v in LR_RANGE)
    p = band / (hi - lo)
    return math.ceil(math.log(1 - QUANTILE) / math.log(1 - p))


def regret_band() -> float:
    """How many octaves of learning rate at width 512 lie within REGRET % of the direct best, by the curve."""
    lo, hi = (math.log2(v) for v in LR_RANGE)
    g = np.linspace(lo, hi, 4001)
    return float(np.mean([regret_512(float(u)) <= REGRET for u in g]) * (hi - lo))


def _p(errs: Sequence[float], q: float = QUANTILE) -> float:
    """The q-quantile of the errors, a sweep with no transferred value counting as the worst (not NaN)."""
    e = np.asarray(errs, dtype=float)
    return float(np.quantile(np.where(np.isfinite(e), e, 1e9), q))


def _p_interval(errs: np.ndarray, level: float = 0.9, n_boot: int = 2000) -> tuple[float, float]:
    """A bootstrap interval (over the replayed sweeps) of the p90 itself: how far another set of sweeps could
    put it, which decides whether a budget counts as reaching the answer."""
    rng = np.random.default_rng(0)
    e = np.where(np.isfinite(errs), errs, 1e9)
    qs = np.quantile(e[rng.integers(0, len(e), (n_boot, len(e)))], QUANTILE, axis=1)
    lo, hi = np.quantile(qs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _answer(flops: dict[int, float], errs: dict[int, list[float]], tolerance: float = TOLERANCE
            ) -> tuple[float | None, int | None]:
    """The cheapest budget whose p90 error is within `tolerance` (and every larger budget's too), and its FLOPs."""
    ok = [n for n in sorted(errs) if all(_p(errs[m]) <= tolerance for m in errs if m >= n)]
    if not ok:
        return None, None
    return flops[ok[0]], ok[0]


def run_benchmark(args: Any, t0: float) -> str:
    tasks: dict[str, Any] = {}
    if not args.synthetic_only:
        tasks["real"] = RealSource()
    per_width = {w: _width_flops(w) for w in WIDTHS}
    tasks["synthetic"] = SyntheticSource(per_width)
    jobs = [(task, s, n, rep) for task in tasks for s in STRATEGIES for n in BUDGETS[s] for rep in range(args.replicates)]
    results: dict[tuple[str, str, int], list[tuple[float, float, float, float]]] = {}
    print(f"replaying {len(jobs)} sweeps on {args.workers} workers", flush=True)
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(tasks,)) as pool:
        for i, (task, s, n, _rep, err, fl, secs, u) in enumerate(pool.map(_job, jobs, chunksize=4), 1):
            results.setdefault((task, s, n), []).append((err, fl, secs, u))
            if i % 200 == 0:
                print(f"  {i}/{len(jobs)} ({time.time() - t0:.0f} s)", flush=True)
    return _report(args, results, tasks, time.time() - t0)


def _width_flops(width: int) -> float:
    raw = json.loads((WORK / f"pool-w{width}.json").read_text()) if (WORK / f"pool-w{width}.json").exists() else {}
    done = [r["flops"] for r in raw.values() if r["status"] == "completed"]
    if done:
        return float(np.median(done))
    return target_trial_flops() * (width / TARGET_WIDTH) ** 2  # no pool: the quadratic part of a GPT's FLOPs


def _report(args: Any, results: dict, tasks: dict[str, Any], wall: float) -> str:
    lines = [f"{args.replicates} replayed sweeps per strategy and budget (n: draws per width in the first round); "
             f"error: |log2(transferred lr) - log2(direct optimum at width {TARGET_WIDTH})|; the answer: "
             f"p{int(QUANTILE * 100)} error within {TOLERANCE} octave (its 90% interval: a bootstrap over the "
             f"sweeps). ASHA (reduction factor 3): first rung at step 50 (asha-1/4) or 100 (asha-1/2) of 200. "
             f"refine: one round of n more draws at every width, span {REFINE_SPAN}. latin: search.sampler: latin "
             f"(one draw in each of n strata of the range). latin+refine-by-cost: a latin first round, then one "
             f"round (span {REFINE_SPAN}, refine.allocate: by_cost) of 2n draws at width 32 and, at 64 and 128, as "
             f"many as the same FLOPs buy there (2n / 3.2 and 2n / 11, rounded down). The real task's pool has "
             f"seeds {', '.join(map(str, getattr(tasks.get('real'), 'seeds', [])))}: each replayed sweep trains "
             f"with one. Wall {wall:.0f} s.", ""]
    target = target_trial_flops()
    q = f"p{int(QUANTILE * 100)}"
    for task in tasks:
        # The real task has a second answer: the transferred lr's loss at width 512 by the curve through its runs.
        by_loss = task == "real"
        rows = []
        answers: dict[str, tuple[float | None, int | None]] = {}
        loss_answers: dict[str, tuple[float | None, int | None]] = {}
        for s in STRATEGIES:
            flops = {n: float(np.mean([r[1] for r in results[(task, s, n)]])) for n in BUDGETS[s]}
            errs = {n: [r[0] for r in results[(task, s, n)]] for n in BUDGETS[s]}
            regrets = {n: [regret_512(r[3]) for r in results[(task, s, n)]] for n in BUDGETS[s]} if by_loss else {}
            answers[s] = _answer(flops, errs)
            if by_loss:
                loss_answers[s] = _answer(flops, regrets, REGRET)
            for n in BUDGETS[s]:
                e = np.array(errs[n])
                shown = [f"{v:.2f}" if v < 1e8 else "none" for v in (_p(e, 0.5), _p(e), *_p_interval(e))]
                row = [s, n, f"{flops[n]:.3g}", shown[0], f"{shown[1]} [{shown[2]}, {shown[3]}]",
                       f"{np.mean(e <= TOLERANCE):.0%}"]
                if by_loss:
                    g = np.array(regrets[n])
                    gs = [f"{v:.2f}" if v < 1e8 else "out" for v in (_p(g), *_p_interval(g))]
                    row += [f"{gs[0]} [{gs[1]}, {gs[2]}]", f"{np.mean(g <= REGRET):.0%}"]
                rows.append(row)
        head = ["strategy", "n", "FLOPs (mean)", "median error", f"{q} [90% CI]", f"within {TOLERANCE}"]
        if by_loss:
            head += [f"{q} % over the best at {TARGET_WIDTH} [90% CI]", f"within {REGRET:g}%"]
        lines += [f"### {task}", "", table(head, rows), ""]
        lines += [f"Compute to the answer (within {TOLERANCE} octave):", "", *_summary(answers, direct_draws(), target), ""]
        if by_loss:
            band = regret_band()
            lines += [f"Compute to the answer by loss (the transferred lr within {REGRET:g}% of the direct best's "
                      f"loss at width {TARGET_WIDTH} by the curve through its runs, at the {q}; {band:.2f} octaves "
                      f"of lr are, so direct tuning needs at least {direct_draws(band)} random draws there; "
                      f"'out': beyond the scanned range, counted as missing):", "",
                      *_summary(loss_answers, direct_draws(band), target), ""]
    return "\n".join(lines)


def _summary(answers: dict[str, tuple[float | None, int | None]], n_direct: int, target: float) -> list[str]:
    """One line per strategy: the compute to the answer, against random search's and direct tuning's."""
    base = answers["random"][0]
    out = []
    for s in STRATEGIES:
        f, n = answers[s]
        if f is None:
            out.append(f"- {s}: not reached within the budgets tried")
            continue
        ratio = f" ({base / f:.1f}x less than random search)" if base and s != "random" else ""
        out.append(f"- {s}: {f:.3g} FLOPs at n = {n}{ratio}; against tuning width {TARGET_WIDTH} directly "
                   f"({n_direct} draws x {target:.3g} FLOPs = {n_direct * target:.3g}, a lower bound): "
                   f"{f / (n_direct * target):.3f}x")
    return out


__all__ = ["replay", "run_benchmark"]
_ = Callable
