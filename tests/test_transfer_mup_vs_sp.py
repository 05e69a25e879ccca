"""The behaviour µTransfer depends on, measured for real: the shipped µP-vs-SP width recipe, swept through the CLI
on fewer widths and samples, gives a width slope of the optimal learning rate near zero under µP and clearly
negative under SP (the optimum drifts about one octave down per doubling of width, as the µTransfer paper shows).

If this fails, fix the built-in proxies (mutransfer.models, mutransfer.parametrization), not the thresholds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_here import cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, db: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process (the sweep, which starts Ray); fit and export run in this process (cli_here)."""
    env = {**os.environ, "MUTRANSFER_DB": db, "MUTRANSFER_RAY_DIR": str(cwd / "ray")}
    return subprocess.run([sys.executable, "-m", "mutransfer.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800, stdin=subprocess.DEVNULL)


def sweep_and_fit(recipe: str, name: str, cwd: Path, db: str) -> dict[tuple[str, str, str], dict]:
    """`mutransfer sweep recipe` (the µP coordinate check gating it), then `fit --json`: the laws by
    (parametrization, hparam, axis)."""
    res = run(["sweep", recipe, "-q"], cwd, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "coordinate check (mup): passed" in res.stderr
    res = cli(["fit", name, "--json"], cwd, db)
    assert res.returncode == 0, res.stderr[-3000:]
    return {(law["parametrization"], law["hparam"], law["axis"]): law for law in json.loads(res.stdout)["fit"]["laws"]}


def test_width_slope_is_flat_under_mup_and_negative_under_sp(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "recipes" / "mlp_digits_width.yaml").read_text())
    # The shipped recipe, cheaper: three widths four doublings apart, fewer draws, fewer steps. The draws are the
    # same at every width and in both parametrizations, so the comparison is paired. 100 steps (the width-1024
    # trials are most of the time): over search seeds 1..5 µP's slope was not kept (0) every time, its free slope
    # -0.10..+0.29, and SP's -1.05..-1.68 with its interval's top at -0.58..-0.80; at 200 steps seed 2 failed (SP's
    # interval reached 0).
    recipe["scales"]["vary"]["width"] = [64, 256, 1024]
    recipe["search"]["samples"] = 12
    recipe["train"]["steps"] = 100
    (tmp_path / "width.yaml").write_text(yaml.safe_dump(recipe))
    db = f"sqlite:///{tmp_path / 'mt.db'}"

    laws = sweep_and_fit("width.yaml", "mlp-digits-width", tmp_path, db)

    mup, sp = laws[("mup", "lr", "width")], laws[("sp", "lr", "width")]
    assert list(mup["scales"]) == [64, 256, 1024] and list(sp["scales"]) == [64, 256, 1024]
    # µP: the optimum stays put; its interval holds 0 and the point estimate is small.
    assert mup["slope_lo"] <= 0.0 <= mup["slope_hi"], mup
    assert abs(mup["slope"]) < 0.35, mup
    # SP: the optimum moves down with width, and the interval says so (it excludes 0).
    assert sp["slope_hi"] < 0.0, sp
    assert sp["slope"] < -0.5, sp
    assert sp["slope"] < mup["slope"] - 0.5

    # The readable report says the same in words, side by side.
    res = cli(["fit", "mlp-digits-width"], tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "mup" in res.stdout and "sp" in res.stdout
