"""Nothing lost: a killed sweep resumes, a trial that raises or whose process dies is stored as failed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutransfer.testing.recipes import edit, tiny_sweep_recipe

TESTS = Path(__file__).resolve().parent

SLOW_RECIPE = tiny_sweep_recipe(name="long", train__steps=1000, train__eval_interval=40, search__seed=5)


def env_for(tmp: Path, db: Path) -> dict[str, str]:
    return {**os.environ, "MUTRANSFER_DB": f"sqlite:///{db}", "MUTRANSFER_RAY_DIR": str(tmp / "ray"),
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def cli(args: list[str], tmp: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutransfer.cli", *args], cwd=tmp, env=env_for(tmp, db),
                          capture_output=True, text=True, timeout=900)


def statuses(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return dict(c.execute("SELECT status, count(*) FROM trials GROUP BY status").fetchall())
    except sqlite3.OperationalError:  # schema not made yet
        return {}


def wait_for(pred, timeout: float, what: str) -> None:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigkill_mid_sweep_then_the_same_command_completes_it(tmp_path: Path) -> None:
    db = tmp_path / "mt.db"
    (tmp_path / "long.yaml").write_text(SLOW_RECIPE)
    proc = subprocess.Popen([sys.executable, "-m", "mutransfer.cli", "sweep", "long.yaml", "-q"], cwd=tmp_path,
                            env=env_for(tmp_path, db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: statuses(db).get("completed", 0) + statuses(db).get("diverged", 0) >= 2
                 and statuses(db).get("running", 0) >= 1, 300, "two finished trials and one running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = statuses(db)
    assert before.get("running", 0) >= 1 and before.get("pending", 0) >= 1, before
    with sqlite3.connect(db) as c:
        done_before = dict(c.execute("SELECT key, finished_at FROM trials WHERE status IN ('completed', 'diverged')"))

    res = cli(["sweep", "long.yaml", "-q"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "were running when the last run stopped" in res.stderr
    after = statuses(db)
    assert sum(after.values()) == 8 and set(after) <= {"completed", "diverged"}, after
    with sqlite3.connect(db) as c:
        done_after = dict(c.execute("SELECT key, finished_at FROM trials"))
        # Finished trials were not run again: same finish time.
        assert all(done_after[k] == t for k, t in done_before.items())
        # No curve point stored twice (the killed trials' partial curves were replaced, not appended to).
        dup = c.execute("SELECT count(*) FROM (SELECT trial_id, step, name, count(*) AS n FROM metric_points "
                        "GROUP BY trial_id, step, name HAVING n > 1)").fetchone()[0]
        assert dup == 0
        per_trial = c.execute("SELECT count(DISTINCT step) FROM metric_points p JOIN trials t ON t.id = p.trial_id "
                              "WHERE t.status = 'completed' GROUP BY trial_id").fetchall()
        assert {n for (n,) in per_trial} == {25}
        assert c.execute("SELECT status FROM sweeps").fetchone()[0] == "done"


@pytest.mark.slow
def test_trial_that_raises_is_stored_failed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "mt.db"
    recipe = edit(SLOW_RECIPE, name="boom", model__family="flaky_builders:boom", train__steps=30,
                  train__eval_interval=10,
                  search__space={"boom": {"choice": [0, 1]}, "lr": {"loguniform": [1.0e-3, 3.0e-2]}})
    (tmp_path / "boom.yaml").write_text(recipe)
    res = cli(["sweep", "boom.yaml", "-q", "--skip-check"], tmp_path, db)
    if res.returncode == 2 and "--skip-check" in res.stderr and "No such option" in res.stderr:
        res = cli(["sweep", "boom.yaml", "-q"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT hparams, status, error FROM trials").fetchall()
    assert len(rows) == 8
    for hparams, status, error in rows:
        if '"boom": 1' in hparams:
            assert status == "failed" and "boom: this trial's model fails on purpose" in error
        else:
            assert status in ("completed", "diverged") and error is None
    assert any('"boom": 1' in h for h, _, _ in rows) and any('"boom": 0' in h for h, _, _ in rows)


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


@pytest.mark.slow
def test_killed_trial_process_is_marked_failed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "mt.db"
    (tmp_path / "long.yaml").write_text(edit(SLOW_RECIPE, search__samples=2))
    proc = subprocess.Popen([sys.executable, "-m", "mutransfer.cli", "sweep", "long.yaml", "-q"], cwd=tmp_path,
                            env=env_for(tmp_path, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: statuses(db).get("running", 0) >= 1 and _worker_pids(proc.pid), 300, "a running trial")
    os.kill(_worker_pids(proc.pid)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    after = statuses(db)
    assert sum(after.values()) == 4 and after.get("failed", 0) >= 1, after
    assert set(after) <= {"completed", "diverged", "failed"}
    with sqlite3.connect(db) as c:
        errors = [e for (e,) in c.execute("SELECT error FROM trials WHERE status = 'failed'")]
    assert all(e for e in errors)
