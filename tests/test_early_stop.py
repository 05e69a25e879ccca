"""search.early_stop: Ray Tune's schedulers per scale point, stopped trials in the store, the fit and a resume
(with a refine round: the sweep that tests both; the refine plan itself is tests/test_refine.py's)."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray.tune.schedulers import TrialScheduler

from mutransfer import api
from mutransfer.fit.stopped import fit_frame, stopped_floors
from mutransfer.fit.sweep import fit_sweep, joint_optima
from mutransfer.recipe import EarlyStop, RecipeError, parse_recipe
from mutransfer.stopping import ByScalePoint
from mutransfer.storage import Store
from mutransfer.testing.recipes import edit, mlp_recipe, tiny_sweep_recipe
from mutransfer.testing.synthetic import synthetic_trials

ASHA = {"method": "asha", "grace_steps": 10, "reduction_factor": 3}


@dataclass(frozen=True)
class T:
    """A Ray trial as the schedulers see it (an id; the median rule hashes it); `pool`: its scale point."""

    trial_id: str
    pool: str


# ------------------------------------------------------------------------------------------------ the recipe


@pytest.mark.parametrize(("changes", "where"), [
    ({"search__early_stop": ASHA, "train__batch_trials": 4}, "search.early_stop: Ray Tune's schedulers stop"),
    ({"search__early_stop": {**ASHA, "grace_steps": 40}}, "search.early_stop.grace_steps: 40 is not below the 40"),
    ({"search__early_stop": {"method": "median", "grace_steps": 10, "reduction_factor": 2.0}},
     "search.early_stop.reduction_factor: applies to method: asha"),
    ({"search__early_stop": {**ASHA, "min_samples": 2}}, "search.early_stop.min_samples: applies to method: median"),
    ({"search__early_stop": {**ASHA, "reduction_factor": 1}}, "search.early_stop.reduction_factor"),
    ({"search__early_stop": {"method": "hyperband", "grace_steps": 10}}, "search.early_stop.method"),
])
def test_recipe_refuses_what_cannot_stop(changes: dict, where: str) -> None:
    with pytest.raises(RecipeError) as e:
        parse_recipe(tiny_sweep_recipe(**changes))
    assert where in str(e.value)


def test_recipes_without_the_options_keep_their_hash() -> None:
    plain = parse_recipe(tiny_sweep_recipe())
    assert parse_recipe(tiny_sweep_recipe(search__early_stop=None, search__refine=None)).hash() == plain.hash()
    assert parse_recipe(tiny_sweep_recipe(search__early_stop=ASHA)).hash() != plain.hash()
    # a stored recipe (every field written out) reads back
    stored = parse_recipe(tiny_sweep_recipe(search__early_stop=ASHA)).model_dump_json()
    assert parse_recipe(stored).search.early_stop == EarlyStop(**ASHA)


# ------------------------------------------------------------------------------------------------ the scheduler


def _feed(sched: ByScalePoint, trial: T, curve: list[tuple[int, float]]) -> int | None:
    """Feed a trial's evaluations; the step it was stopped at, None if it ran to its end."""
    sched.on_trial_add(None, trial)
    for step, value in curve:
        if sched.on_trial_result(None, trial, {"step": step, "objective": value}) == TrialScheduler.STOP:
            return step
    return None


def _curve(level: float, steps: int = 90) -> list[tuple[int, float]]:
    return [(t, level + 1.0 / t) for t in range(10, steps + 1, 10)]


def test_asha_compares_trials_only_within_their_scale_point() -> None:
    sched = ByScalePoint(EarlyStop(**ASHA), {"wide": 90, "narrow": 90}, lambda t: t.pool)
    # The wide point's trials are all better than any narrow one: one pool would stop every narrow trial.
    for i in range(6):
        assert _feed(sched, T(f"w{i}", "wide"), _curve(1.0 - 0.01 * i)) is None
    stopped = [_feed(sched, T(f"n{i}", "narrow"), _curve(3.0 + 0.1 * i))
               for i in range(6)]
    assert stopped[0] is None  # the narrow point's first (and best) trial runs to its end
    assert any(s is not None for s in stopped[1:])  # its later, worse ones are stopped among themselves
    assert all(s is None or s in (10, 30) for s in stopped)  # at the rungs: grace 10, times 3


