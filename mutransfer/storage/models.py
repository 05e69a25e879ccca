"""The tables (SQLAlchemy ORM) and how values are stored in them. ORM rows never leave `mutransfer.storage`.

The schema is made only by the migrations in `mutransfer/storage/migrations` (shipped as package data, so a
pip-installed mutransfer can create and upgrade a database without a checkout). The models here are what
autogenerate compares against: a test checks that the two agree.

Non-finite metric values: `metric_points.value` holds finite floats only; NaN, inf and -inf are stored as NULL with
their kind in `metric_points.special` ('nan', 'inf', '-inf'). SQLite turns a bound NaN into NULL and JSON tools
choke on inf, so one rule for both backends keeps reads identical and SQL aggregates (min, avg) safe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from mutransfer.storage.errors import StoreError
from mutransfer.storage.status import SweepStatus, TrialRole, TrialStatus
from mutransfer.values import finite_or_none

SPECIAL_VALUES = ("nan", "inf", "-inf")

# The trial columns the plan fills (`TrialRecord`'s fields, less hparams), and those a run fills.
PLANNED_COLUMNS = (
    "key", "group", "parametrization", "width", "depth", "batch_size", "seq_len", "steps_planned", "sample",
    "repeat", "seed", "role", "round",
)
RESULT_COLUMNS = (
    "status", "metric", "best_metric", "steps", "wall_time", "flops", "n_params", "node", "error", "started_at",
    "finished_at",
)


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: every stored time is."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite has no time zones; PostgreSQL has timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: Iterable[str]) -> str:
    # str(v): a status member's stored value, not its repr.
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Sweep(Base):
    __tablename__ = "sweeps"
    __table_args__ = (CheckConstraint(_in("status", SweepStatus), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    recipe_text: Mapped[str] = mapped_column(Text)
    recipe_json: Mapped[str] = mapped_column(Text)
    recipe_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=SweepStatus.PLANNED.value)
    total_trials: Mapped[int] = mapped_column(Integer, default=0)
    metric_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("sweep_id", "key"),
        Index("ix_trials_sweep_id_status", "sweep_id", "status"),
        CheckConstraint(_in("status", TrialStatus), name="status"),
        CheckConstraint(_in("role", TrialRole), name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(300))
    group: Mapped[str] = mapped_column(String(200))
    parametrization: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    seq_len: Mapped[int] = mapped_column(Integer)
    steps_planned: Mapped[int] = mapped_column(Integer)
    sample: Mapped[int] = mapped_column(Integer)
    repeat: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)  # a recipe's seed is any integer; PostgreSQL INTEGER is 32-bit
    hparams: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    status: Mapped[str] = mapped_column(String(16), default=TrialStatus.PENDING.value)
    metric: Mapped[float | None] = mapped_column(Double)  # finite or NULL (a diverged trial has none)
    best_metric: Mapped[float | None] = mapped_column(Double)
    steps: Mapped[int | None] = mapped_column(Integer)  # steps done
    wall_time: Mapped[float | None] = mapped_column(Double)
    flops: Mapped[float | None] = mapped_column(Double)  # can exceed 2**63
    n_params: Mapped[int | None] = mapped_column(BigInteger)
    node: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # sweep: planned by the recipe, fitted. verify: a check of the transferred value at a larger size.
    role: Mapped[str] = mapped_column(String(16), default=TrialRole.SWEEP.value,
                                      server_default=TrialRole.SWEEP.value)
    # The search round that planned it: 0 the recipe's draws, 1.. the refine rounds around the optimum.
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Check(Base):
    """A coordinate check (or another model check) of a recipe's model, stored with its sweep."""

    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # coord | coord_depth | verify
    parametrization: Mapped[str] = mapped_column(String(16))
    passed: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text)  # one paragraph, in words
    result_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SweepLease(Base):
    """The driver that runs a sweep now: one row per sweep while a driver holds it (see mutransfer.storage.lease).
    `token` is the holder's (a fresh one per driver process); `expires_at` is its last heartbeat plus the expiry
    it promised to renew within. Times are the database's clock on PostgreSQL (drivers on several hosts)."""

    __tablename__ = "sweep_leases"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (
        Index("ix_metric_points_trial_id_step", "trial_id", "step"),
        CheckConstraint(_in("special", SPECIAL_VALUES), name="special"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Double)  # finite values only; see `special`
    special: Mapped[str | None] = mapped_column(String(4))  # 'nan' | 'inf' | '-inf' when value is not finite


class FitRow(Base):
    __tablename__ = "fits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    result_json: Mapped[str] = mapped_column(Text)


class ExportRow(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    fit_id: Mapped[int | None] = mapped_column(ForeignKey("fits.id", ondelete="SET NULL"))
    format: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ------------------------------------------------------------------------------------------------ values


def encode_value(x: float) -> tuple[float | None, str | None]:
    """(value, special) columns for a metric value."""
    if math.isfinite(x):
        return x, None
    if math.isnan(x):
        return None, "nan"
    return None, "inf" if x > 0 else "-inf"



def point_rows(trial_id: int, points: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """metric_points rows of a trial: {"step": 10, "val_loss": 2.3, ...} -> one row per metric, in long form.
    None values are skipped (the metric was not measured)."""
    rows: list[dict[str, Any]] = []
    for p in points:
        if "step" not in p or p["step"] is None:
            raise StoreError(f"metric point without a 'step': {dict(p)!r}")
        step = int(p["step"])
        check_integers(MetricPoint.__table__, {"step": step}, "a metric point")
        for name, v in p.items():
            if name == "step" or v is None:
                continue
            if isinstance(v, (str, bytes)):
                raise StoreError(f"metric {name!r} at step {step} is not a number: {v!r}")
            try:
                x = float(v)
            except (TypeError, ValueError) as e:
                raise StoreError(f"metric {name!r} at step {step} is not a number: {v!r}") from e
            value, special = encode_value(x)
            rows.append({"trial_id": trial_id, "step": step, "name": str(name), "value": value, "special": special})
    return rows


# What each integer column type holds on every backend (PostgreSQL's INTEGER is 32-bit; SQLite's is 64-bit, but a
# value that one backend refuses is refused on both, before the insert, naming the value).
INTEGER_RANGES = {"Integer": (-(2**31), 2**31 - 1), "BigInteger": (-(2**63), 2**63 - 1)}


def check_integers(table: Any, row: Mapping[str, Any], what: str) -> None:
    """Refuse an integer in `row` that its column of `table` cannot hold, in one line naming `what` and the column."""
    for name, value in row.items():
        if value is None or isinstance(value, bool) or not isinstance(value, int):
            continue
        column = table.c.get(name)
        bounds = INTEGER_RANGES.get(type(column.type).__name__) if column is not None else None
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise StoreError(f"cannot store {what}: {name} {value} is out of range (the database keeps "
                             f"{bounds[0]} to {bounds[1]})")


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays, without importing numpy here.
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 0) == 0:
        return o.item()
    if hasattr(o, "tolist") and callable(o.tolist):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, (datetime, Path)):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def to_json(obj: Any, what: str) -> str:
    """`obj` as the text of a JSON column (hyperparameters, a fit or check result); `what` names it in the error."""
    # allow_nan: a fit's interval can be infinite; Python reads NaN/Infinity back (non-standard JSON, TEXT column).
    try:
        return json.dumps(obj, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot store {what}: {e}") from e


__all__ = [
    "INTEGER_RANGES", "PLANNED_COLUMNS", "RESULT_COLUMNS", "SPECIAL_VALUES", "Base", "Check", "ExportRow", "FitRow",
    "MetricPoint", "Sweep", "SweepLease", "Trial", "UTCDateTime", "check_integers", "encode_value", "finite_or_none",
    "point_rows", "to_json", "utcnow",
]
