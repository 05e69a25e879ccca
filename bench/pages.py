"""Dashboard page timings on a large sweep, in a real browser.

    .venv/bin/python bench/pages.py [--trials 5000] [--points 100] [--reps 3]

Seeds a database (SQLite file) with one sweep of `--trials` trials (µP and SP, five widths) and `--points` metric
points per trial through the real Store API, plus a 100-trial baseline sweep in the same database. Then serves
`mutransfer dashboard` on it, opens each page in Debian's Chromium (Playwright) and times it from navigation until
the script has finished and every Plotly chart is drawn: cold (the first visit after the server started, caches
empty) and warm (the median of `--reps` later visits, caches filled). The goal (issue 4): every page of the
5,000-trial sweep under 3 s on this machine. The ratio to the baseline sweep shows what the size costs.

Writes its section of BENCHMARKS.md (between markers), with the machine and the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import update_section  # noqa: E402

from dashboard import browser  # noqa: E402
from mutransfer.storage import Store  # noqa: E402
from mutransfer.testing.recipes import make_recipe  # noqa: E402
from mutransfer.testing.seeded_sweeps import seed_sweep  # noqa: E402

PAGES = (("", "Sweeps", 0), ("transfer_curves", "Transfer curves", 2), ("transfer_fit", "Transfer fit", 1),
         ("trials", "Trials", 1), ("export", "Export", 0))
WIDTHS = (64, 128, 256, 512, 1024)


def seed(url: str, name: str, trials: int, points: int) -> float:
    """One sweep of about `trials` trials (2 parametrizations x 5 widths x samples); returns the seconds it took."""
    samples = max(1, trials // (2 * len(WIDTHS)))
    t0 = time.perf_counter()
    with Store.open(url) as store:
        seed_sweep(store, make_recipe(name, samples=samples, widths=WIDTHS), points=points, verify=True)
    return time.perf_counter() - t0


def time_pages(base: str, chrome: object, sweep: str, reps: int) -> dict[str, tuple[float, float]]:
    """page -> (cold seconds, warm median seconds)."""
    out: dict[str, tuple[float, float]] = {}
    page = chrome.new_page(viewport={"width": 1500, "height": 1000})  # type: ignore[attr-defined]
    for path, title, charts in PAGES:
        cold = browser.open_page(page, base, path, sweep=sweep, charts=charts, timeout=300)
        text = browser.visible_text(page)
        if title not in text or "Traceback" in text or "could not be drawn" in text:
            raise RuntimeError(f"page {title!r} of {sweep!r} did not render: {text[:300]!r}")
        warm = [browser.open_page(page, base, path, sweep=sweep, charts=charts, timeout=300) for _ in range(reps)]
        out[title] = (cold, statistics.median(warm))
    page.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--db", help="database file to (re)use (default: a temporary one)")
    ns = ap.parse_args()
    missing = browser.chromium_missing()
    if missing:
        raise SystemExit(f"error: {missing}")
    tmp = Path(tempfile.mkdtemp(prefix="mt-bench-dash-"))
    db_file = Path(ns.db) if ns.db else tmp / "bench.db"
    url = f"sqlite:///{db_file}"
    big, small = f"big-{ns.trials}", "baseline-100"
    seeded: dict[str, float] = {}
    with Store.open(url) as store:
        have = {s.name for s in store.list_sweeps()}
    for name, n in ((big, ns.trials), (small, 100)):
        if name not in have:
            seeded[name] = seed(url, name, n, ns.points)
            print(f"seeded {name}: {seeded[name]:.1f}s", flush=True)
    with Store.open(url) as store:
        sizes = {s.name: s.total_trials for s in store.list_sweeps()}
    size_mb = db_file.stat().st_size / 2**20

    # One server. Its first page view pays for importing Streamlit, Plotly and torch in the server process: a
    # warm-up view of an unrelated page, not counted. Then each sweep's first view is cold (nothing of it cached).
    results: dict[str, dict[str, tuple[float, float]]] = {}
    with browser.serve(url, log_path=tmp / "server.log") as base, browser.chromium() as chrome:
        warm_page = chrome.new_page()
        warmup = browser.open_page(warm_page, base, "", timeout=300)
        warm_page.close()
        print(f"server warm-up view: {warmup:.2f}s (not counted)", flush=True)
        for name in (small, big):
            results[name] = time_pages(base, chrome, name, ns.reps)
            for title, (cold, warm) in results[name].items():
                print(f"{name:>14} {title:<16} cold {cold:6.2f}s  warm {warm:6.2f}s", flush=True)

    rows = ["| page | cold, 100 trials | cold, {n} trials | warm, 100 trials | warm, {n} trials | cold ratio | "
            "under 3 s |".format(n=f"{sizes[big]:,}"), "|---|---:|---:|---:|---:|---:|:---:|"]
    worst = 0.0
    for title in results[big]:
        c0, w0 = results[small][title]
        c1, w1 = results[big][title]
        worst = max(worst, c1, w1)
        rows.append(f"| {title} | {c0:.2f} s | {c1:.2f} s | {w0:.2f} s | {w1:.2f} s | {c1 / c0:.2f}x | "
                    f"{'yes' if max(c1, w1) < 3 else 'NO'} |")
    verdict = (f"Every page of the {sizes[big]:,}-trial sweep opens in under 3 s (slowest: {worst:.2f} s)."
               if worst < 3 else f"Goal missed: the slowest page took {worst:.2f} s (goal: 3 s).")
    body = "\n".join([
        f"Database: SQLite, {size_mb:.0f} MB; the big sweep has {sizes[big]:,} trials x {ns.points} points x 5 "
        f"metrics; the baseline sweep {sizes[small]} trials. Time from navigation until the page's script has "
        "finished and every Plotly chart is drawn in headless Chromium. One server; its first view (importing "
        f"Streamlit and Plotly: {warmup:.1f} s) is not counted. Cold: the first view of each page of a sweep, nothing of it "
        f"cached (reads the database; fits when no fit is stored); warm: median of {ns.reps} "
        "later visits (cached reads, time-to-live 5-30 s).",
        "",
        *rows,
        "",
        verdict,
    ])
    command = f".venv/bin/python bench/pages.py --trials {ns.trials} --points {ns.points} --reps {ns.reps}"
    update_section("dashboard", "Dashboard: page load on a 5,000-trial sweep", command, body)


if __name__ == "__main__":
    main()
