"""Bad input: malformed recipes, CLI arguments and database URLs each give one line, exit code 2, and no row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mutransfer import api
from mutransfer.cli import app
from mutransfer.recipe import RecipeError, parse_recipe
from mutransfer.testing.recipes import edit

GOOD = yaml.safe_load("""
name: good
model: {family: mlp, parametrization: mup, base_width: 16}
data: {kind: digits}
train: {steps: 20, eval_interval: 10}
search: {samples: 2, space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 16, depth: 2, batch_size: 32}, vary: {width: [16, 32]}}
target: {width: 1024, depth: 2, batch_size: 32}
""")


def mutate(**changes: object) -> str:
    return edit(GOOD, **changes)


INF = float("inf")
# Nine levels of nine aliases each: 9**9 values once expanded, a few hundred bytes of text ("billion laughs").
ALIAS_BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


RECIPES = [
    ("unknown top-level key", mutate(extras=1), "extras: unknown key"),
    ("unknown nested key", mutate(model__widht=3), "model.widht: unknown key"),
    ("steps not a number", mutate(train__steps="ten"), "train.steps:"),
    ("zero steps", mutate(train__steps=0), "train.steps:"),
    ("negative width", mutate(scales__base={"width": -4}), "scales.base.width:"),
    ("empty search space", mutate(search__space={}), "search.space: empty search space"),
    ("reversed range", mutate(search__space={"lr": {"loguniform": [1.0, 0.1]}}), "low must be below high"),
    ("zero lr", mutate(search__space={"lr": {"loguniform": [0, 0.1]}}), "search.space.lr.loguniform.0:"),
    ("empty choice", mutate(search__space={"lr": {"choice": []}}),
     "search.space.lr.choice: choice needs at least one value"),
    ("unknown distribution", mutate(search__space={"lr": {"gauss": [0, 1]}}), "search.space.lr: give a distribution"),
    ("short uniform names its own branch", mutate(search__space={"lr": {"uniform": [0.1]}}),
     "search.space.lr.uniform.1: required field is missing"),
    ("a number for a distribution", mutate(search__space={"lr": 0.01}), "search.space.lr: give a distribution"),
    ("a list in a choice", mutate(search__space={"lr": {"choice": [[0.1]]}}),
     "search.space.lr.choice: a choice is a number, a string or a boolean"),
    ("inf in loguniform", mutate(search__space={"lr": {"loguniform": [1e-4, INF]}}),
     "search.space.lr.loguniform.1: Input should be a finite number"),
    ("inf in uniform", mutate(search__space={"weight_decay": {"uniform": [0, INF]}}),
     "search.space.weight_decay.uniform.1: Input should be a finite number"),
    ("inf in choice", mutate(search__space={"lr": {"choice": [0.1, INF]}}), "search.space.lr.choice: inf is not a finite"),
    ("inf lr", mutate(train__lr=INF), "train.lr: Input should be a finite number"),
    ("-inf in uniform", mutate(search__space={"weight_decay": {"uniform": [-INF, 0.1]}}),
     "search.space.weight_decay.uniform.0: Input should be a finite number"),
    ("nan in choice", mutate(search__space={"weight_decay": {"choice": [0.0, float("nan")]}}),
     "search.space.weight_decay.choice: nan is not a finite number"),
    ("inf grad_clip", mutate(train__grad_clip=INF), "train.grad_clip: Input should be a finite number"),
    ("inf custom resource", mutate(resources={"custom": {"tpu": INF}}), "resources.custom.tpu: Input should be a finite"),
    ("inf in a builder option", mutate(model__options={"scale": [1, {"x": INF}]}),
     "model.options.scale.1.x: inf is not a finite number"),
    ("warmup longer than the run", mutate(train__warmup_steps=30, train__schedule="cosine"),
     "train.warmup_steps: 30 warmup steps is longer than the run: 20 steps"),
    ("warmup longer than the shortest proxy", mutate(train={"tokens": 3200, "schedule": "warmup", "warmup_steps": 60,
                                                            "eval_interval": 10},
                                                     scales__vary={"batch_size": [32, 64]}),
     "train.warmup_steps: 60 warmup steps is longer than the run: 50 steps (proxy w16-d2-b64-s1)"),
    ("samples beyond the bound", mutate(search__samples=10**9), "search.samples: 1000000000 is above 1000000"),
    ("repeats beyond the bound", mutate(search__repeats=10**6), "search.repeats: 1000000 is above 10000"),
    ("more trials than a sweep may have", mutate(search__samples=10**6), "search.samples: 1000000 samples x 1 repeats"),
    ("a grid without end", mutate(scales__mode="grid", scales__vary={a: list(range(16, 216)) for a in
                                                                     ("width", "depth", "batch_size")},
                                  target__depth=300),
     "scales.vary: a grid of 8000000 scale points"),
    ("absurd proxy width", mutate(scales__base={"width": 2**21}, target__width=2**21),
     "scales.base.width: 2097152 is above 1048576"),
    ("absurd width to vary", mutate(scales__vary={"width": [16, 10**9]}, target__width=10**9),
     "scales.vary.width: 1000000000 is above"),
    ("absurd target width", mutate(target__width=10**8), "target.width: 100000000 is above 1048576"),
    ("absurd base width", mutate(model__base_width=2**21), "model.base_width: 2097152 is above"),
    ("absurd target depth", mutate(target__depth=10**6), "target.depth: 1000000 is above 10000"),
    ("absurd depth to vary", mutate(scales__vary={"depth": [2, 10**5]}, target__depth=10**5),
     "scales.vary.depth: 100000 is above 10000"),
    ("absurd batch size", mutate(target__batch_size=2**30), "target.batch_size: 1073741824 is above 16777216"),
    ("absurd proxy batch", mutate(scales__base={"width": 16, "batch_size": 2**30}), "scales.base.batch_size:"),
    ("absurd sequence length", mutate(target__seq_len=2**30), "target.seq_len: 1073741824 is above 16777216"),
    ("absurd vocabulary", mutate(model__vocab_size=2**40), "model.vocab_size: 1099511627776 is above 16777216"),
    ("steps beyond the store's column", mutate(train__steps=10**30), "train.steps: Input should be less than 2147483648"),
    ("tokens beyond int64", mutate(target__tokens=2**63), "target.tokens: 9223372036854775808 is above"),
    ("duplicate top-level key", mutate() + "name: other\n", "name: duplicate key (lines 7 and 31)"),
    ("duplicate nested key", mutate().replace("  base_width: 16\n", "  base_width: 16\n  base_width: 9999\n"),
     "model.base_width: duplicate key (lines 4 and 5)"),
    ("duplicate key in a flow mapping", mutate().replace("data:\n  kind: digits\n", "data: {kind: chars, kind: digits}\n"),
     "data.kind: duplicate key"),
    ("alias bomb", mutate() + ALIAS_BOMB, "lol5: expands to more than 100000 values"),
    ("recursive alias", mutate() + "loop: &l [1, *l]\n", "loop.1: an alias inside its own anchor"),
    ("nested too deeply", mutate() + "deep: " + "[" * 1000 + "]" * 1000 + "\n", "nested deeper than a recipe may be"),
    ("latin-1 text", "name: caf\xe9\n".encode("latin-1") + mutate(name=None).encode(),
     "cannot read recipe: not UTF-8 text (byte 0xe9 at offset 9)"),
    ("binary", bytes(range(256)) * 4, "cannot read recipe: not UTF-8 text"),
    ("NUL bytes in UTF-8 text", b"\x00\x00" + mutate().encode(), "unacceptable character #x0000 (binary data"),
    ("unknown hyperparameter", mutate(search__space={"learning_rate": {"uniform": [0, 1]}}),
     "search.space.learning_rate: unknown hyperparameter"),
    ("zero samples", mutate(search__samples=0), "search.samples:"),
    ("unknown method", mutate(search__method="grid"), "search.method:"),
    ("target narrower than proxy", mutate(target__width=8), "target.width: 8 is smaller than the widest proxy"),
    ("target shallower than proxy", mutate(target__depth=1), "target.depth: 1 is smaller"),
    ("unknown family", mutate(model__family="transformer"), "model.family: unknown family 'transformer'"),
    ("entrypoint that does not import", mutate(model__family="nope_pkg.mod:build"), "cannot import 'nope_pkg.mod'"),
    ("entrypoint without the function", mutate(model__family="os.path:nope"), "has no function 'nope'"),
    ("unreadable data path", mutate(model__family="gpt", model__head_dim=8, data={"kind": "chars",
     "path": "/nonexistent/text"}, scales__base={"width": 16, "seq_len": 8}), "data.path: /nonexistent/text does"),
    ("tokens without a path", mutate(model__family="gpt", model__head_dim=8, data={"kind": "tokens"},
     scales__base={"width": 16, "seq_len": 8}), "data.path: tokens data needs a path"),
    ("bad parametrization", mutate(model__parametrization="muP2"), "model.parametrization:"),
    ("val_fraction out of range", mutate(data__val_fraction=1.5), "data.val_fraction:"),
    ("negative weight decay", mutate(train__weight_decay=-0.1), "train.weight_decay:"),
    ("both steps and tokens", mutate(train__tokens=100), "give exactly one of steps, tokens"),
    ("negative cpus", mutate(resources={"cpus": -1}), "resources.cpus:"),
    ("unknown scale axis", mutate(scales__vary={"heads": [1, 2]}), "scales.vary.heads"),
    ("module that exits on import", mutate(model__family="exits_on_import:build"),
     "model.family: importing 'exits_on_import' called sys.exit(3)"),
    ("builder that exits", mutate(model__family="userbuilders:exits"),
     "model.family: the builder cannot build the mup model at w16-d2-b32-s1: RuntimeError: the model builder "
     "userbuilders.exits called sys.exit(3)"),
    ("builder that returns no module", mutate(model__family="userbuilders:not_a_module"),
     "model.family: the builder cannot build the mup model at w16-d2-b32-s1: TypeError: the model builder "
     "returned object"),
    ("forward without logits", mutate(model__family="userbuilders:wrapped", model__options={"output": "no_logits"}),
     "model.family: the builder's mup model at w16-d2-b32-s1: the model's forward returned a dict with keys "
     "['scores']; it must return the logits: a tensor, a tuple or list"),
    ("forward returning None", mutate(model__family="userbuilders:wrapped", model__options={"output": "none"}),
     "model.family: the builder's mup model at w16-d2-b32-s1: the model's forward returned None; it must return"),
    ("not a mapping", "- just\n- a list\n", "a recipe is a YAML mapping"),
    ("broken YAML", "model: {family: mlp\n", "not valid YAML"),
]

# Recipes that validate but whose coordinate check cannot run: refused by `coord-check` and by `sweep`'s gate.
COORD_CHECKS = [
    ("coordinate check larger than memory", mutate(model__base_width=400_000),
     "model.base_width: the coordinate check's largest model (width 1600000"),
]

CLI_ARGS = [
    ("no such sweep", ["show", "nope"], "no sweep 'nope'"),
    ("no such sweep to fit", ["fit", "42"], "no sweep '42'"),
    ("bad export format", ["export", "good", "--format", "xml"], "--format: 'xml' is not a format"),
    ("missing recipe file", ["sweep", "missing.yaml"], "cannot read recipe"),
    ("verify without a size", ["verify", "good"], None),
    ("unknown option", ["show", "good", "--colour"], "error: No such option: --colour"),
    ("missing argument", ["show"], "error: Missing argument 'sweep'"),
    ("unknown command", ["shwo"], "error: No such command 'shwo'"),
    ("option of the wrong type", ["fit", "good", "--seed", "many"], "error: Invalid value for '--seed'"),
]

DB_URLS = [
    ("unknown scheme", "mysqlx://u@h/db", None),
    ("unreachable postgres", "postgresql://u:pw-secret@127.0.0.1:1/db", "127.0.0.1:1"),
    ("sqlite in a missing folder", "sqlite:////nonexistent/dir/x.db", "nonexistent"),
    ("garbage", "not a url", None),
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path: Path, runner: CliRunner) -> Path:
    """A database holding one finished-looking sweep 'good' (made through the CLI's own store)."""
    from mutransfer.storage import Store, TrialRecord

    path = tmp_path / "mt.db"
    store = Store.open(f"sqlite:///{path}")
    sweep = store.create_sweep("good", "x", parse_recipe(yaml.safe_dump(GOOD)).model_dump_json(), "h", 1, "val_loss")
    store.add_trials(sweep.id, [TrialRecord("mup/a/000", "mup/a", "mup", 16, 2, 32, 1, 20, 0, 0, 0, {"lr": 0.01})])
    store.close()
    return path


def rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("sweeps", "trials", "metric_points", "fits", "exports")}


