"""Database: metric points written per second as a sweep writes them, and the time to load a 5,000-trial sweep's
trials and curves as the fit and the dashboard do; SQLite and PostgreSQL side by side.

    .venv/bin/python bench/database.py [--reps 3] [--pg postgresql://postgres@127.0.0.1:5432/test]

Writes go through the path the sweep's StoreCallback uses: `Store.add_points` every flush (a few points per trial)
and `Store.finish_trial` with the trial's last points, one transaction each. A point is one step's
train_loss, val_loss, lr, tokens and elapsed: five rows of metric_points.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, median, table, update_section  # noqa: E402

RECIPE = """
name: {name}
model: {{family: mlp, parametrization: [mup, sp], base_width: 32}}
data: {{kind: digits}}
train: {{steps: 1000, eval_interval: 50}}
search: {{samples: {samples}, space: {{lr: {{loguniform: [1.0e-4, 1.0e+0]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 32}}, vary: {{width: [32, 64, 128, 256, 512]}}}}
target: {{width: 1024, depth: 2, batch_size: 32}}
"""


def _point(step: int) -> dict[str, float]:
    return {"step": step, "train_loss": 2.0 / step, "val_loss": 2.1 / step, "lr": 1e-3, "tokens": 32.0 * step,
            "elapsed": 0.01 * step}


def new_sweep(store, samples: int, name: str):  # noqa: ANN001, ANN201
    from mutransfer.plan import plan
    from mutransfer.recipe import parse_recipe
    from mutransfer.storage import TrialRecord

    text = RECIPE.format(name=name, samples=samples)
    r = parse_recipe(text)
    specs = plan(r)
    sweep = store.create_sweep(name, text, r.model_dump_json(), r.hash(), len(specs), "val_loss")
    store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in specs])
    return sweep.id, [s.key for s in specs]


def write_like_a_sweep(store, sweep_id: int, keys: list[str], points: int, flush: int) -> int:  # noqa: ANN001
    """Each trial: marked running, `points` points in flushes of `flush`, the last flush with finish_trial."""
    n = 0
    for key in keys:
        store.mark_running(sweep_id, key)
        pts = [_point(s) for s in range(1, points + 1)]
        chunks = [pts[i:i + flush] for i in range(0, len(pts), flush)]
        for chunk in chunks[:-1]:
            store.add_points(sweep_id, key, chunk)
        store.finish_trial(sweep_id, key, "completed", metric=1.0, best_metric=1.0, steps=1000, wall_time=1.0,
                           flops=1.0, n_params=1000, node="bench", points=chunks[-1])
        n += len(pts)
    return n


def pg_database(admin: str) -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"mt_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin).set(database=name).render_as_string(hide_password=False), name


def drop_pg(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pg", default=os.environ.get("MUTRANSFER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--write-trials", type=int, default=100, help="trials per write repetition")
    ap.add_argument("--big-samples", type=int, default=500, help="samples: 2 x 5 x samples trials to load")
    args = ap.parse_args()

    from mutransfer.storage import Store

    tmp = tempfile.mkdtemp(prefix="mt-bench-db-")
    pg_url, pg_name = pg_database(args.pg)
    stores = {"sqlite": Store.open(f"sqlite:///{tmp}/mt.db"), "postgresql": Store.open(pg_url)}
    try:
        # Writes: points per second, 20 points per trial written in flushes of 5 (a 1000-step trial evaluated
        # every 50 steps, flushed every ~2 s), fresh sweeps each repetition.
        pts_per_trial, flush = 20, 5
        samples = max(1, args.write_trials // 10)
        counter = iter(range(10**6))

        def writer(backend: str):  # noqa: ANN202
            def run() -> float:
                store = stores[backend]
                sid, keys = new_sweep(store, samples, f"w{next(counter)}")
                t = time.perf_counter()
                n = write_like_a_sweep(store, sid, keys, pts_per_trial, flush)
                return n / (time.perf_counter() - t)
            return run

        writes = interleaved({b: writer(b) for b in stores}, args.reps)

        # Loads: a 5,000-trial sweep with 20 points each (100,000 points, 500,000 rows), in both databases.
        big = {}
        for b, store in stores.items():
            t = time.perf_counter()
            sid, keys = new_sweep(store, args.big_samples, "big")
            write_like_a_sweep(store, sid, keys, pts_per_trial, pts_per_trial)
            big[b] = sid
            print(f"  filled {b}: {len(keys)} trials in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        n_big = len(keys)

        def loader(backend: str, what: str):  # noqa: ANN202
            def run() -> float:
                store = stores[backend]
                t = time.perf_counter()
                frame = store.curves_frame(big[backend]) if what == "curves" else store.trials_frame(big[backend])
                took = time.perf_counter() - t
                assert len(frame) == (n_big * pts_per_trial * 5 if what == "curves" else n_big)
                return took
            return run

        loads = interleaved({f"{b} {w}": loader(b, w) for b in stores for w in ("trials", "curves")}, args.reps)
    finally:
        for s in stores.values():
            s.close()
        drop_pg(args.pg, pg_name)

    w = {b: median(v) for b, v in writes.items()}
    rows = [[b, w[b], w[b] * 5, ", ".join(f"{x:.0f}" for x in writes[b])] for b in stores]
    lrows = [[k, median(v), ", ".join(f"{x:.2f}" for x in v)] for k, v in loads.items()]
    body = f"""**Writes** as a sweep writes them: per trial `mark_running`, then {pts_per_trial} points in flushes of
{flush} (`add_points`), the last flush inside `finish_trial`; one transaction each; {args.write_trials} trials per
repetition, {args.reps} repetitions interleaved, medians. A point = one step's five metrics (five rows).

{table(["database", "points/s", "rows/s", "runs (points/s)"], rows)}

PostgreSQL / SQLite write rate: {w["postgresql"] / w["sqlite"]:.2f}x. The sweep writes on the driver, batched per
trial (flush every 2 s, the outcome and last points in one transaction): at these rates a sweep of proxies that
report every few seconds is far from the database's limit.

**Loads** of a {n_big:,}-trial sweep with {pts_per_trial} points per trial ({n_big * pts_per_trial * 5:,} metric
rows): `Store.trials_frame` (what the fit reads) and `Store.curves_frame` (what the dashboard reads), {args.reps}
repetitions interleaved, medians.

{table(["database, frame", "median s", "runs (s)"], lrows)}
"""
    update_section("database", "Database", f".venv/bin/python bench/database.py --reps {args.reps}", body)


if __name__ == "__main__":
    main()
