"""Ray Tune glue: run a recipe's trials, stream their results into the store on the driver.

Trials never touch the database: each worker runs `train(spec, report)` and reports through Ray; the
`StoreCallback` on the driver writes. A random search hands each Ray trial a pack of trials (`packs_for`): a run of
consecutive trials, or with `train.batch_trials` a batch of one shape trained as one stacked model
(`mutransfer.batched`); every report names its trial, so the store sees each trial on its own. The trial plan comes from the store (pending trials), so a rerun of the
same command resumes a sweep: finished trials are skipped and none is stored twice.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Tune writes ~5 files per trial that the database already holds (design notes): keep them off.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "8")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from mutransfer.plan import TrialSpec, groups, plan, spec_for  # noqa: E402
from mutransfer.recipe import Choice, LogUniform, Recipe, RecipeError, Uniform  # noqa: E402
from mutransfer.storage import CheckRecord, Store, TrialRecord  # noqa: E402

log = logging.getLogger("mutransfer.sweep")

FINISHED = ("completed", "diverged", "failed")
# At most this many trials run one after another in one Ray trial (see packs_for).
TRIALS_PER_TASK = 16
# Reported to Ray as the searcher's objective for a diverged trial: Optuna needs a number, and a diverged
# trial is the worst outcome there is.
DIVERGED_OBJECTIVE = 1e9


class SweepError(RuntimeError):
    """A sweep that cannot start (one line, for the CLI)."""


@dataclass
class SweepSummary:
    sweep_id: int
    name: str
    total: int
    ran: int
    counts: dict[str, int]
    best: dict[str, tuple[float, str]]  # group -> (best metric, trial key)
    wall_time: float
    skipped: int = 0


# --------------------------------------------------------------------------------------------- worker side


def _run_trial(config: dict[str, Any], specs: dict[str, TrialSpec] | None = None,
               template: TrialSpec | None = None, threads: int = 1) -> None:
    """The Ray trainable. Reports every evaluation; the last report carries the trial's outcome."""
    from mutransfer.train import train
    if specs is not None:
        spec = specs[config["key"]]
    else:  # adaptive search: the searcher picked the values
        assert template is not None
        spec = replace(template, hparams={k: v for k, v in config.items() if k != "key"})
    node = _node()
    last: dict[str, Any] = {}

    def report(point: dict[str, Any]) -> None:
        nonlocal last
        value = point.get(spec.train.metric)
        objective = value if value is not None and math.isfinite(value) else DIVERGED_OBJECTIVE
        last = {**point, "objective": objective, "node": node, "final": False}
        tune.report(last)

    start = time.time()
    try:
        result = train(spec, report, threads=threads)
    except Exception as e:  # a trial that raises is data: stored as failed with its message, the sweep goes on
        tune.report(_failed(e, node, start))
        return
    tune.report(_final(result, node))


def _node() -> str:
    # Hostname plus Ray's node id: two Ray nodes may share a host (and an IP) yet are different nodes.
    try:
        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:
        return socket.gethostname()


def _final(result: Any, node: str) -> dict[str, Any]:
    return {
        "final": True, "status": result.status, "metric": result.metric, "best_metric": result.best_metric,
        "steps_done": result.steps, "wall_time": result.wall_time, "flops": result.flops,
        "n_params": result.n_params, "node": node,
        "objective": result.metric if result.metric is not None else DIVERGED_OBJECTIVE,
    }


def _failed(e: Exception, node: str, start: float) -> dict[str, Any]:
    tb = traceback.format_exc(limit=-3)
    return {"final": True, "status": "failed", "error": f"{type(e).__name__}: {e}\n{tb}",
            "objective": DIVERGED_OBJECTIVE, "node": node, "wall_time": time.time() - start}


