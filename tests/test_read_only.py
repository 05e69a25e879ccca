"""A SQLite database this user cannot write (chmod 0444, or in a read-only folder) opens read-only: every command
that only reads works, `fit` prints its fit and says it is not stored, and the dashboard shows it.

The commands run as a separate process; as root (which writes any file) that process runs without the capability
that lets root ignore file permissions, so it sees the permissions an operator's account would.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mutransfer.storage import Store
from mutransfer.testing.recipes import make_recipe
from mutransfer.testing.seeded_sweeps import seed_sweep

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _unprivileged() -> Callable[[], None] | None:
    """What the child runs before exec so file permissions apply to it (None: they already do)."""
    if os.geteuid() != 0:
        return None
    try:
        subprocess.run(["true"], preexec_fn=_drop_file_override, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE: {e}")
    return _drop_file_override


def run(args: list[str], cwd: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env_vars}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_unprivileged())


# The CLI's commands in one such process (typer's runner, one after the other): each starts on its own, but the
# interpreter's start (torch, sklearn) is paid once. A command that raises gets its traceback in its stderr.
_MANY = """
import json, sys, traceback
from typer.testing import CliRunner
from mutransfer.cli import app
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(app, args)
    err = r.stderr
    if r.exc_info is not None and not issubclass(r.exc_info[0], SystemExit):
        err += "".join(traceback.format_exception(*r.exc_info))  # "Traceback (most recent call last): ..."
    out.append([r.exit_code, r.stdout, err])
print(json.dumps(out))
"""


def cli_many(*commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """`mutransfer COMMAND` for each of `commands`, in one process that cannot override file permissions."""
    res = run([sys.executable, "-c", _MANY, json.dumps(list(commands))], cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return [subprocess.CompletedProcess(args, code, out, err)
            for args, (code, out, err) in zip(commands, json.loads(res.stdout.strip().splitlines()[-1]), strict=True)]


@pytest.fixture(params=["file", "folder"])
def read_only_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with a finished sweep, then made read-only: the file (0444), or the file and its folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "mt.db"
    url = f"sqlite:///{db}"
    with Store.open(url) as store:
        seed_sweep(store, make_recipe("ro", parametrizations=("mup",), widths=(64, 128, 256), samples=8),
                   points=5, fit=False)
    assert not any(folder.glob("mt.db-*"))  # closed cleanly: no -wal or -shm left
    db.chmod(0o444)
    if request.param == "folder":
        folder.chmod(0o555)
    try:
        yield url
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


@pytest.mark.slow
def test_read_only_database_reads(read_only_db: str, tmp_path: Path) -> None:
    db = Path(read_only_db.removeprefix("sqlite:///"))
    before = db.read_bytes()
    ls, show, current, fit, export = cli_many(
        ["ls", "--db", read_only_db], ["show", "ro", "--db", read_only_db], ["db", "current", "--db", read_only_db],
        ["fit", "ro", "--db", read_only_db], ["export", "ro", "--db", read_only_db], cwd=tmp_path)
    assert ls.returncode == 0, ls.stderr
    assert "ro" in ls.stdout and "readonly" not in ls.stdout + ls.stderr
    assert show.returncode == 0, show.stderr
    assert "fit: none yet" in show.stdout
    assert current.returncode == 0 and "at revision" in current.stdout, current.stderr
    # fit: printed, and one line that it is not stored.
    assert fit.returncode == 0, fit.stderr
    assert "fit (not stored) of sweep ro" in fit.stdout
    assert fit.stderr.strip().splitlines() == [f"note: the fit is not stored: {read_only_db} is read-only for this user"]
    # A command that writes fails in one line, exit 2, no traceback.
    assert export.returncode == 2 and "Traceback" not in export.stderr, export.stderr
    assert len(export.stderr.strip().splitlines()) == 1 and "cannot write the database file" in export.stderr, export.stderr
    assert db.read_bytes() == before
    assert stat.S_IMODE(db.stat().st_mode) == 0o444


@pytest.mark.slow
def test_read_only_database_in_the_dashboard(read_only_db: str, tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=120).run()\n"
        "problems = [e.value for e in (*at.exception, *at.error)]\n"
        "assert not problems, problems\n"
        "assert 'sweep' in at.session_state, 'no sweep selected'\n"
        "at.switch_page('app_pages/trials.py').run()\n"
        "problems = [e.value for e in (*at.exception, *at.error)]\n"
        "assert not problems, problems\n"
        "print('ok')\n"
    )
    res = run([sys.executable, "-c", script], tmp_path, MUTRANSFER_DB=read_only_db)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout[-2000:] + res.stderr[-3000:]
