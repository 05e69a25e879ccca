"""A small sweep end to end through the CLI, on Ray started in-process: sweep -> store -> fit -> export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_here import cli

from mutransfer.testing.recipes import edit, tiny_sweep_recipe

LR = {"loguniform": [1.0e-3, 3.0e+3]}  # the top of the range diverges: stored as such, not an error
RECIPE = tiny_sweep_recipe(data__val_fraction=0.2, train__schedule="constant", search__seed=3,
                           search__space={"lr": LR}, scales__vary__width=[16, 32, 64])


def run(args: list[str], cwd: Path, db: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, as a user runs it (sweep, verify: the commands that start Ray); the others run in
    this process (cli_here.cli)."""
    env = {**os.environ, "MUTRANSFER_DB": db, "MUTRANSFER_RAY_DIR": str(cwd / "ray")}
    return subprocess.run([sys.executable, "-m", "mutransfer.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_sweep_fit_export_and_rerun(tmp_path: Path) -> None:
    from mutransfer.storage import Store

    (tmp_path / "tiny.yaml").write_text(RECIPE)
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    res = run(["sweep", "tiny.yaml"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "best trial per scale point" in res.stdout

    store = Store.open(db)
    sweep = store.get_sweep("tiny")
    assert sweep is not None and sweep.status == "done" and sweep.total_trials == 12
    trials = store.trials_frame(sweep.id)
    assert len(trials) == 12
    assert set(trials["status"]) <= {"completed", "diverged"}
    assert (trials["status"] == "diverged").any(), "lr up to 3e3 must diverge somewhere"
    assert (trials["status"] == "completed").sum() >= 6
    done = trials[trials["status"] == "completed"]
    assert done["metric"].notna().all() and (done["wall_time"] > 0).all() and (done["flops"] > 0).all()
    curves = store.curves_frame(sweep.id)
    # 40 steps, eval every 10: four points per completed trial, each with val_loss
    per_trial = curves[curves["name"] == "val_loss"].groupby("key").size()
    assert (per_trial.loc[done["key"]] == 4).all()

    res = cli(["fit", "tiny"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    # Six draws cannot place an optimum: the export refuses the value in one line, until told to extrapolate.
    res = cli(["export", "tiny", "--format", "yaml", "-o", "target.yaml"], tmp_path, db)
    assert res.returncode == 2 and "search.space.lr" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "target.yaml").exists()
    res = cli(["export", "tiny", "--format", "yaml", "-o", "target.yaml", "--allow-extrapolation"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "target.yaml").read_text())
    assert config["extrapolation"]["allowed"]
    assert config["target"]["width"] == 2048
    lr = config["hyperparameters"]["lr"]["value"]
    assert 1e-3 <= lr <= 3e3
    res = cli(["export", str(sweep.id), "--format", "json", "--allow-extrapolation"], tmp_path, db)
    assert res.returncode == 0 and json.loads(res.stdout)["target"]["width"] == 2048

    # Running the same commands again does not break and stores nothing twice (every trial is finished: the sweep
    # returns before Ray starts, so it runs in this process).
    res = cli(["sweep", "tiny.yaml"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nothing left to run" in res.stdout
    assert len(store.trials_frame(sweep.id)) == 12
    assert len(store.curves_frame(sweep.id)) == len(curves)
    assert cli(["fit", "tiny"], tmp_path, db).returncode == 0

    # A check at a larger size than any proxy: stored in the same sweep, as verification trials.
    res = run(["verify", "tiny", "--width", "128", "-q"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "verification at w128-d2-b32-s1" in res.stdout
    assert "the transfer held" in res.stdout or "beat the transferred" in res.stdout or "failed there" in res.stdout
    trials = store.trials_frame(sweep.id)
    ver = trials[trials["role"] == "verify"]
    assert len(ver) == 3 and set(ver["width"]) == {128} and set(ver["status"]) <= {"completed", "diverged"}
    lrs = sorted(ver["hp.lr"])
    assert lrs[1] == pytest.approx(2 * lrs[0]) and lrs[2] == pytest.approx(2 * lrs[1])
    res = cli(["ls"], tmp_path, db)
    assert res.returncode == 0 and "tiny" in res.stdout and "12/12" in res.stdout
    res = cli(["verify", "tiny", "--width", "64"], tmp_path, db)
    assert res.returncode == 2 and "larger than every proxy" in res.stderr


def test_bad_recipe_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(edit(RECIPE, train__steps=None, train__stepz=40))
    db_file = tmp_path / "mt.db"
    res = cli(["sweep", "bad.yaml"], tmp_path, f"sqlite:///{db_file}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.stepz: unknown key" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not db_file.exists()


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RECIPE)
    res = cli(["sweep", "r.yaml"], tmp_path, "postgresql://me:hunter2@127.0.0.1:1/nope")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "hunter2" not in res.stderr, res.stderr


@pytest.mark.slow
def test_optuna_search_fills_every_planned_trial(tmp_path: Path) -> None:
    from mutransfer.storage import Store

    recipe = edit(RECIPE, name="tpe", search__method="optuna", scales__vary__width=[16, 32],
                  search__space={"lr": LR, "output_mult": {"choice": [0.5, 2.0]}})
    (tmp_path / "tpe.yaml").write_text(recipe)
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    res = run(["sweep", "tpe.yaml"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    store = Store.open(db)
    trials = store.trials_frame(store.get_sweep("tpe").id)
    assert len(trials) == 8 and set(trials["status"]) <= {"completed", "diverged"}
    # The values Optuna chose are stored with each trial.
    assert trials["hp.lr"].between(1e-3, 3e3).all()
    assert set(trials["hp.output_mult"]) <= {0.5, 2.0}
