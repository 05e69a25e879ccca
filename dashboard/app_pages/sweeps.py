"""Sweeps: every sweep in the database with its progress; refreshes on its own while one runs."""

import streamlit as st

from dashboard import data, ui
from dashboard.figures import progress

st.title("Sweeps")
u = ui.url()
if not data.list_sweeps(u):
    ui.say(ui.no_sweeps_sentence(u))

REFRESH_S = 2.0
STOPPED_HELP = ("trials stopped early by the sweep's scheduler (search.early_stop): finished, and read by the fit as "
                "ending at least at a floor; their metric where they stopped is not a final one")
live = progress.any_running(data.list_sweeps(u))


@st.fragment(run_every=REFRESH_S if live else None)
def sweeps_table() -> None:
    sweeps = data.list_sweeps(u)
    st.dataframe(
        progress.sweeps_table(sweeps), hide_index=True, width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", help="finished trials / planned trials",
                                                        format="percent", min_value=0.0, max_value=1.0),
            "best": st.column_config.NumberColumn("best", help="smallest metric of a completed trial", format="%.4f"),
            "stopped": st.column_config.NumberColumn("stopped", help=STOPPED_HELP),
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        },
    )
    now_live = progress.any_running(sweeps)
    if now_live:
        st.caption(f"A sweep is running: this page reads the database again every {REFRESH_S:g} seconds.")
    if live and not now_live:
        st.rerun()  # the sweep finished: redraw the whole page once, and stop refreshing
    sweep = ui.require_sweep()
    trials = ui.sweep_trials(sweep)
    st.subheader(f"{sweep.name}: per scale point")
    st.caption(f"Pick another sweep in the sidebar. Recipe hash {sweep.recipe_hash}, metric {sweep.metric_name}, "
               f"status {sweep.status}.")
    st.dataframe(progress.groups_table(trials), hide_index=True, width="stretch",
                 column_config={"best": st.column_config.NumberColumn("best", help="smallest metric of a completed "
                                                                      "trial", format="%.4f"),
                                "stopped": st.column_config.NumberColumn("stopped", help=STOPPED_HELP),
                                "refined": st.column_config.NumberColumn(
                                    "refined", help="trials of the refine rounds (search.refine): drawn around the "
                                                    "joint model's optimum after the first round")})


sweeps_table()
