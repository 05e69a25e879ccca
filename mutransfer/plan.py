"""The trial plan: every trial a recipe asks for, deterministic from the recipe's seed."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from mutransfer.recipe import Choice, Data, Dist, LogUniform, Model, Recipe, Scale, Train, Uniform


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs, and nothing else: it travels to a Ray worker as is."""

    key: str  # stable within a sweep: "{parametrization}/{scale tag}/{sample:03d}[-r{repeat}]"
    parametrization: str  # mup | sp
    scale: Scale
    hparams: dict[str, Any]  # sampled values only; defaults come from model/train
    sample: int  # index of the hyperparameter sample, shared across scale points
    repeat: int
    seed: int
    steps: int
    model: Model
    data: Data
    train: Train
    group: str = field(default="")  # "{parametrization}/{scale tag}": trials that share a proxy size

    def hparam(self, name: str) -> Any:
        """The value of a hyperparameter in this trial: sampled, else the recipe's base value."""
        if name in self.hparams:
            return self.hparams[name]
        if hasattr(self.train, name):
            return getattr(self.train, name)
        return getattr(self.model, name, None)


def sample(dist: Dist, rng: random.Random) -> Any:
    if isinstance(dist, LogUniform):
        lo, hi = dist.loguniform
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if isinstance(dist, Uniform):
        lo, hi = dist.uniform
        return rng.uniform(lo, hi)
    if isinstance(dist, Choice):
        return rng.choice(dist.choice)
    raise TypeError(dist)


def sample_configs(recipe: Recipe) -> list[dict[str, Any]]:
    """`search.samples` configurations drawn from the space with the recipe's seed.

    The same draws serve every scale point: comparing optima across widths on the same hyperparameter values
    (common random numbers) removes the sampling noise from the comparison the fit cares about.
    """
    rng = random.Random(recipe.search.seed)
    space = recipe.search.space
    return [{name: sample(space[name], rng) for name in sorted(space)} for _ in range(recipe.search.samples)]


def groups(recipe: Recipe) -> list[tuple[str, Scale]]:
    """(parametrization, scale point) pairs, in plan order."""
    return [(p, s) for p in recipe.model.parametrizations for s in recipe.scales.points()]


def spec_for(recipe: Recipe, parametrization: str, scale: Scale, i: int, r: int, hparams: dict[str, Any]) -> TrialSpec:
    group = f"{parametrization}/{scale.tag()}"
    key = f"{group}/{i:03d}" + (f"-r{r}" if recipe.search.repeats > 1 else "")
    return TrialSpec(
        key=key,
        parametrization=parametrization,
        scale=scale,
        hparams=dict(hparams),
        sample=i,
        repeat=r,
        # Different seeds per repeat; the same seed for the same repeat across configs and scales.
        seed=recipe.search.seed * 1000 + r,
        steps=recipe.steps_at(scale),
        model=recipe.model,
        data=recipe.data,
        train=recipe.train,
        group=group,
    )


def plan(recipe: Recipe) -> list[TrialSpec]:
    """All trials of a random-search recipe. Same recipe, same list (keys, values and order)."""
    configs = sample_configs(recipe)
    return [
        spec_for(recipe, p, s, i, r, cfg)
        for p, s in groups(recipe)
        for i, cfg in enumerate(configs)
        for r in range(recipe.search.repeats)
    ]
