"""The mutransfer dashboard: `mutransfer dashboard [--db URL] [--port N]` (or `streamlit run dashboard/app.py
-- --db URL` where the `dashboard` package is importable: installed, or its parent on PYTHONPATH). A router only:
each page lays out what `dashboard.figures` builds from what `dashboard.data` reads."""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from dashboard import ui
from mutransfer.errors import MutransferError

HERE = Path(__file__).resolve().parent
log = logging.getLogger("mutransfer.dashboard")

st.set_page_config(page_title="mutransfer", page_icon=":material/show_chart:", layout="wide")

PAGES = [
    st.Page(HERE / "app_pages" / "sweeps.py", title="Sweeps", icon=":material/table_rows:", url_path="sweeps", default=True),
    st.Page(HERE / "app_pages" / "transfer_curves.py", title="Transfer curves", icon=":material/show_chart:", url_path="transfer_curves"),
    st.Page(HERE / "app_pages" / "transfer_fit.py", title="Transfer fit", icon=":material/straighten:", url_path="transfer_fit"),
    st.Page(HERE / "app_pages" / "trials.py", title="Trials", icon=":material/science:", url_path="trials"),
    st.Page(HERE / "app_pages" / "export.py", title="Export", icon=":material/download:", url_path="export"),
]

page = st.navigation(PAGES)
try:
    ui.sidebar()
    page.run()
except MutransferError as e:  # a user-fixable problem (data.Problem, a store, a recipe, data...)
    st.title(page.title)
    st.info(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
except Exception as e:  # a bug: one line on the page, the traceback in the server's log
    log.exception("dashboard page %s failed", page.title)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    st.error(f"This page could not be drawn ({type(e).__name__}{': ' + first if first else ''}). The details are "
             "in the log of the `mutransfer dashboard` process.")
