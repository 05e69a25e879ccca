"""Nothing lost: a trial that raises is stored as failed, one whose process dies runs again, one whose process always
dies stays pending (a killed sweep resuming: tests/test_interrupts.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mutransfer.testing.recipes import edit, tiny_sweep_recipe
from mutransfer.testing.waiting import wait_for

TESTS = Path(__file__).resolve().parent

SLOW_RECIPE = tiny_sweep_recipe(name="long", train__steps=1000, train__eval_interval=40, search__seed=5)


def env_for(tmp: Path, db: Path) -> dict[str, str]:
    return {**os.environ, "MUTRANSFER_DB": f"sqlite:///{db}", "MUTRANSFER_RAY_DIR": str(tmp / "ray"),
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def cli(args: list[str], tmp: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutransfer.cli", *args], cwd=tmp, env=env_for(tmp, db),
                          capture_output=True, text=True, timeout=900)


# A driver killed with SIGKILL mid-sweep, then the same command completing it: tests/test_interrupts.py, in the one
# sweep that goes through every way a run stops.


@pytest.mark.slow
def test_trial_that_raises_is_stored_failed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # Also the sweep with --skip-check of a model the coordinate check refuses (flaky_builders.Boom's readout lost
    # its 1/width_mult): it runs anyway, and no check is stored.
    from mutransfer.coordcheck import run_coord_check
    from mutransfer.recipe import parse_recipe
    from mutransfer.storage import Store

    db = tmp_path / "mt.db"
    recipe = edit(SLOW_RECIPE, name="boom", model__family="flaky_builders:boom", train__steps=30,
                  train__eval_interval=10,
                  search__space={"boom": {"choice": [0, 1]}, "lr": {"loguniform": [1.0e-3, 3.0e-2]}})
    (tmp_path / "boom.yaml").write_text(recipe)
    assert not run_coord_check(parse_recipe(recipe), "mup").passed  # what the gate would say without --skip-check
    res = cli(["sweep", "boom.yaml", "-q", "--skip-check"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "coordinate check" not in res.stderr
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT hparams, status, error FROM trials").fetchall()
    assert len(rows) == 8
    for hparams, status, error in rows:
        if '"boom": 1' in hparams:
            assert status == "failed" and "boom: this trial's model fails on purpose" in error
        else:
            assert status in ("completed", "diverged") and error is None
    assert any('"boom": 1' in h for h, _, _ in rows) and any('"boom": 0' in h for h, _, _ in rows)
    with Store.open(f"sqlite:///{db}") as store:
        sweep = store.get_sweep("boom")
        assert sweep is not None and sweep.status == "done"
        assert store.checks(sweep.id) == []


def _worker_pids(driver: int) -> list[int]:
    """The trial processes of this sweep: Ray workers under the driver's process tree (Ray started in-process), not
    those of anything else running on the machine."""
    import psutil

    try:
        tree = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for p in tree:
        try:
            if "ray::ImplicitFunc" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pids


# On SQLite only: what the store does for a trial whose worker died (requeue_trial: back to pending, its partial
# curve deleted, why kept until it runs again) is checked on both backends by test_interrupts.py's
# test_a_requeued_trial_is_pending_without_its_points_and_keeps_why; the rest (the retry, the pack) is the driver's.
@pytest.mark.slow
def test_killed_trial_process_its_trials_run_again_and_its_packs_finished_trials_stay(tmp_path: Path,
                                                                                       sqlite_url: str) -> None:
    from mutransfer.storage import Store

    url = sqlite_url
    store = Store.open(url)
    # One trial at a time, in packs of two (8 trials, one slot): kill the worker once a trial of its pack finished
    # and the next one runs.
    (tmp_path / "long.yaml").write_text(edit(SLOW_RECIPE, train__steps=500, train__eval_interval=20,
                                             resources__max_concurrent=1))
    proc = subprocess.Popen([sys.executable, "-m", "mutransfer.cli", "sweep", "long.yaml", "-q", "--skip-check"],
                            cwd=tmp_path, env={**env_for(tmp_path, tmp_path / "unused.db"), "MUTRANSFER_DB": url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def frame():  # noqa: ANN202
        sweep = store.get_sweep("long")
        return None if sweep is None else store.trials_frame(sweep.id)

    def one_finished_one_running() -> bool:
        f = frame()
        return f is not None and (f["status"] == "running").sum() == 1 and f["status"].isin(["completed", "diverged"]).sum() == 1

    wait_for(lambda: one_finished_one_running() and _worker_pids(proc.pid), 300, "a trial finished, the next running")
    finished = frame().set_index("key")["finished_at"].dropna()
    os.kill(_worker_pids(proc.pid)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "lost their worker process: running them again (retry 1 of 2)" in err, err[-3000:]
    trials = frame().set_index("key")
    assert len(trials) == 8 and set(trials["status"]) <= {"completed", "diverged"}, trials["status"]
    assert (trials.loc[finished.index, "finished_at"] == finished).all()  # the pack's finished trial kept its result
    val = store.curves_frame(int(trials["sweep_id"].iloc[0])).query("name == 'val_loss'")
    assert not val.duplicated(["key", "step"]).any()
    completed = trials.index[trials["status"] == "completed"]
    assert (val.groupby("key").size().loc[completed] == 25).all()  # 500 steps, an evaluation every 20


@pytest.mark.slow
def test_a_trial_whose_worker_always_dies_stays_pending_after_its_retries(tmp_path: Path) -> None:
    # Pending, not failed: the next run runs it again, as any unfinished trial (the resume above).
    from mutransfer.callbacks import LOST

    db = tmp_path / "mt.db"
    recipe = edit(SLOW_RECIPE, name="dies", model__family="flaky_builders:dies", train__steps=30,
                  train__eval_interval=10, search__samples=2, search__seed=2,
                  search__space={"die": {"choice": [0, 1]}, "lr": {"loguniform": [1.0e-3, 3.0e-2]}})
    (tmp_path / "dies.yaml").write_text(recipe)
    res = cli(["sweep", "dies.yaml", "-q", "--skip-check"], tmp_path, db)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "2 trial(s) lost their worker process: running them again (retry 2 of 2)" in res.stderr
    assert "error: 2 trial(s) not finished: their worker process died 3 times; run the same command" in res.stderr
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT hparams, status, error FROM trials").fetchall()
        assert c.execute("SELECT status FROM sweeps").fetchone()[0] == "interrupted"
    assert len(rows) == 4 and sum('"die": 1' in h for h, _, _ in rows) == 2
    for hparams, status, error in rows:
        if '"die": 1' in hparams:  # never stored as failed: an infrastructure fault, not the trial's result
            assert status == "pending" and error.startswith(LOST), (status, error)
        else:
            assert status in ("completed", "diverged") and error is None
