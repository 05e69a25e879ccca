"""The `mutransfer` CLI run in the test's own process (typer's runner), returning what `subprocess.run` would.

For the commands that do not start Ray (fit, export, ls, a refused verify or sweep, a sweep with nothing left to
run): a fresh interpreter spends seconds importing torch, sklearn and Ray for each. Commands that start Ray (sweep,
verify) or whose process matters (signals, permissions) run as a subprocess, as a user runs them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def cli(args: list[str], cwd: Path, db: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mutransfer ARGS` in `cwd` with MUTRANSFER_DB=`db` (and `env`): its exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from mutransfer.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, args, env={"MUTRANSFER_DB": db, **env}, catch_exceptions=False)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)
