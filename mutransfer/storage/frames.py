"""A sweep's trials and learning curves as pandas DataFrames: the queries and the shaping of their rows.

`Store.trials_frame` and `Store.curves_frame` run these queries in their own read transactions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from mutransfer.storage.models import PLANNED_COLUMNS, RESULT_COLUMNS, MetricPoint, Trial

TRIAL_COLUMNS = ("id", "sweep_id", *PLANNED_COLUMNS, "hparams", *RESULT_COLUMNS)
CURVE_COLUMNS = ["key", "step", "name", "value"]
_FLOAT_COLUMNS = ("metric", "best_metric", "wall_time", "flops")
_NULLABLE_INT_COLUMNS = ("steps", "n_params")
_TIME_COLUMNS = ("started_at", "finished_at")


def read_trials(s: Session, sweep_id: int) -> list[Any]:
    """The sweep's trial rows in plan order, columns as in `TRIAL_COLUMNS`."""
    cols = [getattr(Trial, n) for n in TRIAL_COLUMNS]
    return list(s.execute(select(*cols).where(Trial.sweep_id == sweep_id).order_by(Trial.id)).all())


def trials_frame(rows: Sequence[Any]) -> pd.DataFrame:
    """One row per trial: planned and result columns, `hparams` (dict) and one `hp.<name>` column per
    hyperparameter (missing where a trial has no value for it)."""
    frame = pd.DataFrame.from_records(rows, columns=list(TRIAL_COLUMNS))
    frame["hparams"] = [json.loads(h or "{}") for h in frame["hparams"]]
    for c in _FLOAT_COLUMNS:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in _NULLABLE_INT_COLUMNS:
        frame[c] = pd.array([None if pd.isna(v) else int(v) for v in frame[c]], dtype="Int64")
    for c in _TIME_COLUMNS:
        frame[c] = pd.to_datetime(frame[c], utc=True)
    if len(frame):
        hp = pd.DataFrame.from_records(list(frame["hparams"]), index=frame.index)
        if len(hp.columns):
            hp = hp[sorted(hp.columns)].add_prefix("hp.")
            frame = pd.concat([frame, hp], axis=1)
    return frame


def read_curves(s: Session, sweep_id: int, keys: Sequence[str] | None) -> list[tuple[Any, ...]]:
    """Metric points of the sweep's trials (all, or those in `keys`): key, step, name, value, special."""
    q = (
        select(Trial.key, MetricPoint.step, MetricPoint.name, MetricPoint.value, MetricPoint.special)
        .join(Trial, Trial.id == MetricPoint.trial_id)
        .where(Trial.sweep_id == sweep_id)
        .order_by(MetricPoint.trial_id, MetricPoint.step, MetricPoint.id)
    )
    if keys is not None:
        q = q.where(Trial.key.in_(list(dict.fromkeys(keys))))
    return _fetch_tuples(s, q)


def curves_frame(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """Learning curves in long form: key, step, name, value (NaN/inf as reported)."""
    if not rows:
        return pd.DataFrame({
            "key": pd.Series([], dtype=object), "step": pd.Series([], dtype="int64"),
            "name": pd.Series([], dtype=object), "value": pd.Series([], dtype="float64"),
        })[CURVE_COLUMNS]
    frame = pd.DataFrame(rows, columns=[*CURVE_COLUMNS, "special"])
    value = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    special = frame["special"]
    mask = special.notna().to_numpy()
    if mask.any():
        value[mask] = special[mask].astype("float64").to_numpy()
    frame["value"] = value
    frame["step"] = frame["step"].astype("int64")
    return frame[CURVE_COLUMNS]


def _fetch_tuples(s: Session, stmt: Select[Any]) -> list[tuple[Any, ...]]:
    """All rows of `stmt` as plain tuples from the DBAPI cursor, in the session's transaction.

    For long results (a sweep's curves: 500,000 rows) building SQLAlchemy Row objects and handing them to pandas
    took 3 s; plain tuples take a third of that. Only for statements whose columns need no result processing
    (integers, floats, strings).
    """
    conn = s.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    args: Any = tuple(params[name] for name in compiled.positiontup or ()) if compiled.positional else params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


__all__ = ["CURVE_COLUMNS", "TRIAL_COLUMNS", "curves_frame", "read_curves", "read_trials", "trials_frame"]
