"""The report record a trainable sends and the driver's callbacks read back."""

from __future__ import annotations

import math

import pytest

from mutransfer.plan import plan
from mutransfer.recipe import parse_recipe
from mutransfer.train import TrialResult
from mutransfer.tune_worker import DIVERGED_OBJECTIVE, OBJECTIVE, TrialReport

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