def _run_pack(config: dict[str, Any], packs: dict[str, list[TrialSpec]], threads: int = 1,
              batch: bool = False) -> None:
    """The Ray trainable of a random search: several trials in one Ray trial, each reported under its own key.

    One Ray trial costs Tune a scheduling round, an actor reset and its bookkeeping whatever it runs; a proxy of a
    few steps costs less than that. Running several trials per Ray trial pays it once for all of them. With
    `batch` the trials (all of one shape, see batched.pack) train at once as one stacked model; else one by one.
    Every report carries `trial_key`: the StoreCallback files it under that trial.
    """
    from mutransfer.batched import train_batch
    from mutransfer.train import train

    specs = packs[config["key"]]
    node = _node()

    def send(spec: TrialSpec, point: dict[str, Any]) -> None:
        value = point.get(spec.train.metric)
        objective = value if value is not None and math.isfinite(value) else DIVERGED_OBJECTIVE
        tune.report({**point, "objective": objective, "node": node, "final": False, "trial_key": spec.key})

    if batch and len(specs) > 1:
        start = time.time()
        try:
            results = train_batch(specs, send, threads=threads)
        except Exception as e:  # the batch failed as a whole: every trial in it is stored as failed
            for spec in specs:
                tune.report({**_failed(e, node, start), "trial_key": spec.key})
            return
        for spec, result in zip(specs, results, strict=True):
            tune.report({**_final(result, node), "trial_key": spec.key})
        return
    for spec in specs:
        start = time.time()
        try:
            result = train(spec, lambda point, spec=spec: send(spec, point), threads=threads)
        except Exception as e:  # a trial that raises is data: stored as failed with its message, the pack goes on
            tune.report({**_failed(e, node, start), "trial_key": spec.key})
            continue
        tune.report({**_final(result, node), "trial_key": spec.key})


# --------------------------------------------------------------------------------------------- driver side


class Progress:
    """Trials done/total, running, diverged, best so far per scale point; a line per trial when not a TTY."""

    def __init__(self, total: int, done: int, counts: dict[str, int], metric: str, enabled: bool = True) -> None:
        self.total, self.done, self.metric = total, done, metric
        self.counts = defaultdict(int, counts)
        self.running = 0
        self.best: dict[str, tuple[float, str]] = {}
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._live: Any = None
        self._t0 = time.time()

    # Tune pickles its callbacks (and so this) into its experiment folder; the live display stays behind.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_live": None}

    def __enter__(self) -> Progress:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head = Text(
            f"trials {self.done}/{self.total}  running {self.running}  completed {self.counts['completed']}  "
            f"diverged {self.counts['diverged']}  failed {self.counts['failed']}  "
            f"{time.time() - self._t0:.0f}s"
        )
        bar = ProgressBar(total=max(self.total, 1), completed=self.done, width=60)
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("scale point")
        table.add_column(f"best {self.metric}", justify="right")
        table.add_column("trial")
        for group in sorted(self.best, key=_group_order):
            value, key = self.best[group]
            table.add_row(group, f"{value:.4f}", key.rsplit("/", 1)[-1])
        return Group(bar, head, table)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def started(self) -> None:
        self.running += 1
        self.refresh()

    def finished(self, key: str, group: str, status: str, metric: float | None) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.counts[status] += 1
        if metric is not None and math.isfinite(metric) and (group not in self.best or metric < self.best[group][0]):
            self.best[group] = (metric, key)
        if self.enabled and not self.tty:
            best = self.best.get(group)
            shown = f"{metric:.4f}" if metric is not None else "-"
            print(f"[{self.done}/{self.total}] {key} {status} {self.metric}={shown}"
                  f" (best at this scale {best[0]:.4f})" if best else f"[{self.done}/{self.total}] {key} {status}",
                  file=sys.stderr, flush=True)
        self.refresh()


def _group_order(group: str) -> tuple[Any, ...]:
    param, tag = group.split("/", 1)
    nums = tuple(int(part[1:]) for part in tag.split("-"))
    return (param, *nums)