def one_line_exit_2(result, expected: str | None) -> None:  # noqa: ANN001
    err = result.stderr if hasattr(result, "stderr") else result.output
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, err, result.exception)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if expected:
        assert expected in lines[0], lines[0]


@pytest.mark.parametrize(("case", "text", "expected"), RECIPES, ids=[r[0] for r in RECIPES])
def test_bad_recipe(case: str, text: str | bytes, expected: str, tmp_path: Path, db: Path, runner: CliRunner) -> None:
    if isinstance(text, bytes):
        (tmp_path / "r.yaml").write_bytes(text)
    else:
        (tmp_path / "r.yaml").write_text(text)
    before = rows(db)
    for command in (["validate", str(tmp_path / "r.yaml")], ["sweep", str(tmp_path / "r.yaml"), "--db",
                                                              f"sqlite:///{db}"]):
        one_line_exit_2(runner.invoke(app, command), expected)
    assert rows(db) == before


@pytest.mark.parametrize(("case", "text", "expected"), COORD_CHECKS, ids=[r[0] for r in COORD_CHECKS])
def test_bad_coord_check(case: str, text: str, expected: str, tmp_path: Path, db: Path, runner: CliRunner) -> None:
    (tmp_path / "r.yaml").write_text(text)
    before = rows(db)
    for command in (["coord-check", str(tmp_path / "r.yaml"), "--no-store"],
                    ["sweep", str(tmp_path / "r.yaml"), "--db", f"sqlite:///{db}"]):
        one_line_exit_2(runner.invoke(app, command), expected)
    assert rows(db) == before


