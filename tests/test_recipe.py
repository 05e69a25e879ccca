"""Recipe validation: the shipped recipes load; bad recipes give one line naming the field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mutransfer.plan import plan
from mutransfer.recipe import RecipeError, load_recipe, parse_recipe
from mutransfer.testing.recipes import edit

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

GOOD = """
name: t
model: {family: mlp, parametrization: mup, base_width: 32}
data: {kind: digits}
train: {steps: 20, eval_interval: 10}
search: {samples: 3, space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 32, depth: 2, batch_size: 32}, vary: {width: [32, 64]}}
target: {width: 1024, depth: 2, batch_size: 256}
"""


def _with(**changes: object) -> str:
    """GOOD with dotted-path changes applied; a value of None deletes the key."""
    return edit(GOOD, **changes)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    specs = plan(recipe)
    assert specs and len({s.key for s in specs}) == len(specs)


def test_plan_is_deterministic_and_shares_draws_across_scales() -> None:
    a, b = plan(parse_recipe(GOOD)), plan(parse_recipe(GOOD))
    assert [(s.key, s.hparams) for s in a] == [(s.key, s.hparams) for s in b]
    by_width: dict[int, list[float]] = {}
    for s in a:
        by_width.setdefault(s.scale.width, []).append(s.hparams["lr"])
    assert by_width[32] == by_width[64]  # common random numbers across widths
    assert all(1e-3 <= s.hparams["lr"] <= 1e-1 for s in a)
    other = plan(parse_recipe(_with(search__seed=7)))
    assert [s.hparams for s in other] != [s.hparams for s in a]


def test_both_parametrizations_and_grid() -> None:
    r = parse_recipe(_with(model__parametrization=["mup", "sp"], scales__mode="grid",
                           scales__vary={"width": [32, 64], "depth": [2, 4]}, target__depth=8))
    specs = plan(r)
    assert {s.parametrization for s in specs} == {"mup", "sp"}
    assert len(r.scales.points()) == 4  # base (32, 2) is one of the grid's points
    assert len(specs) == 2 * 4 * 3


def test_one_at_a_time_points() -> None:
    r = parse_recipe(_with(scales__vary={"width": [32, 64, 128], "batch_size": [16, 32, 64]}))
    pts = r.scales.points()
    assert pts[0] == r.scales.base
    assert len(pts) == 1 + 2 + 2
    assert all(p.width == 32 or p.batch_size == 32 for p in pts)


def test_tokens_budget_sets_steps() -> None:
    r = parse_recipe(_with(train__steps=None, train__tokens=6400))
    assert {r.steps_at(p) for p in r.scales.points()} == {200}


def test_hash_ignores_formatting() -> None:
    assert parse_recipe(GOOD).hash() == parse_recipe("# comment\n" + yaml.safe_dump(yaml.safe_load(GOOD))).hash()
    assert parse_recipe(GOOD).hash() != parse_recipe(_with(train__steps=21)).hash()


BAD = [
    ("unknown key", _with(train__stepz=3), "train.stepz: unknown key"),
    ("wrong type", _with(train__steps="many"), "train.steps:"),
    ("empty space", _with(search__space={}), "search.space: empty search space"),
    ("negative width", _with(scales__base={"width": -8}), "scales.base.width:"),
    ("target narrower", _with(target__width=16), "target.width: 16 is smaller than the widest proxy (64)"),
    ("target shallower", _with(target__depth=1), "target.depth:"),
    ("unknown family", _with(model__family="resnet"), "model.family: Value error, unknown family"),
    ("entrypoint missing", _with(model__family="no_such_pkg.models:build"), "model.family: cannot import 'no_such_pkg.models'"),
    ("entrypoint no function", _with(model__family="json:no_such_fn"), "model.family: 'json' has no function 'no_such_fn'"),
    ("missing data path", _with(data={"kind": "chars", "path": "/nonexistent/corpus"}, model__family="gpt",
                                model__head_dim=8, scales__base={"width": 32, "seq_len": 16}),
     "data.path: /nonexistent/corpus does not exist"),
    ("reversed range", _with(search__space={"lr": {"loguniform": [1.0, 1.0e-3]}}), "search.space.lr.loguniform: low must be below high"),
    ("negative lr", _with(search__space={"lr": {"loguniform": [-1.0, 1.0]}}), "search.space.lr.loguniform.0:"),
    ("unknown dist", _with(search__space={"lr": {"normal": [0, 1]}}), "search.space.lr"),
    ("unknown hparam", _with(search__space={"lrr": {"uniform": [0, 1]}}), "search.space.lrr: unknown hyperparameter"),
    ("steps and tokens", _with(train__tokens=1000), "train: Value error, give exactly one of steps, tokens"),
    ("no budget", _with(train__steps=None), "train: Value error, give exactly one of steps, tokens"),
    ("bad parametrization", _with(model__parametrization="ntk"), "model.parametrization"),
    ("mlp on chars", _with(data={"kind": "chars"}), "data.kind: the mlp family trains on digits"),
    ("gpt without heads", _with(model__family="gpt", data={"kind": "chars"}, scales__base={"width": 32, "seq_len": 16}),
     "model.head_dim: the gpt family needs head_dim"),
    ("width not multiple of head_dim", _with(model__family="gpt", model__head_dim=24, data={"kind": "chars"},
                                              scales__base={"width": 32, "seq_len": 16}), "is not a multiple of model.head_dim 24"),
    ("missing target", _with(target=None), "target: required field is missing"),
    ("empty vary", _with(scales__vary={"width": []}), "scales.vary.width"),
    ("unknown axis", _with(scales__vary={"height": [1, 2]}), "scales.vary.height"),
    ("momentum with adam", _with(search__space={"momentum": {"uniform": [0.5, 0.9]}}), "search.space.momentum: momentum applies to sgd"),
    ("bad name", _with(name="my sweep!"), "name: use letters"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_recipes_name_the_field(case: str, text: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert expected.replace("Value error, ", "") in msg, msg


def test_bad_yaml_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not valid YAML at line 2"):
        parse_recipe("a: 1\n  b: [\n")
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        parse_recipe("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_recipe_import_stays_light() -> None:
    code = "import sys, mutransfer.recipe, mutransfer.plan; print(sorted(m for m in ('torch', 'ray', 'sqlalchemy', 'mup') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
