"""Trials: a filterable table and the learning curves of the selected trials, overlaid."""

import streamlit as st

from dashboard import data, ui
from dashboard.figures import learning_curves, style

st.title("Trials")
sweep = ui.require_sweep()
trials = ui.sweep_trials(sweep)
if not len(trials):
    ui.say(f"Sweep {sweep.name!r} has no trials yet.")

c1, c2, c3, c4 = st.columns(4)
params = sorted(trials["parametrization"].astype(str).unique())
groups = list(dict.fromkeys(trials["group"].astype(str)))
statuses = sorted(trials["status"].astype(str).unique())
roles = sorted(trials["role"].astype(str).unique())
pick_params = c1.multiselect("Parametrization", params, default=params, format_func=style.param_label)
pick_groups = c2.multiselect("Scale point", groups, placeholder="all scale points")
pick_status = c3.multiselect("Status", statuses, default=statuses,
                             help="stopped: stopped early by the sweep's scheduler (search.early_stop); its curve "
                                  "ends at the step it reached, and its metric is its loss there")
pick_roles = c4.multiselect("Role", roles, default=roles, help="sweep: the sweep's own trials; verify: checks of "
                            "the transferred value at a larger size (`mutransfer verify`)")
shown = learning_curves.filter_trials(trials, parametrizations=pick_params, groups=pick_groups or None,
                              statuses=pick_status, roles=pick_roles)
st.caption(f"{len(shown)} of {len(trials)} trials. Click a column header to sort.")
st.dataframe(learning_curves.trials_table(shown), hide_index=True, width="stretch", height=360,
             column_config={"metric": st.column_config.NumberColumn(format="%.4f"),
                            "round": st.column_config.NumberColumn(
                                "round", help="0: the recipe's own draws; k: refine round k (search.refine)"),
                            "floor": st.column_config.NumberColumn(
                                "floor", format="%.4f", help="a stopped trial's: the level it would have ended at "
                                "least at, read off the completed trials of its scale point (what the fit uses)"),
                            "best_metric": st.column_config.NumberColumn(format="%.4f"),
                            "wall_time": st.column_config.NumberColumn("wall time (s)", format="%.1f")})
if not len(shown):
    ui.say("No trial matches these filters.")

st.subheader("Learning curves")
keys = st.multiselect("Trials to plot", shown["key"].tolist(), default=learning_curves.default_selection(shown),
                      max_selections=30, placeholder="choose trials")
if not keys:
    ui.say("Choose trials above to see their learning curves.")
curves = data.curves(ui.url(), sweep.id, tuple(keys))
if not len(curves):
    ui.say("The selected trials have no learning-curve points yet.")
names = list(dict.fromkeys(curves["name"].tolist()))
loss_first = sorted(names, key=lambda n: (n != sweep.metric_name, "loss" not in n, n))
metric = st.selectbox("Metric", loss_first)
ui.plot(learning_curves.learning_curves_figure(curves, shown, metric), key="learning-curves")
