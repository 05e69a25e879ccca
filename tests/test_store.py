"""The store on SQLite and PostgreSQL: what goes in comes back out, nothing twice, errors in one line."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import pandas as pd
import pytest

from mutransfer.storage import Store, StoreError, TrialOutcome, TrialRecord, default_url, mask_url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def record(key: str, **hparams: object) -> TrialRecord:
    group = key.rsplit("/", 1)[0]
    return TrialRecord(key=key, group=group, parametrization=key.split("/")[0], width=64, depth=2, batch_size=32,
                       seq_len=1, steps_planned=100, sample=int(key[-3:]), repeat=0, seed=0, hparams=dict(hparams))


KEYS = ["mup/w64-d2-b32-s1/000", "mup/w64-d2-b32-s1/001", "mup/w128-d2-b32-s1/000"]


def sweep_with_trials(store: Store, name: str = "s") -> int:
    sweep = store.create_sweep(name, "name: s\n", '{"name": "s"}', "abc123", len(KEYS), "val_loss")
    store.add_trials(sweep.id, [record(k, lr=10.0 ** -(i + 1)) for i, k in enumerate(KEYS)])
    return sweep.id


# --------------------------------------------------------------------------------------------- sweeps


def test_create_get_list_sweeps(store: Store) -> None:
    a = store.create_sweep("alpha", "text", '{"a": 1}', "h1", 3, "val_loss")
    b = store.create_sweep("7", "text", "{}", "h2", 0, "train_loss")
    assert a.status == "planned" and a.total_trials == 3 and a.counts == {} and a.best_metric is None
    assert a.created_at.tzinfo is not None and a.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert store.get_sweep(a.id) == store.get_sweep(str(a.id)) == store.get_sweep("alpha")
    got = store.get_sweep("alpha")
    assert got is not None and got.recipe_json == '{"a": 1}' and got.recipe_hash == "h1" and got.metric_name == "val_loss"
    assert store.get_sweep("7") is not None and store.get_sweep("7").id == b.id  # digits: id first, then name
    assert store.get_sweep("nope") is None and store.get_sweep(999) is None
    with pytest.raises(StoreError, match="a sweep named 'alpha' already exists"):
        store.create_sweep("alpha", "text", "{}", "h", 0, "val_loss")

    store.add_trials(a.id, [record(k) for k in KEYS])
    store.mark_running(a.id, KEYS[0], node="n1")
    store.finish_trial(a.id, KEYS[0], "completed", metric=1.5, best_metric=1.2, steps=100)
    store.mark_running(a.id, KEYS[1])
    store.finish_trial(a.id, KEYS[1], "diverged", metric=float("nan"), steps=12)
    listed = {s.name: s for s in store.list_sweeps()}
    assert list(listed) == ["alpha", "7"]
    assert listed["alpha"].counts == {"completed": 1, "diverged": 1, "pending": 1}
    assert listed["alpha"].best_metric == 1.5
    assert listed["7"].counts == {} and listed["7"].best_metric is None

    store.set_sweep_status(a.id, "running")
    assert store.get_sweep(a.id).status == "running" and store.get_sweep(a.id).finished_at is None
    store.set_sweep_status(a.id, "done")
    done = store.get_sweep(a.id)
    assert done.status == "done" and done.finished_at is not None and done.finished_at.tzinfo is not None
    with pytest.raises(StoreError, match="unknown sweep status"):
        store.set_sweep_status(a.id, "exploded")
    with pytest.raises(StoreError, match="no sweep with id 999"):
        store.set_sweep_status(999, "done")


# --------------------------------------------------------------------------------------------- trials


def test_add_trials_is_idempotent(store: Store) -> None:
    sid = sweep_with_trials(store)
    assert store.add_trials(sid, [record(k) for k in KEYS]) == 0
    assert store.add_trials(sid, [record(k) for k in [*KEYS, "sp/w64-d2-b32-s1/000"]]) == 1
    frame = store.trials_frame(sid)
    assert len(frame) == 4 and frame["key"].is_unique
    assert set(frame["status"]) == {"pending"}
    # the planned values of an existing key are kept, not overwritten
    assert frame.set_index("key").loc[KEYS[0], "hparams"] == {"lr": 0.1}
    with pytest.raises(StoreError, match="appears twice"):
        store.add_trials(sid, [record("x/y/000"), record("x/y/000")])


def test_trial_from_spec() -> None:
    from mutransfer.plan import plan
    from mutransfer.recipe import Recipe

    recipe = Recipe.model_validate({
        "model": {"family": "mlp"}, "train": {"steps": 10}, "search": {"samples": 2, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}},
        "scales": {"base": {"width": 64}, "vary": {"width": [128]}}, "target": {"width": 256, "depth": 2, "batch_size": 32},
    })
    spec = plan(recipe)[-1]
    rec = TrialRecord.from_spec(spec)
    assert (rec.key, rec.group, rec.width, rec.steps_planned, rec.sample) == (spec.key, spec.group, 128, 10, 1)
    assert rec.hparams == spec.hparams and rec.hparams is not spec.hparams


def test_points_round_trip_with_nan_and_inf(store: Store) -> None:
    sid = sweep_with_trials(store)
    key = KEYS[0]
    store.mark_running(sid, key, node="host-1")
    n = store.add_points(sid, key, [
        {"step": 0, "train_loss": 2.5, "val_loss": 2.6},
        {"step": 10, "train_loss": float("nan"), "val_loss": float("inf"), "lr": None},  # None: not measured
    ])
    assert n == 4
    store.finish_trial(sid, key, "diverged", metric=float("inf"), best_metric=2.6, steps=20, wall_time=1.5,
                       flops=3e18, n_params=12_345_678_901, points=[{"step": 20, "train_loss": float("-inf")}])
    curves = store.curves_frame(sid)
    assert list(curves.columns) == ["key", "step", "name", "value"]
    got = {(r.step, r.name): r.value for r in curves.itertuples()}
    assert got[(0, "train_loss")] == 2.5 and got[(0, "val_loss")] == 2.6
    assert math.isnan(got[(10, "train_loss")])
    assert got[(10, "val_loss")] == math.inf and got[(20, "train_loss")] == -math.inf
    assert (10, "lr") not in got and len(curves) == 5
    assert curves["step"].tolist() == [0, 0, 10, 10, 20]

    t = store.trials_frame(sid).set_index("key").loc[key]
    assert t["status"] == "diverged" and math.isnan(t["metric"]) and t["best_metric"] == 2.6
    assert t["steps"] == 20 and t["n_params"] == 12_345_678_901 and t["flops"] == 3e18 and t["node"] == "host-1"
    assert t["started_at"] <= t["finished_at"]

    with pytest.raises(StoreError, match="without a 'step'"):
        store.add_points(sid, key, [{"val_loss": 1.0}])
    with pytest.raises(StoreError, match="not a number"):
        store.add_points(sid, key, [{"step": 1, "val_loss": "low"}])
    assert len(store.curves_frame(sid)) == 5  # a failed write leaves nothing behind


def test_finish_and_trial_errors(store: Store) -> None:
    sid = sweep_with_trials(store)
    store.mark_running(sid, KEYS[0])
    store.finish_trial(sid, KEYS[0], "failed", error="RuntimeError: boom\n  at line 3")
    t = store.trials_frame(sid).set_index("key").loc[KEYS[0]]
    assert t["status"] == "failed" and t["error"].startswith("RuntimeError: boom") and pd.isna(t["steps"])
    with pytest.raises(StoreError, match="already failed"):
        store.mark_running(sid, KEYS[0])
    with pytest.raises(StoreError, match="not 'running'"):
        store.finish_trial(sid, KEYS[1], "running")
    with pytest.raises(StoreError, match="has no trial 'nope'"):
        store.mark_running(sid, "nope")
    with pytest.raises(StoreError, match="has no trial 'nope'"):
        store.add_points(sid, "nope", [{"step": 1, "val_loss": 1.0}])
    assert store.trial_keys(sid, statuses=("failed",)) == {KEYS[0]}
    assert store.trial_keys(sid, statuses="pending") == set(KEYS[1:])
    assert store.trial_keys(sid) == set(KEYS)
    with pytest.raises(StoreError, match="unknown trial status"):
        store.trial_keys(sid, statuses=["done"])


def test_record_trials_writes_several_trials_in_one_transaction(store: Store) -> None:
    sid = sweep_with_trials(store)
    a, b, c = KEYS
    store.mark_running(sid, a)
    # b starts and finishes within the call; a's points come while it runs; c is not heard of.
    store.record_trials(sid, running=[b], points={a: [{"step": 5, "val_loss": 2.0}], c: []},
                        finished=[TrialOutcome(b, "completed", metric=1.5, steps=10, node="n",
                                               points=({"step": 10, "val_loss": 1.5, "train_loss": float("nan")},))])
    t = store.trials_frame(sid).set_index("key")
    assert t.loc[a, "status"] == "running" and t.loc[c, "status"] == "pending"
    assert t.loc[b, "status"] == "completed" and t.loc[b, "metric"] == 1.5 and t.loc[b, "node"] == "n"
    assert t.loc[b, "started_at"] <= t.loc[b, "finished_at"]
    curves = store.curves_frame(sid)
    assert sorted(zip(curves["key"], curves["step"], curves["name"], strict=True)) == [
        (a, 5, "val_loss"), (b, 10, "train_loss"), (b, 10, "val_loss")]
    # All or nothing: an unknown trial, a finished one started again or a bad point write none of the others.
    for bad in ({"running": ["nope"]}, {"running": [b]}, {"points": {a: [{"val_loss": 1.0}]}}):
        with pytest.raises(StoreError, match="has no trial 'nope'|already completed|without a 'step'"):
            store.record_trials(sid, finished=[TrialOutcome(a, "completed", metric=1.0)], **bad)
        assert store.trials_frame(sid).set_index("key").loc[a, "status"] == "running"
        assert len(store.curves_frame(sid)) == 3
    with pytest.raises(StoreError, match="not 'running'"):
        store.record_trials(sid, finished=[TrialOutcome(a, "running")])
    store.record_trials(sid)  # nothing to write: no transaction


def test_reset_unfinished(store: Store) -> None:
    sid = sweep_with_trials(store)
    store.mark_running(sid, KEYS[0], node="a")
    store.add_points(sid, KEYS[0], [{"step": 0, "val_loss": 3.0}])
    store.finish_trial(sid, KEYS[0], "completed", metric=2.0, points=[{"step": 10, "val_loss": 2.0}])
    store.mark_running(sid, KEYS[1], node="b")
    store.add_points(sid, KEYS[1], [{"step": 0, "val_loss": 3.1}, {"step": 10, "val_loss": 2.9}])

    assert store.reset_unfinished(sid) == 1
    assert store.reset_unfinished(sid) == 0
    frame = store.trials_frame(sid).set_index("key")
    assert frame.loc[KEYS[0], "status"] == "completed" and frame.loc[KEYS[1], "status"] == "pending"
    assert pd.isna(frame.loc[KEYS[1], "started_at"]) and pd.isna(frame.loc[KEYS[1], "node"])
    curves = store.curves_frame(sid)
    assert set(curves["key"]) == {KEYS[0]} and len(curves) == 2  # the partial curve is gone, the finished kept
    # the resumed trial runs again and its curve is not duplicated
    store.mark_running(sid, KEYS[1])
    store.add_points(sid, KEYS[1], [{"step": 0, "val_loss": 3.1}])
    assert len(store.curves_frame(sid, [KEYS[1]])) == 1


def test_update_hparams_and_trials_frame_columns(store: Store) -> None:
    sweep = store.create_sweep("s", "t", "{}", "h", 3, "val_loss")
    store.add_trials(sweep.id, [record(KEYS[0], lr=0.01, output_mult=2.0), record(KEYS[1]), record(KEYS[2], lr=0.1)])
    store.update_hparams(sweep.id, KEYS[1], {"lr": 0.003, "act": "relu"})
    frame = store.trials_frame(sweep.id)
    assert frame["key"].tolist() == KEYS  # plan order
    for col in ("id", "sweep_id", "key", "group", "parametrization", "width", "depth", "batch_size", "seq_len",
                "steps_planned", "sample", "repeat", "seed", "hparams", "status", "metric", "best_metric", "steps",
                "wall_time", "flops", "n_params", "node", "error", "started_at", "finished_at"):
        assert col in frame.columns, col
    hp = [c for c in frame.columns if c.startswith("hp.")]
    assert hp == ["hp.act", "hp.lr", "hp.output_mult"]
    assert frame["hp.lr"].tolist() == [0.01, 0.003, 0.1]
    assert frame["hp.output_mult"].iloc[0] == 2.0 and frame["hp.output_mult"].iloc[1:].isna().all()
    assert frame["hp.act"].iloc[1] == "relu"
    assert frame["hparams"].iloc[1] == {"lr": 0.003, "act": "relu"}
    assert frame["metric"].dtype == "float64" and frame["width"].dtype == "int64"

    empty = store.create_sweep("empty", "t", "{}", "h", 0, "val_loss")
    e = store.trials_frame(empty.id)
    assert len(e) == 0 and {"key", "status", "metric", "group"} <= set(e.columns)
    c = store.curves_frame(empty.id)
    assert len(c) == 0 and list(c.columns) == ["key", "step", "name", "value"]


def test_curves_frame_filters_by_key(store: Store) -> None:
    sid = sweep_with_trials(store)
    for i, key in enumerate(KEYS):
        store.add_points(sid, key, [{"step": s, "val_loss": 3.0 - s / 100 + i} for s in (0, 10, 20)])
    other = sweep_with_trials(store, "other")
    store.add_points(other, KEYS[0], [{"step": 0, "val_loss": 9.0}])
    assert len(store.curves_frame(sid)) == 9
    part = store.curves_frame(sid, [KEYS[2], KEYS[0]])
    assert set(part["key"]) == {KEYS[0], KEYS[2]} and len(part) == 6
    assert store.curves_frame(sid, []).empty
    assert 9.0 not in store.curves_frame(sid)["value"].tolist()


def test_fits_and_exports(store: Store) -> None:
    sid = sweep_with_trials(store)
    assert store.latest_fit(sid) is None and store.exports(sid) == []
    f1 = store.save_fit(sid, {"optimum": {"lr": 0.01}, "interval": [0.005, float("inf")]})
    f2 = store.save_fit(sid, {"optimum": {"lr": 0.02}, "warnings": ["edge of the range"]})
    assert f2 > f1
    latest = store.latest_fit(sid)
    assert latest == (f2, {"optimum": {"lr": 0.02}, "warnings": ["edge of the range"]})
    e1 = store.save_export(sid, f2, "yaml", "lr: 0.02\n")
    e2 = store.save_export(sid, None, "json", "{}")
    ex = store.exports(sid)
    assert [(e.id, e.fit_id, e.format, e.content) for e in ex] == [(e1, f2, "yaml", "lr: 0.02\n"), (e2, None, "json", "{}")]
    assert ex[0].created_at.tzinfo is not None
    with pytest.raises(StoreError, match="cannot store fit result"):
        store.save_fit(sid, {"bad": object()})
    with pytest.raises(StoreError, match="no sweep with id 999"):
        store.save_fit(999, {})


def test_numpy_values_are_stored_as_plain_numbers(store: Store) -> None:
    np = pytest.importorskip("numpy")
    sid = sweep_with_trials(store)
    store.add_points(sid, KEYS[0], [{"step": np.int64(5), "val_loss": np.float32(1.5)}])
    fit = store.save_fit(sid, {"x": np.float64(0.25), "v": np.arange(3)})
    assert store.latest_fit(sid) == (fit, {"x": 0.25, "v": [0, 1, 2]})
    assert store.curves_frame(sid)["value"].tolist() == [1.5]


def test_store_pickles_without_its_password(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Tune pickles its callbacks, and the store in them, into its experiment folder."""
    import pickle

    if db_url.startswith("postgresql"):
        db_url = db_url.replace("postgres@", "postgres:hunter2@", 1)  # trust auth: the password is not checked
    monkeypatch.delenv("MUTRANSFER_DB", raising=False)
    with Store.open(db_url) as store:
        sid = sweep_with_trials(store)
        blob = pickle.dumps(store)
        assert b"hunter2" not in blob
        with pickle.loads(blob) as copy:
            assert copy.trial_keys(sid) == set(KEYS)
            assert copy.engine.url.password is None
        if "hunter2" in db_url:
            monkeypatch.setenv("MUTRANSFER_DB", db_url)
            with pickle.loads(blob) as copy:
                assert copy.engine.url.password == "hunter2" and copy.get_sweep(sid) is not None


