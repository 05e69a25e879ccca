"""What runs on a Ray worker: the trainables, and the report record they send back to the driver.

Trials never touch the database: each worker runs `train(spec, report)` and sends every evaluation, then the
trial's outcome, as a `TrialReport` through Tune; the callbacks on the driver (mutransfer.callbacks) read the same
record back (`reports_in`) and write the store. A pack sends its reports in batches, from a thread of its own
(`_Reporter`): the trials do not wait for the driver.
"""

from __future__ import annotations

import math
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

if TYPE_CHECKING:
    from mutransfer.plan import TrialSpec
    from mutransfer.train import TrialResult

# Reported to Ray as the searcher's objective for a diverged trial: Optuna needs a number, and a diverged
# trial is the worst outcome there is.
DIVERGED_OBJECTIVE = 1e9
# The key of TrialReport.objective in the dict Tune carries: what an adaptive searcher minimises.
OBJECTIVE = "objective"
# The values of an evaluation that the store keeps, besides its step.
POINT_VALUES = ("train_loss", "val_loss", "lr", "tokens", "elapsed")
# The key of a pack's batch of reports in the dict Tune carries: a list of `TrialReport.to_dict()`s.
REPORTS = "reports"
# How long a pack's reporter waits for more reports before it sends what it has (see _Reporter).
REPORT_LINGER_S = 0.1


@dataclass
class TrialReport:
    """One report of a trainable: an evaluation of a trial (`point`), or, `final`, the trial's outcome.

    Tune carries it as one flat dict (`to_dict`): the point's values beside the record's fields, fields that are
    None left out. Tune adds keys of its own, which `from_dict` ignores.
    """

    node: str  # where it ran: host and Ray node (see node_name)
    objective: float  # the trial's metric so far; DIVERGED_OBJECTIVE when it has none
    final: bool = False
    # The trial it is about, where a Ray trial runs a pack of trials; None: the Ray trial's own (adaptive search).
    trial_key: str | None = None
    point: dict[str, Any] = field(default_factory=dict)  # step, train_loss, val_loss, lr, tokens, elapsed
    # The outcome, in a final report.
    status: str | None = None
    metric: float | None = None
    best_metric: float | None = None
    steps_done: int | None = None
    wall_time: float | None = None
    flops: float | None = None
    n_params: int | None = None
    error: str | None = None

    @classmethod
    def evaluation(cls, spec: TrialSpec, point: dict[str, Any], node: str,
                   trial_key: str | None = None) -> TrialReport:
        value = point.get(spec.train.metric)
        objective = value if value is not None and math.isfinite(value) else DIVERGED_OBJECTIVE
        point = dict(point)
        # The FLOPs so far and the model's size travel as the record's fields, not as curve values: a stopped
        # trial's cost and size.
        return cls(node=node, objective=objective, trial_key=trial_key, point=point, flops=point.pop("flops", None),
                   n_params=point.pop("n_params", None))

    @classmethod
    def outcome(cls, result: TrialResult, node: str, trial_key: str | None = None) -> TrialReport:
        return cls(node=node, objective=result.metric if result.metric is not None else DIVERGED_OBJECTIVE,
                   final=True, trial_key=trial_key, status=result.status, metric=result.metric,
                   best_metric=result.best_metric, steps_done=result.steps, wall_time=result.wall_time,
                   flops=result.flops, n_params=result.n_params)

    @classmethod
    def failure(cls, e: Exception, node: str, start: float, trial_key: str | None = None) -> TrialReport:
        """A trial that raised `e` (call it in the `except` block: the message carries the traceback's end)."""
        tb = traceback.format_exc(limit=-3)
        return cls(node=node, objective=DIVERGED_OBJECTIVE, final=True, trial_key=trial_key, status="failed",
                   error=f"{type(e).__name__}: {e}\n{tb}", wall_time=time.time() - start)

    def to_dict(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "point"}
        return {**self.point, **{k: v for k, v in record.items() if v is not None}}

    @classmethod
    def from_dict(cls, result: dict[str, Any]) -> TrialReport:
        names = {f.name for f in fields(cls)} - {"point"}
        report = cls(**{k: v for k, v in result.items() if k in names})
        if not report.final:
            report.point = {"step": int(result["step"])}
            for name in POINT_VALUES:
                if result.get(name) is not None:
                    report.point[name] = float(result[name])
        return report


def reports_in(result: dict[str, Any]) -> list[TrialReport]:
    """The reports in one result Tune carries: a pack's batch (REPORTS), else the one report it is."""
    batch = result.get(REPORTS)
    if batch is None:
        return [TrialReport.from_dict(result)]
    return [TrialReport.from_dict(r) for r in batch]


def node_name() -> str:
    """Hostname plus Ray's node id: two Ray nodes may share a host (and an IP) yet are different nodes."""
    try:
        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:
        return socket.gethostname()


def _send(report: TrialReport) -> None:
    tune.report(report.to_dict())