class StoreCallback(tune.Callback):
    """Writes every reported point and each trial's outcome to the store, on the driver."""

    def __init__(self, store: Store, sweep_id: int, key_of: Callable[[Any], str], progress: Progress,
                 metric: str, flush_every: float = 2.0, packs: dict[str, list[str]] | None = None,
                 batched: bool = False) -> None:
        self.store, self.sweep_id, self.key_of, self.progress = store, sweep_id, key_of, progress
        self.metric = metric
        # A Ray trial that runs a pack of trials: its key -> the trials' keys; reports name theirs (`trial_key`).
        self.packs = packs or {}
        self.batched = batched
        self.flush_every = flush_every
        self._points: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._last_flush: dict[str, float] = {}
        self._done: set[str] = set()
        self._started: set[str] = set()

    def _group(self, key: str) -> str:
        return key.rsplit("/", 1)[0]

    def _keys(self, trial: Any) -> list[str]:
        key = self.key_of(trial)
        return self.packs.get(key, [key])

    def _start(self, key: str) -> None:
        if key in self._started or key in self._done:
            return
        self._started.add(key)
        self.store.mark_running(self.sweep_id, key, node=None)
        self.progress.started()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        keys = self._keys(trial)
        # A batched pack runs all its trials at once; a sequential one starts with its first (the others are marked
        # running as their first report arrives).
        for key in keys if self.batched else keys[:1]:
            self._start(key)
        hparams = {k: v for k, v in trial.config.items() if k != "key"}
        if hparams:
            self.store.update_hparams(self.sweep_id, keys[0], hparams)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        key = result.get("trial_key") or self.key_of(trial)
        if key in self._done:
            return
        self._start(key)
        if not result.get("final"):
            point = {"step": int(result["step"])}
            for name in ("train_loss", "val_loss", "lr", "tokens", "elapsed"):
                if name in result and result[name] is not None:
                    point[name] = float(result[name])
            self._points[key].append(point)
            now = time.time()
            if now - self._last_flush.get(key, 0.0) > self.flush_every:
                self._flush(key)
                self._last_flush[key] = now
            return
        self._done.add(key)
        status = result["status"]
        # The outcome and the last points in one transaction: a crash never leaves a finished trial half-written.
        self.store.finish_trial(
            self.sweep_id, key, status,
            metric=_finite(result.get("metric")), best_metric=_finite(result.get("best_metric")),
            steps=result.get("steps_done"), wall_time=result.get("wall_time"), flops=result.get("flops"),
            n_params=result.get("n_params"), error=result.get("error"), node=result.get("node"),
            points=self._points.pop(key, None),
        )
        self.progress.finished(key, self._group(key), status, _finite(result.get("metric")))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # The trial's process died (killed, out of memory, lost node): the trainable could not report. Every trial
        # of its pack that had not finished goes down with it.
        keys = [k for k in self._keys(trial) if k not in self._done]
        if not keys:
            return
        err = None
        try:
            err = trial.get_error()
        except Exception:  # the error file may be gone with the node
            err = None
        msg = str(err or "trial process died without reporting").strip()
        for key in keys:
            self._done.add(key)
            self.store.finish_trial(self.sweep_id, key, "failed", error=msg[-4000:],
                                    points=self._points.pop(key, None))
            self.progress.finished(key, self._group(key), "failed", None)

    def _flush(self, key: str) -> None:
        points = self._points.pop(key, None)
        if points:
            self.store.add_points(self.sweep_id, key, points)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _tune_space(recipe: Recipe) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for name, dist in recipe.search.space.items():
        if isinstance(dist, LogUniform):
            space[name] = tune.loguniform(*dist.loguniform)
        elif isinstance(dist, Uniform):
            space[name] = tune.uniform(*dist.uniform)
        elif isinstance(dist, Choice):
            space[name] = tune.choice(dist.choice)
    return space


