"""document.py: every export this mutransfer writes validates as an ExportDocument; a hand-edited one with a missing,
misspelt or mistyped field is one line naming its path, in the launchers, mutransfer.target, mutransfer.runtime and
the CLI alike."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from launcher_sweeps import GPT, fill, make_db, recipe
from typer.testing import CliRunner

from mutransfer import api, runtime
from mutransfer.cli import app
from mutransfer.document import DocumentError, ExportDocument, load_document
from mutransfer.errors import MutransferError
from mutransfer.export import render
from mutransfer.launchers import LauncherError, nanogpt, render_format
from mutransfer.runtime import RuntimeConfigError
from mutransfer.storage import Store
from mutransfer.target import TargetError, build_target


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, api.Export]:
    """Exports of every shape the export writes: GPT and MLP, µP and SP, AdamW and MuSGD, a depth rule, heads fixed
    or head size fixed, no target tokens."""
    tmp = tmp_path_factory.mktemp("document")
    url, _, _ = make_db(tmp)
    with Store.open(url) as store:
        fill(store, recipe(GPT, tmp, name="both", model__parametrization=["mup", "sp"]))
        fill(store, recipe(GPT, tmp, name="sgd", train__optimizer="sgd", model__head_dim=None, model__n_heads=4))
        fill(store, recipe(GPT, tmp, name="deep", model__depth_scaling="completep", model__base_depth=2,
                           model__eps_scaling="width"))
    store = api.open_store(url)
    out = {name: api.export(store, name, save=False) for name in ("lg", "lg-notok", "lm", "both", "sgd", "deep")}
    out["both-sp"] = api.export(store, "both", parametrization="sp", save=False)
    return out


def test_every_export_validates(exports: dict[str, api.Export], tmp_path: Path) -> None:
    for name, exp in exports.items():
        doc = exp.document
        assert isinstance(doc, ExportDocument), name
        c = exp.config
        assert doc.target.width == c["target"]["width"] and doc.model.family == c["model"]["family"]
        assert doc.optimizer.lr == c["optimizer"]["lr"] and doc.parametrization == c["parametrization"]
        if doc.mup is not None:
            assert doc.mup.rules.hidden.lr_scale == c["mup"]["rules"]["hidden"]["lr_scale"]
            assert [g.name for g in doc.mup.param_groups or []] == [g["name"] for g in c["mup"]["param_groups"]]
        else:
            assert doc.scaling == c["scaling"] and "mup" not in c
        # The files validate as the dict does: YAML and JSON.
        for fmt in ("yaml", "json"):
            path = tmp_path / f"{name}.{fmt}"
            path.write_text(render(c, fmt), encoding="utf-8")  # type: ignore[arg-type]
            assert load_document(path) == doc
    assert exports["sgd"].document.mup.rules.fixed is not None  # type: ignore[union-attr]
    assert exports["sgd"].document.optimizer.momentum is not None
    assert exports["deep"].document.model.depth.scaling == "completep"
    assert exports["lm"].document.model.input_dim == 64 and exports["lm"].document.target.n_heads is None


def test_readers_take_the_document_or_the_dict(exports: dict[str, api.Export]) -> None:
    exp = exports["lg"]
    doc = exp.document
    assert ExportDocument.from_config(doc) is doc
    assert nanogpt(exp.document) == nanogpt(exp.config) == render_format(exp.config, "nanogpt")
    assert runtime.load_rules(exp.document) == runtime.load_rules(exp.config)
    assert build_target(exp.document).n_params == build_target(exp.config).n_params


def _broken(config: dict[str, Any], path: str, value: Any = "DELETE") -> dict[str, Any]:
    out = copy.deepcopy(config)
    *parents, leaf = path.split(".")
    node: Any = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value == "DELETE":
        del node[leaf]
    else:
        node[leaf] = value
    return out


AGAIN = "(export it again with this mutransfer)"
CASES = [
    ("target.width", "DELETE", f"target.width: missing from the export {AGAIN}"),
    ("target.widht", 256, "target.widht: not a field of the export (misspelt, or from another version: export it "
                          "again with this mutransfer)"),
    ("target.width", "wide", "target.width: 'wide' is not a int"),
    ("target.depth", True, "target.depth: True is not a int"),
    ("optimizer.name", "lion", "optimizer.name: 'lion' is not one of 'adam', 'adamw' or 'sgd'"),
    ("mup.rules.hidden.lr_scale", None, f"mup.rules.hidden.lr_scale: missing from the export {AGAIN}"),
    ("mup.param_groups.0.lr", "DELETE", f"mup.param_groups[0].lr: missing from the export {AGAIN}"),
    ("model.depth.scaling", "deep", "model.depth.scaling: 'deep' is not one of 'none', 'depth-mup' or 'completep'"),
    ("schedule", "DELETE", f"schedule: missing from the export {AGAIN}"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES)
def test_a_broken_export_is_one_line_naming_the_field(exports: dict[str, api.Export], tmp_path: Path, path: str,
                                                      value: Any, message: str) -> None:
    bad = _broken(exports["lg"].config, path, value)
    with pytest.raises(DocumentError) as e:
        ExportDocument.from_config(bad)
    assert str(e.value) == message and isinstance(e.value, MutransferError)
    # Each reader says the same, in its own error.
    for call, error in ((lambda: render_format(bad, "megatron"), LauncherError),
                        (lambda: build_target(bad), TargetError),
                        (lambda: runtime.load_rules(bad), RuntimeConfigError)):
        with pytest.raises(error) as e2:
            call()
        assert str(e2.value) == message
    with pytest.raises(MutransferError) as e3:
        api.render(bad, "nanogpt")
    assert str(e3.value) == message
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad), encoding="utf-8")
    out = CliRunner().invoke(app, ["target", str(f)])
    assert out.exit_code == 2 and out.stderr == f"error: {f}: {message}\n"


def test_several_problems_are_counted_and_files_are_checked(exports: dict[str, api.Export], tmp_path: Path) -> None:
    bad = _broken(_broken(exports["lg"].config, "target.width", "wide"), "optimizer.lr", "fast")
    with pytest.raises(DocumentError, match=r"^target\.width: 'wide' is not a int; and 1 more$"):
        ExportDocument.from_config(bad)
    f = tmp_path / "x.json"
    f.write_text("{not json", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"x\.json: not a YAML/JSON export"):
        load_document(f)
    f.write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(DocumentError, match="not an export"):
        load_document(f)
    with pytest.raises(DocumentError, match="^config: a list is not an export"):
        ExportDocument.from_config([1, 2])  # type: ignore[arg-type]
