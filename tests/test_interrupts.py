"""Interrupts and infrastructure faults: SIGINT and SIGTERM leave a sweep `interrupted` (exit 130 / 143, Ray's
processes ended, no scratch folder, the resume command printed) and the rerun finishes it; a trial whose worker
process died is run again, not stored as failed; after SIGKILL of the driver the same command completes the sweep
and removes the dead driver's scratch folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mutransfer.interruption import Interrupted, interruptible
from mutransfer.ray_setup import SCRATCH_OWNER, SCRATCH_PREFIX, remove_dead_scratch
from mutransfer.storage import Store
from mutransfer.testing.recipes import tiny_sweep_recipe
from mutransfer.testing.waiting import wait_for

# Six learning rates at two widths: 12 trials. The two trials running at once tend to finish together, so each stop
# finishes about two; after three stops some must still be waiting to start (the SIGKILL check needs pending ones).
SAMPLES = 6
RECIPE = tiny_sweep_recipe(name="long", train__steps=500, train__eval_interval=20, search__seed=5,
                           search__samples=SAMPLES)
FINISHED = ("completed", "diverged")


def test_sigterm_and_sigint_raise_interrupted_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        with pytest.raises(Interrupted) as info, interruptible(), interruptible():  # nested: the sweep's and its trials'
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
        assert info.value.exit_code == code and info.value.signal_name == signal.Signals(signum).name
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_signal_during_the_clean_up_is_ignored() -> None:
    cleaned = False
    with pytest.raises(Interrupted), interruptible():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Interrupted:
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the sweep cleans up
            time.sleep(0.2)
            cleaned = True
            raise
    assert cleaned


def test_scratch_folders_of_dead_drivers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    folders = {}
    for name, owner in (("dead", f"{socket.gethostname()} {dead.pid}"), ("live", f"{socket.gethostname()} {os.getpid()}"),
                        ("other-host", f"elsewhere.example {dead.pid}"), ("no-owner", None)):
        folders[name] = tmp_path / f"{SCRATCH_PREFIX}{name}"
        folders[name].mkdir()
        if owner:
            (folders[name] / SCRATCH_OWNER).write_text(owner + "\n")
    assert remove_dead_scratch(tmp_path) == [folders["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for n, f in folders.items() if n != "dead")


def test_a_requeued_trial_is_pending_without_its_points_and_keeps_why(db_url: str) -> None:
    from test_store import KEYS, sweep_with_trials

    from mutransfer.callbacks import LOST

    store = Store.open(db_url)
    sweep_id = sweep_with_trials(store)
    a, b = KEYS[:2]
    for key in (a, b):
        store.mark_running(sweep_id, key)
        store.add_points(sweep_id, key, [{"step": 1, "val_loss": 1.0}])
    store.finish_trial(sweep_id, b, "completed", metric=1.0)
    store.requeue_trial(sweep_id, a, f"{LOST} the actor died")
    store.requeue_trial(sweep_id, b, f"{LOST} too late")  # a finished trial stays finished
    trials = store.trials_frame(sweep_id).set_index("key")
    assert trials.loc[a, "status"] == "pending" and trials.loc[a, "error"].startswith(LOST)
    assert trials.loc[b, "status"] == "completed" and pd.isna(trials.loc[b, "error"])
    assert set(store.curves_frame(sweep_id)["key"]) == {b}
    store.mark_running(sweep_id, a)  # it runs again: the reason goes
    assert pd.isna(store.trials_frame(sweep_id).set_index("key").loc[a, "error"])


def test_worker_lost_tells_a_dead_process_from_an_exception_of_the_trial() -> None:
    from ray.exceptions import ActorDiedError, NodeDiedError, RayTaskError

    from mutransfer.callbacks import worker_lost

    assert worker_lost(None) and worker_lost(ActorDiedError()) and worker_lost(NodeDiedError("node gone"))
    raised = RayTaskError("run_pack", "Traceback ...", ValueError("bad"))
    assert not worker_lost(raised) and not worker_lost(raised.as_instanceof_cause())
    assert not worker_lost(ValueError("bad"))


# The sweeps, as an operator runs them: the CLI in its own process (and process group, as in a terminal).

def _env(tmp: Path, url: str) -> dict[str, str]:
    return {**os.environ, "MUTRANSFER_DB": url, "MUTRANSFER_RAY_DIR": str(tmp / "ray")}


def _start(tmp: Path, url: str, *, output: int = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mutransfer.cli", "sweep", "long.yaml", "-q", "--skip-check"],
                            cwd=tmp, env=_env(tmp, url), stdout=output, stderr=output, text=True,
                            start_new_session=True)


def _counts(store: Store) -> dict[str, int]:
    sweep = store.get_sweep("long")
    if sweep is None:
        return {}
    return {str(k): int(v) for k, v in store.trials_frame(sweep.id)["status"].value_counts().items()}



def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _gone(pids: list[int], timeout: float) -> list[int]:
    """The processes of `pids` still alive after `timeout` seconds."""
    import psutil

    def alive() -> list[int]:
        out = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    end = time.time() + timeout
    while alive() and time.time() < end:
        time.sleep(0.3)
    return alive()


def _finished(store: Store) -> int:
    return sum(_counts(store).get(s, 0) for s in FINISHED)


def _interrupt(tmp: Path, url: str, store: Store, signum: int, *, group: bool) -> None:
    """Start the sweep, signal it once a trial more than before has finished and another runs; check what it left."""
    before = _finished(store)
    proc = _start(tmp, url)
    wait_for(lambda: _finished(store) > before and _counts(store).get("running", 0),
             300, "a trial finished and one running")
    ray_procs = _descendants(proc.pid)
    assert ray_procs  # Ray runs in the driver's process tree
    if group:  # a terminal's Ctrl-C: the whole foreground process group
        os.killpg(proc.pid, signum)
    else:  # a scheduler's or service manager's stop: the driver alone
        os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "Tuner.restore" not in err, err[-3000:]
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(line) == 1 and line[0].startswith(f"interrupted by {signal.Signals(signum).name}: sweep 'long'"), err
    assert line[0].endswith("resume with: mutransfer sweep long.yaml -q --skip-check"), line
    counts = _counts(store)
    finished = sum(counts.get(s, 0) for s in FINISHED)
    ran = int(re.search(r"(\d+) of them in this run", line[0]).group(1))
    assert ran == finished - before > 0, (line, counts)  # the true count
    assert set(counts) <= {*FINISHED, "pending"} and counts.get("pending"), counts  # none left running
    assert store.get_sweep("long").status == "interrupted"
    assert not list((tmp / "ray").glob(SCRATCH_PREFIX + "*"))
    assert not _gone(ray_procs, 10), "Ray's processes outlived the driver"


def _sigkill(tmp: Path, url: str, store: Store) -> None:
    """Start the sweep and SIGKILL the driver once a trial more than before has finished and another runs: it
    cleans nothing up, as after a power cut."""
    before = _finished(store)
    # No pipes: the processes of the driver's Ray, orphaned, would hold them open.
    proc = _start(tmp, url, output=subprocess.DEVNULL)
    try:
        wait_for(lambda: _finished(store) > before and _counts(store).get("running", 0), 300,
                 "a trial finished and one running")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    counts = _counts(store)
    assert counts.get("running", 0) >= 1 and counts.get("pending", 0) >= 1, counts
    assert list((tmp / "ray").glob(SCRATCH_PREFIX + "*"))  # a killed driver cannot remove its scratch folder


def _rerun_finishes(tmp_path: Path, url: str, store: Store, *, after_sigkill: bool = False) -> None:
    """The same command once more runs the sweep to the end: every trial finished once, every curve complete; the
    trials finished before keep their results."""
    sweep = store.get_sweep("long")
    assert sweep is not None
    done_before = store.trials_frame(sweep.id).set_index("key")["finished_at"].dropna()
    proc = _start(tmp_path, url)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    if after_sigkill:
        assert "were running when the last run stopped" in err, err[-3000:]
    assert not list((tmp_path / "ray").glob(SCRATCH_PREFIX + "*"))  # also a dead driver's, removed
    trials = store.trials_frame(sweep.id).set_index("key")
    assert len(trials) == 2 * SAMPLES and set(trials["status"]) <= set(FINISHED), trials["status"]
    assert (trials.loc[done_before.index, "finished_at"] == done_before).all()  # finished trials were not run again
    val = store.curves_frame(sweep.id).query("name == 'val_loss'")
    assert not val.duplicated(["key", "step"]).any()  # partial curves of killed trials replaced, not appended to
    completed = trials.index[trials["status"] == "completed"]
    assert (val.groupby("key").size().loc[completed] == 25).all()  # 500 steps, an evaluation every 20
    assert store.get_sweep("long").status == "done"


# One sweep through every way a run stops on SQLite, each stop checked as it happens and the next run resuming:
# Ctrl-C to the whole process group, SIGTERM to the driver alone (the count of trials "in this run" when some
# finished before it), SIGKILL of the driver (no clean-up at all: trials left running, its scratch folder left), then
# the rerun that finishes it.
@pytest.mark.slow
def test_sigint_sigterm_and_sigkill_then_the_rerun_finishes_the_sweep(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "long.yaml").write_text(RECIPE)
    store = Store.open(sqlite_url)
    _interrupt(tmp_path, sqlite_url, store, signal.SIGINT, group=True)
    _interrupt(tmp_path, sqlite_url, store, signal.SIGTERM, group=False)
    _sigkill(tmp_path, sqlite_url, store)
    _rerun_finishes(tmp_path, sqlite_url, store, after_sigkill=True)


# On PostgreSQL one interrupt, then the rerun: what the store does (running trials back to pending, the sweep marked
# interrupted, the finished trials kept through the rerun) is the same for either signal and for a second one.
@pytest.mark.slow
@pytest.mark.postgres
def test_sigterm_leaves_a_postgresql_sweep_interrupted_and_the_rerun_finishes_it(pg_url: str,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "long.yaml").write_text(RECIPE)
    store = Store.open(pg_url)
    _interrupt(tmp_path, pg_url, store, signal.SIGTERM, group=False)
    _rerun_finishes(tmp_path, pg_url, store)
