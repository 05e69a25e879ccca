"""The fit: how the optimum of each swept hyperparameter moves with scale, and its value at the target.

`fit_sweep(trials, recipe)` returns a `FitResult` (`transfer(param, hparam)` gives value, lo, hi). The parts:
`joint` (one model of the metric over hyperparameters and scale, fitted on all trials of a parametrization: what
laws, target values and the export use; its curve and solver in `model`, its arrays in `design`), `optima` (each point's own optimum: a view), `laws` (the joint model read
along each axis and moved to the target), `noise`, `backtest`, `forecast` (the metric to expect at the target, and
which parametrization trains the better one), `warnings`, `result` (the types).
"""

from mutransfer.fit.laws import value_at
from mutransfer.fit.lines import LineFit, fit_law
from mutransfer.fit.optima import optimum_1d, quad_curve
from mutransfer.fit.result import (
    AxisStep,
    Backtest,
    FitResult,
    FitWarning,
    Forecast,
    Law,
    Noise,
    Optimum,
    PointFit,
    Transfer,
)
from mutransfer.fit.sweep import fit_sweep

__all__ = [
    "AxisStep",
    "Backtest",
    "FitResult",
    "FitWarning",
    "Forecast",
    "Law",
    "LineFit",
    "Noise",
    "Optimum",
    "PointFit",
    "Transfer",
    "fit_law",
    "fit_sweep",
    "optimum_1d",
    "quad_curve",
    "value_at",
]
