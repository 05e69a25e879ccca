"""The dashboard in a real browser: `mutransfer dashboard` served headless, opened in Debian's Chromium driven by
Playwright. Checks that the transfer-curves chart rendered with one trace per width, and saves a screenshot
($MUTRANSFER_TEST_ARTIFACTS, else the test's temporary folder).

Without Chromium the test skips, except in CI (CI=true), where a missing browser fails: `./dev test` installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboard import browser
from mutransfer.storage import Store
from mutransfer.testing.recipes import make_recipe
from mutransfer.testing.seeded_sweeps import seed_sweep

pytestmark = pytest.mark.slow

WIDTHS = (64, 128, 256, 512, 1024)


def _need_browser() -> None:
    reason = browser.chromium_missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


def test_transfer_curves_render_in_chromium(tmp_path: Path) -> None:
    _need_browser()
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    with Store.open(url) as store:
        seed_sweep(store, make_recipe("browser", samples=10, widths=WIDTHS), points=10, verify=True)
    shots = Path(os.environ.get("MUTRANSFER_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with browser.serve(url, log_path=tmp_path / "dashboard.log") as base, browser.chromium() as chrome:
        page = chrome.new_page(viewport={"width": 1500, "height": 1000})
        browser.open_page(page, base, "transfer_curves", sweep="browser", charts=2)
        charts = browser.plotly_traces(page)
        assert len(charts) == 2, charts  # µP and SP side by side
        for chart in charts:
            curves = [t for t in chart if (t["meta"] or {}).get("role") == "trials"]
            assert [t["name"] for t in curves] == [f"width {w}" for w in WIDTHS]
            assert all(t["points"] > 0 for t in curves)
            assert any((t["meta"] or {}).get("role") == "diverged" for t in chart)
        # Drawn, not only handed over: one SVG trace group per Plotly trace, and the widths in the legend.
        drawn = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => ({
            traces: g.querySelectorAll('.scatterlayer .trace').length,
            legend: Array.from(g.querySelectorAll('.legend .traces .legendtext')).map(e => e.textContent) }))""")
        for chart, d in zip(charts, drawn, strict=True):
            assert d["traces"] == len(chart)
            assert [x for x in d["legend"] if x.startswith("width")] == [f"width {w}" for w in WIDTHS]
        text = browser.visible_text(page)
        assert "Transfer curves" in text and "Traceback" not in text
        shot = shots / "transfer-curves.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # The other pages open too, without an error on screen.
        for path, title in (("", "Sweeps"), ("transfer_fit", "Transfer fit"), ("trials", "Trials"),
                            ("export", "Export")):
            browser.open_page(page, base, path, sweep="browser")
            text = browser.visible_text(page)
            assert title in text and "Traceback" not in text and "could not be drawn" not in text, path
