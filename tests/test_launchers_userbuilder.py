"""A user's GPT-like builder in the launcher formats: the GPT shape it declares in model.options (mutransfer.gpt_shape)
goes into the export and the nanogpt, hf and megatron files; a builder that does not declare it is refused in one
line naming the missing options, before anything is written."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from launcher_sweeps import GPT, fill, recipe
from typer.testing import CliRunner

from mutransfer import api
from mutransfer.cli import app
from mutransfer.document import ExportDocument
from mutransfer.errors import UsageError
from mutransfer.launchers import LAUNCHER_FORMATS, LauncherError, render_format
from mutransfer.recipe import RecipeError, parse_recipe
from mutransfer.storage import Store

HERE = Path(__file__).parent
BUILDER = "userbuilders:gpt"
SWEEPS = {  # name -> model.options
    "ug": {"head_dim": 8, "ffn_ratio": 2.0},  # heads grow with width: 256 / 8 = 32 at the target
    "un": {"n_heads": 4, "ffn_ratio": 4},  # head size grows with width: 256 / 4 = 64 at the target
    "ux": {},  # the builder's own shape, undeclared
    "uh": {"head_dim": 8},  # half declared
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    sys.path.insert(0, str(HERE))  # userbuilders, as a recipe names them
    tmp = tmp_path_factory.mktemp("userbuilder")
    url = f"sqlite:///{tmp}/x.db"
    with Store.open(url) as store:
        for name, options in SWEEPS.items():
            fill(store, recipe(GPT, tmp, name=name, model__family=BUILDER, model__head_dim=None,
                               model__options=options))
    return url


def _export(url: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["export", "--db", url, *args])


def _megatron(text: str) -> dict[str, str | None]:
    body = " ".join(x.rstrip("\\") for x in text.splitlines() if not x.startswith("#"))
    argv, out = shlex.split(body), {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            out[a] = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
    return out


@pytest.mark.parametrize(("name", "heads", "head_dim", "d_ffn", "base_head_dim"),
                         [("ug", 32, 8, 512, 8), ("un", 4, 64, 1024, 8)])
def test_a_declared_builder_exports_its_shape(db: str, tmp_path: Path, name: str, heads: int, head_dim: int,
                                              d_ffn: int, base_head_dim: int) -> None:
    out = _export(db, name, "--format", "json")
    assert out.exit_code == 0, out.output
    c = json.loads(out.stdout)
    t, m = c["target"], c["model"]
    assert (t["n_heads"], t["head_dim"], t["ffn_ratio"] * t["width"], t["vocab_size"]) == (heads, head_dim, d_ffn, 27)
    assert m["family"] == BUILDER and m["options"] == SWEEPS[name]
    assert (m["head_dim"], m["n_heads"]) == (SWEEPS[name].get("head_dim"), SWEEPS[name].get("n_heads"))
    att = c["mup"]["rules"]["attention"]
    assert (att["base_head_dim"], att["head_dim"]) == (base_head_dim, head_dim)
    assert ExportDocument.from_config(c).target.n_heads == heads

    out = _export(db, name, "--format", "megatron")
    assert out.exit_code == 0, out.output
    args = _megatron(out.stdout)
    assert (args["--hidden-size"], args["--num-layers"], args["--num-attention-heads"]) == ("256", "3", str(heads))
    assert (args["--kv-channels"], args["--ffn-hidden-size"], args["--vocab-size"]) == (str(head_dim), str(d_ffn), "27")
    assert "--use-mup" in args and float(args["--mup-base-head-dim"]) == pytest.approx(base_head_dim * 1.5**2)
    assert f"your builder {BUILDER!r}" in out.stdout

    out = _export(db, name, "--format", "nanogpt", "-o", str(tmp_path / "cfg.py"))
    assert out.exit_code == 0, out.output
    g: dict[str, Any] = {}
    exec((tmp_path / "cfg.py").read_text(), g)  # what nanoGPT's configurator.py does
    assert (g["n_embd"], g["n_layer"], g["n_head"], g["vocab_size"]) == (256, 3, heads, 27)
    assert g["mup_enabled"] and g["mup_base_width"] == 32

    out = _export(db, name, "--format", "hf", "-o", str(tmp_path / "hf"))
    assert out.exit_code == 0, out.output
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (hf["n_embd"], hf["n_layer"], hf["n_head"], hf["n_inner"], hf["vocab_size"]) == (256, 3, heads, d_ffn, 27)
    assert any(BUILDER in n for n in hf["mutransfer_provenance"]["notes"])


@pytest.mark.parametrize(("name", "missing"), [
    ("ux", "model.options.head_dim (or n_heads), model.options.ffn_ratio"),
    ("uh", "model.options.ffn_ratio"),
])
@pytest.mark.parametrize("fmt", LAUNCHER_FORMATS)
def test_an_undeclared_builder_is_refused_naming_the_missing_options(db: str, name: str, missing: str,
                                                                     fmt: str) -> None:
    with Store.open(db) as store:
        sweep_id = api.get_sweep(store, name).id
        before = store.exports(sweep_id)
    out = _export(db, name, "--format", fmt)
    assert out.exit_code == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.output
    assert out.stderr == (f"error: --format {fmt}: sweep {name!r} uses builder {BUILDER!r}, which does not declare "
                          f"{missing}: declare them (see README \"Your own model\") or use --format yaml or json\n")
    with Store.open(db) as store:
        assert store.exports(sweep_id) == before  # nothing written


def test_an_undeclared_export_is_refused_by_the_renderers_too(db: str) -> None:
    out = _export(db, "ux", "--format", "yaml")  # the YAML/JSON export of any builder is fine
    assert out.exit_code == 0, out.output
    import yaml

    config = yaml.safe_load(out.stdout)
    assert "n_heads" not in config["target"] and "attention" not in config["mup"]["rules"]
    with pytest.raises(LauncherError, match=r"^fmt hf: builder 'userbuilders:gpt' does not declare "
                                            r"model\.options\.head_dim \(or n_heads\), model\.options\.ffn_ratio:"):
        render_format(config, "hf")
    with pytest.raises(UsageError, match="does not declare"):
        api.render(config, "litgpt")
    # An mlp stays refused as it was.
    with pytest.raises(LauncherError, match="^model.family: .* is 'mlp'"):
        render_format({**config, "model": {**config["model"], "family": "mlp"}}, "nanogpt")


_RECIPE = """
name: bad
model: {family: userbuilders:gpt, base_width: 32, options: OPTIONS}
data: {kind: chars, path: PATH}
train: {steps: 10, eval_interval: 5}
search: {samples: 2, space: {lr: {loguniform: [1.0e-4, 1.0]}}}
scales: {base: {width: 32, depth: 2, batch_size: 8, seq_len: 16}, vary: {width: [32, 48]}}
target: {width: 256, depth: 3, batch_size: 32, seq_len: 64}
"""


@pytest.mark.parametrize(("options", "message"), [
    ("{head_dim: 32}", "scales.width: 48 is not a multiple of model.options.head_dim 32"),
    ("{n_heads: 3}", "model.base_width: 32 is not a multiple of model.options.n_heads 3"),
    ("{head_dim: 8, n_heads: 4}", "model.options.head_dim: give head_dim or n_heads, not both"),
    ("{head_dim: true}", "model.options.head_dim: True is not a positive integer"),
    ("{n_heads: 0}", "model.options.n_heads: 0 is not a positive integer"),
    ("{head_dim: 8, ffn_ratio: four}", "model.options.ffn_ratio: 'four' is not a positive number"),
])
def test_the_recipe_checks_the_declared_shape(tmp_path: Path, options: str, message: str) -> None:
    (tmp_path / "c.txt").write_text("abc " * 100, encoding="utf-8")
    text = _RECIPE.replace("OPTIONS", options).replace("PATH", str(tmp_path / "c.txt"))
    with pytest.raises(RecipeError) as e:
        parse_recipe(text)
    assert message in str(e.value) and "\n" not in str(e.value)
