"""The schema's revision: Alembic, configured in code, over the migrations shipped in `migrations/`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from mutransfer.storage.engine import is_read_only, make_engine, read_only
from mutransfer.storage.errors import StoreError
from mutransfer.storage.urls import describe_error, mask_url

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# Serializes concurrent `upgrade` calls on PostgreSQL (two commands opening an empty database at once would
# both try to create the tables). Any constant unique to this application.
_PG_MIGRATION_LOCK = 0x6D7574_72616E

# The oldest revision whose tables this code reads as they are: the revisions after it only add tables that reads
# do not use. A database there opens without migrating where migrating is not wanted or not possible
# (`upgrade=False`, a read-only file). Move it up with a revision that changes a table reads use (0004: trials.round).
READS_SINCE = "0004"


def migrations_dir() -> Path:
    """The Alembic scripts (env.py, versions/), inside the installed package."""
    return Path(__file__).resolve().parent / "migrations"


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


def readable_revisions() -> set[str]:
    """The revisions this code reads without migrating: READS_SINCE up to head."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {s.revision for s in script.iterate_revisions(head_revision(), READS_SINCE)}


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

    _migrate(target, command.upgrade, revision)


def downgrade(target: Engine | str | URL, revision: str = "base") -> None:
    """Undo migrations down to `revision` (`base`: drop every table). For tests and recovery."""
    from alembic import command

    _migrate(target, command.downgrade, revision)


def _migrate(target: Engine | str | URL, step: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command in one transaction, under PostgreSQL's migration lock (two drivers starting at
    once must not both create the schema), on a database whose revision this mutransfer knows."""
    with _engine_for(target) as engine, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        check_known(_current(conn), engine.url)
        step(alembic_config(conn), revision)


def ensure_head(engine: Engine, *, migrate: bool) -> None:
    """Check that the database is at this mutransfer's head revision; an older or empty one is brought there
    when `migrate`, else refused with the command that would. A newer one is always refused."""
    masked = mask_url(engine.url)
    try:
        rev = current_revision(engine)
    except SQLAlchemyError as e:
        raise StoreError(f"cannot open database {masked}: {describe_error(e, engine.url)}") from None
    check_known(rev, engine.url)
    head = head_revision()
    if rev == head:
        return
    read_only_file = is_read_only(engine)
    if (not migrate or read_only_file) and rev in readable_revisions():
        return  # reads work as they are; a driver's first write (its lease) needs the upgrade
    at = f"at revision {rev}" if rev else "empty (no mutransfer schema)"
    if read_only_file:
        raise StoreError(f"database at {masked} is {at} and read-only for this user, this mutransfer needs {head}: "
                         "run `mutransfer db upgrade` as a user who can write it")
    if not migrate:
        raise StoreError(f"database at {masked} is {at}, this mutransfer needs {head}: run `mutransfer db upgrade`")
    try:
        upgrade(engine)
    except SQLAlchemyError as e:
        raise StoreError(f"cannot create the schema in {masked}: {describe_error(e, engine.url)}") from None
    log.info("database %s upgraded from %s to %s", masked, rev, head)


__all__ = [
    "READS_SINCE", "alembic_config", "check_known", "current_revision", "downgrade", "ensure_head", "head_revision",
    "migrations_dir", "readable_revisions", "upgrade",
]
