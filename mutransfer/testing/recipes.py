"""The recipes the tests and benchmarks build: a base recipe with a few fields changed, never a copy of one.

`edit(text, train__steps=5, model__widht=3)` sets train.steps and model.widht (a missing parent is created, so
misspelled keys reach the validator); a value of None deletes the key. `mlp_recipe(**changes)` and
`tiny_sweep_recipe(**changes)` are the two base recipes with such changes; `make_recipe` is the recipe of the
seeded sweeps (`mutransfer.testing.seeded_sweeps`), sized by its widths and depths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from mutransfer.recipe import Recipe

# The proxies the fit tests model: a µP MLP on digits, four widths around a base of 32.
MLP = """
name: t
model: {family: mlp, parametrization: mup, base_width: 32}
data: {kind: digits}
train: {steps: 20, eval_interval: 10}
search: {samples: 32, space: {lr: {loguniform: [1.0e-4, 1.0e+0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32}, vary: {width: [32, 64, 128, 256]}}
target: {width: 1024, depth: 2, batch_size: 32}
"""

# A sweep that really trains, in seconds: four learning rates at widths 16 and 32.
TINY_SWEEP = """
name: tiny
model: {family: mlp, parametrization: mup, base_width: 16}
data: {kind: digits}
train: {steps: 40, eval_interval: 10}
search: {samples: 4, space: {lr: {loguniform: [1.0e-3, 3.0e-2]}}}
scales: {base: {width: 16, depth: 2, batch_size: 32}, vary: {width: [16, 32]}}
target: {width: 2048, depth: 2, batch_size: 32}
"""


def edit(base: str | dict[str, Any], **changes: Any) -> str:
    """The recipe YAML `base` (text, or an already loaded dict, which is not modified) with `changes` applied."""
    doc = yaml.safe_load(base if isinstance(base, str) else yaml.safe_dump(base))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return yaml.safe_dump(doc)


def mlp_recipe(**changes: Any) -> str:
    """`MLP` with `changes` (see `edit`), as YAML."""
    return edit(MLP, **changes)


def tiny_sweep_recipe(**changes: Any) -> str:
    """`TINY_SWEEP` with `changes` (see `edit`), as YAML."""
    return edit(TINY_SWEEP, **changes)


def make_recipe(
    name: str,
    *,
    parametrizations: Sequence[str] = ("mup", "sp"),
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    depths: Sequence[int] | None = None,
    samples: int = 12,
    steps: int = 300,
    space: dict[str, Any] | None = None,
    seed: int = 0,
) -> Recipe:
    """A built-in MLP recipe (nothing is trained: the trials are made up by `seed_sweep`)."""
    vary: dict[str, list[int]] = {"width": list(widths)}
    if depths:
        vary["depth"] = list(depths)
    return Recipe.model_validate({
        "name": name,
        "model": {"family": "mlp", "parametrization": list(parametrizations), "base_width": min(widths)},
        "data": {"kind": "digits"},
        "train": {"steps": steps, "optimizer": "adam", "eval_interval": max(1, steps // 10)},
        "search": {"samples": samples, "seed": seed, "space": space or {"lr": {"loguniform": [1e-4, 1.0]}}},
        "scales": {"base": {"width": min(widths), "depth": 2, "batch_size": 64}, "vary": vary},
        "target": {"width": 8192, "depth": max(depths) * 2 if depths else 2, "batch_size": 64},
    })
