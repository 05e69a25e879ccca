"""Export: the target config in each format, previewed and downloadable."""

import streamlit as st

from dashboard import data, figures, ui

st.title("Export")
sweep = ui.require_sweep()
trials = ui.sweep_trials(sweep)
recipe = ui.sweep_recipe(sweep)
ui.require_completed(sweep, trials)

params = list(recipe.model.parametrizations)
param = st.radio("Parametrization", params, horizontal=True, format_func=figures.param_label) \
    if len(params) > 1 else params[0]
groups = st.checkbox(
    "Include per-parameter-group values", value=False,
    help="Builds the target model on PyTorch's meta device to list each parameter group's learning rate and "
         "init; the first time takes a few seconds (PyTorch is imported).",
)
if not groups:
    st.caption("Without per-parameter-group values the config states µP's rules per kind of parameter (hidden, "
               "vector-like, readout), which is enough to reproduce it; `mutransfer export` always adds the groups.")
try:
    texts = data.export_texts(ui.url(), sweep.id, data.progress_stamp(sweep), param, groups)
except data.Problem:
    raise
except (ValueError, KeyError, ImportError, OSError, RuntimeError) as e:
    ui.say(f"The config could not be built ({type(e).__name__}: {e}).")
st.caption("Built from the latest fit when one is stored, else from a fit made here; it is not stored (the "
           "`mutransfer export` command stores what it writes).")
# What each format is for, and the file it is saved as (see the README's Launchers section).
FORMATS = {
    "yaml": ("YAML", "the full config: provenance, hyperparameters with intervals, µP rules, compute", "yaml",
             "application/x-yaml"),
    "json": ("JSON", "the same as YAML, for machines", "json", "application/json"),
    "nanogpt": ("nanoGPT", "a config file for nanoGPT's train.py (`python train.py config.py`)", "py", "text/x-python"),
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
        st.code(text, language={"nanogpt": "python", "torchrun": "bash", "megatron": "bash", "hf": "json"}.get(
            fmt, fmt))

stored = data.exports(ui.url(), sweep.id)
if stored:
    with st.expander(f"Exports stored by `mutransfer export` ({len(stored)})"):
        for e in reversed(stored):
            st.download_button(f"{e.format.upper()} of {e.created_at:%Y-%m-%d %H:%M} (fit {e.fit_id})", e.content,
                               file_name=f"{sweep.name}-export-{e.id}.{e.format}", key=f"stored-{e.id}")
