"""Sweep orchestration: run a recipe's trials through Ray Tune, from the plan in the store, and resume.

The trial plan comes from the store (pending trials), so a rerun of the same command resumes a sweep: finished
trials are skipped and none is stored twice. Every run of trials, a sweep's or a verification's, goes through
`run_trials`. A random search (and any trials whose values are fixed) hands each Ray trial a pack of trials
(`packs_for`): a run of consecutive trials, or with `train.batch_trials` a batch of one shape trained as one
stacked model (`mutransfer.batched`); every report names its trial, so the store sees each trial on its own. An
Optuna search runs one Tune run per scale point, the searcher picking the values.

The trainables are in mutransfer.tune_worker, the callbacks that write the store and show progress in
mutransfer.callbacks, joining Ray and checking resources in mutransfer.ray_setup.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray import tune

from mutransfer.callbacks import LOST, Progress, ProgressCallback, StoreCallback, TrialMap
from mutransfer.errors import MutransferError, option
from mutransfer.interruption import Interrupted, as_interrupted, handlers_kept, interruptible
from mutransfer.plan import (
    TrialSpec,
    group_of,
    groups,
    plan,
    point_costs,
    refine_specs,
    refine_total,
    spec_for,
)
from mutransfer.ray_setup import SweepError, check_resources, cluster_slots, init_ray, scratch_dir, stop_ray
from mutransfer.recipe import Choice, EarlyStop, LogUniform, Recipe, Uniform
from mutransfer.storage import (
    FINISHED_STATUSES,
    CheckRecord,
    DriverLease,
    LeaseOwner,
    Store,
    StoreError,
    TrialRecord,
)
from mutransfer.tune_worker import OBJECTIVE, run_pack, run_trial

log = logging.getLogger("mutransfer.sweep")

# At most this many trials run one after another in one Ray trial (see packs_for).
TRIALS_PER_TASK = 16
# Trials whose worker process died (killed, out of memory, lost node) run again in the same run, at most this many
# more times; any still lost after that stay pending, for the next run.
WORKER_RETRIES = 2


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

    @property
    def left(self) -> int:
        """Trials not finished: pending ones lost their worker process more than WORKER_RETRIES times."""
        return self.counts.get("pending", 0) + self.counts.get("running", 0)


@interruptible()
def run_sweep(recipe: Recipe, store: Store, *, recipe_text: str, address: str | None = None,
              storage_dir: str | None = None, progress: bool = True,
              checks: list[CheckRecord] | None = None) -> SweepSummary:
    """Run (or resume) the sweep of `recipe`. Returns when every planned trial is finished, or lost its worker
    process more than WORKER_RETRIES times (those are left pending: `SweepSummary.left`).

    SIGINT and SIGTERM raise `Interrupted` (mutransfer.interruption): the sweep is left `interrupted`, its running
    trials pending, Ray's processes ended and the scratch folder removed; the same call resumes it.
    `checks` (e.g. the coordinate check that gated this run) are stored with the sweep once its row exists.
    """
    t0 = time.time()
    name = recipe.name or "sweep"
    rhash = recipe.hash()
    sweep = store.get_sweep(name)
    # A sweep row without a single trial was left by an older mutransfer cut short between creating the sweep and
    # its trials (two transactions then): it holds nothing, so it is made again, whatever its recipe was.
    empty = sweep is not None and not store.trial_keys(sweep.id)
    if sweep is not None and not empty and sweep.recipe_hash != rhash:
        raise SweepError(
            f"a sweep named {name!r} already exists with a different recipe (hash {sweep.recipe_hash}, this one "
            f"{rhash}): change the recipe's name, or pass {option('name')} NEW"
        )

    specs = plan(recipe)  # for adaptive search the keys are planned, the values come at run time
    if recipe.search.method == "optuna":
        specs = [replace(s, hparams={}) for s in specs]
    total = len(specs) + refine_total(recipe)  # the refine rounds' trials are planned as their rounds start
    owner = LeaseOwner.here()
    joined = sweep is None or empty
    if joined:
        _join_ray(recipe, address)  # before anything is written (see run_trials)
        sweep = _create(store, recipe, name, recipe_text, specs, owner, replace_empty=empty, total=total)
    # The lease before anything of the sweep is touched: a second driver is refused here, having changed nothing
    # (and before it joins Ray, which takes seconds).
    with DriverLease(store, sweep.id, owner):
        todo = _unfinished(store, sweep.id, specs)
        if todo and not joined:
            _join_ray(recipe, address)
        for check in checks or ():
            store.save_check(sweep.id, check.kind, check.parametrization, check.passed, check.summary, check.result)
        if todo:
            store.set_sweep_status(sweep.id, "running")
        ran = 0
        try:
            ran = run_trials(recipe, store, sweep.id, specs, role="sweep", address=address, storage_dir=storage_dir,
                             progress=progress)
            # Each refine round starts once every trial before it finished: it is centred on their fit.
            rounds = recipe.search.refine.rounds if recipe.search.refine is not None else 0
            for k in range(1, rounds + 1):
                if _unfinished(store, sweep.id, specs):
                    break
                more = refine_round(recipe, store, sweep.id, k)
                if not more:
                    break  # nothing to centre on (said in a warning): the sweep ends here
                specs = specs + more
                if _unfinished(store, sweep.id, more):
                    store.set_sweep_status(sweep.id, "running")
                # Every trial so far, not the round's alone: the progress counts on from the rounds before.
                ran += run_trials(recipe, store, sweep.id, specs, role="sweep", address=address,
                                  storage_dir=storage_dir, progress=progress)
        except KeyboardInterrupt as e:
            store.set_sweep_status(sweep.id, "interrupted")
            stop_ray()
            done = len(specs) - len(_unfinished(store, sweep.id, specs))
            ran += e.ran if isinstance(e, Interrupted) else 0
            raise as_interrupted(e, f"sweep {name!r} (id {sweep.id}) stopped with {done} of {total} trials "
                                    f"finished, {ran} of them in this run", ran) from None
        # Every trial planned so far finished: the rounds either all ran or one had nothing to centre on (a round
        # breaks early only on unfinished trials). The refine rounds may plan fewer than `total` (allocate: by_cost).
        left = len(_unfinished(store, sweep.id, specs))
        store.set_sweep_status(sweep.id, "done" if left == 0 else "interrupted")
    return _summary(store, sweep.id, name, total if left else len(specs), ran, t0)


def refine_round(recipe: Recipe, store: Store, sweep_id: int, k: int) -> list[TrialSpec]:
    """The trials of refine round `k`: those stored (a resumed sweep), else planned now around the joint model's
    optimum as the trials of the rounds before it place it (mutransfer.plan.refine_specs); [] when no
    parametrization has a fitted optimum to centre on (said in a warning)."""
    from mutransfer.fit.stopped import fit_frame
    from mutransfer.fit.sweep import joint_optima

    frame = store.trials_frame(sweep_id)
    rows = frame[(frame["role"] == "sweep") & (frame["round"] == k)] if len(frame) else frame
    if len(rows):
        points = {group_of(p, s): (p, s) for p, s in groups(recipe)}
        return [replace(spec_for(recipe, *points[str(r["group"])], int(r["sample"]), int(r["repeat"]),
                                 dict(r["hparams"]), round=k), key=str(r["key"]))
                for _, r in rows.iterrows()]
    frame = fit_frame(store, sweep_id, recipe.train.metric)
    frame = frame[(frame["role"] == "sweep") & (frame["round"] < k)]
    centres = joint_optima(frame, recipe) if (frame["status"] == "completed").any() else {}
    specs = refine_specs(recipe, k, centres, point_costs(frame) if len(frame) else {})
    if not specs:
        log.warning("refine round %d: no parametrization has a fitted optimum to centre on (no completed trial "
                    "with a varied hyperparameter): the sweep ends after round %d", k, k - 1)
    return specs


def _create(store: Store, recipe: Recipe, name: str, recipe_text: str, specs: list[TrialSpec], owner: LeaseOwner,
            *, replace_empty: bool, total: int) -> Any:
    """The sweep with its trials and `owner`'s lease, in one transaction; or the one another driver created first
    (whose lease then refuses this driver)."""
    try:
        return store.create_sweep(name, recipe_text, recipe.model_dump_json(), recipe.hash(), total,
                                  recipe.train.metric, trials=[TrialRecord.from_spec(s, role="sweep") for s in specs],
                                  owner=owner, replace_empty=replace_empty)
    except StoreError:
        found = store.get_sweep(name)
        if found is None or found.recipe_hash != recipe.hash() or not store.trial_keys(found.id):
            raise
        return found


@interruptible()
def run_trials(recipe: Recipe, store: Store, sweep_id: int, specs: list[TrialSpec], *, role: str,
               address: str | None = None, storage_dir: str | None = None, progress: bool = True) -> int:
    """Run the trials `specs` of a sweep (role "sweep"), or trials of another role whose values are fixed (e.g.
    "verify": verification trials) into an existing sweep; resumable: those finished before are skipped.

    Stores the trials that are not stored yet. With an Optuna search the sweep's trials get their values as they
    start; all others run in packs. Trials whose worker process died run again (WORKER_RETRIES). Returns how many
    finished now. Holds the sweep's lease (unless its caller does). SIGINT and SIGTERM raise `Interrupted` once the
    running trials are back to pending, Ray is stopped and the scratch folder removed.
    """
    if not store.holds_lease(sweep_id):
        with DriverLease(store, sweep_id):
            return run_trials(recipe, store, sweep_id, specs, role=role, address=address, storage_dir=storage_dir,
                              progress=progress)
    if _unfinished(store, sweep_id, specs):
        # Join (or start) Ray and check the resources before anything is written: an unreachable cluster or a
        # recipe that no node can run leaves the database as it was.
        _join_ray(recipe, address)
    store.add_trials(sweep_id, [TrialRecord.from_spec(s, role=role) for s in specs])
    reset = store.reset_unfinished(sweep_id)
    if reset:
        sweep = store.get_sweep(sweep_id)
        log.warning("%d trial(s) of %r were running when the last run stopped: running them again", reset,
                    sweep.name if sweep is not None else sweep_id)
    todo = _unfinished(store, sweep_id, specs)
    if not todo:
        return 0
    lost = _lost(store, sweep_id, todo)
    if lost:
        log.warning("%d trial(s) lost their worker process in an earlier run: running them again", lost)
    keys = {s.key for s in specs}
    counts = {status: len(keys & store.trial_keys(sweep_id, statuses=status)) for status in FINISHED_STATUSES}
    storage = scratch_dir(storage_dir)
    res = recipe.resources
    resources = {"cpu": res.cpus, "gpu": res.gpus, **res.custom}
    threads = max(1, int(res.cpus))
    name = f"{role}-{sweep_id}"
    done_before = len(specs) - len(todo)

    def ran() -> int:
        return len(specs) - len(_unfinished(store, sweep_id, specs)) - done_before

    with Progress(len(specs), done_before, counts, recipe.train.metric, enabled=progress) as prog:
        try:
            for attempt in range(1 + WORKER_RETRIES):
                if attempt:
                    store.reset_unfinished(sweep_id)  # nothing runs between two Tune runs
                    todo = _unfinished(store, sweep_id, specs)
                    if not todo:
                        break
                    log.warning("%d trial(s) lost their worker process: running them again (retry %d of %d)",
                                len(todo), attempt, WORKER_RETRIES)
                run = name if attempt == 0 else f"{name}-retry{attempt}"
                # Only the sweep's own trials are searched for; any others come with their values.
                if role == "sweep" and recipe.search.method == "optuna":
                    _run_optuna(recipe, store, sweep_id, todo, resources, threads, storage, run, prog)
                else:
                    # A verification trial is never stopped early: it measures the transferred value.
                    _run_packed(recipe, store, sweep_id, todo, resources, threads, storage, run, prog,
                                early_stop=recipe.search.early_stop if role == "sweep" else None)
        except KeyboardInterrupt as e:
            # Ray first: a worker still running could write into the scratch folder after it is removed.
            stop_ray()
            store.reset_unfinished(sweep_id)
            done = len(specs) - len(_unfinished(store, sweep_id, specs))
            raise as_interrupted(e, f"{done} of {len(specs)} {role} trials finished, {ran()} of them in this run",
                                 ran()) from None
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    return ran()


def _join_ray(recipe: Recipe, address: str | None) -> None:
    with handlers_kept():  # ray.init sets a SIGTERM handler of its own (sys.exit): the sweep's stays
        init_ray(recipe, address)
    check_resources(recipe)


def _lost(store: Store, sweep_id: int, todo: list[TrialSpec]) -> int:
    """How many of the trials `todo` wait to run again because their worker process died (see callbacks.LOST)."""
    frame = store.trials_frame(sweep_id)
    keys = {s.key for s in todo}
    return int(sum(1 for key, error in zip(frame["key"], frame["error"], strict=True)
                   if key in keys and isinstance(error, str) and error.startswith(LOST)))


def _unfinished(store: Store, sweep_id: int | None, specs: list[TrialSpec]) -> list[TrialSpec]:
    """The trials of `specs` not finished in the sweep (all of them when there is no sweep yet), in plan order."""
    finished = set() if sweep_id is None else store.trial_keys(sweep_id, statuses=FINISHED_STATUSES)
    return [s for s in specs if s.key not in finished]


def packs_for(recipe: Recipe, todo: list[TrialSpec], slots: int, early_stop: bool = False) -> list[list[TrialSpec]]:
    """How the trials are split into Ray trials: batches of one shape (train.batch_trials > 1), else runs of
    consecutive trials, enough of them (four per slot) to keep every slot busy to the end, at most
    TRIALS_PER_TASK each so that a worker process that dies takes few trials with it."""
    from mutransfer.batched import pack

    if recipe.train.batch_trials > 1:
        return pack(todo, recipe.train.batch_trials)
    if early_stop:
        return [[s] for s in todo]  # a scheduler stops a Ray trial as a whole: one trial each
    per = max(1, min(TRIALS_PER_TASK, len(todo) // (4 * max(1, slots))))
    return [todo[i:i + per] for i in range(0, len(todo), per)]


def _run_packed(recipe: Recipe, store: Store, sweep_id: int, todo: list[TrialSpec], resources: dict[str, float],
                threads: int, storage: Path, name: str, prog: Progress, early_stop: EarlyStop | None) -> None:
    slots = recipe.resources.max_concurrent or cluster_slots(recipe)
    packs = {p[0].key: p for p in packs_for(recipe, todo, slots, early_stop=early_stop is not None)}
    batch = recipe.train.batch_trials > 1
    trainable = tune.with_resources(tune.with_parameters(run_pack, packs=packs, threads=threads, batch=batch,
                                                         batch_reports=early_stop is None), resources)
    es = early_stop
    trials = TrialMap(lambda t: t.config["key"], {k: [s.key for s in p] for k, p in packs.items()}, batched=batch,
                      stoppable=es is not None)
    scheduler = None
    if es is not None:
        from mutransfer.stopping import ByScalePoint

        steps = {p[0].group: p[0].steps for p in packs.values()}
        scheduler = ByScalePoint(es, steps, lambda t: packs[t.config["key"]][0].group,
                                 history=_history(store, sweep_id, set(steps), recipe.train.metric))
    _fit_tuner(trainable, {"key": tune.grid_search(list(packs))}, None, 1, recipe.resources.max_concurrent, storage,
               name, [StoreCallback(store, sweep_id, trials), ProgressCallback(prog, trials)], scheduler)


def _history(store: Store, sweep_id: int, pools: set[str], metric: str) -> dict[str, list[list[tuple[int, float]]]]:
    """The curves (step, metric) of the sweep's finished trials in `pools`: what their schedulers start from."""
    frame = store.trials_frame(sweep_id)
    if not len(frame):
        return {}
    done = frame[(frame["role"] == "sweep") & frame["status"].isin(["completed", "stopped", "diverged"])
                 & frame["group"].isin(pools)]
    if not len(done):
        return {}
    curves = store.curves_frame(sweep_id, list(done["key"]))
    curves = curves[curves["name"] == metric]
    group_of = dict(zip(done["key"], done["group"], strict=True))
    out: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
    for key, c in curves.groupby("key", sort=False):
        out[group_of[str(key)]].append(list(zip(c["step"].astype(int), c["value"].astype(float), strict=True)))
    return dict(out)


