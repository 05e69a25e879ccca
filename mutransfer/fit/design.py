"""The joint model's data: one parametrization's trials as arrays, their subsets and bootstrap resampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Design:
    """One parametrization's trials as arrays: completed ones, and censored ones (diverged, or stopped early)."""

    names: tuple[str, ...]  # numeric hyperparameters, in the recipe's order
    kinds: tuple[str, ...]  # log | linear
    lows: np.ndarray  # (H,) searched range in the fit coordinate
    highs: np.ndarray
    axes: tuple[str, ...]  # scale axes with at least two distinct values among the trials
    u: np.ndarray  # (n, H)
    x: np.ndarray  # (n, A) log2(scale / base)
    group: np.ndarray  # (n,) scale point index
    n_groups: int
    cat: np.ndarray  # (n,) index of the trial's combination of choice values
    n_cats: int
    y: np.ndarray  # (n,) metric; NaN where censored
    # (n,) bool: censored evidence, a trial whose final metric is known only to be at least some level: a diverged
    # one (the level is its point's DIVERGED_LEVEL quantile, mutransfer.fit.model) or a stopped one (its `floor`).
    censored: np.ndarray
    cluster: np.ndarray  # (n,) configuration id within a point (trials that are seeds of one configuration)
    # (n,) a stopped trial's own level (mutransfer.fit.stopped); NaN for every other trial. None: no stopped trial.
    floor: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.floor is None:
            object.__setattr__(self, "floor", np.full(len(self.y), np.nan))

    @property
    def spans(self) -> np.ndarray:
        return np.maximum(self.highs - self.lows, 1e-9)

    @property
    def n(self) -> int:
        return len(self.y)


def subset(D: Design, keep: np.ndarray) -> Design:
    """The design of the trials in `keep` (bool, (n,)), scale points renumbered; axes left with a single value
    dropped (no slope can be fitted along them)."""
    groups = sorted(set(D.group[keep].tolist()))
    renum = {g: i for i, g in enumerate(groups)}
    x = D.x[keep]
    axes_keep = [a for a in range(len(D.axes)) if len(np.unique(x[:, a])) >= 2]
    return Design(D.names, D.kinds, D.lows, D.highs, tuple(D.axes[a] for a in axes_keep), D.u[keep],
                  x[:, axes_keep], np.array([renum[g] for g in D.group[keep].tolist()], dtype=int), len(groups),
                  D.cat[keep], D.n_cats, D.y[keep], D.censored[keep], D.cluster[keep], D.floor[keep])

def take(D: Design, idx: np.ndarray) -> Design:
    """The trials at `idx`, scale points and axes as they are: the columns a fit pass looks at."""
    return replace(D, u=D.u[idx], x=D.x[idx], group=D.group[idx], cat=D.cat[idx], y=D.y[idx],
                   censored=D.censored[idx], floor=D.floor[idx], cluster=D.cluster[idx])


def repeat_noise(D: Design) -> float | None:
    """The trial noise near the optimum from seeds of one configuration: the pooled standard deviation of the
    completed seeds of each configuration in the better half of its scale point (by mean metric; the noise of a
    run far from the optimum, near a divergence or barely trained, is not the noise the optimum is placed in).
    None without such repeats."""
    num, dof = 0.0, 0
    comp = ~D.censored
    for g in range(D.n_groups):
        in_g = comp & (D.group == g)
        configs = [D.y[in_g & (D.cluster == c)] for c in np.unique(D.cluster[in_g])]
        configs = [y for y in configs if y.size >= 2]
        if not configs:
            continue
        cut = np.median([y.mean() for y in configs])
        for y in configs:
            if y.mean() <= cut:
                num += float(((y - y.mean()) ** 2).sum())
                dof += y.size - 1
    return math.sqrt(num / dof) if dof else None


def bootstrap_counts(D: Design, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) resampling counts: within each scale point, configurations with replacement, then the seeds
    of each drawn configuration with replacement (a configuration with one seed: plain trial resampling)."""
    counts = np.zeros((n_boot, D.n), dtype=np.int64)
    if n_boot <= 0:
        return counts
    for g in range(D.n_groups):
        idx = np.flatnonzero(D.group == g)
        if idx.size == 0:
            continue
        clusters = [idx[D.cluster[idx] == c] for c in dict.fromkeys(D.cluster[idx].tolist())]
        picks = rng.multinomial(len(clusters), np.full(len(clusters), 1.0 / len(clusters)), size=n_boot)
        for c, members in enumerate(clusters):
            if members.size == 1:
                counts[:, members[0]] = picks[:, c]
            else:
                counts[:, members] = rng.multinomial(picks[:, c] * members.size,
                                                     np.full(members.size, 1.0 / members.size))
    return counts
