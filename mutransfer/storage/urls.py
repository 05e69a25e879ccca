"""Database URLs: the default one, the form mutransfer connects to, and masking their passwords for messages."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mutransfer.storage.errors import StoreError


def default_url() -> str:
    """`$MUTRANSFER_DB`, else mutransfer.db in the current directory (as an absolute path)."""
    return os.environ.get("MUTRANSFER_DB") or f"sqlite:///{Path.cwd().resolve() / 'mutransfer.db'}"


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
    """`url` with no password at all (not a masked one)."""
    # URL.set(password=None) means "leave the password as it is".
    return URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)


def scrub(message: str, url: str | URL) -> str:
    """`message` as one line, with the password of `url` masked wherever a driver echoed it."""
    line = " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    pw = _password(url)
    if pw:
        line = line.replace(pw, "***")
    return line


def describe_error(e: BaseException, url: str | URL) -> str:
    """Why a database operation failed, in one line, with the password of `url` masked."""
    orig = getattr(e, "orig", None) or e
    text = scrub(str(orig), url) or type(orig).__name__
    if "unable to open database file" in text:
        database = getattr(url, "database", None)
        if database:
            text += f" (does the folder {Path(database).parent} exist, and may this user write there?)"
    elif "readonly database" in text:
        text += " (this user cannot write the database file or its folder: commands that only read work)"
    return text


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
    elif (u.get_backend_name() == "sqlite" and u.database and not is_sqlite_memory(u)
          and u.query.get("uri") not in ("true", "1")):
        # Ray Tune runs trials in another working directory: a relative path would name another file there.
        u = u.set(database=str(Path(os.path.expanduser(u.database)).resolve()))
    return u


def password_from_env(url: URL) -> URL:
    """`url` (normalized, without its password) with the password of $MUTRANSFER_DB when that names the same
    database; else `url` as it is (libpq's PGPASSWORD or ~/.pgpass may still apply)."""
    env = os.environ.get("MUTRANSFER_DB")
    if not env:
        return url
    try:
        from_env = normalize_url(env)
    except StoreError:
        return url
    return from_env if without_password(from_env) == url else url


def is_sqlite_memory(u: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (one per connection unless the engine shares one)."""
    return not u.database or u.database == ":memory:" or "mode=memory" in u.database


__all__ = [
    "default_url", "describe_error", "is_sqlite_memory", "mask_url", "normalize_url", "password_from_env", "scrub",
    "without_password",
]
