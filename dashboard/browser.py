"""Drive the real dashboard: start `mutransfer dashboard` headless, open it in Debian's Chromium via Playwright.

For the browser test, the benchmark's page timings and the README's screenshot. Chromium is the system's
(`apt-get install chromium`), never a browser that Playwright downloads.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MUTRANSFER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver; ./dev test does it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command() -> list[str]:
    script = Path(sys.executable).with_name("mutransfer")
    if script.is_file():
        return [str(script)]
    found = shutil.which("mutransfer")
    return [found] if found else [sys.executable, "-m", "mutransfer.cli"]


@contextmanager
def serve(db_url: str, *, port: int | None = None, timeout: float = 60.0, log_path: Path | None = None
          ) -> Iterator[str]:
    """Run `mutransfer dashboard --db URL --port N` until the block ends; yields its base URL."""
    port = port or free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true",
           "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", "PYTHONUNBUFFERED": "1"}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([*_command(), "dashboard", "--db", db_url, "--port", str(port)], env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                detail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
                raise RuntimeError(f"mutransfer dashboard exited with code {proc.returncode}: {detail}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the dashboard did not answer on {base}/_stcore/health within {timeout:.0f}s")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server we started, and nothing else
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log_path:
            out.close()  # type: ignore[union-attr]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright `Browser`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_idle(page: Any, timeout: float = 60.0, charts: int = 0) -> None:
    """Until the app's script has run to the end and its charts (at least `charts` of them) are drawn.

    The app reports "notRunning" before its first run too, so a page's title (every page has one) must be there.
    """
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout * 1000)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout * 1000)
    page.wait_for_function(
        """(n) => { const cs = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
               return cs.length >= n && cs.every(
                   c => { const g = c.querySelector('.js-plotly-plot'); return g && g.data && g._fullLayout; }); }""",
        arg=charts, timeout=timeout * 1000,
    )


def open_page(page: Any, base: str, path: str = "", *, sweep: str | None = None, timeout: float = 60.0,
              charts: int = 0) -> float:
    """Load a dashboard page and wait until it is drawn (with at least `charts` charts); returns the seconds."""
    url = f"{base}/{path}" + (f"?sweep={sweep}" if sweep else "")
    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    wait_idle(page, timeout, charts)
    return time.perf_counter() - t0


def plotly_traces(page: Any) -> list[list[dict[str, Any]]]:
    """Each Plotly chart on the page: its traces' name, meta and number of points, as the browser holds them."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => (g.data || []).map(t => ({
               name: t.name || null, meta: t.meta || null, type: t.type || 'scatter',
               points: (t.x && t.x.length) || 0 })))"""
    )


def visible_text(page: Any) -> str:
    return page.inner_text('[data-testid="stMain"]') if page.query_selector('[data-testid="stMain"]') else \
        page.inner_text("body")


def screenshot(db_url: str, out: Path, *, sweep: str | None = None, page_path: str = "transfer_curves",
               width: int = 1500, height: int = 950) -> dict[str, Any]:
    """Serve the dashboard on `db_url`, open one page in Chromium and save a screenshot of it to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with serve(db_url) as base, chromium() as chrome:
        page = chrome.new_page(viewport={"width": width, "height": height})
        open_page(page, base, page_path, sweep=sweep)
        page.wait_for_timeout(500)  # let Plotly finish its transitions
        page.screenshot(path=str(out), full_page=True)
        return {"url": f"{base}/{page_path}", "charts": plotly_traces(page)}


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="Screenshot a dashboard page in headless Chromium.")
    ap.add_argument("--db", required=True, help="database URL")
    ap.add_argument("--sweep", help="sweep name (default: the newest)")
    ap.add_argument("--page", default="transfer_curves", help="url path of the page (default: transfer_curves)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ns = ap.parse_args()
    missing = chromium_missing()
    if missing:
        raise SystemExit(f"error: {missing}")
    info = screenshot(ns.db, ns.output, sweep=ns.sweep, page_path=ns.page)
    counts = [sum(1 for t in c if (t["meta"] or {}).get("role") == "trials") for c in info["charts"]]
    print(f"wrote {ns.output}: {len(info['charts'])} chart(s), curves per chart {counts}")
