"""The trial plan: every trial a recipe asks for, deterministic from the recipe's seed; and the refine rounds',
deterministic from the recipe and the optimum they are centred on."""

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
    round: int = 0  # 0: the recipe's draws; k >= 1: refine round k (refine_specs)

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


def latin(n: int, rng: random.Random) -> list[float]:
    """`n` points in [0, 1), one in each of n equal strata, in random order: one axis of a Latin hypercube."""
    strata = rng.sample(range(n), n)
    return [(k + rng.random()) / n for k in strata]


def _spread(values: list[Any], n: int, rng: random.Random) -> list[Any]:
    """`n` draws of `values`, each as often as n allows (counts differ by at most one), in random order."""
    order = rng.sample(values, len(values))
    out = [order[i % len(order)] for i in range(n)]
    rng.shuffle(out)
    return out


def _at(dist: Dist, u: float) -> float:
    """The value at share `u` of a numeric distribution's range, in its fit coordinate (log2 for a loguniform one)."""
    lo, hi = _coord(dist)
    x = lo + u * (hi - lo)
    return 2.0**x if isinstance(dist, LogUniform) else x


def _stratified(space: dict[str, Dist], n: int, rng: random.Random, place: Any) -> list[dict[str, Any]]:
    """`n` configurations of `space` as a Latin hypercube: each numeric hyperparameter at `place(dist, u)` for its
    stratified u in [0, 1), each choice one spread evenly over its values (search.sampler: latin)."""
    columns = {name: _spread(d.choice, n, rng) if isinstance(d, Choice) else [place(d, u) for u in latin(n, rng)]
               for name, d in sorted(space.items())}
    return [{name: col[i] for name, col in columns.items()} for i in range(n)]


def sample_configs(recipe: Recipe) -> list[dict[str, Any]]:
    """`search.samples` configurations drawn from the space with the recipe's seed: independently, or as a Latin
    hypercube (`search.sampler: latin`).

    The same draws serve every scale point: comparing optima across widths on the same hyperparameter values
    (common random numbers) removes the sampling noise from the comparison the fit cares about.
    """
    rng = random.Random(recipe.search.seed)
    space, n = recipe.search.space, recipe.search.samples
    if recipe.search.sampler == "random":
        return [{name: sample(space[name], rng) for name in sorted(space)} for _ in range(n)]
    return _stratified(space, n, rng, _at)


def groups(recipe: Recipe) -> list[tuple[str, Scale]]:
    """(parametrization, scale point) pairs, in plan order."""
    return [(p, s) for p in recipe.model.parametrizations for s in recipe.scales.points()]


def group_of(parametrization: str, scale: Scale) -> str:
    """The name of the trials that share a parametrization and proxy size (TrialSpec.group)."""
    return f"{parametrization}/{scale.tag()}"


def spec_for(recipe: Recipe, parametrization: str, scale: Scale, i: int, r: int, hparams: dict[str, Any],
             round: int = 0, index: int | None = None) -> TrialSpec:
    """Trial `i` (its sample index), repeat `r`; a refine round's trials are keyed by round and `index` within it."""
    group = group_of(parametrization, scale)
    name = f"{i:03d}" if round == 0 else f"r{round}-{(i if index is None else index):03d}"
    key = f"{group}/{name}" + (f"-r{r}" if recipe.search.repeats > 1 else "")
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
        round=round,
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


# A refine round's centre: per parametrization, per scale point, the fit coordinate (log2 for a loguniform
# hyperparameter, the value for a uniform one) of each numeric hyperparameter's optimum there.
Centres = dict[str, dict[Scale, dict[str, float]]]


def _coord(dist: Dist) -> tuple[float, float]:
    if isinstance(dist, LogUniform):
        return math.log2(dist.loguniform[0]), math.log2(dist.loguniform[1])
    assert isinstance(dist, Uniform)
    return float(dist.uniform[0]), float(dist.uniform[1])


