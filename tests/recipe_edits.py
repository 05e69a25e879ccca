"""A base recipe with a few fields changed: the tests' one way to vary a recipe.

`edit(text, train__steps=5, model__widht=3)` sets train.steps and model.widht (a missing parent is created, so
misspelled keys reach the validator); a value of None deletes the key.
"""

from __future__ import annotations

from typing import Any

import yaml


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
