"""Export: the target config in each format, previewed and downloadable."""

import streamlit as st

from dashboard import data, ui
from dashboard.figures import style
from mutransfer.errors import MutransferError

st.title("Export")
sweep = ui.require_sweep()
trials = ui.sweep_trials(sweep)
recipe = ui.sweep_recipe(sweep)
ui.require_completed(sweep, trials)

params = list(recipe.model.parametrizations)
param = st.radio("Parametrization", params, horizontal=True, format_func=style.param_label) \
    if len(params) > 1 else params[0]
try:
    built = data.export_texts(ui.url(), sweep.id, data.progress_stamp(sweep), param)
except data.Problem:
    raise
except MutransferError as e:  # anything else is a bug: app.py shows it as one and logs the traceback
    ui.say(f"The config could not be built: {str(e).strip().splitlines()[0]}")
texts = built.texts
if built.problem is not None:
    st.warning(f"`mutransfer export` refuses this config: {built.problem} What is shown is what "
               "`--allow-extrapolation` writes (the file says so under `extrapolation`).")
st.caption("Exactly what `mutransfer export --format ...` writes, from the latest fit when one is stored, else from "
           "a fit made here; it is not stored (the command stores what it writes).")
# What each format is for, and the file it is saved as (see the README's Launchers section).
FORMATS = {
    "yaml": ("YAML", "the full config: provenance, hyperparameters with intervals, µP rules, compute", "yaml",
             "application/x-yaml"),
    "json": ("JSON", "the same as YAML, for machines", "json", "application/json"),
    "nanogpt": ("nanoGPT", "a config file for nanoGPT's train.py (`python train.py config.py`)", "py", "text/x-python"),
    "nanogpt-mup": ("nanoGPT-mup", "a config file for EleutherAI/nanoGPT-mup's train.py", "py", "text/x-python"),
    "hf": ("Hugging Face", "TrainingArguments and a GPT-2 model config, one JSON with both", "json",
           "application/json"),
    "torchrun": ("torchrun", "a command line for nanoGPT's train.py under torchrun", "sh", "text/x-sh"),
    "litgpt": ("LitGPT", "a config for `litgpt pretrain --config`", "yaml", "application/x-yaml"),
    "megatron": ("Megatron-LM", "pretrain_gpt.py arguments", "sh", "text/x-sh"),
}
shown = [f for f in FORMATS if f in texts]
for tab, fmt in zip(st.tabs([FORMATS[f][0] for f in shown]), shown, strict=True):
    label, what, ext, mime = FORMATS[fmt]
    with tab:
        text = texts[fmt]
        if text.startswith(data.UNAVAILABLE):
            st.info(f"No {label} config for this sweep: {text.removeprefix(data.UNAVAILABLE)}")
            continue
        st.caption(what)
        st.download_button(f"Download {label}", text, file_name=f"{sweep.name}-{param}-{fmt}.{ext}", mime=mime,
                           key=f"dl-{fmt}")
        st.code(text, language={"nanogpt": "python", "nanogpt-mup": "python", "torchrun": "bash", "megatron": "bash", "hf": "json"}.get(
            fmt, fmt))

stored = data.exports(ui.url(), sweep.id)
if stored:
    with st.expander(f"Exports stored by `mutransfer export` ({len(stored)})"):
        for e in reversed(stored):
            st.download_button(f"{e.format.upper()} of {e.created_at:%Y-%m-%d %H:%M} (fit {e.fit_id})", e.content,
                               file_name=f"{sweep.name}-export-{e.id}.{e.format}", key=f"stored-{e.id}")
