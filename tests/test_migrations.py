"""The schema is made by the Alembic migrations alone, and they agree with the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mutransfer.storage import Store, StoreError, make_engine, mask_url, normalize_url, schema
from mutransfer.storage.models import Base

TABLES = {"checks", "sweeps", "trials", "metric_points", "fits", "exports", "sweep_leases"}
ROOT = Path(__file__).resolve().parents[1]


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    assert schema.current_revision(db_url) is None
    schema.upgrade(db_url)
    assert tables(db_url) == TABLES | {"alembic_version"}
    assert schema.current_revision(db_url) == schema.head_revision()


def test_upgrade_is_idempotent_and_keeps_data(db_url: str) -> None:
    schema.upgrade(db_url)
    with Store.open(db_url) as store:
        store.create_sweep("s", "text", "{}", "h", 0, "val_loss")
    schema.upgrade(db_url)
    with Store.open(db_url) as store:  # upgrades again on open: a no-op
        assert store.get_sweep("s") is not None
    assert schema.current_revision(db_url) == schema.head_revision()


def test_downgrade_to_base_removes_tables(db_url: str) -> None:
    schema.upgrade(db_url)
    schema.downgrade(db_url, "base")
    assert not (tables(db_url) & TABLES)
    assert schema.current_revision(db_url) is None
    schema.upgrade(db_url)  # and back
    assert tables(db_url) >= TABLES


def test_autogenerate_finds_no_difference(db_url: str) -> None:
    schema.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def indexes(insp: sa.Inspector, table: str) -> set[str]:
    # PostgreSQL also reports the index behind each unique constraint.
    return {i["name"] for i in insp.get_indexes(table) if not i.get("duplicates_constraint")}


def test_constraint_names_follow_the_convention(db_url: str) -> None:
    schema.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        insp = sa.inspect(engine)
        assert {u["name"] for u in insp.get_unique_constraints("trials")} == {"uq_trials_sweep_id_key"}
        assert indexes(insp, "trials") == {"ix_trials_sweep_id_status"}
        assert indexes(insp, "metric_points") == {"ix_metric_points_trial_id_step"}
        assert indexes(insp, "fits") == {"ix_fits_sweep_id"}
        assert {fk["name"] for fk in insp.get_foreign_keys("exports")} == {
            "fk_exports_sweep_id_sweeps", "fk_exports_fit_id_fits"}
    finally:
        engine.dispose()


def _stamp(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def test_newer_database_is_refused(db_url: str) -> None:
    if db_url.startswith("postgresql"):
        # Trust auth ignores the password: it is there to check that messages mask it.
        db_url = db_url.replace("postgres@", "postgres:hunter2@", 1)
    schema.upgrade(db_url)
    _stamp(db_url, "9999_from_the_future")
    want = (f"database at {mask_url(normalize_url(db_url))} is at revision 9999_from_the_future, newer than this mutransfer "
            f"(head {schema.head_revision()}): upgrade mutransfer")
    for attempt in (lambda: Store.open(db_url), lambda: Store.open(db_url, upgrade=False),
                    lambda: schema.upgrade(db_url), lambda: schema.downgrade(db_url)):
        with pytest.raises(StoreError) as err:
            attempt()
        assert str(err.value) == want
        assert "hunter2" not in str(err.value)
    assert schema.current_revision(db_url) == "9999_from_the_future"  # nothing was touched


def test_open_without_upgrade_asks_for_it(db_url: str) -> None:
    with pytest.raises(StoreError, match=r"empty \(no mutransfer schema\).*run `mutransfer db upgrade`"):
        Store.open(db_url, upgrade=False)
    schema.upgrade(db_url)
    Store.open(db_url, upgrade=False).close()


def test_scripts_ship_inside_the_package() -> None:
    scripts = schema.migrations_dir()
    assert scripts.parent.name == "storage" and scripts.parent.parent.name == "mutransfer"
    assert (scripts / "env.py").is_file() and (scripts / "script.py.mako").is_file()
    assert (scripts / "versions" / "0001_initial.py").is_file()
    # The scripts live in the package alone: no link to them, and no alembic/ at the root, where (with an
    # __init__.py) it would shadow the alembic package.
    assert not scripts.is_symlink() and not (ROOT / "mutransfer" / "migrations").is_symlink()
    assert not (ROOT / "alembic").exists()


def test_alembic_command_line_from_a_checkout(sqlite_url: str) -> None:
    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "-x",
                               f"url={sqlite_url}", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    res = alembic("upgrade", "head")
    assert res.returncode == 0, res.stderr
    assert schema.current_revision(sqlite_url) == schema.head_revision()
    res = alembic("check")
    assert res.returncode == 0, res.stderr


def test_concurrent_first_opens_create_the_schema_once(db_url: str) -> None:
    """Several commands opening an empty database at once (a sweep and a dashboard): all succeed."""
    import threading

    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Store.open(db_url).close()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert schema.current_revision(db_url) == schema.head_revision()


def test_first_open_waits_for_a_writer_on_a_new_file(tmp_path: Path) -> None:
    """A file still in rollback mode whose write lock another command holds (it is creating the schema): SQLite
    refuses the switch to WAL at once, without its busy timeout; the connection waits for the lock instead."""
    import sqlite3
    import threading

    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        engine.dispose()
        holder.close()


def test_first_revision_upgrades_with_its_data(db_url: str) -> None:
    """A database made at 0001 keeps its trials on the way to head; they become the sweep's own (role 'sweep')."""
    schema.upgrade(db_url, "0001")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO sweeps (id, name, recipe_text, recipe_json, recipe_hash, status, total_trials, "
                "metric_name, created_at, updated_at) VALUES (1, 'old', 'x', '{}', 'h', 'done', 1, 'val_loss', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(sa.text(
                "INSERT INTO trials (sweep_id, key, \"group\", parametrization, width, depth, batch_size, seq_len, "
                "steps_planned, sample, repeat, seed, hparams, status, metric) VALUES (1, 'mup/a/000', 'mup/a', "
                "'mup', 32, 2, 8, 1, 10, 0, 0, 0, '{\"lr\": 0.01}', 'completed', 0.5)"))
        schema.upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, metric, role FROM trials")).all()
        assert [tuple(r) for r in rows] == [("mup/a/000", 0.5, "sweep")]
        schema.downgrade(db_url, "0001")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM trials")).scalar() == 1
    finally:
        engine.dispose()
