"""The dashboard's one door to the database: the `Store` (one per URL, `st.cache_resource`) and cached reads
(`st.cache_data` with a short time-to-live, so a running sweep shows up without a restart).

The database URL comes from `streamlit run dashboard/app.py -- --db URL`, else `$MUTRANSFER_DB` (which
`mutransfer dashboard --db URL` sets), else ./mutransfer.db. The dashboard only reads: it never creates a database
file or migrates a schema (`Store.open(url, upgrade=False)`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mutransfer.errors import MutransferError
from mutransfer.fit import FitResult
from mutransfer.recipe import Recipe, stored_recipe
from mutransfer.storage import ExportInfo, Store, StoreError, SweepInfo, default_url, mask_url, normalize_url

log = logging.getLogger("mutransfer.dashboard")

TTL_SWEEPS = 2.0  # seconds: the sweeps list drives the live refresh
TTL_TRIALS = 5.0
TTL_CURVES = 10.0
TTL_FIT = 60.0  # also keyed by the sweep's progress: a finished trial means a new fit


class Problem(MutransferError):
    """Something the page explains in one sentence instead of drawing (a missing database, say)."""


def database_url(argv: list[str] | None = None) -> str:
    """`--db URL` among the script's arguments, else $MUTRANSFER_DB, else ./mutransfer.db."""
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        if a == "--db" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--db="):
            return a.split("=", 1)[1]
    return default_url()


def describe_url(url: str) -> str:
    return mask_url(url)


def _missing_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist (the dashboard must not create it)."""
    try:
        u = normalize_url(url)
    except StoreError:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or "mode=memory" in u.database:
        return None
    p = Path(u.database)
    return None if p.exists() else p


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    missing = _missing_file(url)
    if missing is not None:
        raise Problem(f"There is no database at {missing}. Run a sweep into it first (`mutransfer sweep RECIPE "
                      f"--db {mask_url(url)}`), or open another one with `mutransfer dashboard --db URL`.")
    return Store.open(url, upgrade=False)  # errors are one line, password masked: the page shows them as they are


def store(url: str) -> Store:
    return _store(url)


# ------------------------------------------------------------------------------------------------ reads


@st.cache_data(ttl=TTL_SWEEPS, show_spinner=False)
def list_sweeps(url: str) -> list[SweepInfo]:
    return store(url).list_sweeps()


def progress_stamp(sweep: SweepInfo) -> tuple[Any, ...]:
    """Changes whenever a trial of the sweep changes status: part of the key of every per-sweep cache."""
    return (sweep.status, tuple(sorted((sweep.counts or {}).items())), str(sweep.updated_at))


@st.cache_data(ttl=TTL_TRIALS, show_spinner=False, max_entries=32)
def trials(url: str, sweep_id: int, stamp: tuple[Any, ...], metric: str) -> pd.DataFrame:
    """The sweep's trials as the fit reads them (mutransfer.fit.stopped.fit_frame): Store.trials_frame, with the
    `floor` of each trial stopped early when some were (read off the completed trials' curves of `metric`)."""
    from mutransfer.fit.stopped import fit_frame

    return fit_frame(store(url), sweep_id, metric)


@st.cache_data(ttl=TTL_CURVES, show_spinner=False, max_entries=64)
def curves(url: str, sweep_id: int, keys: tuple[str, ...]) -> pd.DataFrame:
    return store(url).curves_frame(sweep_id, list(keys))


@st.cache_data(show_spinner=False, max_entries=32)
def recipe(recipe_json: str, sweep_name: str) -> Recipe:
    return stored_recipe(recipe_json, sweep_name)


@dataclass(frozen=True)
class FitInfo:
    result: FitResult
    fit_id: int | None  # None: computed here, not stored
    source: str  # a sentence: where the fit comes from


@st.cache_data(ttl=TTL_FIT, show_spinner="Fitting the sweep…", max_entries=16)
def fit(url: str, sweep_id: int, stamp: tuple[Any, ...], recipe_json: str, metric: str) -> FitInfo | None:
    """The latest stored fit of the sweep, else one computed here from its trials (not stored: the dashboard
    only reads). None when no trial has completed."""
    frame = trials(url, sweep_id, stamp, metric)
    if not len(frame) or not (frame["status"] == "completed").any():
        return None
    from mutransfer import api

    f = api.latest_fit(store(url), sweep_id)  # the same fit `mutransfer export` and `verify` would use
    if f.fit_id is not None:
        return FitInfo(f.result, f.fit_id, f"stored fit {f.fit_id} (`mutransfer fit`)")
    return FitInfo(f.result, None, "computed here from the trials so far; `mutransfer fit` stores one")


@st.cache_data(ttl=TTL_TRIALS, show_spinner=False, max_entries=32)
def checks(url: str, sweep_id: int) -> pd.DataFrame | None:
    """Stored checks of the sweep (coordinate checks, verifications), or None when this store keeps none."""
    s = store(url)
    if not hasattr(s, "checks"):
        return None
    from dashboard.figures.transfer_fit import checks_table

    return checks_table(s.checks(sweep_id))


@st.cache_data(ttl=TTL_TRIALS, show_spinner=False, max_entries=32)
def exports(url: str, sweep_id: int) -> list[ExportInfo]:
    return store(url).exports(sweep_id)


@dataclass(frozen=True)
class ExportTexts:
    texts: dict[str, str]  # format -> what `mutransfer export --format` writes, or UNAVAILABLE + the reason
    problem: str | None  # the extrapolation guard's refusal: the texts are what --allow-extrapolation writes


@st.cache_data(ttl=300, show_spinner="Building the target config…", max_entries=32)
def export_texts(url: str, sweep_id: int, stamp: tuple[Any, ...], parametrization: str) -> ExportTexts:
    """The target config of the sweep in each format, exactly as `mutransfer export` writes it (mutransfer.api;
    built from the latest stored fit, else one computed here; nothing is stored)."""
    from mutransfer import api
    from mutransfer.errors import UsageError
    from mutransfer.launchers import FORMATS

    try:
        exp = api.export(store(url), sweep_id, parametrization=parametrization, allow_extrapolation=True,
                         save=False)
    except UsageError as e:
        raise Problem(str(e)) from e
    texts: dict[str, str] = {}
    for fmt in FORMATS:
        try:
            texts[fmt] = api.render(exp, fmt)
        except UsageError as e:  # a launcher that cannot take this model says why in one line
            texts[fmt] = f"{UNAVAILABLE}{e}"
    return ExportTexts(texts, exp.problem)


UNAVAILABLE = "unavailable: "


def clear() -> None:
    """Forget every cached read (the Refresh button)."""
    for fn in (list_sweeps, trials, curves, fit, checks, exports, export_texts):
        fn.clear()
