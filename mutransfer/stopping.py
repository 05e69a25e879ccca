"""Early stopping (search.early_stop): Ray Tune's own schedulers, one per scale point.

ASHA and the median stopping rule compare a trial with the others in their pool. A sweep's trials at different
widths (or depths, batch sizes, horizons) reach different losses by design, so one pool would stop the small
proxies for being small. `ByScalePoint` is a Tune scheduler that hands each Ray trial to the scheduler of its own
scale point (and parametrization), built by Ray Tune (`AsyncHyperBandScheduler`, `MedianStoppingRule`).

It decides only on evaluations before a trial's last step and on finite objectives: a trial at its last step, or
one whose loss blew up (it reports its outcome next, as diverged), is left to finish and report on its own.

Each pool's scheduler starts from the curves of the trials of its scale point that finished before (`history`):
a refine round's trials, or those of a resumed sweep, are then judged against every trial of their point, not only
against those of their own run (a refine round's draws are all near the optimum: among themselves, two thirds of
them would fall behind).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from mutransfer.recipe import EarlyStop
from mutransfer.tune_worker import DIVERGED_OBJECTIVE, OBJECTIVE

# The trial's progress as the schedulers read it: the step of the evaluation it reports (tune_worker.TrialReport).
TIME_ATTR = "step"


def make_scheduler(es: EarlyStop, max_steps: int) -> TrialScheduler:
    """Ray Tune's scheduler for one pool of comparable trials that train `max_steps` steps."""
    if es.method == "asha":
        # stop_last_trials=False: a trial that passed the last rung trains to its end (ByScalePoint never shows a
        # scheduler the last step anyway: the trial's own outcome comes next).
        return AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=OBJECTIVE, mode="min", max_t=max_steps,
                                       grace_period=es.grace_steps, reduction_factor=es.reduction_factor,
                                       stop_last_trials=False)
    # min_time_slice inf: with too few others to compare, the rule would PAUSE a trial to let others catch up; a
    # function trainable without checkpoints would then start over. It continues instead.
    return MedianStoppingRule(time_attr=TIME_ATTR, metric=OBJECTIVE, mode="min", grace_period=es.grace_steps,
                              min_samples_required=es.min_samples, min_time_slice=math.inf, hard_stop=True)


@dataclass(frozen=True)
class _Finished:
    """A trial that finished before, as its pool's scheduler is shown it: both read only its id, or hash it."""

    trial_id: str


class ByScalePoint(FIFOScheduler):
    """A Tune scheduler that routes each Ray trial to the scheduler of its pool (`pool_of(trial)`: its scale
    point's group), made on first use by `make_scheduler(early_stop, max_steps[pool])`."""

    def __init__(self, early_stop: EarlyStop, max_steps: dict[str, int], pool_of: Callable[[Any], str],
                 history: dict[str, Sequence[Sequence[tuple[int, float]]]] | None = None) -> None:
        super().__init__()
        self.early_stop, self.max_steps, self.pool_of = early_stop, max_steps, pool_of
        self.history = history or {}
        self.pools: dict[str, TrialScheduler] = {}
        self.stopped = 0

    def _pool(self, trial: Any) -> tuple[str, TrialScheduler]:
        pool = self.pool_of(trial)
        if pool not in self.pools:
            self.pools[pool] = self._replayed(pool)
        return pool, self.pools[pool]

    def _replayed(self, pool: str) -> TrialScheduler:
        """The pool's scheduler, fed the curves of its trials that finished before, through its public methods
        (each as a `_Finished` stand-in)."""
        scheduler = make_scheduler(self.early_stop, self.max_steps[pool])
        for i, curve in enumerate(self.history.get(pool, ())):
            past = _Finished(f"history-{pool}-{i}")
            scheduler.on_trial_add(None, past)
            for step, value in curve:
                if step < self.max_steps[pool] and math.isfinite(value):
                    scheduler.on_trial_result(None, past, {TIME_ATTR: step, OBJECTIVE: value})
        return scheduler

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the pools' schedulers have theirs (OBJECTIVE, min)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._pool(trial)[1].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        pool, scheduler = self._pool(trial)
        step, objective = result.get(TIME_ATTR), result.get(OBJECTIVE)
        if (result.get("final") or step is None or objective is None or objective >= DIVERGED_OBJECTIVE
                or not math.isfinite(objective) or step >= self.max_steps[pool]):
            return TrialScheduler.CONTINUE
        decision = scheduler.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped += 1
            return decision
        return TrialScheduler.CONTINUE  # never PAUSE: a function trainable without checkpoints would start over

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        # A trial's last result is its outcome report, which has the objective but no step: neither scheduler has
        # anything to record from it (the median rule would keep it, then fail to read its step), so it is skipped.
        if result and TIME_ATTR in result:
            self._pool(trial)[1].on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._pool(trial)[1].on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._pool(trial)[1].on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"mutransfer early stopping ({self.early_stop.method}) by scale point: {self.stopped} stopped"


__all__ = ["ByScalePoint", "make_scheduler"]