def test_coord_check_widths_larger_than_memory(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "r.yaml").write_text(mutate())
    result = runner.invoke(app, ["coord-check", str(tmp_path / "r.yaml"), "--no-store", "--widths", "16,2000000"])
    one_line_exit_2(result, "--widths: the coordinate check's largest model (width 2000000")


def test_big_real_recipes_stay_valid() -> None:
    """The bounds are against absurd input, not big models: a frontier-sized target and a long run pass."""
    parse_recipe(mutate(target={"width": 65536, "depth": 1000, "batch_size": 16384, "seq_len": 1_048_576,
                                "tokens": 30 * 10**12},
                        train={"steps": 10_000_000, "warmup_steps": 100_000, "schedule": "cosine"},
                        search__samples=10_000, model__vocab_size=1_000_000,
                        scales__vary={"width": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]}))


def test_a_sweep_stored_with_inf_reads_back_in_one_line(tmp_path: Path, runner: CliRunner) -> None:
    """An earlier version stored `loguniform: [1e-4, .inf]` as JSON null: reading that sweep back names the sweep
    and the field in one line; the commands that only list it still work."""
    from mutransfer.storage import Store, TrialRecord

    url = f"sqlite:///{tmp_path / 'old.db'}"
    doc = json.loads(parse_recipe(yaml.safe_dump(GOOD)).model_dump_json())
    doc["search"]["space"]["lr"]["loguniform"][1] = None  # what model_dump_json wrote for inf
    store = Store.open(url)
    sweep = store.create_sweep("old", "x", json.dumps(doc), "h", 1, "val_loss")
    store.add_trials(sweep.id, [TrialRecord("mup/a/000", "mup/a", "mup", 16, 2, 32, 1, 20, 0, 0, 0, {"lr": 0.01})])
    store.finish_trial(sweep.id, "mup/a/000", "completed", metric=1.0, steps=20)
    expected = "sweep 'old': its stored recipe no longer validates (search.space.lr.loguniform.1:"
    with pytest.raises(RecipeError, match=r"^sweep 'old': its stored recipe no longer validates"):
        api.recipe_of(store.get_sweep("old"))
    store.close()
    for args in (["ls"], ["show", "old"]):
        result = runner.invoke(app, [*args, "--db", url])
        assert result.exit_code == 0, result.output
    for args in (["fit", "old"], ["export", "old"], ["export", "old", "--format", "nanogpt"],
                 ["verify", "old", "--width", "64"]):
        one_line_exit_2(runner.invoke(app, [*args, "--db", url]), expected)


