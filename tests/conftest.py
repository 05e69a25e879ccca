"""Shared fixtures: `db_url` runs a test on a fresh SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def pg_admin_url() -> str:
    return os.environ.get("MUTRANSFER_TEST_PG", PG_DEFAULT)


def _libpq(url: str) -> str:
    # psycopg takes libpq URIs; SQLAlchemy's driver suffix is not part of them.
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@cache
def _pg_unreachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(_libpq(pg_admin_url()), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as e:
        return " ".join(str(e).split()) or type(e).__name__
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A uniquely named, empty PostgreSQL database, dropped after the test."""
    import psycopg
    from sqlalchemy.engine import make_url

    from mutransfer.storage import mask_url

    admin = pg_admin_url()
    reason = _pg_unreachable()
    if reason is not None:
        msg = f"PostgreSQL not reachable at {mask_url(admin)}: {reason}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{msg} (CI must run the PostgreSQL tests: start the server or set MUTRANSFER_TEST_PG)")
        pytest.skip(msg)
    name = f"mt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mt.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small character corpus for GPT tests that only need some text (a module may define its own)."""
    f = tmp_path_factory.mktemp("corpus") / "text.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    return f
