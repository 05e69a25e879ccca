"""The mutransfer dashboard: `mutransfer dashboard [--db URL] [--port N]`, or
`streamlit run dashboard/app.py -- --db URL`. A router only: each page lays out what `dashboard.figures` builds
from what `dashboard.data` reads."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# `streamlit run` puts this folder first on sys.path, where data.py or testing.py could shadow a library's
# module of the same name; the package is imported from its parent instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import data, ui  # noqa: E402
from mutransfer.storage import StoreError  # noqa: E402

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
except (data.Problem, StoreError) as e:
    st.title(page.title)
    st.info(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
except Exception as e:  # a bug: one line on the page, the traceback in the server's log
    log.exception("dashboard page %s failed", page.title)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    st.error(f"This page could not be drawn ({type(e).__name__}{': ' + first if first else ''}). The details are "
             "in the log of the `mutransfer dashboard` process.")
