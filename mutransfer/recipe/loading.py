"""Reading a recipe: YAML text or a file to a validated `Recipe` (`parse_recipe`, `load_recipe`), then the checks
that need the file system or an import (data paths, a user's builder: `resolve_entrypoint`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mutransfer.recipe.recipe import STORED, Recipe
from mutransfer.recipe.sections import BUILTINS
from mutransfer.recipe.validation import RecipeError, format_error
from mutransfer.recipe.yaml_text import read_yaml


def parse_recipe(text: str, *, default_name: str = "sweep", source: str = "recipe") -> Recipe:
    """Validate recipe YAML text. Raises RecipeError with a one-line `field.path: problem` message."""
    raw = read_yaml(text, source)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with model, train, search, scales and target")
    raw.setdefault("name", default_name)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{source}: {format_error(e)}") from e
    _check_environment(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file; the sweep's name defaults to the file's stem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{p}: cannot read recipe: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start}): a recipe is YAML saved as UTF-8") from e
    except OSError as e:
        raise RecipeError(f"{p}: cannot read recipe: {e.strerror or e}") from e
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in p.stem) or "sweep"
    return parse_recipe(text, default_name=name, source=str(p))


def stored_recipe(recipe_json: str, sweep: str) -> Recipe:
    """The recipe stored with sweep `sweep`, validated again (less the checks that are about starting a sweep: it
    ran); a RecipeError naming the sweep and the field when it no longer validates (e.g. stored by a version that
    let `inf` through, which JSON keeps as null)."""
    try:
        return Recipe.model_validate_json(recipe_json, context={STORED: True})
    except ValidationError as e:
        raise RecipeError(f"sweep {sweep!r}: its stored recipe no longer validates ({format_error(e)}): run a new "
                          "sweep from a corrected recipe") from e


def _check_environment(recipe: Recipe, source: str) -> None:
    """Checks that need the file system or an import: data paths and a user's builder."""
    d = recipe.data
    path = d.resolved_path()
    if d.kind == "tokens" and path is None:
        raise RecipeError(f"{source}: data.path: tokens data needs a path (a .bin file or a folder with train.bin)")
    if path is not None:
        if not path.exists():
            raise RecipeError(f"{source}: data.path: {path} does not exist")
        if not os.access(path, os.R_OK):
            raise RecipeError(f"{source}: data.path: {path} is not readable")
        if d.kind == "tokens" and path.is_dir() and not (path / "train.bin").exists():
            raise RecipeError(f"{source}: data.path: {path} has no train.bin")
        if d.kind == "chars" and path.is_dir() and next(path.rglob(d.glob), None) is None:
            raise RecipeError(f"{source}: data.path: no files matching {d.glob!r} under {path}")
    if not recipe.model.is_builtin:
        try:
            resolve_entrypoint(recipe.model.family)
        except RecipeError as e:
            raise RecipeError(f"{source}: model.family: {e}") from e
    problem = missing_extra(recipe.model.family)
    if problem is not None:
        raise RecipeError(f"{source}: model.family: {problem}")


def missing_extra(family: str) -> str | None:
    """Why a built-in family cannot be built here (the module it needs is not installed), or None. Finds the module
    without importing it: transformers takes seconds to import, and the family's builder imports it anyway."""
    traits = BUILTINS.get(family)
    if traits is None or traits.requires is None or importlib.util.find_spec(traits.requires) is not None:
        return None
    return (f"the {family} family needs {traits.requires}, which is not installed: "
            f"pip install 'mutransfer[{traits.extra}]'")


def resolve_entrypoint(spec: str) -> Any:
    """Import a user's builder named `package.module:function`. Only called for recipes that name one."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except SystemExit as e:  # sys.exit() at import would end the command silently: say which module did it
        raise RecipeError(f"importing {mod_name!r} called sys.exit({e.code!r})") from e
    except Exception as e:  # any failure while importing user code is a recipe problem, reported in one line
        raise RecipeError(f"cannot import {mod_name!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RecipeError(f"{mod_name!r} has no function {fn_name!r}")
    return fn
