"""Fit: time to fit a 5,000-trial synthetic sweep (fit.fit_sweep), the one tests/test_fit.py builds.

    .venv/bin/python bench/fit.py [--reps 5]

No rival runs the same fit, so the time is also given in units of a fixed CPU workload timed interleaved with it
(bench/_common.calibration): that ratio is what to compare across machines or loads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import calibration, interleaved, median, table, update_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from test_fit import five_thousand_trials  # the synthetic sweep of test_five_thousand_trials

    from mutransfer.fit import fit_sweep

    r, df = five_thousand_trials()
    assert len(df) == 5000

    def fit() -> float:
        t = time.perf_counter()
        res = fit_sweep(df, r)
        took = time.perf_counter() - t
        assert len(res.points) == 8
        return took

    fit()  # warm: imports and first calls
    runs = interleaved({"fit_sweep": fit, "calibration": calibration}, args.reps)
    t_fit, t_cal = median(runs["fit_sweep"]), median(runs["calibration"])
    body = f"""A 5,000-trial synthetic sweep (µP and SP, 4 widths, 625 samples of lr, output_mult and momentum; 200
bootstrap resamples per optimum, the default), fitted by `fit.fit_sweep`. {args.reps} repetitions interleaved with
a fixed CPU workload (the calibration), medians.

{table(["what", "median s", "runs (s)"], [
        ["fit_sweep (5,000 trials)", t_fit, ", ".join(f"{x:.2f}" for x in runs["fit_sweep"])],
        ["calibration workload", t_cal, ", ".join(f"{x:.2f}" for x in runs["calibration"])],
    ])}

Fit time = **{t_fit:.2f} s** = {t_fit / t_cal:.1f} calibration units.
"""
    update_section("fit", "Fit", f".venv/bin/python bench/fit.py --reps {args.reps}", body)


if __name__ == "__main__":
    main()
