"""Ray set-up: importing mutransfer leaves the environment alone; init_ray sets what Tune reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_mutransfer_leaves_the_environment_alone() -> None:
    # Every module, in a fresh interpreter. Ray's own import sets RAY_CLIENT_MODE: it is imported first, so that
    # only what mutransfer's modules do is compared. The migrations are Alembic scripts, run by Alembic only.
    code = """
import importlib, json, os, pkgutil
import ray, ray.tune
before = dict(os.environ)
import mutransfer
names = [m.name for m in pkgutil.walk_packages(mutransfer.__path__, "mutransfer.") if ".migrations" not in m.name]
for name in names:
    importlib.import_module(name)
after = dict(os.environ)
print(json.dumps({"modules": names, "changed": sorted(k for k in before.keys() | after.keys()
                                                       if before.get(k) != after.get(k))}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.splitlines()[-1])
    assert {"mutransfer.sweep", "mutransfer.ray_setup", "mutransfer.tune_worker", "mutransfer.callbacks"} <= set(
        seen["modules"])
    assert seen["changed"] == []


def test_init_ray_sets_the_tune_environment_a_user_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from mutransfer import ray_setup

    for name in ray_setup.TUNE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "2")
    monkeypatch.setattr(ray_setup.ray, "is_initialized", lambda: True)  # Ray is up: nothing else to do
    ray_setup.init_ray(object(), None)  # type: ignore[arg-type]
    import os

    assert {k: os.environ[k] for k in ray_setup.TUNE_ENVIRONMENT} == {**ray_setup.TUNE_ENVIRONMENT,
                                                                     "TUNE_MAX_PENDING_TRIALS_PG": "2"}
