"""Layout helpers shared by the pages: the sidebar's sweep picker and the guards that turn "nothing to show"
into one sentence on the page (then stop the page: no traceback, no empty chart)."""

from __future__ import annotations

from typing import Any, NoReturn

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.figures import progress, style, transfer_fit
from mutransfer.recipe import Recipe, RecipeError
from mutransfer.storage import SweepInfo


def url() -> str:
    return data.database_url()


def say(sentence: str) -> NoReturn:
    """Show `sentence` as the page's content and stop drawing the page."""
    st.info(sentence)
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises


def no_sweeps_sentence(u: str) -> str:
    return (f"The database {data.describe_url(u)} has no sweeps yet. Run one with `mutransfer sweep RECIPE` "
            "(for instance `mutransfer sweep recipes/quickstart.yaml`) and it shows up here.")


def sidebar() -> None:
    """The database and the sweep picker (kept across pages, and in the address as ?sweep=NAME)."""
    u = url()
    st.sidebar.caption(f"Database: `{data.describe_url(u)}`")
    sweeps = data.list_sweeps(u)
    if not sweeps:
        return
    names = [s.name for s in sweeps]
    if st.session_state.get("sweep") not in names:
        wanted = st.query_params.get("sweep")
        st.session_state["sweep"] = wanted if wanted in names else names[-1]
    name = st.sidebar.selectbox("Sweep", names, key="sweep",
                                format_func=lambda n: f"{n} ({next(s.status for s in sweeps if s.name == n)})")
    st.query_params["sweep"] = name
    if st.sidebar.button("Refresh", help="Read the database again now (reads are otherwise cached for a few "
                                         "seconds)."):
        data.clear()
        st.rerun()


def require_sweep() -> SweepInfo:
    """The sweep picked in the sidebar, or a sentence when the database has none."""
    u = url()
    sweeps = data.list_sweeps(u)
    if not sweeps:
        say(no_sweeps_sentence(u))
    name = st.session_state.get("sweep")
    return next((s for s in sweeps if s.name == name), sweeps[-1])


def sweep_trials(sweep: SweepInfo) -> pd.DataFrame:
    return data.trials(url(), sweep.id, data.progress_stamp(sweep), sweep.metric_name)


def sweep_recipe(sweep: SweepInfo) -> Recipe:
    try:
        return data.recipe(sweep.recipe_json, sweep.name)
    except RecipeError as e:  # stored by an earlier version that let through what is refused now
        say(str(e))


def require_completed(sweep: SweepInfo, trials: pd.DataFrame) -> None:
    reason = progress.no_result_reason(sweep, trials)
    if reason:
        say(reason)


def sweep_fit(sweep: SweepInfo) -> data.FitInfo | None:
    """The sweep's fit (stored or computed here); a warning and None when it cannot be made."""
    try:
        return data.fit(url(), sweep.id, data.progress_stamp(sweep), sweep.recipe_json, sweep.metric_name)
    except (ValueError, KeyError, TypeError, ArithmeticError) as e:
        st.warning(f"The fit of sweep {sweep.name!r} failed ({type(e).__name__}: {e}); the trials are shown "
                   "without it.")
        return None


def fit_warnings(info: data.FitInfo | None, parametrizations: list[str] | None = None, *,
                 expanded: bool = False) -> None:
    if info is None:
        return
    frame = transfer_fit.warnings_table(info.result)
    if parametrizations is not None and len(frame):
        labels = {style.param_label(p) for p in parametrizations}
        frame = frame[[any(w.startswith(lab) for lab in labels) or "/" not in w or not w for w in frame["where"]]]
    if not len(frame):
        st.caption("The fit raised no warnings.")
        return
    with st.expander(f"Fit warnings ({len(frame)})", expanded=expanded):
        st.dataframe(frame, hide_index=True, width="stretch")


def plot(fig: Any, key: str) -> None:
    st.plotly_chart(fig, key=key, width="stretch", config={"displaylogo": False})
