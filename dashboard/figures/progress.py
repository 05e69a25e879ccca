"""A sweep's progress: the sweeps table, each scale point's trials by status, and the sentence for why a sweep
has nothing to plot yet."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dashboard.figures.style import param_label
from mutransfer.storage import FINISHED_STATUSES, SweepInfo


def sweeps_table(sweeps: Sequence[SweepInfo]) -> pd.DataFrame:
    """One row per sweep: status, progress (finished/total), running, completed, stopped (when a sweep stopped
    trials early: search.early_stop), diverged, failed, best metric, created."""
    stopped = any((s.counts or {}).get("stopped", 0) for s in sweeps)
    rows = []
    for s in sweeps:
        c = s.counts or {}
        done = sum(c.get(k, 0) for k in FINISHED_STATUSES)
        rows.append({
            "id": s.id,
            "name": s.name,
            "status": s.status,
            "progress": done / s.total_trials if s.total_trials else 0.0,
            "done/total": f"{done}/{s.total_trials}",
            "running": c.get("running", 0),
            "completed": c.get("completed", 0),
            "stopped": c.get("stopped", 0),
            "diverged": c.get("diverged", 0),
            "failed": c.get("failed", 0),
            "best": s.best_metric,
            "metric": s.metric_name,
            "created": pd.Timestamp(s.created_at),
        })
    cols = ["id", "name", "status", "progress", "done/total", "running", "completed",
            *(["stopped"] if stopped else []), "diverged", "failed", "best", "metric", "created"]
    return pd.DataFrame(rows, columns=cols)


def any_running(sweeps: Sequence[SweepInfo]) -> bool:
    return any(s.status == "running" or (s.counts or {}).get("running", 0) for s in sweeps)


def groups_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per scale point (and parametrization, and role): trials by status and the best completed metric. `refined`
    (the trials of the refine rounds, search.refine) and `stopped` (stopped early, search.early_stop) are columns
    only when the sweep has such trials; `best` is over completed trials only (a stopped trial's metric is where it
    stopped, not where it would have ended)."""
    status = trials["status"].astype(str) if len(trials) else pd.Series(dtype=str)
    rounds = pd.to_numeric(trials["round"], errors="coerce") if "round" in trials else pd.Series(dtype=float)
    in_refine = rounds >= 1  # round 0: the recipe's own draws; k >= 1: refine round k
    refined = bool(in_refine.any())
    stopped = bool((status == "stopped").any())
    cols = ["parametrization", "scale point", "role", "trials", *(["refined"] if refined else []), "completed",
            *(["stopped"] if stopped else []), "diverged", "failed", "running", "pending", "best"]
    if not len(trials):
        return pd.DataFrame(columns=cols)
    rows = []
    role = trials["role"] if "role" in trials else pd.Series("sweep", index=trials.index)
    for (group, r), at in trials.groupby([trials["group"], role], sort=False):
        n = at["status"].value_counts()
        done = at[at["status"] == "completed"]["metric"]
        row = {
            "parametrization": param_label(str(at["parametrization"].iloc[0])),
            "scale point": str(group).split("/", 1)[-1], "role": r, "trials": len(at),
            **{k: int(n.get(k, 0)) for k in ("completed", "stopped", "diverged", "failed", "running", "pending")},
            "best": float(done.min()) if len(done.dropna()) else None,
        }
        if refined:
            row["refined"] = int(in_refine.loc[at.index].sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def no_result_reason(sweep: SweepInfo, trials: pd.DataFrame) -> str | None:
    """Why there is nothing to plot for a sweep (no completed trial), as one sentence; None when there is."""
    own = trials[trials["role"] == "sweep"] if "role" in trials else trials
    if len(own) and (own["status"] == "completed").any():
        return None
    n = own["status"].value_counts().to_dict() if len(own) else {}
    total = len(own)
    if total == 0:
        return f"Sweep {sweep.name!r} has no trials yet."
    div, fail = n.get("diverged", 0), n.get("failed", 0)
    if div == total:
        return (f"Every trial of sweep {sweep.name!r} diverged ({div} of {total}): the learning rates were too "
                "large. Lower the top of the range in the recipe and sweep again.")
    stopped = n.get("stopped", 0)
    if div + fail + stopped == total:  # every trial finished, none completed
        stop = f", {stopped} stopped early" if stopped else ""
        why = (" A trial stopped early is read against the completed trials of its scale point: with none, it says "
               "nothing about where it would have ended.") if stopped else ""
        return (f"No trial of sweep {sweep.name!r} completed: {div} diverged, {fail} failed{stop}. The Trials page "
                f"shows the errors of the failed ones.{why}")
    waiting = n.get("pending", 0) + n.get("running", 0)
    detail = ", ".join(f"{v} {k}" for k, v in sorted(n.items()))
    return (f"Sweep {sweep.name!r} has no completed trial yet ({detail}): its curves appear here as the "
            f"{waiting} remaining trials finish.")