def init_ray(recipe: Recipe, address: str | None) -> None:
    """Join a cluster at `address`, or start Ray in this process on the local machine."""
    if address and address.startswith("ray://"):
        # Under Ray Client, Tune's driver loop (and so the StoreCallback) would run on the head node, not here:
        # results would not come back to this process's database.
        raise SweepError(f"--address {address}: Ray Client (ray://) addresses are not supported; run "
                         "`mutransfer sweep` on a machine of the cluster with --address HEAD_IP:6379 (or auto)")
    if ray.is_initialized():
        return
    # Tune reads back per-trial result files that we keep off (the database has the results), and a local
    # in-process cluster's token auth is on by default: neither is news to a user.
    for noisy in ("ray.tune.analysis.experiment_analysis", "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                                  configure_logging=True)
    if address:
        # Trials import mutransfer on the workers: ship the driver's copy of the package with the job, so workers
        # need no checkout and run the same code (they still need torch, mup and ray[tune]; docs/cluster.md).
        if os.environ.get("MUTRANSFER_SHIP_PACKAGE", "1") != "0":
            import mutransfer

            kwargs["runtime_env"] = {"py_modules": [mutransfer], "excludes": ["__pycache__", "*.pyc"]}
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:
            raise SweepError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    else:
        # Ray starts its workers at nice 15. The trials are this job's work, not background work: on a machine
        # shared with other processes a niced trial ran at half the speed of the same loop in a plain process
        # (BENCHMARKS.md, training throughput). A value the user set wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=os.cpu_count() or 1, num_gpus=0 if not _has_cuda() else None, **kwargs)


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def check_resources(recipe: Recipe) -> None:
    """Fail now, with a clear message, when no node can ever run a trial (Ray would wait forever)."""
    if os.environ.get("MUTRANSFER_SKIP_RESOURCE_CHECK", "0") == "1":
        return  # an autoscaling cluster may add the node that fits later (docs/cluster.md)
    res = recipe.resources
    want = {k: v for k, v in {"CPU": res.cpus, "GPU": res.gpus, **res.custom}.items() if v > 0}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for node in nodes:
        have = node.get("Resources", {})
        if all(have.get(k, 0.0) >= v for k, v in want.items()):
            return
    label = {"CPU": "cpus", "GPU": "gpus"}
    biggest = {k: max((n.get("Resources", {}).get(k, 0.0) for n in nodes), default=0.0) for k in want}
    short = ", ".join(f"{label.get(k, f'custom.{k}')} {want[k]:g} (the largest of {len(nodes)} node(s) has "
                      f"{biggest[k]:g})" for k in want if want[k] > biggest[k])
    asked = ", ".join(f"{label.get(k, f'custom.{k}')} {v:g}" for k, v in want.items())
    raise SweepError(f"resources: a trial asks for more than any node has: {short}" if short else
                     f"resources: no single node has all of {asked} that a trial asks for")


def cluster_slots(recipe: Recipe) -> int:
    """How many trials the connected cluster can run at once: per node, what fits of a trial's request."""
    res = recipe.resources
    want = {k: v for k, v in {"CPU": res.cpus, "GPU": res.gpus, **res.custom}.items() if v > 0}
    slots = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node.get("Resources", {})
            # A small tolerance: Ray accounts resources in 1e-4 units, 1.0 / 0.1 must count as 10.
            slots += min(int(have.get(k, 0.0) / v + 1e-6) for k, v in want.items())
    return max(1, slots)


def run_sweep(recipe: Recipe, store: Store, *, recipe_text: str, address: str | None = None,
              storage_dir: str | None = None, progress: bool = True,
              checks: list[CheckRecord] | None = None) -> SweepSummary:
    """Run (or resume) the sweep of `recipe`. Returns when every planned trial is finished.

    `checks` (e.g. the coordinate check that gated this run) are stored with the sweep once its row exists.
    """
    t0 = time.time()
    name = recipe.name or "sweep"
    rhash = recipe.hash()
    sweep = store.get_sweep(name)
    if sweep is not None and sweep.recipe_hash != rhash:
        raise SweepError(
            f"a sweep named {name!r} already exists with a different recipe (hash {sweep.recipe_hash}, this one "
            f"{rhash}): change the recipe's name, or pass --name NEW"
        )

    specs = plan(recipe)  # for adaptive search the keys are planned, the values come at run time
    if recipe.search.method == "optuna":
        specs = [replace(s, hparams={}) for s in specs]
    # Join (or start) Ray and check the resources before anything is written: an unreachable cluster or a recipe
    # that no node can run leaves the database as it was.
    if sweep is None or {s.key for s in specs} - store.trial_keys(sweep.id, statuses=FINISHED):
        init_ray(recipe, address)
        check_resources(recipe)
    if sweep is None:
        sweep = store.create_sweep(name, recipe_text, recipe.model_dump_json(), rhash, len(specs),
                                   recipe.train.metric)
        store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in specs])
    for check in checks or ():
        store.save_check(sweep.id, check.kind, check.parametrization, check.passed, check.summary, check.result)
    reset = store.reset_unfinished(sweep.id)
    if reset:
        log.warning("%d trial(s) of %r were running when the last run stopped: running them again", reset, name)
    finished = store.trial_keys(sweep.id, statuses=FINISHED)
    todo = [s for s in specs if s.key not in finished]
    counts: dict[str, int] = defaultdict(int)
    for status, n in (store.get_sweep(sweep.id).counts or {}).items():  # type: ignore[union-attr]
        if status in FINISHED:
            counts[status] = n
    if not todo:
        store.set_sweep_status(sweep.id, "done")
        return _summary(store, sweep.id, name, len(specs), 0, t0)

    store.set_sweep_status(sweep.id, "running")
    storage = _scratch(storage_dir)
    res = recipe.resources
    resources = {"cpu": res.cpus, "gpu": res.gpus, **res.custom}
    threads = max(1, int(res.cpus))

    with Progress(len(specs), len(specs) - len(todo), counts, recipe.train.metric, enabled=progress) as prog:
        try:
            if recipe.search.method == "random":
                _run_packed(recipe, store, sweep.id, todo, resources, threads, storage, f"{name}-{sweep.id}", prog)
            else:
                _run_optuna(recipe, store, sweep.id, todo, resources, threads, storage, name, prog)
        except KeyboardInterrupt:
            store.set_sweep_status(sweep.id, "interrupted")
            raise
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    left = len(specs) - len(store.trial_keys(sweep.id, statuses=FINISHED))
    store.set_sweep_status(sweep.id, "done" if left == 0 else "interrupted")
    return _summary(store, sweep.id, name, len(specs), len(todo), t0)