def run_trial(config: dict[str, Any], template: TrialSpec, threads: int = 1) -> None:
    """The Ray trainable of an adaptive search: the searcher picked the values (`config`) of the `template` trial.

    Reports every evaluation; the last report carries the trial's outcome. Its reports name no trial: the
    callbacks on the driver hand each Ray trial its trial key."""
    from mutransfer.train import train

    spec = replace(template, hparams={k: v for k, v in config.items() if k != "key"})
    node = node_name()
    start = time.time()
    try:
        result = train(spec, lambda point: _send(TrialReport.evaluation(spec, point, node)), threads=threads)
    except Exception as e:  # a trial that raises is data: stored as failed with its message, the sweep goes on
        _send(TrialReport.failure(e, node, start))
        return
    _send(TrialReport.outcome(result, node))


class _Reporter:
    """Sends a pack's reports through Tune from a thread of its own: all those waiting, in one `tune.report`.

    Tune's function trainables report synchronously: `tune.report` returns only once the driver has processed the
    result (its callbacks have written the store) and asked for the next one, a round trip of ~5 ms on two cores.
    A proxy trial of a few steps took ~9 ms; sent from the trial's own thread its evaluation and its outcome cost
    it two round trips more (BENCHMARKS.md, orchestration). Here the trials put their reports and go on; the thread
    sends what has come, having waited REPORT_LINGER_S for more, so the driver gets one result per batch of trials
    instead of two per trial, and a long trial's reports still leave within REPORT_LINGER_S. `close` sends the rest
    and waits: when a pack's function returns, all its reports are with the driver.
    """

    def __init__(self, linger: float = REPORT_LINGER_S) -> None:
        self.linger = linger
        self._cond = threading.Condition()
        self._queue: list[dict[str, Any]] = []
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="mutransfer-reports", daemon=True)
        self._thread.start()

    def put(self, report: TrialReport) -> None:
        with self._cond:
            self._raise()
            self._queue.append(report.to_dict())
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        with self._cond:
            self._raise()

    def _raise(self) -> None:
        # A failed send fails the pack where its trials run (its trials not reported are then lost or failed, as
        # when the trainable raises); a SystemExit is Tune stopping the trial, which ends a trainable's thread.
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                self._cond.wait_for(lambda: self._closing, timeout=self.linger)  # more reports, in the same send
                batch, self._queue = self._queue, []
            try:
                tune.report({REPORTS: batch})
            except BaseException as e:  # handed to the trials' thread, which raises it
                with self._cond:
                    self._error = e
                return


def run_pack(config: dict[str, Any], packs: dict[str, list[TrialSpec]], threads: int = 1,
             batch: bool = False, batch_reports: bool = True) -> None:
    """The Ray trainable of trials whose values are fixed: several trials in one Ray trial, each reported under
    its own key.

    One Ray trial costs Tune a scheduling round, an actor reset and its bookkeeping whatever it runs; a proxy of a
    few steps costs less than that. Running several trials per Ray trial pays it once for all of them. With
    `batch` the trials (all of one shape, see batched.pack) train at once as one stacked model; else one by one.
    Every report carries its `trial_key`: the callbacks file it under that trial. Reports go in batches
    (`_Reporter`), unless `batch_reports` is False (early stopping: the scheduler reads every evaluation).
    """
    if not batch_reports:
        # An early-stopping scheduler (mutransfer.stopping) judges each evaluation as its own Tune result, and
        # stops the trial in the middle of its run: every report goes at once, from the trial's own thread.
        _run_pack(packs[config["key"]], _send, threads, batch)
        return
    reporter = _Reporter()
    try:
        _run_pack(packs[config["key"]], reporter.put, threads, batch)
    finally:
        reporter.close()


def _run_pack(specs: list[TrialSpec], send_report: Any, threads: int, batch: bool) -> None:
    from mutransfer.batched import train_batch
    from mutransfer.train import train

    node = node_name()

    def send(spec: TrialSpec, point: dict[str, Any]) -> None:
        send_report(TrialReport.evaluation(spec, point, node, trial_key=spec.key))

    if batch and len(specs) > 1:
        start = time.time()
        try:
            results = train_batch(specs, send, threads=threads)
        except Exception as e:  # the batch failed as a whole: every trial in it is stored as failed
            for spec in specs:
                send_report(TrialReport.failure(e, node, start, trial_key=spec.key))
            return
        for spec, result in zip(specs, results, strict=True):
            send_report(TrialReport.outcome(result, node, trial_key=spec.key))
        return
    for spec in specs:
        start = time.time()
        try:
            result = train(spec, lambda point, spec=spec: send(spec, point), threads=threads)
        except Exception as e:  # a trial that raises is data: stored as failed with its message, the pack goes on
            send_report(TrialReport.failure(e, node, start, trial_key=spec.key))
            continue
        send_report(TrialReport.outcome(result, node, trial_key=spec.key))
