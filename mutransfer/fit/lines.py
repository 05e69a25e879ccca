"""Weighted least squares of optima on log2(scale): the classic per-point law, kept as a small public tool (the fit
itself reads its laws off the joint model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LineFit:
    intercept: float
    slope: float
    slope_se: float | None  # analytic WLS standard error; None with two points (no residual degrees of freedom)


def _law_operator(log_scales: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The (2, P) matrix L with (intercept, slope) = L @ optima for weighted least squares."""
    X = np.column_stack([np.ones_like(log_scales), log_scales])
    XtW = X.T * weights
    return np.linalg.solve(XtW @ X, XtW)


def fit_law(
    scales: Sequence[float] | np.ndarray, optima: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray
) -> LineFit:
    """Weighted least squares of optima (in the fit coordinate, e.g. log2 lr) on log2(scales)."""
    s = np.log2(np.asarray(scales, dtype=float))
    y = np.asarray(optima, dtype=float)
    w = np.asarray(weights, dtype=float)
    if len(np.unique(s)) < 2:
        raise ValueError("a law needs at least two distinct scales")
    a, b = _law_operator(s, w) @ y
    se = None
    if len(s) > 2:
        X = np.column_stack([np.ones_like(s), s])
        resid = y - X @ np.array([a, b])
        sigma2 = float((w * resid**2).sum() / (len(s) - 2))
        cov = sigma2 * np.linalg.inv((X.T * w) @ X)
        se = float(math.sqrt(max(cov[1, 1], 0.0)))
    return LineFit(float(a), float(b), se)