def test_verify_beyond_the_widest_bound_is_one_line() -> None:
    from mutransfer.verify import VerifyError, verify_scale

    with pytest.raises(VerifyError, match=r"^invalid size \{'width': 2097152\}: width: 2097152 is above 1048576") as e:
        verify_scale(parse_recipe(yaml.safe_dump(GOOD)), {"width": 2**21})
    assert "\n" not in str(e.value)


def test_a_sweep_stored_before_a_check_on_new_sweeps_still_reads_back() -> None:
    """Checks about starting a sweep (warmup within the run, the sweep's size) do not refuse one that ran."""
    from mutransfer.recipe import stored_recipe

    doc = json.loads(parse_recipe(yaml.safe_dump(GOOD)).model_dump_json())
    doc["train"].update(warmup_steps=30, schedule="cosine")  # longer than the 20-step run: refused in a new recipe
    assert stored_recipe(json.dumps(doc), "old").train.warmup_steps == 30
    with pytest.raises(RecipeError, match="train.warmup_steps: 30 warmup steps is longer"):
        parse_recipe(yaml.safe_dump(doc))


@pytest.mark.parametrize(("case", "args", "expected"), CLI_ARGS, ids=[c[0] for c in CLI_ARGS])
def test_bad_cli_arguments(case: str, args: list[str], expected: str | None, tmp_path: Path, db: Path,
                           runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = rows(db)
    one_line_exit_2(runner.invoke(app, [*args, "--db", f"sqlite:///{db}"]), expected)
    assert rows(db) == before


@pytest.mark.parametrize(("case", "url", "expected"), DB_URLS, ids=[d[0] for d in DB_URLS])
def test_bad_database_url(case: str, url: str, expected: str | None, runner: CliRunner) -> None:
    result = runner.invoke(app, ["ls", "--db", url])
    one_line_exit_2(result, expected)
    assert "pw-secret" not in result.output


def test_database_newer_than_the_code_is_refused(db: Path, runner: CliRunner) -> None:
    with sqlite3.connect(db) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999_future'")
    one_line_exit_2(runner.invoke(app, ["ls", "--db", f"sqlite:///{db}"]), "newer than this mutransfer")


def test_db_upgrade_is_idempotent(tmp_path: Path, runner: CliRunner) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    first = runner.invoke(app, ["db", "upgrade", "--db", url])
    second = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert first.exit_code == second.exit_code == 0
    assert first.output.split(": ", 1)[1] == second.output.split(": ", 1)[1]


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
SECTIONS = st.fixed_dictionaries({}, optional={k: YAML_VALUES for k in
                                               ("name", "model", "data", "train", "search", "scales", "target",
                                                "resources")})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(YAML_VALUES, SECTIONS), text=st.text(max_size=200))
