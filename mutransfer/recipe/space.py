"""The search space: its distributions (`LogUniform`, `Uniform`, `Choice`) and the `Search` section."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator

from mutransfer.recipe.bounds import MAX_REPEATS, MAX_SAMPLES
from mutransfer.recipe.validation import PositiveFloat, PositiveInt, Strict, at_most


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if not v[0] < v[1]:
        raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
    return v


class LogUniform(Strict):
    loguniform: Annotated[tuple[PositiveFloat, PositiveFloat], AfterValidator(_ordered)]


class Uniform(Strict):
    uniform: Annotated[tuple[float, float], AfterValidator(_ordered)]


class Choice(Strict):
    # Numbers, strings or booleans, each kept as the YAML gave it (checked here rather than by a union type, whose
    # errors would name its branches, "float" or "str", instead of the value).
    choice: list[Any]

    @field_validator("choice")
    @classmethod
    def _values(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("choice needs at least one value")
        for x in v:
            if not isinstance(x, (bool, int, float, str)):
                raise ValueError(f"a choice is a number, a string or a boolean, not {x!r}")
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{x} is not a finite number")
        return v


Dist = LogUniform | Uniform | Choice
_KINDS = {"loguniform": "LogUniform", "uniform": "Uniform", "choice": "Choice"}


def _kind(v: Any) -> str | None:
    """Which distribution `v` is: the one whose key it has. Its errors are then that branch's alone (pydantic would
    otherwise report the first branch: `{choice: []}` read "loguniform: required field is missing")."""
    if isinstance(v, dict):
        return next((tag for key, tag in _KINDS.items() if key in v), None)
    return type(v).__name__ if isinstance(v, (LogUniform, Uniform, Choice)) else None


# The tags are the class names: format_error leaves capitalized names out of the path, as it reads in the YAML.
Distribution = Annotated[
    Annotated[LogUniform, Tag("LogUniform")] | Annotated[Uniform, Tag("Uniform")] | Annotated[Choice, Tag("Choice")],
    Discriminator(_kind, custom_error_type="distribution",
                  custom_error_message="give a distribution: {loguniform: [low, high]}, {uniform: [low, high]} or "
                                       "{choice: [values]}"),
]


class EarlyStop(Strict):
    """`search.early_stop`: stop trials that fall behind the others of their scale point, through Ray Tune's own
    schedulers (ASHA, or the median stopping rule). A stopped trial is stored as `stopped`, with its curve, and the
    fit reads it as censored evidence (mutransfer.fit.stopped)."""

    method: Literal["asha", "median"] = "asha"
    # No trial is stopped before this step: a trial's first steps say little about where it ends.
    grace_steps: PositiveInt
    # asha: rungs at grace_steps x reduction_factor^k; at each, all but the best 1/reduction_factor stop.
    reduction_factor: Annotated[float, Field(gt=1.0, le=64.0)] = 3.0
    # median: a trial stops when its best so far is worse than the median of the others' running means at the same
    # step, once at least this many others of its scale point got there.
    min_samples: PositiveInt = 3


class Refine(Strict):
    """`search.refine`: after the first round, `rounds` more rounds of `samples` draws concentrated around the joint
    model's optimum (mutransfer.plan.refine_specs)."""

    rounds: Annotated[PositiveInt, AfterValidator(at_most(5, "the most refine rounds a recipe may ask for"))] = 1
    samples: Annotated[PositiveInt, AfterValidator(at_most(MAX_SAMPLES, "the most samples a recipe may ask for"))]
    # Half the window's width, as a share of each numeric hyperparameter's searched range in its fit coordinate
    # (log2 for a loguniform one): lr in [1e-4, 1e-1] is 10 octaves, so 0.2 draws within 2 octaves of the optimum.
    span: Annotated[float, Field(gt=0.0, le=0.5)] = 0.2
    # Where a round's draws go: `even`, `samples` at every scale point; `by_cost`, `samples` at each
    # parametrization's cheapest point (by the FLOPs its earlier trials measured) and at every other point as many
    # as the same compute buys there, rounded down (the widest proxies may get none). A cheap proxy's draws locate
    # the optimum as well as a wide one's; the wide ones' first-round draws still test whether it moves.
    allocate: Literal["even", "by_cost"] = "even"


class Search(Strict):
    method: Literal["random", "optuna"] = "random"
    # configurations per scale point (and parametrization)
    samples: Annotated[PositiveInt, AfterValidator(at_most(MAX_SAMPLES, "the most samples a recipe may ask for"))] = 8
    # seeds per configuration
    repeats: Annotated[PositiveInt, AfterValidator(at_most(MAX_REPEATS, "the most repeats a recipe may ask for"))] = 1
    seed: Annotated[int, Field(ge=-(10**15), le=10**15)] = 0  # a trial's seed, seed * 1000 + repeat, is 64-bit
    # How a random search spreads its draws: `random`, each draw independent; `latin`, a Latin hypercube: each
    # numeric hyperparameter's range (in its fit coordinate) cut into `samples` equal strata, one draw in each, and
    # each choice value drawn as evenly as the count allows. Few draws then leave no wide gap (mutransfer.plan).
    sampler: Literal["random", "latin"] = "random"
    space: dict[str, Distribution]
    early_stop: EarlyStop | None = None
    refine: Refine | None = None

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Dist]) -> dict[str, Dist]:
        if not v:
            raise ValueError("empty search space: name at least one hyperparameter, e.g. lr: {loguniform: [1e-4, 1e-1]}")
        for name, dist in v.items():
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a valid hyperparameter name")
            if name in ("lr", "init_std", "output_mult", "embed_mult", "attn_mult", "adam_eps"):
                values = dist.choice if isinstance(dist, Choice) else getattr(dist, "uniform", None) or ()
                if any(not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0 for x in values):
                    raise ValueError(f"{name} must be positive")
        return v
