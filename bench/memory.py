"""Driver memory: peak resident memory of a sweep's driver process (the one running run_sweep: Tune's controller,
the StoreCallback, the store) at a small and a large number of trivial trials. It should stay flat.

    .venv/bin/python bench/memory.py [--small 100] [--large 1000]

Each sweep runs in a fresh process (bench/orchestration.py's worker, the `mutransfer` variant: SQLite store, the
default recipe); peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss` of that process at the end. Ray's own daemons
(raylet, GCS) and the trial workers are other processes, not counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, update_section  # noqa: E402
from orchestration import measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    runs: dict[int, list[dict[str, float]]] = {args.small: [], args.large: []}
    for _ in range(args.reps):
        for n in runs:
            runs[n].append(measure("mutransfer", n))
            print(f"  {n} trials: {runs[n][-1]}", file=sys.stderr, flush=True)
    peak = {n: max(r["peak_rss_mb"] for r in rs) for n, rs in runs.items()}
    rows = [[n, peak[n], min(r["seconds"] for r in rs)] for n, rs in runs.items()]
    growth = peak[args.large] - peak[args.small]
    per_1k = growth / (args.large - args.small) * 1000
    body = f"""Trivial trials (the orchestration benchmark's: µP MLP width 16, 5 steps) through `run_sweep` with a
SQLite store, each sweep in a fresh driver process; {args.reps} run(s) per size.

{table(["trials", "driver peak RSS (MB)", "sweep seconds"], rows)}

Growth from {args.small} to {args.large} trials: {growth:+.1f} MB ({per_1k:+.1f} MB per 1,000 trials). Most of the
driver's memory is torch, Ray and pandas being imported; the sweep itself keeps per trial only its key in two
sets and the curve points not yet flushed (at most ~2 s worth), and Tune keeps one Trial object per Ray trial (a run
of up to 16 trials).
"""
    update_section("memory", "Driver memory", f".venv/bin/python bench/memory.py --small {args.small} --large "
                   f"{args.large} --reps {args.reps}", body)


if __name__ == "__main__":
    main()
