"""One trial's bookkeeping while it trains: the points it reports, the divergence stop, and its result.

train.train (one trial) and batched.train_batch (K stacked trials, one TrialLog each) keep the same books, so a
trial reports the same points and ends the same way whichever of them runs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialResult:
    status: str  # completed | diverged
    metric: float | None  # the mean of the last train.metric_window values of train.metric; None when diverged
    best_metric: float | None  # the best finite value reported
    steps: int  # optimizer steps done
    wall_time: float
    flops: float  # training FLOPs, estimated
    n_params: int
    final: dict[str, Any] = field(default_factory=dict)  # the last reported point


def window_metric(reported: list[float], window: int) -> float:
    """The trial's metric: the mean of its last `window` evaluations (train.metric_window; 1: the last one)."""
    tail = reported[-window:]
    return sum(tail) / len(tail)


@dataclass
class TrialLog:
    """The books of one training trial: the training losses since the last evaluation, the evaluations reported,
    the last point and whether the trial diverged.

    A trial diverges when a training loss is NaN/inf or above `diverge_factor` x its first loss (`diverges`), or
    when a validation loss is not finite (`evaluated`); either way it stops at once, its last point carrying the
    loss as it was (NaN/inf possible).
    """

    base_lr: float
    factor: Callable[[int], float]  # the schedule: LR factor of 0-based step s
    tokens_per_step: int
    metric: str  # train.metric: the point's key that is the trial's metric
    window: int  # train.metric_window
    diverge_factor: float | None
    start: float  # time.perf_counter() the points' `elapsed` counts from
    # Training FLOPs per token: each point then says the FLOPs spent so far (what a trial stopped early cost).
    flops_per_token: float | None = None
    n_params: int | None = None  # carried by each point too: a trial stopped early has no result to carry it
    status: str = field(default="completed", init=False)
    steps_done: int = field(default=0, init=False)
    last: dict[str, Any] = field(default_factory=dict, init=False)  # the last point made
    reported: list[float] = field(default_factory=list, init=False)  # the metric of each evaluation
    _first_loss: float | None = field(default=None, init=False)
    _since: float = field(default=0.0, init=False)  # training losses since the last evaluation, and how many
    _n_since: int = field(default=0, init=False)

    def point(self, step: int, train_loss: float, val_loss: float) -> dict[str, Any]:
        """What the trial reports after `step`."""
        return {
            "step": step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": self.base_lr * self.factor(step - 1),  # the LR of the step just taken
            "tokens": step * self.tokens_per_step,
            "elapsed": time.perf_counter() - self.start,
            **({"flops": self.flops_per_token * step * self.tokens_per_step} if self.flops_per_token else {}),
            **({"n_params": self.n_params} if self.n_params else {}),
        }

    def diverges(self, step: int, loss: float) -> bool:
        """Whether `step`'s training loss (before its update) ends the trial; if so `last` is the point to report,
        with val_loss NaN."""
        if self._first_loss is None:
            self._first_loss = loss
        limit = self.diverge_factor
        if not math.isfinite(loss) or (limit is not None and loss > limit * self._first_loss):
            self.status = "diverged"
            self.last = self.point(step, loss, float("nan"))
            return True
        return False

    def stepped(self, step: int, loss: float) -> None:
        """`step` was taken with training loss `loss`."""
        self._since += loss
        self._n_since += 1
        self.steps_done = step

    def evaluated(self, step: int, val_loss: float) -> bool:
        """Record an evaluation after `step`: `last` is the point to report (the mean training loss since the last
        evaluation, and `val_loss`). False when the validation loss is not finite: the trial diverged."""
        self.last = self.point(step, self._since / self._n_since, val_loss)
        self._since, self._n_since = 0.0, 0
        if not math.isfinite(val_loss):
            self.status = "diverged"
            return False
        self.reported.append(self.last[self.metric])
        return True

    def result(self, *, wall_time: float, flops_per_token: float, n_params: int) -> TrialResult:
        finite = [v for v in self.reported if math.isfinite(v)]
        return TrialResult(
            status=self.status,
            metric=window_metric(self.reported, self.window) if self.status == "completed" and self.reported else None,
            best_metric=min(finite) if finite else None,
            steps=self.steps_done,
            wall_time=wall_time,
            flops=flops_per_token * self.steps_done * self.tokens_per_step,
            n_params=n_params,
            final=dict(self.last),
        )
