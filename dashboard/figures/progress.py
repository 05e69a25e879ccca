"""A sweep's progress: the sweeps table, each scale point's trials by status, and the sentence for why a sweep
has nothing to plot yet."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dashboard.figures.style import param_label
from mutransfer.storage import FINISHED_STATUSES, SweepInfo


def sweeps_table(sweeps: Sequence[SweepInfo]) -> pd.DataFrame:
    """One row per sweep: status, progress (finished/total), running, diverged, failed, best metric, created."""
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
            "diverged": c.get("diverged", 0),
            "failed": c.get("failed", 0),
            "best": s.best_metric,
            "metric": s.metric_name,
            "created": pd.Timestamp(s.created_at),
        })
    cols = ["id", "name", "status", "progress", "done/total", "running", "completed", "diverged", "failed", "best",
            "metric", "created"]
    return pd.DataFrame(rows, columns=cols)


def any_running(sweeps: Sequence[SweepInfo]) -> bool:
    return any(s.status == "running" or (s.counts or {}).get("running", 0) for s in sweeps)


def groups_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per scale point (and parametrization, and role): trials by status and the best completed metric."""
    cols = ["parametrization", "scale point", "role", "trials", "completed", "diverged", "failed", "running",
            "pending", "best"]
    if not len(trials):
        return pd.DataFrame(columns=cols)
    rows = []
    role = trials["role"] if "role" in trials else pd.Series("sweep", index=trials.index)
    for (group, r), at in trials.groupby([trials["group"], role], sort=False):
        n = at["status"].value_counts()
        done = at[at["status"] == "completed"]["metric"]
        rows.append({
            "parametrization": param_label(str(at["parametrization"].iloc[0])),
            "scale point": str(group).split("/", 1)[-1], "role": r, "trials": len(at),
            **{k: int(n.get(k, 0)) for k in ("completed", "diverged", "failed", "running", "pending")},
            "best": float(done.min()) if len(done.dropna()) else None,
        })
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
    if div + fail == total:
        return (f"No trial of sweep {sweep.name!r} completed: {div} diverged, {fail} failed. The Trials page "
                "shows the errors of the failed ones.")
    waiting = n.get("pending", 0) + n.get("running", 0)
    detail = ", ".join(f"{v} {k}" for k, v in sorted(n.items()))
    return (f"Sweep {sweep.name!r} has no completed trial yet ({detail}): its curves appear here as the "
            f"{waiting} remaining trials finish.")
