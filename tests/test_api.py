"""The Python API (mutransfer.api): the README's example runs, the CLI and the API write the same export, errors are
UsageErrors with one line, and importing the package stays light."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from launcher_sweeps import make_db
from typer.testing import CliRunner

import mutransfer.api as mt
from mutransfer.cli import app, flag
from mutransfer.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def _undated(text: str) -> str:
    """The text with its export timestamps blanked (two exports a second apart differ there only)."""
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[0-9:+Z.-]*", "<created>", text)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url, _, _ = make_db(tmp_path_factory.mktemp("api"))
    return url


@pytest.mark.parametrize("fmt", ["yaml", "json", "megatron", "nanogpt"])
def test_the_cli_writes_what_the_api_renders(db: str, fmt: str) -> None:
    store = mt.open_store(db)
    exp = mt.export(store, "lg", save=False)
    out = CliRunner().invoke(app, ["export", "lg", "--db", db, "--format", fmt])
    assert out.exit_code == 0, out.output
    assert _undated(out.stdout) == _undated(mt.render(exp, fmt))
    assert exp.parametrization == "mup" and exp.config["provenance"]["sweep"]["name"] == "lg"


def test_save_false_writes_nothing(db: str) -> None:
    store = mt.open_store(db)
    s = mt.get_sweep(store, "lm")
    before = (store.latest_fit(s.id), len(store.exports(s.id)))
    mt.export(store, "lm", save=False, allow_extrapolation=True)
    fitted = mt.fit(store, "lm", save=False)
    assert fitted.fit_id is None and fitted.result.transfer("mup", "lr").value is not None
    assert (store.latest_fit(s.id), len(store.exports(s.id))) == before


def test_user_mistakes_are_one_line_usage_errors(db: str) -> None:
    store = mt.open_store(db)
    with pytest.raises(UsageError, match=r"^no sweep 'nope' in the database \(sweeps: .*lg"):
        mt.get_sweep(store, "nope")
    # The API's message names its own argument; the CLI renders the same error with its flag.
    with pytest.raises(UsageError, match="^parametrization: sweep 'lg' has mup, not 'sp'") as e:
        mt.export(store, "lg", parametrization="sp")
    assert e.value.render(flag).startswith("--parametrization: sweep 'lg'")
    with pytest.raises(UsageError, match="is a 'mlp' model"):
        mt.check_format(mt.get_sweep(store, "lm"), "megatron")
    exp = mt.export(store, "lm", save=False, allow_extrapolation=True)
    with pytest.raises(UsageError) as e:
        mt.render(exp, "nanogpt")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="'toml' is not a format"):
        mt.check_format(mt.get_sweep(store, "lg"), "toml")


def test_importing_the_package_stays_light() -> None:
    code = ("import sys, mutransfer, mutransfer.api; print(sorted(m for m in ('torch', 'ray', 'sqlalchemy', "
            "'pandas', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    import mutransfer

    assert mutransfer.open_store is mt.open_store and mutransfer.render is mt.render


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUTRANSFER_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    m = re.match(r"lr at width 1024: ([\d.e+-]+) \[([\d.e+-]+), ([\d.e+-]+)\]", lines[0])
    assert m is not None, out.stdout
    value, lo, hi = map(float, m.groups())
    assert lo <= value <= hi and 1e-3 <= value <= 1.0
    assert float(lines[1]) == pytest.approx(value, rel=5e-3)  # the export carries the fit's value (printed to 3 digits)
    store = mt.open_store(f"sqlite:///{tmp_path / 'api-demo.db'}")
    s = mt.get_sweep(store, "api-demo")
    assert s.status == "done" and store.latest_fit(s.id) is not None
    doc = json.loads(mt.render(mt.export(store, "api-demo", allow_extrapolation=True, save=False), "json"))
    assert doc["provenance"]["sweep"]["name"] == "api-demo"