# --------------------------------------------------------------------------------------------- errors


def test_unreachable_postgres_is_one_line_with_password_masked() -> None:
    url = "postgresql://u:secret@127.0.0.1:1/x"
    with pytest.raises(StoreError) as err:
        Store.open(url)
    msg = str(err.value)
    assert "\n" not in msg and "secret" not in msg
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x" in msg and "refused" in msg.lower()


def test_unwritable_sqlite_path_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'mt.db'}"
    with pytest.raises(StoreError) as err:
        Store.open(url)
    msg = str(err.value)
    assert "\n" not in msg and str(blocker / "mt.db") in msg and "unable to open database file" in msg


def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        Store.open(f"sqlite:///{path}")


@pytest.mark.parametrize("url, fragment", [
    ("nonsense", "is not a database URL"),
    ("mysql://u:secret@host/db", "missing driver"),
    ("oracledb+nope://u:secret@host/db", "unknown or missing driver"),
])
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment) as err:
        Store.open(url)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_mask_url() -> None:
    assert mask_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert "secret" not in mask_url("not a url://u:secret@h")


def test_default_url_and_relative_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTRANSFER_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_url() == f"sqlite:///{tmp_path.resolve() / 'mutransfer.db'}"
    monkeypatch.setenv("MUTRANSFER_DB", "sqlite:///rel.db")
    assert default_url() == "sqlite:///rel.db"
    with Store.open(default_url()) as store:
        # resolved against the directory it was opened in: Ray Tune moves trials to another one
        assert store.engine.url.database == str(tmp_path.resolve() / "rel.db")
    assert (tmp_path / "rel.db").exists()


