"""Stopped trials as evidence: the level a trial stopped early (search.early_stop) is known to end at least at.

A stopped trial's metric is its loss at the step it reached, higher than where it would have ended: read as a
completed trial it would bend the bowl up wherever the scheduler stopped trials (and it stops the slow learners,
on one side of the optimum more than the other). What the scheduler's decision does say is a ranking: at step s
the trial was behind others of its scale point. ASHA's premise is that rankings hold to the end, so the trial would
have ended behind those that were ahead of it at s. Its floor is the FLOOR_LEVEL quantile of their final metrics
(not the worst of them: one run that went wrong late must not lift every floor), capped at its own loss at s
(it would not have got worse by training on). The joint model then holds it to that floor as a hinge, as it holds
a diverged trial (mutransfer.fit.model): a one-sided constraint, never a made-up metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mutransfer.storage import Store

# Of the completed trials of its scale point that were ahead of a stopped trial at the step it stopped, the
# quantile of their final metrics that it is held to (as fit.model.DIVERGED_LEVEL for a diverged trial).
FLOOR_LEVEL = 0.5


def stopped_floors(trials: pd.DataFrame, curves: pd.DataFrame, metric: str) -> pd.Series:
    """Each stopped trial's floor (NaN for every other trial, and for a stopped one with no completed trial of its
    scale point to compare with: it is then no evidence at all).

    `trials`: key, group, status, metric (a stopped trial's: its value at the step it reached), steps (reached);
    `curves`: the long form of Store.curves_frame (key, step, name, value), at least the completed trials' `metric`.
    """
    out = pd.Series(np.nan, index=trials.index, dtype=float)
    status = trials["status"].astype(str)
    stopped = trials[status == "stopped"]
    if stopped.empty:
        return out
    metric_of = pd.to_numeric(trials["metric"], errors="coerce")
    done = trials[(status == "completed") & np.isfinite(metric_of)]
    c = curves[(curves["name"] == metric) & curves["key"].isin(set(done["key"]))]
    c = c[np.isfinite(c["value"].to_numpy(dtype=float))].sort_values(["key", "step"], kind="stable")
    curve_of = {k: (g["step"].to_numpy(), g["value"].to_numpy(dtype=float)) for k, g in c.groupby("key", sort=False)}
    for idx, row in stopped.iterrows():
        level = float(row["metric"]) if pd.notna(row["metric"]) else np.nan
        step = row["steps"]
        peers = done[done["group"] == row["group"]]
        if peers.empty or not np.isfinite(level) or pd.isna(step):
            continue
        ahead = []
        for key, final in zip(peers["key"], pd.to_numeric(peers["metric"]), strict=True):
            steps, values = curve_of.get(key, (np.array([]), np.array([])))
            at = np.searchsorted(steps, int(step), side="right") - 1  # its last evaluation at or before that step
            if at >= 0 and values[at] <= level:
                ahead.append(float(final))
        finals = ahead or [float(v) for v in pd.to_numeric(peers["metric"])]  # none ahead: its point's completed
        out[idx] = min(level, float(np.quantile(finals, FLOOR_LEVEL)))
    return out


def fit_frame(store: Store, sweep_id: int, metric: str) -> pd.DataFrame:
    """The sweep's trials as the fit reads them: Store.trials_frame, with the `floor` of each stopped trial (read
    off the completed trials' curves, which are read only when some trial was stopped)."""
    frame = store.trials_frame(sweep_id)
    if len(frame) and (frame["status"] == "stopped").any():
        keys = list(frame.loc[frame["status"] == "completed", "key"])
        frame["floor"] = stopped_floors(frame, store.curves_frame(sweep_id, keys), metric)
    return frame


__all__ = ["FLOOR_LEVEL", "fit_frame", "stopped_floors"]
