"""The extrapolation guard: a transferred value outside the searched range is not exported as a plain number."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from mutransfer.cli import app
from mutransfer.plan import plan
from mutransfer.recipe import parse_recipe
from mutransfer.storage import Store, TrialRecord
from mutransfer.testing.recipes import mlp_recipe
from mutransfer.testing.synthetic import synthetic_trials


def make(path: Path, lo: float, hi: float) -> str:
    """A stored sweep whose optimum is lr = 2^-7 at every width, searched over [lo, hi]."""
    r = parse_recipe(mlp_recipe(name="g", train={"steps": 100}, search__samples=16,
                                search__space={"lr": {"loguniform": [lo, hi]}}, scales__vary__width=[32, 64, 128]))
    url = f"sqlite:///{path}"
    df = synthetic_trials(r, lambda s, p: -7.0, noise=0.01, rng=np.random.default_rng(0)).set_index("key")
    specs = plan(r)
    with Store.open(url) as store:
        sweep = store.create_sweep("g", yaml.safe_dump(r.model_dump(mode="json")), r.model_dump_json(), r.hash(),
                                   len(specs), r.train.metric)
        store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in specs])
        for s in specs:
            row = df.loc[s.key]
            store.mark_running(sweep.id, s.key)
            if row["status"] == "diverged":
                store.finish_trial(sweep.id, s.key, "diverged", steps=10)
            else:
                store.finish_trial(sweep.id, s.key, "completed", metric=float(row["metric"]), steps=s.steps,
                                   wall_time=0.1, flops=1e9, n_params=1000)
    return url


def counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as c:
        return tuple(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("fits", "exports"))  # type: ignore[return-value]


def test_a_value_beyond_the_range_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    url = make(path, 1e-5, 1e-3)  # the optimum 2^-7 = 0.0078 lies above the range
    out = tmp_path / "t.yaml"
    res = CliRunner().invoke(app, ["export", "g", "--format", "yaml", "-o", str(out), "--db", url])
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "Traceback" not in res.output
    assert "search.space.lr" in lines[0] and "outside the searched range" in lines[0]
    assert "--allow-extrapolation" in lines[0]
    assert not out.exists() and counts(path) == (0, 0)

    res = CliRunner().invoke(app, ["export", "g", "--format", "yaml", "-o", str(out), "--db", url,
                                   "--allow-extrapolation"])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    assert doc["extrapolation"]["allowed"] and "search.space.lr" in doc["extrapolation"]["problem"]
    assert counts(path) == (1, 1)


def test_a_value_inside_the_range_exports_with_its_evidence(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    url = make(path, 1e-4, 1e-1)
    out = tmp_path / "t.yaml"
    res = CliRunner().invoke(app, ["export", "g", "--format", "yaml", "-o", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    lr = doc["hyperparameters"]["lr"]
    assert 2**-8 < lr["value"] < 2**-6
    width = lr["laws"]["width"]
    assert width["kept"] is False and width["slope"] == 0.0 and "free_slope" in width  # which slope was used
    assert doc["fit_checks"]["backtests"][0]["axis"] == "width"
    assert "extrapolation" not in doc


def test_an_output_in_a_missing_folder_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    url = make(path, 1e-4, 1e-1)  # exportable: the optimum lies inside the range
    for fmt, out in (("yaml", tmp_path / "no" / "such" / "t.yaml"), ("yaml", tmp_path),
                     ("hf", path)):  # a folder for a file, a file for hf's folder
        res = CliRunner().invoke(app, ["export", "g", "--format", fmt, "-o", str(out), "--db", url])
        lines = [x for x in res.output.strip().splitlines() if x.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: -o: "), res.output
        assert counts(path) == (0, 0)
    assert "the folder" in CliRunner().invoke(app, ["export", "g", "-o", str(tmp_path / "no" / "t.yaml"),
                                                    "--db", url]).output


def test_an_optimum_on_the_edge_of_the_range_is_refused(tmp_path: Path) -> None:
    # The optimum 2^-7 = 0.0078 lies just above a range ending at 0.006: the fit keeps the base optimum inside the
    # range, on its bound, which says "this far or further", not where the optimum is.
    path = tmp_path / "g.db"
    url = make(path, 1e-4, 6e-3)
    res = CliRunner().invoke(app, ["export", "g", "--format", "yaml", "--db", url])
    lines = [x for x in res.output.strip().splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "search.space.lr" in lines[0] and "sits at the edge of the searched range" in lines[0]
    assert "--allow-extrapolation" in lines[0] and counts(path) == (0, 0)