def test_random_yaml_gives_only_validation_errors(doc: object, text: str) -> None:
    for source in (yaml.safe_dump(doc), text):
        try:
            parse_recipe(source)
        except RecipeError as e:
            assert "\n" not in str(e)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_mutations_of_a_good_recipe_give_only_validation_errors(data: st.DataObject) -> None:
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    section = data.draw(st.sampled_from(sorted(doc)))
    if isinstance(doc[section], dict) and doc[section]:
        key = data.draw(st.sampled_from(sorted(doc[section])))
        doc[section][key] = data.draw(YAML_VALUES)
    else:
        doc[section] = data.draw(YAML_VALUES)
    try:
        parse_recipe(yaml.safe_dump(doc))
    except RecipeError as e:
        assert "\n" not in str(e)


def _data_recipe(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(mutate(model__family="gpt", model__head_dim=8, data=data, scales__base={"width": 16, "seq_len": 8}))
    return path


DATA = [
    ("latin-1 text", "chars", "corpus.txt", "caf\xe9 cr\xe8me ".encode("latin-1") * 50,
     "corpus.txt: not UTF-8 text (it has byte 0xe9)"),
    ("binary as text", "chars", "corpus.txt", bytes(range(256)) * 8, "corpus.txt: not UTF-8 text"),
    ("uint32 tokens", "tokens", "all.bin", (np.arange(4000) % 300).astype(np.uint32).tobytes(),
     "all.bin: the train split looks like 32-bit tokens"),
    ("int8 tokens of an odd size", "tokens", "all.bin", bytes(4001), "all.bin has an odd byte count"),
    ("corpus shorter than seq_len", "tokens", "all.bin", np.arange(60, dtype=np.uint16).tobytes(),
     "fewer than seq_len + 1 = 9"),
]


@pytest.mark.parametrize(("case", "kind", "name", "content", "expected"), DATA, ids=[d[0] for d in DATA])
def test_bad_data_is_refused_by_validate_as_by_sweep(case: str, kind: str, name: str, content: bytes, expected: str,
                                                     tmp_path: Path, db: Path, runner: CliRunner) -> None:
    (tmp_path / name).write_bytes(content)
    recipe = _data_recipe(tmp_path, {"kind": kind, "path": str(tmp_path / name)})
    before = rows(db)
    for command in (["validate", str(recipe)], ["sweep", str(recipe), "--db", f"sqlite:///{db}"]):
        result = runner.invoke(app, command)
        one_line_exit_2(result, expected)
        assert "data.path: " in result.output
    assert rows(db) == before


@pytest.mark.parametrize("command", [["show", "good"], ["db", "current"], ["ls"], ["fit", "good"],
                                     ["export", "good"]], ids=lambda c: " ".join(c))
def test_reading_a_mistyped_database_path_creates_nothing(command: list[str], tmp_path: Path,
                                                          runner: CliRunner) -> None:
    typo = tmp_path / "mt.bd"
    one_line_exit_2(runner.invoke(app, [*command, "--db", f"sqlite:///{typo}"]), f"no database at {typo}: check --db")
    assert not typo.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture
def no_ray_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh `mutransfer` process: a Ray that an earlier test started in this one would be reused."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)


@pytest.mark.usefixtures("no_ray_yet")
def test_an_unreachable_ray_address_fails_in_seconds_and_writes_nothing(tmp_path: Path, runner: CliRunner) -> None:
    """Ray itself retries an address where nothing listens for minutes, printing a warning every 5 s."""
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "r.yaml").write_text(mutate(model__parametrization="sp"))  # SP: no coordinate check first
    db_file = tmp_path / "mt.db"
    t0 = time.monotonic()
    result = runner.invoke(app, ["sweep", str(tmp_path / "r.yaml"), "-q", "--address", f"127.0.0.1:{port}", "--db",
                                 f"sqlite:///{db_file}"])
    assert time.monotonic() - t0 < 15
    one_line_exit_2(result, f"error: --address 127.0.0.1:{port}: nothing answers there (Connection refused)")
    assert not db_file.exists()  # checked before the database is created


@pytest.mark.usefixtures("no_ray_yet")
def test_a_malformed_ray_address_is_refused(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "r.yaml").write_text(mutate(model__parametrization="sp"))
    one_line_exit_2(runner.invoke(app, ["sweep", str(tmp_path / "r.yaml"), "--address", "headnode", "--db",
                                        f"sqlite:///{tmp_path / 'mt.db'}"]), "--address headnode: not HOST:PORT")
    assert not (tmp_path / "mt.db").exists()


@pytest.mark.usefixtures("no_ray_yet")
def test_a_local_ray_start_failure_is_one_line(tmp_path: Path, runner: CliRunner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # RAY_ADDRESS left over in the environment: Ray then joins that cluster instead of starting one here, and
    # refuses the local start's arguments.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    (tmp_path / "r.yaml").write_text(mutate(model__parametrization="sp"))
    result = runner.invoke(app, ["sweep", str(tmp_path / "r.yaml"), "--db", f"sqlite:///{tmp_path / 'mt.db'}"])
    one_line_exit_2(result, "error: cannot start Ray on this machine: ")
    assert not (tmp_path / "mt.db").exists()