def _scratch(storage_dir: str | None) -> Path:
    """Tune's experiment folder holds nothing the database lacks (resume comes from the store): a scratch folder,
    removed at the end, under $MUTRANSFER_RAY_DIR if the user wants it elsewhere than the temp dir."""
    base = storage_dir or os.environ.get("MUTRANSFER_RAY_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="mutransfer-ray-", dir=base))


def run_specs(recipe: Recipe, store: Store, sweep_id: int, specs: list[TrialSpec], *, role: str,
              address: str | None = None, storage_dir: str | None = None, progress: bool = True) -> int:
    """Run trials whose values are fixed (e.g. verification trials) into an existing sweep; resumable like a sweep.

    Returns how many ran now (the others had finished before).
    """
    if {s.key for s in specs} - store.trial_keys(sweep_id, statuses=FINISHED):
        init_ray(recipe, address)  # before anything is written (see run_sweep)
        check_resources(recipe)
    store.add_trials(sweep_id, [TrialRecord.from_spec(s, role=role) for s in specs])
    store.reset_unfinished(sweep_id)
    finished = store.trial_keys(sweep_id, statuses=FINISHED)
    todo = [s for s in specs if s.key not in finished]
    if not todo:
        return 0
    storage = _scratch(storage_dir)
    res = recipe.resources
    resources = {"cpu": res.cpus, "gpu": res.gpus, **res.custom}
    with Progress(len(specs), len(specs) - len(todo), {}, recipe.train.metric, enabled=progress) as prog:
        try:
            _run_packed(recipe, store, sweep_id, todo, resources, max(1, int(res.cpus)), storage, f"{role}-{sweep_id}",
                        prog)
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    return len(todo)


def packs_for(recipe: Recipe, todo: list[TrialSpec], slots: int) -> list[list[TrialSpec]]:
    """How the trials are split into Ray trials: batches of one shape (train.batch_trials > 1), else runs of
    consecutive trials, enough of them (four per slot) to keep every slot busy to the end, at most
    TRIALS_PER_TASK each so that a worker process that dies takes few trials with it."""
    from mutransfer.batched import pack

    if recipe.train.batch_trials > 1:
        return pack(todo, recipe.train.batch_trials)
    per = max(1, min(TRIALS_PER_TASK, len(todo) // (4 * max(1, slots))))
    return [todo[i:i + per] for i in range(0, len(todo), per)]


def _run_packed(recipe: Recipe, store: Store, sweep_id: int, todo: list[TrialSpec], resources: dict[str, float],
                threads: int, storage: Path, name: str, prog: Progress) -> None:
    slots = recipe.resources.max_concurrent or cluster_slots(recipe)
    packs = {p[0].key: p for p in packs_for(recipe, todo, slots)}
    batch = recipe.train.batch_trials > 1
    trainable = tune.with_resources(tune.with_parameters(_run_pack, packs=packs, threads=threads, batch=batch),
                                    resources)
    cb = StoreCallback(store, sweep_id, lambda t: t.config["key"], prog, recipe.train.metric,
                       packs={k: [s.key for s in p] for k, p in packs.items()}, batched=batch)
    _fit_tuner(trainable, {"key": tune.grid_search(list(packs))}, None, 1, recipe.resources.max_concurrent, storage,
               name, cb)


def _fit_tuner(trainable: Any, param_space: dict[str, Any], search_alg: Any, num_samples: int,
               max_concurrent: int | None, storage: Path, name: str, cb: StoreCallback) -> None:
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, num_samples=num_samples, max_concurrent_trials=max_concurrent,
            # Short proxy trials: actor start-up would dominate (74 s vs 4.4 s for 50 trials, design notes).
            reuse_actors=True,
            metric="objective" if search_alg is not None else None,
            mode="min" if search_alg is not None else None,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=[cb], verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()


def _run_optuna(recipe: Recipe, store: Store, sweep_id: int, todo: list[TrialSpec], resources: dict[str, float],
                threads: int, storage: Path, name: str, prog: Progress) -> None:
    """TPE is adaptive, so each scale point gets its own Optuna study; trial keys are handed out in start order."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    space = _tune_space(recipe)
    by_group: dict[str, list[TrialSpec]] = defaultdict(list)
    for s in todo:
        by_group[s.group].append(s)
    for gi, (param, scale) in enumerate(groups(recipe)):
        pending = by_group.get(f"{param}/{scale.tag()}")
        if not pending:
            continue
        template = spec_for(recipe, param, scale, 0, 0, {})
        keys = iter([s.key for s in pending])
        assigned: dict[str, str] = {}

        def key_of(trial: Any, _keys: Any = keys, _assigned: dict[str, str] = assigned) -> str:
            if trial.trial_id not in _assigned:
                _assigned[trial.trial_id] = next(_keys)
            return _assigned[trial.trial_id]

        searcher = OptunaSearch(seed=recipe.search.seed * 1000 + gi)
        limit = recipe.resources.max_concurrent or cluster_slots(recipe)
        searcher = ConcurrencyLimiter(searcher, max_concurrent=limit)
        trainable = tune.with_resources(tune.with_parameters(_run_trial, template=template, threads=threads),
                                        resources)
        cb = StoreCallback(store, sweep_id, key_of, prog, recipe.train.metric)
        _fit_tuner(trainable, space, searcher, len(pending), recipe.resources.max_concurrent, storage,
                   f"{name}-{sweep_id}-{gi}", cb)


def _summary(store: Store, sweep_id: int, name: str, total: int, ran: int, t0: float) -> SweepSummary:
    frame = store.trials_frame(sweep_id)
    if len(frame):
        frame = frame[frame["role"] == "sweep"]
    counts = {str(k): int(v) for k, v in frame["status"].value_counts().items()} if len(frame) else {}
    best: dict[str, tuple[float, str]] = {}
    done = frame[frame["status"] == "completed"] if len(frame) else frame
    for group, rows in done.groupby("group") if len(done) else []:
        i = rows["metric"].idxmin()
        best[str(group)] = (float(rows.loc[i, "metric"]), str(rows.loc[i, "key"]))
    return SweepSummary(sweep_id, name, total, ran, counts, best, time.time() - t0)


__all__ = ["RecipeError", "SweepError", "SweepSummary", "run_sweep", "StoreCallback"]
