"""The SQLAlchemy engine, configured for mutransfer's access pattern on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from mutransfer.storage.errors import StoreError
from mutransfer.storage.urls import is_sqlite_memory, mask_url, normalize_url, scrub

# How long a SQLite connection waits for another writer before "database is locked" (ms). Trials write a few
# small transactions a second; a dashboard or a second CLI command must wait, not fail.
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def make_engine(url: str | URL) -> Engine:
    """An engine for `url`, configured for mutransfer's access pattern. Does not connect yet."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if is_sqlite_memory(u):
            # One in-memory database per connection otherwise: migrations and reads would see different ones.
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in u.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    ro = sqlite_read_only(u)
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
        _configure_sqlite(engine, ro)
    if ro is not None:
        # Reads begin DEFERRED; a write fails in one line ("attempt to write a readonly database").
        engine = engine.execution_options(mutransfer_read_only=True, mutransfer_sqlite_begin="DEFERRED")
    return engine


def sqlite_read_only(u: URL) -> str | None:
    """The SQLite URI that opens the database file of `u` read-only, when this user cannot write the file or its
    folder (where SQLite makes its -wal, -shm and -journal files); None when it can, or `u` is not such a file."""
    if u.get_backend_name() != "sqlite" or is_sqlite_memory(u) or u.query.get("uri") in ("true", "1"):
        return None
    path = Path(str(u.database))
    if not path.is_file():
        return None
    folder_writable = os.access(path.parent, os.W_OK)
    if folder_writable and os.access(path, os.W_OK):
        return None
    uri = path.as_uri() + "?mode=ro"
    if not folder_writable and not any(Path(f"{path}{x}").exists() for x in ("-wal", "-shm")):
        # A WAL database opened read-only needs its -shm file, which SQLite cannot make in a read-only folder.
        # Without a -wal or -shm file no writer has it open, and none can start (it could not make its -wal or
        # -journal there either): the file cannot change while it is read, which is what immutable promises.
        uri += "&immutable=1"
    return uri


def is_read_only(engine: Engine) -> bool:
    """Whether `engine` opens its SQLite file read-only (see `sqlite_read_only`)."""
    return bool(engine.get_execution_options().get("mutransfer_read_only"))


def _set_wal(cur: Any) -> None:
    """Switch the file to WAL, waiting out other writers. SQLite answers "database is locked" at once, without its
    busy handler, when another connection holds the write lock on a file still in rollback mode: two commands
    opening a new database together (one of them creating the schema) would otherwise fail."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _configure_sqlite(engine: Engine, read_only_uri: str | None) -> None:
    if read_only_uri is not None:
        @event.listens_for(engine, "do_connect")
        def _read_only(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
            cargs[:] = [read_only_uri]
            cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: it emits a deferred BEGIN lazily, which turns
        # read-then-write transactions into "database is locked" under concurrent writers (design notes).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if read_only_uri is not None:
                return  # the journal mode is the file's: changing it is a write
            # WAL lets readers (dashboard, `mutransfer ls`) run while the sweep writes; NORMAL is safe in WAL
            # (a power loss can lose the last commits, not corrupt the file) and ~4x faster for small writes.
            _set_wal(cur)
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


__all__ = ["PG_CONNECT_TIMEOUT_S", "SQLITE_BUSY_TIMEOUT_MS", "is_read_only", "make_engine", "read_only",
           "sqlite_read_only"]