def _fit_tuner(trainable: Any, param_space: dict[str, Any], search_alg: Any, num_samples: int,
               max_concurrent: int | None, storage: Path, name: str, callbacks: list[tune.Callback],
               scheduler: Any = None) -> None:
    """One Tune run. Tune calls `callbacks` in order: the store's first, so a result is stored before it is shown.
    `scheduler`: the early stopping one (mutransfer.stopping), else Tune's first-in-first-out."""
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            # Short proxy trials: actor start-up would dominate (74 s vs 4.4 s for 50 trials, design notes).
            reuse_actors=True,
            metric=OBJECTIVE if search_alg is not None else None,
            mode="min" if search_alg is not None else None,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        tuner.fit()
    except tune.TuneError as e:
        # Tune wraps what a callback raised (the store's StoreError, a lost lease) in a TuneError whose message is
        # a traceback: the user gets the original's one line.
        cause = _mutransfer_error(e)
        if cause is None:
            raise
        raise cause from cause.__cause__  # its own cause kept (a database error, say), not Tune's wrapper


def _mutransfer_error(e: BaseException) -> MutransferError | None:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, MutransferError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


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

        # Both callbacks ask: the first to ask about a Ray trial hands it the next key, the other gets the same.
        def key_of(trial: Any, _keys: Any = keys, _assigned: dict[str, str] = assigned) -> str:
            if trial.trial_id not in _assigned:
                _assigned[trial.trial_id] = next(_keys)
            return _assigned[trial.trial_id]

        searcher = OptunaSearch(seed=recipe.search.seed * 1000 + gi)
        limit = recipe.resources.max_concurrent or cluster_slots(recipe)
        searcher = ConcurrencyLimiter(searcher, max_concurrent=limit)
        trainable = tune.with_resources(tune.with_parameters(run_trial, template=template, threads=threads),
                                        resources)
        es = recipe.search.early_stop
        trials = TrialMap(key_of, stoppable=es is not None)
        scheduler = None
        if es is not None:  # one Tune run per scale point: one pool
            from mutransfer.stopping import ByScalePoint

            scheduler = ByScalePoint(es, {template.group: template.steps}, lambda t, g=template.group: g)
        _fit_tuner(trainable, space, searcher, len(pending), recipe.resources.max_concurrent, storage,
                   f"{name}-{gi}", [StoreCallback(store, sweep_id, trials), ProgressCallback(prog, trials)],
                   scheduler)


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


__all__ = ["SweepError", "SweepSummary", "run_sweep", "run_trials"]
