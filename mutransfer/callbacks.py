"""The driver's Tune callbacks: `StoreCallback` writes every report to the store, `ProgressCallback` shows it.

Both read what a trainable sent as a `TrialReport` and see the same events about the same trials: a Ray trial runs
one trial or a pack of them (`TrialMap`), and `TrialCallback` turns Tune's events about Ray trials into events about
trials. Tune calls its callbacks in order, so the store has a result before the display shows it.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from mutransfer.storage import Store, TrialOutcome
from mutransfer.tune_worker import TrialReport, reports_in
from mutransfer.values import finite_or_none


@dataclass
class TrialMap:
    """Which trials a Ray trial runs: `key_of(trial)` names the Ray trial; a pack's Ray trial runs the trials
    `packs[key]` (their reports name theirs), any other the one trial of that key. In a `batched` pack all
    trials train at once, else one after another."""

    key_of: Callable[[Any], str]
    packs: dict[str, list[str]] = field(default_factory=dict)
    batched: bool = False
    # A scheduler may stop these Ray trials early (search.early_stop): one that ends without its outcome was stopped.
    stoppable: bool = False

    def keys(self, trial: Any) -> list[str]:
        key = self.key_of(trial)
        return self.packs.get(key, [key])


class TrialCallback(tune.Callback):
    """Tune's events about Ray trials as events about trials: each trial starts once, reports points, then
    finishes (from its final report), dies (its Ray trial raised before it could report), is lost (its worker
    process died: it runs again) or is stopped (the scheduler ended it early, after its last reported point).
    Subclasses say what to do at each of them."""

    def __init__(self, trials: TrialMap) -> None:
        self.trials = trials
        self._done: set[str] = set()
        self._started: set[str] = set()
        self._last: dict[str, TrialReport] = {}  # each running trial's last evaluation: where a stopped one ended

    def trial_started(self, key: str) -> None: ...

    def trial_point(self, key: str, report: TrialReport) -> None: ...

    def trial_finished(self, key: str, report: TrialReport) -> None: ...

    def trial_died(self, key: str, error: str) -> None: ...

    def trial_lost(self, key: str, error: str, started: bool) -> None: ...

    def trial_stopped(self, key: str, last: TrialReport | None) -> None: ...

    def _start(self, key: str) -> None:
        if key in self._started or key in self._done:
            return
        self._started.add(key)
        self.trial_started(key)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        keys = self.trials.keys(trial)
        # A batched pack runs all its trials at once; a sequential one starts with its first (the others start as
        # their first report arrives).
        for key in keys if self.trials.batched else keys[:1]:
            self._start(key)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        # One result of a pack carries a batch of reports (tune_worker._Reporter), in the order they were made.
        for report in reports_in(result):
            key = report.trial_key or self.trials.key_of(trial)
            if key in self._done:
                continue
            self._start(key)
            if not report.final:
                if self.trials.stoppable:
                    self._last[key] = report
                self.trial_point(key, report)
                continue
            self._done.add(key)
            self._last.pop(key, None)
            self.trial_finished(key, report)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # Tune ends a Ray trial as complete when its trainable returned (every trial reported its outcome before)
        # or when the scheduler stopped it: then its trial has no outcome, and ends where its last point was.
        if not self.trials.stoppable:
            return
        for key in self.trials.keys(trial):
            if key not in self._done and key in self._started:
                self._done.add(key)
                self.trial_stopped(key, self._last.pop(key, None))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # The Ray trial ended before every trial of its pack reported its outcome. Either its worker process died
        # (killed, out of memory, lost node: `worker_lost`), and those trials are lost to an infrastructure fault,
        # to run again; or the trainable itself raised outside a trial's own `try`, and they failed. The trials of
        # the pack that finished before keep their results.
        keys = [k for k in self.trials.keys(trial) if k not in self._done]
        if not keys:
            return
        err = trial_error(trial)
        lost = worker_lost(err)
        msg = str(err or "trial process died without reporting").strip()
        for key in keys:
            self._done.add(key)
            if lost:
                self.trial_lost(key, f"{LOST} {msg}", started=key in self._started)
            else:
                self.trial_died(key, msg)


# How a lost trial's error begins, while it waits (pending) to run again: `show` and the dashboard tell why.
LOST = "worker process died, to run again:"


def trial_error(trial: Any) -> BaseException | None:
    """The exception Tune recorded for a Ray trial, None if it recorded none. Tune writes it to the trial's folder on
    the driver (`pickled_error_file`) at once; its own readers look in the storage folder, synced later."""
    from ray import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except Exception:  # no such file, or an error that does not unpickle here
        pass
    try:
        return trial.get_error()  # the text, as a TuneError
    except Exception:
        return None


def worker_lost(err: BaseException | None) -> bool:
    """Whether a Ray trial ended by an infrastructure fault (its worker process or node died: no exception of the
    trial's own), not by an exception its code raised (a RayTaskError)."""
    from ray import exceptions as rx

    if err is None:  # no error at all: the process went without a word
        return True
    if isinstance(err, rx.RayTaskError):
        return False
    if isinstance(err, rx.RayActorError):
        return not err.actor_init_failed  # an actor that could not start fails the same way every time
    return isinstance(err, (rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError, rx.LocalRayletDiedError,
                            rx.ObjectLostError))


class StoreCallback(TrialCallback):
    """Writes every reported point and each trial's outcome to the store, on the driver.

    The hooks collect; what one Tune event brought (a pack's batch of reports: trials that started, their points,
    their outcomes) is written at the end of the event in one transaction (`Store.record_trials`). A transaction
    per trial and event (marked running, first points, outcome: three per proxy trial) cost the driver about as
    much as Tune's own handling of the results, and a worker waits for its result to be handled (BENCHMARKS.md,
    orchestration). A finished trial's outcome and its last points are in the same transaction: a crash never
    leaves a finished trial half-written. Points of a running trial wait at most `flush_every` seconds (written at
    an event or at the end of a step of Tune's loop, which steps at least every 0.1 s), so a long trial's curve
    shows up while it runs.
    """

    def __init__(self, store: Store, sweep_id: int, trials: TrialMap, flush_every: float = 2.0) -> None:
        super().__init__(trials)
        self.store, self.sweep_id = store, sweep_id
        self.flush_every = flush_every
        self._points: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._waiting_since: dict[str, float] = {}  # key -> when its oldest point not written came
        self._running: list[str] = []  # started, not written yet
        self._finished: list[TrialOutcome] = []  # finished, not written yet

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        super().on_trial_start(iteration, trials, trial, **info)
        hparams = {k: v for k, v in trial.config.items() if k != "key"}
        if hparams:  # an adaptive search's values, picked as the Ray trial starts
            self.store.update_hparams(self.sweep_id, self.trials.keys(trial)[0], hparams)
        self._write()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        super().on_trial_result(iteration, trials, trial, result, **info)
        self._write()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        super().on_trial_error(iteration, trials, trial, **info)
        self._write()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        super().on_trial_complete(iteration, trials, trial, **info)  # a trial the scheduler stopped
        self._write()

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._write()  # points that waited flush_every

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._write()

    def trial_started(self, key: str) -> None:
        self._running.append(key)

    def trial_point(self, key: str, report: TrialReport) -> None:
        self._points[key].append(report.point)
        self._waiting_since.setdefault(key, time.monotonic())

    def trial_finished(self, key: str, report: TrialReport) -> None:
        assert report.status is not None  # a final report carries the trial's status
        self._finished.append(TrialOutcome(
            key, report.status, metric=finite_or_none(report.metric), best_metric=finite_or_none(report.best_metric),
            steps=report.steps_done, wall_time=report.wall_time, flops=report.flops, n_params=report.n_params,
            error=report.error, node=report.node, points=self._take(key)))

    def trial_died(self, key: str, error: str) -> None:
        self._finished.append(TrialOutcome(key, "failed", error=error[-4000:], points=self._take(key)))

    def trial_lost(self, key: str, error: str, started: bool) -> None:
        self._write()  # what came before, first: the trials of the pack that finished keep their results
        self._take(key)
        self.store.requeue_trial(self.sweep_id, key, error[:4000])

    def trial_stopped(self, key: str, last: TrialReport | None) -> None:
        # Its metric is the one at the step it reached (what the scheduler judged it on); the fit reads a stopped
        # trial as censored evidence, never as a completed one (mutransfer.fit.stopped).
        metric = finite_or_none(last.objective) if last is not None else None
        self._finished.append(TrialOutcome(
            key, "stopped", metric=metric, best_metric=metric,
            steps=int(last.point["step"]) if last is not None else None,
            flops=last.flops if last is not None else None, n_params=last.n_params if last is not None else None,
            wall_time=last.point.get("elapsed") if last is not None else None,
            node=last.node if last is not None else None, points=self._take(key)))

    def _take(self, key: str) -> tuple[dict[str, Any], ...]:
        self._waiting_since.pop(key, None)
        return tuple(self._points.pop(key, ()))

    def _write(self) -> None:
        now = time.monotonic()
        due = [k for k, since in self._waiting_since.items() if now - since >= self.flush_every]
        if not (self._running or self._finished or due):
            return
        running, finished, self._running, self._finished = self._running, self._finished, [], []
        self.store.record_trials(self.sweep_id, running=running, points={k: self._take(k) for k in due},
                                 finished=finished)


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
            + (f"stopped {self.counts['stopped']}  " if self.counts['stopped'] else "") +
            f"{time.time() - self._t0:.0f}s"
        )
        bar = ProgressBar(total=max(self.total, 1), completed=self.done, width=60)
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("scale point")
        table.add_column(f"best {self.metric}", justify="right")
        table.add_column("trial")
        for group in sorted(self.best, key=group_order):
            value, key = self.best[group]
            table.add_row(group, f"{value:.4f}", key.rsplit("/", 1)[-1])
        return Group(bar, head, table)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def started(self) -> None:
        self.running += 1
        self.refresh()

    def finished(self, key: str, status: str, metric: float | None, note: str = "") -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.counts[status] += 1
        group = key.rsplit("/", 1)[0]
        if metric is not None and math.isfinite(metric) and (group not in self.best or metric < self.best[group][0]):
            self.best[group] = (metric, key)
        if self.enabled and not self.tty:
            best = self.best.get(group)
            shown = f"{metric:.4f}" if metric is not None else "-"
            if status == "stopped":
                print(f"[{self.done}/{self.total}] {key} stopped{note}", file=sys.stderr, flush=True)
            else:
                print(f"[{self.done}/{self.total}] {key} {status} {self.metric}={shown}"
                      f" (best at this scale {best[0]:.4f})" if best else f"[{self.done}/{self.total}] {key} {status}",
                      file=sys.stderr, flush=True)
        self.refresh()

    def lost(self, key: str, started: bool) -> None:
        """Trial `key` lost its worker process: not done, it runs again."""
        self.running = max(0, self.running - int(started))
        if self.enabled and not self.tty:
            print(f"[{self.done}/{self.total}] {key} lost its worker process: it runs again", file=sys.stderr, flush=True)
        self.refresh()


class ProgressCallback(TrialCallback):
    """Shows each trial's start and outcome on a `Progress` (one display for every Tune run of a sweep)."""

    def __init__(self, progress: Progress, trials: TrialMap) -> None:
        super().__init__(trials)
        self.progress = progress

    def trial_started(self, key: str) -> None:
        self.progress.started()

    def trial_finished(self, key: str, report: TrialReport) -> None:
        assert report.status is not None  # a final report carries the trial's status
        self.progress.finished(key, report.status, finite_or_none(report.metric))

    def trial_died(self, key: str, error: str) -> None:
        self.progress.finished(key, "failed", None)

    def trial_lost(self, key: str, error: str, started: bool) -> None:
        self.progress.lost(key, started)

    def trial_stopped(self, key: str, last: TrialReport | None) -> None:
        self.progress.finished(key, "stopped", None, note=f" at step {last.point['step']}" if last is not None else "")


def group_order(group: str) -> tuple[Any, ...]:
    """Sort key of a scale point's group ("mup/w64-d2-b32-s64"): by parametrization, then its sizes as numbers."""
    param, tag = group.split("/", 1)
    nums = tuple(int(part[1:]) for part in tag.split("-"))
    return (param, *nums)

