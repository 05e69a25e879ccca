"""The store: every sweep, trial, learning curve, fit and export, in SQLite or PostgreSQL.

Like optuna's storage layer: one place opens transactions (`Store._run`, which retries on SQLite's "database is
locked" and PostgreSQL's serialization failures), and ORM rows never leave `mutransfer.storage`: callers get
frozen values (`mutransfer.storage.records`) or pandas DataFrames (`mutransfer.storage.frames`). Every failure is
a `StoreError` with a one-line message whose URL is masked.

Metrics are losses: "best" means smallest. Non-finite metric values round-trip (see `mutransfer.storage.models`);
a trial's `metric` and `best_metric` are finite or missing (a diverged trial has none).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mutransfer.storage import frames, lease, schema
from mutransfer.storage.engine import is_read_only, make_engine, read_only
from mutransfer.storage.errors import StoreError
from mutransfer.storage.lease import LeaseHolder, LeaseOwner
from mutransfer.storage.models import (
    PLANNED_COLUMNS,
    MetricPoint,
    Sweep,
    Trial,
    check_integers,
    finite_or_none,
    point_rows,
    to_json,
    utcnow,
)
from mutransfer.storage.outputs import Outputs
from mutransfer.storage.records import SweepInfo, TrialOutcome, TrialRecord
from mutransfer.storage.status import FINISHED_STATUSES, SweepStatus, TrialRole, TrialStatus
from mutransfer.storage.urls import (
    describe_error,
    mask_url,
    normalize_url,
    password_from_env,
    scrub,
    without_password,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def _insert_points(s: Session, rows: list[dict[str, Any]]) -> None:
    # A Core executemany: the ORM's bulk insert path took twice as long for the same rows.
    s.connection().execute(MetricPoint.__table__.insert(), rows)


def _retryable(e: DBAPIError) -> bool:
    orig = e.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):  # serialization failure, deadlock
        return True
    msg = str(orig).lower()
    return "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg


def _sweep_info(row: Sweep, counts: dict[str, int], best: float | None) -> SweepInfo:
    return SweepInfo(
        id=row.id, name=row.name, status=row.status, recipe_hash=row.recipe_hash, recipe_text=row.recipe_text,
        recipe_json=row.recipe_json, total_trials=row.total_trials, metric_name=row.metric_name,
        created_at=row.created_at, finished_at=row.finished_at, counts=counts,
        best_metric=None if best is None else float(best), updated_at=row.updated_at,
    )


class Store(Outputs):
    """Sweeps, trials, curves, fits and exports in one database. Build with `Store.open(url)`.

    `read_only`: a SQLite file this user cannot write (or whose folder it cannot write) is opened read-only:
    every read works, a write fails in one line. A driver that holds a sweep's lease `fence`s the store: its
    writes to that sweep's trials then check, each in its own transaction, that the lease is still its own.
    """

    # Attempts after the first, on lock or serialization errors. Few: on SQLite each attempt has already waited
    # out the busy timeout before it reports "database is locked".
    retries = 4

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.masked_url = mask_url(engine.url)
        self._write = sessionmaker(engine, expire_on_commit=False)
        self._read = sessionmaker(read_only(engine), expire_on_commit=False)
        self.read_only = is_read_only(engine)
        self._fences: dict[int, str] = {}  # sweep id -> the lease token this store's trial writes need

    # ----------------------------------------------------------------------------------- open / close

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Store:
        """Connect to `url` and bring its schema to head (or, with upgrade=False, check that it is there)."""
        engine = make_engine(url)
        try:
            schema.ensure_head(engine, migrate=upgrade)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.masked_url!r})"

    # Ray Tune pickles its callbacks, and so the store they hold, into its experiment folder (as optuna's RDB
    # storage, the engine is rebuilt from the URL). The password is left out: it must not land on disk there.
    # An unpickled store takes it from $MUTRANSFER_DB when that names the same database, else libpq's
    # PGPASSWORD or ~/.pgpass apply.

    def __getstate__(self) -> dict[str, Any]:
        url = self.engine.url
        return {"url": without_password(url).render_as_string(hide_password=False),
                "had_password": url.password is not None, "fences": dict(self._fences)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = normalize_url(state["url"])
        if state.get("had_password"):
            url = password_from_env(url)
        self.__init__(make_engine(url))  # type: ignore[misc]
        self._fences = dict(state.get("fences") or {})

    # ----------------------------------------------------------------------------------- transactions

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises. No retry: see `_run`."""
        s = (self._write if write else self._read)()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def _run(self, what: str, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """`fn` in one transaction, run again from scratch when the database was locked or the transaction
        lost a serialization race (the failed attempt was rolled back, so running it again is safe)."""
        delay = 0.02
        for attempt in range(self.retries + 1):
            try:
                with self.session(write=write) as s:
                    return fn(s)
            except DBAPIError as e:
                if attempt < self.retries and _retryable(e):
                    log.debug("%s on %s: %s; retrying", what, self.masked_url, scrub(str(e.orig), self.engine.url))
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 2.0)
                    continue
                raise StoreError(f"{what} failed on {self.masked_url}: {describe_error(e, self.engine.url)}") from e
            except (SQLAlchemyError, OverflowError) as e:  # OverflowError: sqlite3 refuses an int over 64 bits
                raise StoreError(f"{what} failed on {self.masked_url}: {describe_error(e, self.engine.url)}") from e
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------------------------- sweeps

    def create_sweep(self, name: str, recipe_text: str, recipe_json: str, recipe_hash: str, total_trials: int,
                     metric_name: str, *, trials: Sequence[TrialRecord] = (), owner: LeaseOwner | None = None,
                     replace_empty: bool = False) -> SweepInfo:
        """A new sweep with its planned `trials` (pending), and the lease of `owner` (the driver creating it), in
        one transaction: a kill or a failed insert leaves nothing. With `replace_empty`, a sweep of that name with
        no trial at all (left by an older mutransfer, which stored them in a second transaction) is replaced."""
        rows = self._planned_rows(name, trials)
        check_integers(Sweep.__table__, {"total_trials": int(total_trials)}, f"sweep {name!r}")

        def fn(s: Session) -> SweepInfo:
            old = s.scalar(select(Sweep.id).where(Sweep.name == name))
            if old is not None:
                empty = not s.scalar(select(func.count()).select_from(Trial).where(Trial.sweep_id == old))
                if not (replace_empty and empty):
                    raise StoreError(f"a sweep named {name!r} already exists in {self.masked_url}")
                s.execute(delete(Sweep).where(Sweep.id == old))
            row = Sweep(name=name, recipe_text=recipe_text, recipe_json=recipe_json, recipe_hash=recipe_hash,
                        status=SweepStatus.PLANNED.value, total_trials=int(total_trials), metric_name=metric_name)
            s.add(row)
            s.flush()
            if rows:
                s.execute(insert(Trial), [{**r, "sweep_id": row.id} for r in rows])
            if owner is not None:
                lease.take(s, row.id, owner)
            own = sum(r["role"] == TrialRole.SWEEP.value for r in rows)
            return _sweep_info(row, {TrialStatus.PENDING.value: own} if own else {}, None)

        return self._run("create sweep", fn)

    def get_sweep(self, name_or_id: str | int) -> SweepInfo | None:
        """By id (an int, or a string of digits) or else by name; None when there is no such sweep."""

        def fn(s: Session) -> SweepInfo | None:
            row: Sweep | None = None
            ref = name_or_id
            if isinstance(ref, int) and not isinstance(ref, bool):
                row = s.get(Sweep, ref)
            elif isinstance(ref, str):
                if ref.isascii() and ref.isdigit():
                    row = s.get(Sweep, int(ref))
                if row is None:
                    row = s.scalars(select(Sweep).where(Sweep.name == ref)).one_or_none()
            if row is None:
                return None
            counts, best = self._stats(s, row.id)
            return _sweep_info(row, counts.get(row.id, {}), best.get(row.id))

        return self._run("read sweep", fn, write=False)

    def list_sweeps(self) -> list[SweepInfo]:
        def fn(s: Session) -> list[SweepInfo]:
            rows = s.scalars(select(Sweep).order_by(Sweep.id)).all()
            counts, best = self._stats(s, None)
            return [_sweep_info(r, counts.get(r.id, {}), best.get(r.id)) for r in rows]

        return self._run("list sweeps", fn, write=False)

    @staticmethod
    def _stats(s: Session, sweep_id: int | None) -> tuple[dict[int, dict[str, int]], dict[int, float]]:
        """Trials per status and best completed metric, per sweep, in two grouped queries (the sweep's own
        trials: verification trials run at other sizes and are reported apart)."""
        own = Trial.role == TrialRole.SWEEP.value
        q = select(Trial.sweep_id, Trial.status, func.count()).where(own).group_by(Trial.sweep_id, Trial.status)
        b = (select(Trial.sweep_id, func.min(Trial.metric)).where(Trial.status == TrialStatus.COMPLETED.value, own)
             .group_by(Trial.sweep_id))
        if sweep_id is not None:
            q, b = q.where(Trial.sweep_id == sweep_id), b.where(Trial.sweep_id == sweep_id)
        counts: dict[int, dict[str, int]] = {}
        for sid, status, n in s.execute(q):
            counts.setdefault(sid, {})[status] = int(n)
        best = {sid: float(m) for sid, m in s.execute(b) if m is not None}
        return counts, best

    def set_sweep_status(self, sweep_id: int, status: str) -> None:
        if status not in set(SweepStatus):
            raise StoreError(f"unknown sweep status {status!r}: use {', '.join(s.value for s in SweepStatus)}")

        def fn(s: Session) -> None:
            row = self._sweep_row(s, sweep_id)
            row.status = SweepStatus(status).value
            row.finished_at = utcnow() if status in (SweepStatus.DONE, SweepStatus.FAILED) else None

        self._run("set sweep status", fn)

    @staticmethod
    def _sweep_row(s: Session, sweep_id: int) -> Sweep:
        row = s.get(Sweep, sweep_id)
        if row is None:
            raise StoreError(f"no sweep with id {sweep_id}")
        return row

    # ----------------------------------------------------------------------------------- trials

    @staticmethod
    def _planned_rows(sweep: str | int, rows: Sequence[TrialRecord]) -> list[dict[str, Any]]:
        """`rows` as trials rows (without their sweep id), each key once and every integer in its column's range."""
        seen: set[str] = set()
        out = []
        for r in rows:
            if r.key in seen:
                raise StoreError(f"trial key {r.key!r} appears twice in the plan of sweep {sweep}")
            seen.add(r.key)
            row = {c: getattr(r, c) for c in PLANNED_COLUMNS}
            check_integers(Trial.__table__, row, f"trial {r.key!r}")
            out.append({**row, "hparams": to_json(r.hparams, f"hyperparameters of trial {r.key!r}"),
                        "status": TrialStatus.PENDING.value})
        return out

    def add_trials(self, sweep_id: int, rows: Sequence[TrialRecord]) -> int:
        """Store planned trials as pending; keys already in the sweep are skipped. Returns how many were added."""
        planned = self._planned_rows(sweep_id, rows)

        def fn(s: Session) -> int:
            self._sweep_row(s, sweep_id)
            self._fenced(s, sweep_id)
            existing = set(s.scalars(select(Trial.key).where(Trial.sweep_id == sweep_id)))
            new = [{"sweep_id": sweep_id, **r} for r in planned if r["key"] not in existing]
            if new:
                s.execute(self._insert_ignoring_duplicates(s), new)
            return len(new)

        return self._run("add trials", fn)

    # ----------------------------------------------------------------------------------- the driver lease

    def take_lease(self, sweep_id: int, owner: LeaseOwner) -> LeaseHolder | None:
        """Take the sweep's lease (see mutransfer.storage.lease); returns the stale holder taken over, if any.
        Raises LeaseError, having changed nothing, when a live driver holds it."""
        return self._run("take the sweep's lease", lambda s: lease.take(s, sweep_id, owner))

    def renew_lease(self, sweep_id: int, owner: LeaseOwner) -> bool:
        return self._run("renew the sweep's lease", lambda s: lease.renew(s, sweep_id, owner))

    def release_lease(self, sweep_id: int, owner: LeaseOwner) -> None:
        self._run("release the sweep's lease", lambda s: lease.release(s, sweep_id, owner))

    def lease_holder(self, sweep_id: int) -> LeaseHolder | None:
        """The driver that holds the sweep's lease now (None: none does)."""
        return self._run("read the sweep's lease", lambda s: lease.holder(s, sweep_id), write=False)

    def fence(self, sweep_id: int, token: str | None) -> None:
        """Make this store's writes to the sweep's trials need the lease `token` (None: no longer)."""
        if token is None:
            self._fences.pop(sweep_id, None)
        else:
            self._fences[sweep_id] = token

    def holds_lease(self, sweep_id: int) -> bool:
        """Whether this store writes the sweep's trials under a lease (its driver holds one)."""
        return sweep_id in self._fences

    def _fenced(self, s: Session, sweep_id: int) -> None:
        token = self._fences.get(sweep_id)
        if token is not None:
            lease.check_held(s, sweep_id, token)

    @staticmethod
    def _insert_ignoring_duplicates(s: Session) -> Any:
        # The keys were filtered inside this transaction; on PostgreSQL (no IMMEDIATE lock) a concurrent
        # add_trials could still insert the same key first, so let the database drop such rows.
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(Trial).on_conflict_do_nothing(index_elements=["sweep_id", "key"])
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(Trial).on_conflict_do_nothing(index_elements=["sweep_id", "key"])
        return insert(Trial)

    @staticmethod
    def _trial_row(s: Session, sweep_id: int, key: str) -> Trial:
        row = s.scalars(select(Trial).where(Trial.sweep_id == sweep_id, Trial.key == key)).one_or_none()
        if row is None:
            raise StoreError(f"sweep {sweep_id} has no trial {key!r}")
        return row

    def mark_running(self, sweep_id: int, key: str, node: str | None = None) -> None:
        def fn(s: Session) -> None:
            self._fenced(s, sweep_id)
            self._set_running(sweep_id, self._trial_row(s, sweep_id, key), node)

        self._run("mark trial running", fn)

    @staticmethod
    def _set_running(sweep_id: int, row: Trial, node: str | None = None) -> None:
        if row.status in FINISHED_STATUSES:
            raise StoreError(f"trial {row.key!r} of sweep {sweep_id} is already {row.status}: not running it again")
        row.status = TrialStatus.RUNNING.value
        row.started_at = utcnow()
        row.finished_at = None
        row.error = None
        if node is not None:
            row.node = node

    def update_hparams(self, sweep_id: int, key: str, hparams: Mapping[str, Any]) -> None:
        """Merge `hparams` into the trial's (adaptive search picks values when the trial starts)."""

        def fn(s: Session) -> None:
            self._fenced(s, sweep_id)
            row = self._trial_row(s, sweep_id, key)
            merged = {**json.loads(row.hparams or "{}"), **dict(hparams)}
            row.hparams = to_json(merged, f"hyperparameters of trial {key!r}")

        self._run("update hyperparameters", fn)

    def add_points(self, sweep_id: int, key: str, points: Sequence[Mapping[str, Any]]) -> int:
        """Append learning-curve points ({"step": int, name: value, ...}) in one transaction; returns rows written."""

        def fn(s: Session) -> int:
            self._fenced(s, sweep_id)
            rows = point_rows(self._trial_id(s, sweep_id, key), points)
            if rows:
                _insert_points(s, rows)
            return len(rows)

        return self._run("add metric points", fn)

    @staticmethod
    def _trial_id(s: Session, sweep_id: int, key: str) -> int:
        tid = s.scalar(select(Trial.id).where(Trial.sweep_id == sweep_id, Trial.key == key))
        if tid is None:
            raise StoreError(f"sweep {sweep_id} has no trial {key!r}")
        return int(tid)

    def finish_trial(self, sweep_id: int, key: str, status: str, *, metric: float | None = None,
                     best_metric: float | None = None, steps: int | None = None, wall_time: float | None = None,
                     flops: float | None = None, n_params: int | None = None, error: str | None = None,
                     node: str | None = None, points: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Record a trial's outcome, and its last curve points if given, in one transaction.

        Non-finite `metric`/`best_metric` are stored as missing: a diverged trial has no metric to rank by.
        """
        outcome = TrialOutcome(key, status, metric=metric, best_metric=best_metric, steps=steps, wall_time=wall_time,
                               flops=flops, n_params=n_params, error=error, node=node, points=tuple(points or ()))
        self._check_outcome(outcome)

        def fn(s: Session) -> None:
            self._fenced(s, sweep_id)
            row = self._trial_row(s, sweep_id, key)
            new = point_rows(row.id, outcome.points)
            if new:
                _insert_points(s, new)
            self._set_finished(row, outcome)

        self._run("finish trial", fn)

    @staticmethod
    def _check_outcome(o: TrialOutcome) -> None:
        if o.status not in FINISHED_STATUSES:
            raise StoreError(f"a trial finishes as {', '.join(s.value for s in FINISHED_STATUSES)}, not {o.status!r}")
        check_integers(Trial.__table__, {"steps": o.steps, "n_params": o.n_params}, f"the result of trial {o.key!r}")

    @staticmethod
    def _set_finished(row: Trial, o: TrialOutcome) -> None:
        row.status = TrialStatus(o.status).value
        row.metric = finite_or_none(o.metric)
        row.best_metric = finite_or_none(o.best_metric)
        row.steps = None if o.steps is None else int(o.steps)
        row.wall_time = finite_or_none(o.wall_time)
        row.flops = finite_or_none(o.flops)
        row.n_params = None if o.n_params is None else int(o.n_params)
        row.error = o.error
        if o.node is not None:
            row.node = o.node
        row.finished_at = utcnow()

    def record_trials(self, sweep_id: int, *, running: Sequence[str] = (),
                      points: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      finished: Sequence[TrialOutcome] = ()) -> None:
        """What a sweep's driver heard about several trials at once, in one transaction: the trials that started
        (`running`, as mark_running), curve points of running trials (`points`, key -> points, as add_points) and
        finished trials with their last points (`finished`, as finish_trial), in that order, so a trial may
        start and finish in the same call.

        One transaction instead of one per trial and event: three per short trial, each checking the lease, took
        the driver 0.58 s per 100 trials (BENCHMARKS.md, orchestration).
        """
        points = {k: v for k, v in (points or {}).items() if v}
        for o in finished:
            self._check_outcome(o)
        keys = {*running, *points, *(o.key for o in finished)}
        if not keys:
            return

        def fn(s: Session) -> None:
            self._fenced(s, sweep_id)
            rows: dict[str, Trial] = {}
            wanted = sorted(keys)
            for i in range(0, len(wanted), 500):  # within every backend's limit on bound parameters
                q = select(Trial).where(Trial.sweep_id == sweep_id, Trial.key.in_(wanted[i:i + 500]))
                rows.update((r.key, r) for r in s.scalars(q))
            missing = sorted(keys - set(rows))
            if missing:
                raise StoreError(f"sweep {sweep_id} has no trial {missing[0]!r}")
            for key in running:
                self._set_running(sweep_id, rows[key])
            new = [r for key, pts in points.items() for r in point_rows(rows[key].id, pts)]
            new += [r for o in finished for r in point_rows(rows[o.key].id, o.points)]
            if new:
                _insert_points(s, new)
            for o in finished:
                self._set_finished(rows[o.key], o)

        self._run("record trial results", fn)

    def reset_unfinished(self, sweep_id: int) -> int:
        """Running trials back to pending (for a resume), without their partial curves. Returns how many."""

        def fn(s: Session) -> int:
            self._fenced(s, sweep_id)
            running, pending = TrialStatus.RUNNING.value, TrialStatus.PENDING.value
            unfinished = select(Trial.id).where(Trial.sweep_id == sweep_id, Trial.status.in_((running, pending)))
            # Pending trials should have no points; any found are left by a crash between writes.
            s.execute(delete(MetricPoint).where(MetricPoint.trial_id.in_(unfinished)))
            res = s.execute(
                update(Trial)
                .where(Trial.sweep_id == sweep_id, Trial.status == running)
                .values(status=pending, started_at=None, finished_at=None, node=None, metric=None,
                        best_metric=None, steps=None, wall_time=None, flops=None, n_params=None, error=None)
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

        return self._run("reset unfinished trials", fn)

    def requeue_trial(self, sweep_id: int, key: str, error: str) -> None:
        """A trial whose worker process died back to pending, without its partial curve, to run again; `error`
        (why) stays with it until it starts. A finished trial is left as it is."""

        def fn(s: Session) -> None:
            row = self._trial_row(s, sweep_id, key)
            if row.status not in FINISHED_STATUSES:
                s.execute(delete(MetricPoint).where(MetricPoint.trial_id == row.id))
                row.status, row.error = TrialStatus.PENDING.value, error
                row.started_at = row.finished_at = row.node = None

        self._run("requeue trial", fn)

    def trial_keys(self, sweep_id: int, statuses: Iterable[str] | None = None) -> set[str]:
        """Keys of the sweep's trials, optionally only those in `statuses`."""
        wanted = (statuses,) if isinstance(statuses, str) else None if statuses is None else tuple(statuses)
        if wanted is not None:
            unknown = sorted(set(wanted) - set(TrialStatus))
            if unknown:
                known = ", ".join(s.value for s in TrialStatus)
                raise StoreError(f"unknown trial status {unknown[0]!r}: use {known}")
            wanted = tuple(TrialStatus(w).value for w in wanted)

        def fn(s: Session) -> set[str]:
            q = select(Trial.key).where(Trial.sweep_id == sweep_id)
            if wanted is not None:
                q = q.where(Trial.status.in_(wanted))
            return set(s.scalars(q))

        return self._run("read trial keys", fn, write=False)

    # ----------------------------------------------------------------------------------- frames

    def trials_frame(self, sweep_id: int) -> pd.DataFrame:
        """One row per trial in plan order: planned and result columns, `hparams` (dict) and one `hp.<name>`
        column per hyperparameter (missing where a trial has no value for it)."""
        rows = self._run("read trials", lambda s: frames.read_trials(s, sweep_id), write=False)
        return frames.trials_frame(rows)

    def curves_frame(self, sweep_id: int, keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Learning curves in long form: key, step, name, value (NaN/inf as reported), in one query."""
        if keys is not None and not keys:
            return frames.curves_frame([])
        rows = self._run("read curves", lambda s: frames.read_curves(s, sweep_id, keys), write=False)
        return frames.curves_frame(rows)

__all__ = ["Store"]
