"""Tables, the engine, and the schema's revision (Alembic).

The schema is made only by the migrations in `mutransfer/migrations` (a link to the checkout's `alembic/`, shipped as
package data so a pip-installed mutransfer can create and upgrade a database without a checkout). The models here
are what autogenerate compares against: a test checks that the two agree.

Non-finite metric values: `metric_points.value` holds finite floats only; NaN, inf and -inf are stored as NULL with
their kind in `metric_points.special` ('nan', 'inf', '-inf'). SQLite turns a bound NaN into NULL and JSON tools
choke on inf, so one rule for both backends keeps reads identical and SQL aggregates (min, avg) safe.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import DateTime, TypeDecorator

if TYPE_CHECKING:
    from alembic.config import Config

SWEEP_STATUSES = ("planned", "running", "done", "interrupted", "failed")
TRIAL_ROLES = ("sweep", "verify")
TRIAL_STATUSES = ("pending", "running", "completed", "diverged", "failed")
FINISHED_STATUSES = ("completed", "diverged", "failed")
SPECIAL_VALUES = ("nan", "inf", "-inf")

# How long a SQLite connection waits for another writer before "database is locked" (ms). Trials write a few
# small transactions a second; a dashboard or a second CLI command must wait, not fail.
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# Serializes concurrent `upgrade` calls on PostgreSQL (two commands opening an empty database at once would
# both try to create the tables). Any constant unique to this application.
_PG_MIGRATION_LOCK = 0x6D7574_72616E


class StoreError(RuntimeError):
    """A database that cannot be used. The message is one line and never contains a password."""


# ------------------------------------------------------------------------------------------------------ URLs


def mask_url(url: str | URL) -> str:
    """`url` with its password replaced by ***: safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        # Not a URL SQLAlchemy can parse: still never print what looks like a password.
        return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(url))


def _password(url: str | URL) -> str | None:
    try:
        return make_url(url).password  # type: ignore[return-value]
    except (ArgumentError, ValueError, TypeError):
        m = re.search(r"://[^:/@\s]*:([^@\s]*)@", str(url))
        return m.group(1) if m else None


def without_password(url: URL) -> URL:
    # URL.set(password=None) means "leave the password as it is".
    return URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)


def scrub(message: str, url: str | URL) -> str:
    """`message` as one line, with the password of `url` masked wherever a driver echoed it."""
    line = " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    pw = _password(url)
    if pw:
        line = line.replace(pw, "***")
    return line


def normalize_url(url: str | URL) -> URL:
    """The URL mutransfer connects to: psycopg 3 for PostgreSQL, absolute paths for SQLite files."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"{mask_url(url)!s} is not a database URL: use sqlite:///path/to/file.db or "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif (u.get_backend_name() == "sqlite" and u.database and not _sqlite_memory(u)
          and u.query.get("uri") not in ("true", "1")):
        # Ray Tune runs trials in another working directory: a relative path would name another file there.
        u = u.set(database=str(Path(os.path.expanduser(u.database)).resolve()))
    return u


def _sqlite_memory(u: URL) -> bool:
    return not u.database or u.database == ":memory:" or "mode=memory" in u.database


# ---------------------------------------------------------------------------------------------------- engine


def make_engine(url: str | URL) -> Engine:
    """An engine for `url`, configured for mutransfer's access pattern. Does not connect yet."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if _sqlite_memory(u):
            # One in-memory database per connection otherwise: migrations and reads would see different ones.
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in u.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(u, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as e:
        raise StoreError(
            f"cannot use database {mask_url(u)}: unknown or missing driver {u.drivername!r} ({scrub(str(e), u)}); "
            "use sqlite:/// or postgresql://"
        ) from None
    except (ArgumentError, TypeError, ValueError) as e:
        raise StoreError(f"cannot use database {mask_url(u)}: {scrub(str(e), u)}") from None
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it emits a deferred BEGIN lazily, which turns
        # read-then-write transactions into "database is locked" under concurrent writers (design notes).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            # WAL lets readers (dashboard, `mutransfer ls`) run while the sweep writes; NORMAL is safe in WAL
            # (a power loss can lose the last commits, not corrupt the file) and ~4x faster for small writes.
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a transaction never fails half-way on lock upgrade.
        # Read-only work asks for DEFERRED (see `read_only`) so it does not queue behind the sweep's writes.
        mode = conn.get_execution_options().get("mutransfer_sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def read_only(engine: Engine) -> Engine:
    """`engine` sharing its pool, for transactions that only read (a deferred BEGIN on SQLite)."""
    return engine.execution_options(mutransfer_sqlite_begin="DEFERRED")


# ---------------------------------------------------------------------------------------------------- models


def utcnow() -> datetime:
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


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Sweep(Base):
    __tablename__ = "sweeps"
    __table_args__ = (CheckConstraint(_in("status", SWEEP_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    recipe_text: Mapped[str] = mapped_column(Text)
    recipe_json: Mapped[str] = mapped_column(Text)
    recipe_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="planned")
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
        CheckConstraint(_in("status", TRIAL_STATUSES), name="status"),
        CheckConstraint(_in("role", TRIAL_ROLES), name="role"),
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
    status: Mapped[str] = mapped_column(String(16), default="pending")
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
    role: Mapped[str] = mapped_column(String(16), default="sweep", server_default="sweep")


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


def encode_value(x: float) -> tuple[float | None, str | None]:
    """(value, special) columns for a metric value."""
    if math.isfinite(x):
        return x, None
    if math.isnan(x):
        return None, "nan"
    return None, "inf" if x > 0 else "-inf"


def decode_value(value: float | None, special: str | None) -> float:
    if special is not None:
        return float(special)
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------------------------------------------- alembic


def migrations_dir() -> Path:
    import mutransfer

    return Path(mutransfer.__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configured in code: works from a pip install, where there is no alembic.ini."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "mutransfer ships no migrations"
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


@contextmanager
def _engine_for(target: Engine | str | URL) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def current_revision(target: Engine | str | URL) -> str | None:
    """The database's schema revision; None for a database mutransfer has not set up."""
    with _engine_for(target) as engine, read_only(engine).connect() as conn:
        return _current(conn)


def check_known(revision: str | None, url: str | URL) -> None:
    """Refuse a database migrated by a newer mutransfer: this code would misread its tables."""
    if revision is not None and revision not in _known_revisions():
        raise StoreError(
            f"database at {mask_url(url)} is at revision {revision}, newer than this mutransfer "
            f"(head {head_revision()}): upgrade mutransfer"
        )


def upgrade(target: Engine | str | URL, revision: str = "head") -> None:
    """Create the schema or bring it to `revision`; a database already there is left alone."""
    from alembic import command

    with _engine_for(target) as engine, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        check_known(_current(conn), engine.url)
        command.upgrade(alembic_config(conn), revision)


def downgrade(target: Engine | str | URL, revision: str = "base") -> None:
    """Undo migrations down to `revision` (`base`: drop every table). For tests and recovery."""
    from alembic import command

    with _engine_for(target) as engine, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        check_known(_current(conn), engine.url)
        command.downgrade(alembic_config(conn), revision)


__all__ = [
    "Base", "ExportRow", "FitRow", "MetricPoint", "StoreError", "Sweep", "Trial", "alembic_config",
    "current_revision", "downgrade", "head_revision", "make_engine", "mask_url", "normalize_url", "read_only",
    "upgrade",
]
