"""Pure functions from a sweep's data to tables, sentences and Plotly figures: no Streamlit, no database. One module
per subject (a page's, or `style` that they share).

Two kinds: data functions (trials frame / `FitResult` -> frames, dataclasses, sentences) and figure functions
(those -> `go.Figure`). Pages call both and only lay the results out; tests call them directly.
"""
