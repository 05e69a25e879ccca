"""Bad input: malformed recipes, CLI arguments and database URLs each give one line, exit code 2, and no row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

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


RECIPES = [
    ("unknown top-level key", mutate(extras=1), "extras: unknown key"),
    ("unknown nested key", mutate(model__widht=3), "model.widht: unknown key"),
    ("steps not a number", mutate(train__steps="ten"), "train.steps:"),
    ("zero steps", mutate(train__steps=0), "train.steps:"),
    ("negative width", mutate(scales__base={"width": -4}), "scales.base.width:"),
    ("empty search space", mutate(search__space={}), "search.space: empty search space"),
    ("reversed range", mutate(search__space={"lr": {"loguniform": [1.0, 0.1]}}), "low must be below high"),
    ("zero lr", mutate(search__space={"lr": {"loguniform": [0, 0.1]}}), "search.space.lr.loguniform.0:"),
    ("empty choice", mutate(search__space={"lr": {"choice": []}}), "search.space.lr"),
    ("unknown distribution", mutate(search__space={"lr": {"gauss": [0, 1]}}), "search.space.lr"),
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
    ("not a mapping", "- just\n- a list\n", "a recipe is a YAML mapping"),
    ("broken YAML", "model: {family: mlp\n", "not valid YAML"),
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
def test_bad_recipe(case: str, text: str, expected: str, tmp_path: Path, db: Path, runner: CliRunner) -> None:
    (tmp_path / "r.yaml").write_text(text)
    before = rows(db)
    for command in (["validate", str(tmp_path / "r.yaml")], ["sweep", str(tmp_path / "r.yaml"), "--db",
                                                              f"sqlite:///{db}"]):
        one_line_exit_2(runner.invoke(app, command), expected)
    assert rows(db) == before


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
