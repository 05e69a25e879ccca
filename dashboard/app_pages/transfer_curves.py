"""Transfer curves: the metric against a hyperparameter, one curve per width (and per depth, batch size and
sequence length when the sweep varied them), µP and SP side by side."""

import streamlit as st

from dashboard import ui
from dashboard.figures import style, transfer_curves

st.title("Transfer curves")
sweep = ui.require_sweep()
trials = ui.sweep_trials(sweep)
recipe = ui.sweep_recipe(sweep)
ui.require_completed(sweep, trials)
info = ui.sweep_fit(sweep)

names = list(recipe.search.space)
kinds = transfer_curves.hparam_kinds(recipe)
first = next((i for i, n in enumerate(names) if transfer_curves.single_value_reason(trials, n) is None), 0)
hparam = st.selectbox("Hyperparameter", names, index=first) if len(names) > 1 else names[0]
reason = transfer_curves.single_value_reason(trials, hparam)
if reason:
    ui.say(reason)

base = recipe.scales.base
params = [p for p in recipe.model.parametrizations if (trials["parametrization"] == p).any()]
axes = transfer_curves.varied_axes(trials, base) or ["width"]
if info is not None:
    st.caption(f"Stars: the fitted optimum at each size, with its 95% bootstrap interval; dotted: the local "
               f"quadratic it comes from. Fit: {info.source}.")
every = {axis: [transfer_curves.curves_data(trials, info.result if info else None, parametrization=p, hparam=hparam,
                                    kind=kinds[hparam], axis=axis, base=base, metric=sweep.metric_name)
                for p in params] for axis in axes}
log_y = st.toggle("Log scale for the metric", value=transfer_curves.prefers_log_y([d for ds in every.values() for d in ds]),
                  help="On by default when the metric spans more than a decade.")
for axis, datas in every.items():
    colors = style.scale_colors([s for d in datas for s in d.scales])
    y_range = transfer_curves.shared_y_range(datas, log=log_y)
    if len(axes) > 1:
        st.subheader(f"by {style.AXIS_LABEL[axis]}")
    cols = st.columns(len(datas))
    for col, d in zip(cols, datas, strict=True):
        with col:
            if not d.series:
                st.info(f"{style.param_label(d.parametrization)} has no trials along {style.AXIS_LABEL[axis]}.")
                continue
            ui.plot(transfer_curves.transfer_curves_figure(d, colors=colors, y_range=y_range, log_y=log_y),
                    key=f"curves-{axis}-{d.parametrization}")
            n_div = sum(len(s.diverged_x) for s in d.series)
            n_stop = sum(len(s.stopped_x) for s in d.series)
            rounds = sorted({k for s in d.series for k in (*s.rounds, *s.stopped_rounds) if k})
            notes = []
            if n_div:
                notes.append(f"{n_div} diverged trials are drawn as × along the top")
            if n_stop:
                notes.append(f"{n_stop} trials stopped early are open markers at the floor they would have ended at "
                             "least at (what the fit holds them to), not at their metric where they stopped")
            if rounds:
                notes.append("trials of refine round " + ", ".join(
                    f"{k} ({transfer_curves.round_symbol(k)}s)" for k in rounds) + " are on the curves")
            if d.hidden:
                notes.append("not drawn: " + ", ".join(f"{v} {k}" for k, v in sorted(d.hidden.items())))
                if transfer_curves.NO_FLOOR in d.hidden:
                    notes.append("a stopped trial has a floor once a trial of its scale point completed")
            if d.verify is not None and len(d.verify):
                notes.append(f"{len(d.verify)} verification trials (black diamonds) at a larger size")
            if notes:
                st.caption("; ".join(notes) + ".")
ui.fit_warnings(info)