def test_the_last_step_and_a_blown_up_loss_are_left_to_the_trial() -> None:
    sched = ByScalePoint(EarlyStop(**ASHA), {"p": 30}, lambda t: t.pool)
    for i in range(4):
        _feed(sched, T(f"good{i}", "p"), _curve(1.0, 30))
    bad = T("bad", "p")
    sched.on_trial_add(None, bad)
    # Far worse than all, but NaN/inf (it reports diverged next) or at its last step (its outcome comes next).
    assert sched.on_trial_result(None, bad, {"step": 10, "objective": 1e9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, bad, {"step": 30, "objective": 50.0}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, bad, {"objective": 50.0, "final": True}) == TrialScheduler.CONTINUE


def test_history_makes_a_new_trial_compete_with_the_finished_ones() -> None:
    history = {"p": [_curve(1.0 + 0.01 * i) for i in range(6)]}
    fresh = ByScalePoint(EarlyStop(**ASHA), {"p": 90}, lambda t: t.pool)
    fed = ByScalePoint(EarlyStop(**ASHA), {"p": 90}, lambda t: t.pool, history=history)
    # A trial worse than every finished one: alone in a new run it is the best so far; against the history it stops.
    assert _feed(fresh, T("x", "p"), _curve(2.0)) is None
    assert _feed(fed, T("x", "p"), _curve(2.0)) == 10


def test_median_rule_stops_a_trial_behind_the_median() -> None:
    es = EarlyStop(method="median", grace_steps=20, min_samples=3)
    sched = ByScalePoint(es, {"p": 90}, lambda t: t.pool)
    for i in range(3):  # until three others got there, nothing is compared
        assert _feed(sched, T(f"g{i}", "p"), _curve(1.0 + 0.3 * i)) is None
    assert _feed(sched, T("ahead", "p"), _curve(1.1)) is None  # better than the median (1.3) of the others
    assert _feed(sched, T("behind", "p"), _curve(1.5)) == 20  # worse: stopped at the grace step


# ------------------------------------------------------------------------------------------------ the fit


def _frame(status: list[str], group: list[str], metric: list[float], steps: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"key": [f"{g}/{i:03d}" for i, g in enumerate(group)], "group": group, "status": status,
                         "metric": metric, "steps": steps})


def test_floor_is_the_median_final_of_those_ahead_at_its_step_capped_at_its_own_loss() -> None:
    trials = _frame(["completed"] * 4 + ["stopped", "stopped", "stopped"] + ["completed"],
                    ["a"] * 7 + ["b"], [1.0, 1.2, 1.4, 1.6, 3.0, 1.1, 2.0, 0.5], [90] * 4 + [30, 30, 30] + [90])
    # Their val_loss at step 30: completed 0 and 1 were ahead of the stopped trial 4 (3.0), all four were not
    # ahead of trial 5 (1.1: only completed 0 at 1.05); the other point's trial is no peer.
    at30 = {0: 1.05, 1: 1.5, 2: 2.5, 3: 3.5, 7: 0.1}
    curves = pd.DataFrame([{"key": trials.key[i], "step": s, "name": "val_loss", "value": v + (0.5 if s == 10 else 0)}
                           for i, v in at30.items() for s in (10, 30)])
    floors = stopped_floors(trials, curves, "val_loss")
    assert math.isnan(floors[0]) and math.isnan(floors[7])
    assert floors[4] == pytest.approx(np.quantile([1.0, 1.2, 1.4], 0.5))  # those at or below 3.0 at step 30
    assert floors[5] == pytest.approx(1.0)  # completed 0 only (1.05 <= 1.1)
    # Trial 6 (2.0 at step 30): completed 0 and 1 ahead; their median final 1.1 is below its own 2.0
    assert floors[6] == pytest.approx(1.1)


def test_a_stopped_trial_without_a_completed_peer_is_no_evidence() -> None:
    trials = _frame(["stopped", "completed"], ["a", "b"], [2.0, 1.0], [30, 90])
    curves = pd.DataFrame([{"key": trials.key[1], "step": 30, "name": "val_loss", "value": 1.0}])
    assert stopped_floors(trials, curves, "val_loss").isna().all()


def test_stopped_trials_are_censored_not_completed() -> None:
    """Trials far below the optimum stopped early with their early (higher) losses as metric: read as completed,
    they would pull the optimum; held to their floors, the optimum stays where the completed trials put it."""
    r = parse_recipe(mlp_recipe(search__samples=24, search__seed=3))
    rng = np.random.default_rng(0)
    df = synthetic_trials(r, lambda s, p: -7.0, noise=0.02, rng=rng)
    low = np.log2(df["hp.lr"].to_numpy()) < -9.0
    assert low.sum() >= 8
    early = df["metric"] + 1.5  # the loss at the step they were stopped: far above where they would end
    as_completed = df.assign(metric=np.where(low, early, df["metric"]))
    stopped = as_completed.assign(status=np.where(low, "stopped", df["status"]),
                                  floor=np.where(low, df["metric"].min() + 0.05, np.nan))

    def optimum(frame: pd.DataFrame) -> float:
        fit = fit_sweep(frame, r, n_boot=20)
        return next(t.log2_value for t in fit.transfers if t.hparam == "lr")

    truth = optimum(df)
    assert abs(truth - -7.0) < 0.5
    assert abs(optimum(stopped) - truth) < 0.25
    assert optimum(as_completed) - truth > 0.4  # what reading them as completed does: the optimum moves up
    fit = fit_sweep(stopped, r, n_boot=20)
    assert all(p.n_completed == int((~low & (df["status"] == "completed")).to_numpy()[
        (df["width"] == p.scale.width).to_numpy()].sum()) for p in fit.points)


# ------------------------------------------------------------------------------------------------ a real sweep


