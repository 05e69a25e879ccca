"""The report record a trainable sends and the driver's callbacks read back; a pack's reports go in batches, and
the driver writes a batch in one transaction."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import pytest

from mutransfer import tune_worker
from mutransfer.plan import plan
from mutransfer.recipe import parse_recipe
from mutransfer.train import TrialResult
from mutransfer.tune_worker import DIVERGED_OBJECTIVE, OBJECTIVE, REPORTS, TrialReport, reports_in

RECIPE = """
name: r
model: {family: mlp, parametrization: mup, base_width: 16}
data: {kind: digits}
train: {steps: 10, eval_interval: 5}
search: {samples: 1, seed: 0, space: {lr: {loguniform: [1.0e-3, 3.0e-2]}}}
scales: {base: {width: 16, depth: 2, batch_size: 16}}
target: {width: 64, depth: 2, batch_size: 16}
"""


def test_an_evaluation_round_trips_through_the_dict_tune_carries() -> None:
    spec = plan(parse_recipe(RECIPE))[0]
    point = {"step": 5, "train_loss": 2.0, "val_loss": 2.5, "lr": 0.01, "tokens": 80, "elapsed": 0.5}
    sent = TrialReport.evaluation(spec, point, "host/node", trial_key=spec.key).to_dict()
    assert sent[OBJECTIVE] == 2.5 and sent["step"] == 5  # the searcher's objective: the recipe's metric
    back = TrialReport.from_dict({**sent, "training_iteration": 1, "trial_id": "x"})  # Tune adds its own keys
    assert not back.final and back.trial_key == spec.key and back.node == "host/node"
    assert reports_in(sent) == [TrialReport.from_dict(sent)]  # one report, not a pack's batch
    assert back.point == {"step": 5, "train_loss": 2.0, "val_loss": 2.5, "lr": 0.01, "tokens": 80.0, "elapsed": 0.5}
    diverged = TrialReport.evaluation(spec, {**point, "val_loss": math.nan}, "n")
    assert diverged.objective == DIVERGED_OBJECTIVE and "trial_key" not in diverged.to_dict()


def test_an_outcome_and_a_failure_round_trip() -> None:
    result = TrialResult(status="diverged", metric=None, best_metric=2.0, steps=7, wall_time=1.5, flops=1e6,
                         n_params=100)
    back = TrialReport.from_dict(TrialReport.outcome(result, "n", trial_key="k").to_dict())
    assert back == TrialReport(node="n", objective=DIVERGED_OBJECTIVE, final=True, trial_key="k", status="diverged",
                               best_metric=2.0, steps_done=7, wall_time=1.5, flops=1e6, n_params=100)
    try:
        raise ValueError("bad")
    except ValueError as e:
        failed = TrialReport.from_dict(TrialReport.failure(e, "n", start=0.0).to_dict())
    assert failed.final and failed.status == "failed" and failed.objective == DIVERGED_OBJECTIVE
    assert failed.error is not None and failed.error.startswith("ValueError: bad\n") and failed.wall_time > 0
    with pytest.raises(TypeError):
        TrialReport.from_dict({"final": True})  # a report names where it ran and its objective


def _evaluation(key: str, step: int, loss: float) -> TrialReport:
    return TrialReport(node="n", objective=loss, trial_key=key, point={"step": step, "val_loss": loss})


def _outcome(key: str) -> TrialReport:
    result = TrialResult(status="completed", metric=1.0, best_metric=1.0, steps=10, wall_time=0.1, flops=1.0,
                         n_params=10)
    return TrialReport.outcome(result, "n", trial_key=key)


def test_a_pack_sends_its_reports_in_batches_without_waiting_for_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any]) -> None:
        time.sleep(0.05)  # the driver's round trip
        sent.append(metrics)

    monkeypatch.setattr(tune_worker.tune, "report", report)
    reporter = tune_worker._Reporter(linger=0.01)
    t = time.perf_counter()
    for i in range(20):
        reporter.put(_evaluation(f"k{i}", i, 1.0))
        if i == 9:
            time.sleep(0.1)  # a second batch
    assert time.perf_counter() - t < 0.2  # not 20 round trips
    reporter.close()  # sends the rest and waits
    got = [r for metrics in sent for r in reports_in(metrics)]
    assert [r.trial_key for r in got] == [f"k{i}" for i in range(20)] and 2 <= len(sent) < 20
    assert all(set(m) == {REPORTS} for m in sent)

    def fails(metrics: dict[str, Any]) -> None:
        raise RuntimeError("the session is gone")

    monkeypatch.setattr(tune_worker.tune, "report", fails)
    reporter = tune_worker._Reporter(linger=0.0)
    reporter.put(_evaluation("k", 1, 1.0))
    with pytest.raises(RuntimeError, match="the session is gone"):  # in the trials' thread, where the pack fails
        reporter.close()


def test_the_store_callback_writes_what_one_event_brings_in_one_transaction(sqlite_url: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from test_store import KEYS, sweep_with_trials

    from mutransfer.callbacks import StoreCallback, TrialMap
    from mutransfer.storage import Store

    store = Store.open(sqlite_url)
    sid = sweep_with_trials(store)
    a, b, c = KEYS
    writes: list[dict[str, Any]] = []
    record = store.record_trials
    monkeypatch.setattr(store, "record_trials", lambda *args, **kw: (writes.append(kw), record(*args, **kw))[1])
    callback = StoreCallback(store, sid, TrialMap(lambda t: t.config["key"], {a: [a, b, c]}), flush_every=0.2)
    trial = SimpleNamespace(config={"key": a})

    def status() -> dict[str, str]:
        return store.trials_frame(sid).set_index("key")["status"].to_dict()

    def points() -> dict[str, int]:
        return store.curves_frame(sid).groupby("key").size().to_dict()

    callback.on_trial_start(0, [], trial)  # the pack's first trial runs
    assert status()[a] == "running" and len(writes) == 1
    batch = [_evaluation(a, 5, 2.0), _evaluation(a, 10, 1.0), _outcome(a), _evaluation(b, 5, 2.0), _outcome(b),
             _evaluation(c, 5, 2.0)]
    callback.on_trial_result(0, [], trial, {REPORTS: [r.to_dict() for r in batch]})
    assert status() == {a: "completed", b: "completed", c: "running"} and points() == {a: 2, b: 1}
    assert len(writes) == 2  # one transaction: two outcomes with their points, and c started
    callback.on_step_end(0, [])
    assert len(writes) == 2  # c's point waits (flush_every) ...
    time.sleep(0.25)
    callback.on_step_end(0, [])
    assert points() == {a: 2, b: 1, c: 1} and len(writes) == 3  # ... and is written while c runs
    callback.on_step_end(0, [])
    assert len(writes) == 3  # nothing to write, no transaction
    store.close()
