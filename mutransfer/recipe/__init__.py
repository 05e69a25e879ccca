"""The recipe: one YAML file that says what to sweep, on what, and what to transfer to.

Validated once, here, at the edge (pydantic, unknown keys refused). Everything downstream takes a `Recipe` or
parts of it. This package stays light: no torch, ray or sqlalchemy.

The parts: `recipe` (`Recipe`: the whole, its checks across sections, its hash), `sections` (model, data, train,
scales, target, resources), `space` (the search space and its distributions), `validation` (the strict base and
errors that name the field path), `loading` (`parse_recipe`, `load_recipe`: YAML in, then the data paths and a
user's builder checked; `stored_recipe`: a sweep's recipe read back from the store), `yaml_text` (YAML to values,
refusing duplicate keys and alias bombs), `bounds` (the largest values a recipe may ask for, and why).
"""

from mutransfer.recipe.loading import (
    load_recipe,
    missing_extra,
    parse_recipe,
    resolve_entrypoint,
    stored_recipe,
)
from mutransfer.recipe.recipe import Recipe
from mutransfer.recipe.sections import (
    AXES,
    BUILTIN_FAMILIES,
    BUILTINS,
    DEPTH_ALPHA,
    KNOWN_HPARAMS,
    Data,
    FamilyTraits,
    Model,
    Resources,
    Scale,
    Target,
    Train,
    default_init_std,
    is_decoder,
)
from mutransfer.recipe.space import Choice, Dist, EarlyStop, LogUniform, Refine, Uniform
from mutransfer.recipe.validation import RecipeError

__all__ = [
    "AXES",
    "BUILTINS",
    "BUILTIN_FAMILIES",
    "DEPTH_ALPHA",
    "KNOWN_HPARAMS",
    "Choice",
    "Data",
    "Dist",
    "EarlyStop",
    "FamilyTraits",
    "LogUniform",
    "Model",
    "Recipe",
    "Refine",
    "RecipeError",
    "Resources",
    "Scale",
    "Target",
    "Train",
    "Uniform",
    "default_init_std",
    "is_decoder",
    "load_recipe",
    "missing_extra",
    "parse_recipe",
    "resolve_entrypoint",
    "stored_recipe",
]