# --------------------------------------------------------------------------------------------- concurrency, speed


def test_lock_and_serialization_errors_are_retried(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    import psycopg
    from sqlalchemy.exc import IntegrityError, OperationalError

    monkeypatch.setattr(time, "sleep", lambda _s: None)
    transient = [
        OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked")),
        OperationalError("UPDATE", {}, psycopg.errors.SerializationFailure("could not serialize access")),
    ]
    with Store.open(sqlite_url) as store:
        calls: list[int] = []

        def flaky(s: object) -> int:
            calls.append(1)
            if len(calls) <= len(transient):
                raise transient[len(calls) - 1]
            return 42

        assert store._run("flaky write", flaky) == 42 and len(calls) == 3

        def broken(s: object) -> None:
            calls.append(1)
            raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: trials.key"))

        calls.clear()
        with pytest.raises(StoreError, match=r"^broken write failed on sqlite:///.*UNIQUE constraint failed"):
            store._run("broken write", broken)
        assert len(calls) == 1  # not a transient error: no retry

        def locked(s: object) -> None:
            raise transient[0]

        with pytest.raises(StoreError, match="database is locked"):
            store._run("locked write", locked)



def test_concurrent_writers_on_sqlite(sqlite_url: str) -> None:
    """Several processes' worth of writers on one file: none loses a write to "database is locked"."""
    with Store.open(sqlite_url) as store:
        sweep = store.create_sweep("c", "t", "{}", "h", 0, "val_loss")
        keys = [f"mup/w64-d2-b32-s1/{i:03d}" for i in range(40)]
        store.add_trials(sweep.id, [record(k) for k in keys])
    errors: list[BaseException] = []

    def worker(mine: list[str]) -> None:
        try:
            with Store.open(sqlite_url) as s:
                for key in mine:
                    s.mark_running(sweep.id, key)
                    for step in range(0, 50, 10):
                        s.add_points(sweep.id, key, [{"step": step, "val_loss": 1.0 / (step + 1)}])
                    s.list_sweeps()
                    s.finish_trial(sweep.id, key, "completed", metric=0.5, steps=50)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with Store.open(sqlite_url) as store:
        assert store.get_sweep("c").counts == {"completed": 40}
        assert len(store.curves_frame(sweep.id)) == 40 * 5


def test_curves_frame_of_a_big_sweep(db_url: str) -> None:
    """5,000 trials x 100 points: read back whole and by key, with the right types."""
    from sqlalchemy import text

    n_trials, n_points = 5000, 100
    with Store.open(db_url) as store:
        sweep = store.create_sweep("big", "t", "{}", "h", n_trials, "val_loss")
        store.add_trials(sweep.id, [
            TrialRecord(key=f"mup/w64-d2-b32-s1/{i:04d}", group="mup/w64-d2-b32-s1", parametrization="mup", width=64,
                        depth=2, batch_size=32, seq_len=1, steps_planned=n_points, sample=i, repeat=0, seed=0,
                        hparams={"lr": 0.1, "output_mult": 2.0})
            for i in range(n_trials)
        ])
        # The points are made inside the database: inserting 500,000 rows from Python would dominate the test.
        with store.session() as s:
            s.execute(text(
                "WITH RECURSIVE steps(step) AS (SELECT 0 UNION ALL SELECT step + 1 FROM steps WHERE step < :last) "
                "INSERT INTO metric_points (trial_id, step, name, value) "
                "SELECT t.id, steps.step, 'val_loss', 1.0 / (steps.step + 1) FROM trials t CROSS JOIN steps "
                "WHERE t.sweep_id = :sid"
            ), {"last": n_points - 1, "sid": sweep.id})
        # Speed is bench/database.py's job (BENCHMARKS.md), not a timed assertion here.
        curves = store.curves_frame(sweep.id)
        frame = store.trials_frame(sweep.id)
        assert len(curves) == n_trials * n_points and curves["key"].nunique() == n_trials
        assert curves["value"].dtype == "float64" and curves["value"].iloc[1] == 0.5
        assert len(frame) == n_trials and frame["hp.lr"].eq(0.1).all()
        some = frame["key"].iloc[::10].tolist()
        assert len(store.curves_frame(sweep.id, some)) == len(some) * n_points