def refine_draws(recipe: Recipe, round: int) -> list[dict[str, Any]]:
    """Refine round `round`'s draws, deterministic from the recipe's seed and the round: an offset in [-1, 1] per
    numeric hyperparameter (where in the window around the optimum), a value per choice one; stratified as round 0's
    under `search.sampler: latin`.
    The same draws serve every scale point and parametrization (common random numbers, as in sample_configs)."""
    assert recipe.search.refine is not None
    rng = random.Random(f"{recipe.search.seed}/refine/{round}")
    space, n = recipe.search.space, recipe.search.refine.samples
    if recipe.search.sampler == "random":
        return [{name: rng.choice(space[name].choice) if isinstance(space[name], Choice) else rng.uniform(-1.0, 1.0)
                 for name in sorted(space)} for _ in range(n)]
    return _stratified(space, n, rng, lambda _d, u: 2.0 * u - 1.0)


def point_costs(trials: Any) -> dict[str, float]:
    """Each scale point's cost (group -> the median training FLOPs of its completed trials), from a trials frame
    as Store.trials_frame has it (group, status, flops): what refine.allocate: by_cost weighs points by."""
    done = trials[(trials["status"] == "completed") & (trials["flops"] > 0)]
    return {str(g): float(v) for g, v in done.groupby("group")["flops"].median().items()}


def refine_counts(recipe: Recipe, costs: dict[str, float] | None = None) -> dict[str, int]:
    """How many of a round's draws each scale point (group) takes: refine.samples everywhere (`even`), or under
    `by_cost` as many as the cheapest point's compute buys at its `costs` (rounded down; a point of unknown cost
    takes them all, as under `even`)."""
    rf = recipe.search.refine
    assert rf is not None
    costs = costs or {}
    out = {}
    for p in recipe.model.parametrizations:
        names = [group_of(q, s) for q, s in groups(recipe) if q == p]
        known = [costs[g] for g in names if costs.get(g, 0) > 0]
        for g in names:
            by_cost = rf.allocate == "by_cost" and known and costs.get(g, 0) > 0
            out[g] = math.floor(rf.samples * min(known) / costs[g] + 1e-9) if by_cost else rf.samples
    return out


def refine_specs(recipe: Recipe, round: int, centres: Centres, costs: dict[str, float] | None = None
                 ) -> list[TrialSpec]:
    """The trials of refine round `round` (1-based): refine.samples draws per scale point (fewer at the costlier
    points under refine.allocate: by_cost, which reads `costs`, see refine_counts) in a window of half-width
    refine.span x the searched range (fit coordinate) around each point's optimum in `centres`, the window moved
    inside the range where the optimum lies near an edge. A point or parametrization without a centre (nothing
    fitted there) gets none. Same recipe, centres and costs, same trials (keys, values and order); a point that
    takes m draws takes the round's first m."""
    rf = recipe.search.refine
    assert rf is not None and round >= 1
    space = recipe.search.space
    draws = refine_draws(recipe, round)
    counts = refine_counts(recipe, costs)
    first = recipe.search.samples + (round - 1) * rf.samples  # sample indices go on after the earlier rounds'
    specs = []
    for p, scale in groups(recipe):
        centre = centres.get(p, {}).get(scale)
        if centre is None:
            continue
        for i, draw in enumerate(draws[: counts[group_of(p, scale)]]):
            hparams: dict[str, Any] = {}
            for name in sorted(space):
                dist = space[name]
                if isinstance(dist, Choice):
                    hparams[name] = draw[name]
                    continue
                lo, hi = _coord(dist)
                half = rf.span * (hi - lo)
                mid = min(max(centre.get(name, 0.5 * (lo + hi)), lo + half), hi - half)
                u = min(max(mid + draw[name] * half, lo), hi)
                hparams[name] = 2.0**u if isinstance(dist, LogUniform) else u
            specs.extend(spec_for(recipe, p, scale, first + i, r, hparams, round=round, index=i)
                         for r in range(recipe.search.repeats))
    return specs


def refine_total(recipe: Recipe) -> int:
    """How many trials the refine rounds add, every point centred: at most this many under allocate: by_cost."""
    rf = recipe.search.refine
    if rf is None:
        return 0
    return rf.rounds * rf.samples * recipe.search.repeats * len(groups(recipe))
