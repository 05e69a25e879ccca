"""Synthetic sweeps whose optimum is known: what the fit is calibrated on.

The truth is a bowl in u = log2(lr) that is not any model the fit assumes: steeper below the optimum and flattening
far below it (an under-trained run stops getting worse), shallower above it, then a divergence cliff. Trials are
the recipe's own plan (the same draws at every scale point), each scored with Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from mutransfer.plan import plan
from mutransfer.recipe import Recipe, Scale

LEVEL = 2.0
BELOW = 0.10  # metric per octave^2 below the optimum (near it)
FLATTEN = 6.0  # octaves below the optimum at which the lower side has flattened to half its quadratic
ABOVE = 0.05  # metric per octave^2 above the optimum
CLIFF = 2.5  # octaves above the optimum: a run diverges beyond it


def bowl(z: float) -> float:
    """The truth's excess metric at z octaves from the optimum."""
    return BELOW * z * z / (1.0 + abs(z) / FLATTEN) if z < 0 else ABOVE * z * z


def synthetic_trials(recipe: Recipe, optimum: Callable[[Scale, str], float], *, noise: float,
                     rng: np.random.Generator, extra: Callable[[Scale, dict[str, float]], float] | None = None
                     ) -> pd.DataFrame:
    """A trials frame as the store hands it to the fit, for `recipe`'s plan: lr's optimum at `optimum(scale,
    parametrization)` (log2), the bowl above, `noise` sigma per trial, `extra(scale, hparams)` added if given."""
    rows = []
    for spec in plan(recipe):
        hp = spec.hparams
        z = math.log2(hp["lr"]) - optimum(spec.scale, spec.parametrization)
        diverged = z > CLIFF
        m = LEVEL + bowl(z) + noise * rng.normal() + (extra(spec.scale, hp) if extra else 0.0)
        rows.append({
            "key": spec.key, "group": spec.group, "sample": spec.sample, "parametrization": spec.parametrization,
            **spec.scale.model_dump(), "status": "diverged" if diverged else "completed",
            "metric": None if diverged else m, **{f"hp.{k}": v for k, v in hp.items()},
        })
    return pd.DataFrame(rows)
