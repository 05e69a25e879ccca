"""target.py: an exported config rebuilds the target: its parameter count and per-group learning rates."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from launcher_sweeps import make_db
from typer.testing import CliRunner

from mutransfer.cli import app
from mutransfer.export import target_build_config
from mutransfer.parametrization import build_model, count_params
from mutransfer.recipe import Recipe
from mutransfer.target import TargetError, build_target


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recipe, Recipe]:
    d = tmp_path_factory.mktemp("target")
    url, g, m = make_db(d)
    for name, fmt in (("lg", "yaml"), ("lm", "json")):
        out = CliRunner().invoke(app, ["export", name, "--db", url, "--format", fmt, "-o", str(d / f"{name}.{fmt}")])
        assert out.exit_code == 0, out.output
    return d, g, m


def _lrs(groups: list[dict[str, Any]]) -> dict[tuple[str, tuple[int, ...]], tuple[float, float]]:
    return {(x["name"], tuple(x["shape"])): (x["lr"], x["weight_decay"]) for x in groups}


@pytest.mark.parametrize(("name", "suffix"), [("lg", "yaml"), ("lm", "json")])
def test_export_round_trips_into_the_target(exported: tuple[Path, Recipe, Recipe], name: str, suffix: str) -> None:
    import yaml

    d, g, m = exported
    recipe = g if name == "lg" else m
    path = d / f"{name}.{suffix}"
    config = yaml.safe_load(path.read_text())
    tm = build_target(path)
    direct = build_model(target_build_config(recipe, "mup"), recipe.model.family, "meta")
    assert tm.n_params == count_params(direct) == sum(p.numel() for p in direct.parameters())
    assert all(p.is_meta for p in tm.model.parameters())
    assert tm.config.width == recipe.target.width and tm.config.depth == recipe.target.depth
    # The per-group learning rates (and weight decays) are the export's, group for group.
    assert _lrs(tm.param_groups).keys() == _lrs(config["mup"]["param_groups"]).keys()
    for key, (lr, wd) in _lrs(config["mup"]["param_groups"]).items():
        assert tm.param_groups and _lrs(tm.param_groups)[key] == (pytest.approx(lr), pytest.approx(wd))
    hidden = [x for x in tm.param_groups if x["kind"] == "matrix-like"]
    assert hidden and all(x["lr"] == pytest.approx(config["mup"]["rules"]["hidden"]["lr"]) for x in hidden)


def test_a_small_target_materialises_on_cpu(exported: tuple[Path, Recipe, Recipe]) -> None:
    import torch

    tm = build_target(exported[0] / "lg.yaml", device="cpu")
    assert not any(p.is_meta for p in tm.model.parameters())
    with torch.no_grad():
        logits = tm.model(torch.zeros(2, 64, dtype=torch.long))
    assert logits.shape == (2, 64, 27)
    # µP: zero-initialised readout and query, so the first logits are exactly 0.
    assert float(logits.abs().max()) == 0.0


def test_a_7b_gpt_target_builds_on_meta(exported: tuple[Path, Recipe, Recipe]) -> None:
    import yaml

    config = yaml.safe_load((exported[0] / "lg.yaml").read_text())
    big = copy.deepcopy(config)
    big["target"].update(width=4096, depth=32, seq_len=2048, n_heads=32, head_dim=128)
    big["model"].update(head_dim=128, base_width=256, vocab_size=50304, num_classes=50304)
    tm = build_target(big)
    assert 6e9 < tm.n_params < 8e9  # a GPT-3 6.7B-sized target, for no memory
    assert all(p.is_meta for p in tm.model.parameters())
    assert tm.n_params - tm.n_params_non_embedding == 50304 * 4096 + 2048 * 4096
    hidden = next(x for x in tm.param_groups if x["name"] == "blocks.*.mlp.fc.weight")
    assert hidden["count"] == 32 and hidden["lr"] == pytest.approx(big["optimizer"]["lr"] / 16)


def test_a_broken_export_names_the_field(exported: tuple[Path, Recipe, Recipe], tmp_path: Path) -> None:
    import yaml

    config = yaml.safe_load((exported[0] / "lg.yaml").read_text())
    no_vocab = copy.deepcopy(config)
    del no_vocab["model"]["vocab_size"]
    with pytest.raises(TargetError, match=r"^model\.vocab_size: missing"):
        build_target(no_vocab)
    custom = copy.deepcopy(config)
    custom["model"]["family"] = "pkg.mod:build"
    with pytest.raises(TargetError, match=r"^model\.family: 'pkg.mod:build' is not a built-in"):
        build_target(custom)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**config, "target": {**config["target"], "width": "wide"}}))
    out = CliRunner().invoke(app, ["target", str(bad)])
    assert out.exit_code == 2 and out.stderr.count("\n") == 1 and "target.width: 'wide' is not a int" in out.stderr


def test_target_command_prints_the_summary(exported: tuple[Path, Recipe, Recipe]) -> None:
    out = CliRunner().invoke(app, ["target", str(exported[0] / "lg.yaml")], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "width 256, depth 3" in out.stdout and "per-group learning rates" in out.stdout
    assert "blocks.*.attn.q.weight" in out.stdout
    doc = json.loads(CliRunner().invoke(app, ["target", str(exported[0] / "lm.json"), "--json"]).stdout)
    assert doc["family"] == "mlp" and doc["n_params"] == doc["n_params_non_embedding"] > 0