def _sql(db: Path, query: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(query, args).fetchall()


@pytest.mark.slow
def test_sweep_with_asha_and_a_refine_round_stores_fits_and_resumes(tmp_path: Path) -> None:
    """One real sweep (Ray Tune, SQLite): ASHA stops trials, the refine round runs around the fitted optimum, the
    fit reads both, and a resume runs only what is missing (a refine round cut short, or never planned)."""
    text = edit(tiny_sweep_recipe(name="asha", search__samples=8, train__steps=60, train__eval_interval=10,
                                  search__space={"lr": {"loguniform": [1e-4, 1.0]}}),
                search__early_stop=ASHA, search__refine={"samples": 4, "span": 0.1})
    path = tmp_path / "asha.yaml"
    path.write_text(text)
    db = tmp_path / "db.sqlite"
    url = f"sqlite:///{db}"
    recipe = parse_recipe(text)
    summary = api.sweep(path, db=url, check=False)
    assert summary.total == 2 * (8 + 4) and sum(summary.counts.values()) == summary.total
    assert summary.counts.get("stopped", 0) >= 2 and summary.counts.get("completed", 0) >= 4
    with Store.open(url) as store:
        frame = store.trials_frame(summary.sweep_id)
        stopped = frame[frame["status"] == "stopped"]
        curves = store.curves_frame(summary.sweep_id, list(stopped["key"]))
        for _, row in stopped.iterrows():
            c = curves[(curves["key"] == row["key"]) & (curves["name"] == "val_loss")]
            assert row["steps"] < row["steps_planned"] and row["steps"] in (10, 30)
            assert c["step"].max() == row["steps"]  # its curve ends where it was stopped
            assert row["metric"] == pytest.approx(float(c.loc[c["step"].idxmax(), "value"]))
            assert row["flops"] > 0 and math.isfinite(row["flops"])
            peers = frame[(frame["group"] == row["group"]) & (frame["status"] == "completed")]
            assert row["n_params"] == peers["n_params"].iloc[0] > 0  # its size, as a completed peer's
            assert 0 < row["wall_time"] <= peers["wall_time"].max() * 5
        # The refine round: 4 draws per point, inside 0.1 x 13.3 octaves of round 0's fitted optimum there.
        refined = frame[frame["round"] == 1]
        assert len(refined) == 8 and set(refined["sample"]) == set(range(8, 12))
        first = fit_frame(store, summary.sweep_id, "val_loss")
        centres = joint_optima(first[first["round"] == 0], recipe)["mup"]
        half = 0.1 * math.log2(1e4)
        for _, row in refined.iterrows():
            point = next(s for s in centres if f"mup/{s.tag()}" == row["group"])
            lo = min(max(centres[point]["lr"], math.log2(1e-4) + half), -half)
            assert lo - half - 1e-9 <= math.log2(row["hp.lr"]) <= lo + half + 1e-9
        fitted = api.fit(store, "asha", save=False)
        assert fitted.compute.sweep_trials == len(frame)  # stopped trials' FLOPs are counted
        assert any(t.hparam == "lr" and t.value for t in fitted.result.transfers)
        again = api.sweep(path, store=store, check=False)  # resumed: nothing runs again, nothing changes
        assert again.ran == 0 and again.counts == summary.counts
    # Cut short in the refine round: two of its trials back to pending; a resume runs those two, keys and values
    # as they were.
    keys = [k for k, in _sql(db, "SELECT key FROM trials WHERE round = 1 ORDER BY id LIMIT 2")]
    before = dict(_sql(db, "SELECT key, hparams FROM trials WHERE round = 1"))
    for key in keys:
        _sql(db, "DELETE FROM metric_points WHERE trial_id = (SELECT id FROM trials WHERE key = ?)", key)
        _sql(db, "UPDATE trials SET status = 'pending', metric = NULL, steps = NULL WHERE key = ?", key)
    resumed = api.sweep(path, db=url, check=False)
    assert resumed.ran == 2 and dict(_sql(db, "SELECT key, hparams FROM trials WHERE round = 1")) == before
    # Cut short between the rounds: the refine round is planned again from the same fit, to the same trials.
    _sql(db, "DELETE FROM trials WHERE round = 1")
    replanned = api.sweep(path, db=url, check=False)
    assert replanned.ran == 8 and dict(_sql(db, "SELECT key, hparams FROM trials WHERE round = 1")) == before


@pytest.mark.slow
def test_optuna_with_the_median_rule_stops_trials_and_keeps_their_values(tmp_path: Path) -> None:
    text = edit(tiny_sweep_recipe(name="opt", search__samples=6, train__steps=60, train__eval_interval=10,
                                  search__method="optuna", search__space={"lr": {"loguniform": [1e-4, 1.0]}}),
                search__early_stop={"method": "median", "grace_steps": 20, "min_samples": 2})
    path = tmp_path / "opt.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    summary = api.sweep(path, db=url, check=False)
    assert summary.counts.get("stopped", 0) >= 1 and summary.left == 0
    with Store.open(url) as store:
        frame = store.trials_frame(summary.sweep_id)
    stopped = frame[frame["status"] == "stopped"]
    assert stopped["hp.lr"].notna().all()  # the searcher's values, stored as the trial started
    assert (stopped["steps"] >= 20).all() and (stopped["steps"] < 60).all()
