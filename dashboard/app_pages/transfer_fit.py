"""Transfer fit: the optimum against scale for each axis, with its uncertainty band, the fitted law and the
extrapolation to the target; the transferred config beside it, the metric to expect at the target, the backtest and the noise."""

import streamlit as st

from dashboard import data, ui
from dashboard.figures import forecast, style, transfer_fit

st.title("Transfer fit")
sweep = ui.require_sweep()
trials = ui.sweep_trials(sweep)
ui.require_completed(sweep, trials)
info = ui.sweep_fit(sweep)
if info is None:
    ui.say(f"There is no fit of sweep {sweep.name!r} to show.")
fit = info.result
tokens = f", {fit.target.tokens:,} training tokens" if getattr(fit.target, "tokens", None) else ""
st.caption(f"Fit: {info.source}. Target: width {fit.target.width}, depth {fit.target.depth}, batch size "
           f"{fit.target.batch_size}, sequence length {fit.target.seq_len}{tokens}.")

numeric = [n for n, k in fit.hparams.items() if k != "choice"]
left, right = st.columns([3, 2], gap="large")
with left:
    axes = transfer_fit.law_axes(fit)
    if not numeric:
        st.info("Every swept hyperparameter is a choice: a choice has no law against scale, its best value at the "
                "base is kept (see the table).")
    elif not axes:
        st.info("The sweep varies no scale axis: there is no law to fit, and the target gets the optimum of the "
                "base proxy.")
    else:
        hparam = st.selectbox("Hyperparameter", numeric) if len(numeric) > 1 else numeric[0]
        for axis in axes:
            datas = [d for p in fit.parametrizations if (d := transfer_fit.law_data(fit, p, hparam, axis)) is not None]
            name = style.AXIS_LABEL[axis]
            sizes = sorted({s for d in datas for s in d.scales})
            if len(sizes) < 2:
                values = sizes or [getattr(fit.base, axis)]
                st.info(f"Along {name} the optimum of {hparam} is known at a single value ({values[0]}): "
                        "there is no law to fit, so the target keeps that value.")
                continue
            ui.plot(transfer_fit.law_figure(datas), key=f"law-{axis}-{hparam}")
with right:
    st.subheader("Transferred config")
    st.dataframe(transfer_fit.transfers_table(fit), hide_index=True, width="stretch",
                 column_config={"value at target": st.column_config.NumberColumn(format="%.4g")})
    st.caption("The Export page has the whole config, in YAML and JSON.")
    if fit.forecasts:
        st.subheader(f"The {fit.metric} to expect at the target")
        fdatas = [d for p in fit.parametrizations if (d := forecast.forecast_data(fit, p)) is not None]
        if fdatas:
            ui.plot(forecast.forecast_figure(fdatas), key="forecast")
        st.dataframe(forecast.forecast_table(fit), hide_index=True, width="stretch")
        st.caption("Each scale point's floor is the joint model's lowest metric there; a power law through them, "
                   "evaluated at the target, at the proxies' training length. "
                   + (fit.preferred_reason + "." if fit.preferred_reason else ""))
    if fit.backtests:
        st.subheader("Backtest")
        st.caption("The largest proxy of each axis left out: the law from the other proxies predicts its optimum. "
                   "The error is how far off it was; the metric cost, what training at the prediction loses.")
        st.dataframe(transfer_fit.backtest_table(fit), hide_index=True, width="stretch")
    if fit.noise:
        st.caption("Trial noise against the rise of the metric near the optimum (above 0.5, single trials cannot "
                   "place the optimum: see the `noise` warning).")
        st.dataframe(transfer_fit.noise_table(fit), hide_index=True, width="stretch")
    with st.expander("Optimum per scale point"):
        st.dataframe(transfer_fit.optima_table(fit), hide_index=True, width="stretch")
    ui.fit_warnings(info, expanded=True)
    checks = data.checks(ui.url(), sweep.id)
    if checks is not None:
        st.subheader("Checks")
        if len(checks):
            st.dataframe(checks, hide_index=True, width="stretch")
        else:
            st.caption("No coordinate check or verification is stored for this sweep (`mutransfer verify`).")
