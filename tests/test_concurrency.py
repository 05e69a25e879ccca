"""Two sweeps writing to one database at once, with a reader polling it: every trial and point is stored."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutransfer.testing.recipes import tiny_sweep_recipe

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_sweeps_and_a_reader_share_one_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from mutransfer.storage import Store

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    store = Store.open(url)  # the schema exists before the writers start, as after `mutransfer db upgrade`
    env = {**os.environ, "MUTRANSFER_DB": url, "MUTRANSFER_RAY_DIR": str(tmp_path / "ray")}
    procs = []
    for i, name in enumerate(("left", "right")):
        (tmp_path / f"{name}.yaml").write_text(tiny_sweep_recipe(name=name, train__steps=150, train__eval_interval=5,
                                                                 search__seed=i))
        procs.append(subprocess.Popen([sys.executable, "-m", "mutransfer.cli", "sweep", f"{name}.yaml", "-q"],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    reads = pages = 0
    monkeypatch.setenv("MUTRANSFER_DB", url)
    while any(p.poll() is None for p in procs):
        for s in store.list_sweeps():  # what the dashboard does, while both write
            store.trials_frame(s.id)
            store.curves_frame(s.id)
            reads += 1
        # And the dashboard itself: its Sweeps and Trials pages, run by Streamlit's AppTest on the same database.
        at = AppTest.from_file(APP, default_timeout=120).run()
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        if "sweep" in at.session_state:  # a sweep row exists: its trials, as the sweeps write them
            at.switch_page("app_pages/trials.py").run()
            assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        pages += 1
        time.sleep(0.2)
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err[-3000:]
    assert reads > 0 and pages > 0
    for name in ("left", "right"):
        sweep = store.get_sweep(name)
        assert sweep is not None and sweep.status == "done"
        trials = store.trials_frame(sweep.id)
        assert len(trials) == 8 and set(trials["status"]) <= {"completed", "diverged"}
        curves = store.curves_frame(sweep.id)
        val = curves[curves["name"] == "val_loss"]
        done = trials[trials["status"] == "completed"]["key"]
        # 300 steps, an evaluation every 10: 30 points per completed trial, each stored once.
        assert (val.groupby("key").size().loc[done] == 30).all()
        assert not val.duplicated(["key", "step"]).any()
