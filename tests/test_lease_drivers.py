"""Two real `mutransfer sweep` drivers on one sweep, on SQLite and PostgreSQL: the second is refused naming the
first; a driver whose lease is taken over stops in one line; the rerun finishes every planned trial exactly once,
every curve complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from mutransfer.storage import Store
from mutransfer.testing.recipes import tiny_sweep_recipe
from mutransfer.testing.waiting import wait_for

TESTS = Path(__file__).resolve().parent
STEPS, EVERY = 1500, 50
RECIPE = tiny_sweep_recipe(name="race", train__steps=STEPS, train__eval_interval=EVERY, search__seed=3)


def command(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "mutransfer.cli", "sweep", "race.yaml", "-q", "--skip-check"]



def counts(store: Store) -> dict[str, int]:
    s = store.get_sweep("race")
    return dict(s.counts) if s is not None else {}


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_drivers_on_one_sweep(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    store = Store.open(url)
    (tmp_path / "race.yaml").write_text(RECIPE)
    env = {**os.environ, "MUTRANSFER_DB": url, "MUTRANSFER_RAY_DIR": str(tmp_path / "ray"),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "first.log"  # a file, not a pipe nobody reads while it runs (Ray can fill one)
    first = subprocess.Popen(command(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=log.open("w"), text=True)
    try:
        wait_for(lambda: counts(store).get("running", 0) >= 1 or first.poll() is not None, 300, "a running trial")
        assert first.poll() is None, log.read_text()[-3000:]
        sweep = store.get_sweep("race")
        assert sweep is not None

        # A second driver while the first runs: refused in one line naming the first, exit 2, nothing changed.
        def started() -> dict[str, object]:
            t = store.trials_frame(sweep.id)
            return dict(zip(t["key"], t["started_at"], strict=True))

        before = {k: v for k, v in started().items() if v is not None and v == v}
        second = subprocess.run(command(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = error_lines(second.stderr)
        assert f"is being run by another driver (host {os.uname().nodename}, pid {first.pid}, last heartbeat" in line
        holder = store.lease_holder(sweep.id)
        assert holder is not None and holder.pid == first.pid
        after = started()
        assert all(after[k] == v for k, v in before.items())  # no running trial was reset

        # Its lease taken over (as if it had stalled past the expiry): the first driver stops in one line.
        from mutransfer.storage import LeaseOwner

        thief = LeaseOwner("elsewhere", 1, "thief")
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE sweep_leases SET expires_at = heartbeat_at WHERE sweep_id = :id"),
                         {"id": sweep.id})
        store.take_lease(sweep.id, thief)
        first.wait(timeout=300)
        err = log.read_text()
        assert first.returncode == 2, err[-3000:]
        [line] = error_lines(err)
        assert "this driver lost the lease of sweep 'race'" in line and "host elsewhere, pid 1" in line, line
        store.release_lease(sweep.id, thief)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    # The rerun finishes the sweep: every planned trial exactly once, every curve complete.
    res = subprocess.run(command(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = store.get_sweep("race")
    assert sweep is not None and sweep.status == "done" and store.lease_holder(sweep.id) is None
    trials = store.trials_frame(sweep.id)
    assert len(trials) == 8 and trials["key"].is_unique
    assert set(trials["status"]) <= {"completed", "diverged"}, trials["status"].value_counts()
    assert trials["started_at"].notna().all() and trials["finished_at"].notna().all()
    curves = store.curves_frame(sweep.id)
    val = curves[curves["name"] == "val_loss"]
    assert not val.duplicated(["key", "step"]).any()
    done = trials[trials["status"] == "completed"]["key"]
    assert len(done) and (val.groupby("key").size().loc[done] == STEPS // EVERY).all()
    store.close()
