"""Tied embeddings (model.tie_embeddings): the readout is the token embedding's weight, one parameter with the
embedding's init and LR, mup.MuSharedReadout under µP. The built-in gpt and a nanoGPT-style builder build, pass the
coordinate check, sweep, fit and export with it; the export carries it into the launcher formats that have the
option; the mlp, which has no token embedding, refuses it in one line. Batched tied trials: tests/test_batched.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mup
import pytest
import torch
import yaml
from launcher_sweeps import GPT, fill, recipe

from mutransfer import api
from mutransfer.document import ExportDocument
from mutransfer.launchers import hf_files, render_format
from mutransfer.param_groups import describe_groups
from mutransfer.parametrization import BuildConfig, build_model, init_rules, optimizer_for
from mutransfer.recipe import RecipeError, parse_recipe
from mutransfer.storage import Store

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # userbuilders, as a recipe names them

NANO_OPTIONS = {"head_dim": 8, "ffn_ratio": 4.0}


def gpt_cfg(parametrization: str, width: int = 64, tied: bool = True, **kw: Any) -> BuildConfig:
    return BuildConfig(width=width, depth=2, parametrization=parametrization, vocab_size=27, num_classes=27,
                       seq_len=8, head_dim=8, base_width=16, tie_embeddings=tied, **kw)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ the recipe


def _recipe_text(tmp_path: Path, **changes: Any) -> str:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    doc = yaml.safe_load(GPT.replace("PATH", str(corpus)))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return yaml.safe_dump(doc)


def test_unset_keeps_the_hash_set_changes_it(tmp_path: Path) -> None:
    base = parse_recipe(_recipe_text(tmp_path))
    assert base.model.tie_embeddings is False
    assert parse_recipe(_recipe_text(tmp_path, model__tie_embeddings=False)).hash() == base.hash()
    assert parse_recipe(_recipe_text(tmp_path, model__tie_embeddings=True)).hash() != base.hash()


def test_a_hash_written_before_the_field_is_kept(tmp_path: Path) -> None:
    # The hash of a recipe that does not set the key is the hash of its dump without it (as before the key existed).
    import hashlib

    r = parse_recipe(_recipe_text(tmp_path))
    data = r.model_dump(mode="json", exclude={"train": {"batch_trials"}})
    for key in ("depth_scaling", "base_depth", "residual", "eps_scaling", "tie_embeddings"):
        data["model"].pop(key)
    data["train"].pop("metric_window")
    for key in ("early_stop", "refine", "sampler"):
        data["search"].pop(key)
    for point in (data["scales"]["base"], data["target"]):
        if point.get("steps", "absent") is None:
            del point["steps"]
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert r.hash() == hashlib.sha256(canon.encode()).hexdigest()[:16]


@pytest.mark.parametrize(("text", "field", "said"), [
    ("""
model: {family: mlp, tie_embeddings: true}
data: {kind: digits}
""", "model.tie_embeddings", "the mlp has no token embedding"),
    ("""
model: {family: "userbuilders:mlp", tie_embeddings: true}
data: {kind: digits}
""", "model.tie_embeddings", "digits data has no tokens"),
])
def test_without_a_token_embedding_it_is_one_line(text: str, field: str, said: str) -> None:
    body = text + """
train: {steps: 5}
search: {samples: 1, space: {lr: {loguniform: [1.0e-3, 1.0e-2]}}}
scales: {base: {width: 16, depth: 2, batch_size: 8}}
target: {width: 64, depth: 2, batch_size: 8}
"""
    with pytest.raises(RecipeError) as e:
        parse_recipe(body)
    msg = str(e.value)
    assert f"{field}: " in msg and said in msg and "\n" not in msg, msg


# ------------------------------------------------------------------------------------------------ building


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_the_builtin_gpt_ties_one_parameter(parametrization: str) -> None:
    torch.manual_seed(0)
    model = build_model(gpt_cfg(parametrization), "gpt")
    names = [n for n, _ in model.named_parameters()]
    assert model.head.weight is model.wte.weight and "head.weight" not in names and "wte.weight" in names
    assert isinstance(model.head, mup.MuSharedReadout) == (parametrization == "mup")
    untied = build_model(gpt_cfg(parametrization, tied=False), "gpt", "meta")
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == 27 * 64
    # The embedding's init, N(0, 0.02) at every width: not zero (that would zero the embedding), not rescaled by
    # set_base_shapes (MuReadout's sqrt(width_mult) would make it 0.04 here, at width_mult 4).
    assert float(model.wte.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    rules = init_rules(model, gpt_cfg(parametrization), "gpt", {n: p.shape for n, p in untied.named_parameters()})
    assert "head.weight" not in rules and rules["wte.weight"] == ("normal", 0.02)
    # One optimizer entry, the embedding's (vector-like) LR: the base LR for Adam, µP or SP.
    opt = optimizer_for(model.parameters(), parametrization, "adam", lr=1e-2)
    holding = [g for g in opt.param_groups for p in g["params"] if p is model.wte.weight]
    assert len(holding) == 1 and holding[0]["lr"] == pytest.approx(1e-2)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    logits = model(torch.randint(0, 27, (2, 8)))
    assert logits.shape == (2, 8, 27)
    logits.square().mean().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_under_mup_the_logits_are_the_embedding_over_width_mult() -> None:
    torch.manual_seed(0)
    model = build_model(gpt_cfg("mup", output_mult=2.0), "gpt")
    h = torch.randn(3, 64)
    want = 2.0 * h / 4.0 @ model.wte.weight.detach().T  # output_mult / width_mult, width 64 over base 16
    assert torch.allclose(model.head(h), want, atol=1e-6)


def test_a_builders_shared_weight_keeps_its_init() -> None:
    # set_base_shapes multiplies a MuReadout's weight by sqrt(width_mult); a shared one is the embedding's.
    from userbuilders import nanogpt

    cfg = gpt_cfg("mup", width=256, options=NANO_OPTIONS)
    torch.manual_seed(0)
    model = build_model(cfg, nanogpt)
    wte = model.transformer.wte.weight
    assert model.lm_head.weight is wte and float(wte.detach().std()) == pytest.approx(0.02, rel=0.1)
    logits, loss = model(torch.randint(0, 27, (2, 8)))
    assert logits.shape == (2, 8, 27) and loss is None


@pytest.mark.parametrize("family", ["gpt", "userbuilders:nanogpt"])
def test_describe_groups_gives_the_tied_weight_one_group(family: str) -> None:
    cfg = gpt_cfg("mup", width=128, options=NANO_OPTIONS)
    groups = describe_groups(cfg, family, "adamw")
    tied = [g for g in groups if g.tied_to is not None]
    assert len(tied) == 1
    g = tied[0]
    assert g.kind == "vector-like" and g.lr_mult == pytest.approx(1.0) and g.wd_mult == pytest.approx(1.0)
    assert g.tied_to in ("head.weight", "lm_head.weight") and g.shape == (27, 128)
    assert not [x for x in groups if x.kind == "readout"]  # the readout has no group of its own
    assert "tied_to" in g.to_dict()
    assert all("tied_to" not in x.to_dict() for x in describe_groups(gpt_cfg("mup", tied=False), "gpt", "adamw"))


def test_the_tied_gpt_passes_the_coordinate_check(tmp_path: Path) -> None:
    from mutransfer.coordcheck import run_coord_check

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(json.__file__).read_text() + Path(yaml.__file__).read_text())
    r = parse_recipe(E2E.format(name="cc", family="gpt", path=corpus, head_dim=8, options="{}"))
    rep = run_coord_check(r, "mup")
    assert rep.passed, rep.summary()
    assert max(abs(x.slope) for x in rep.layers) < 0.3, [(x.name, round(x.slope, 2)) for x in rep.layers]
    roles = {x.name: x.role for x in rep.layers}
    assert roles["head"] == "readout" and roles["wte"] == "input" and "logits" in roles  # by owner, though shared


def test_a_builder_tied_through_a_plain_linear_fails_the_check(tmp_path: Path) -> None:
    from mutransfer.coordcheck import run_coord_check

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(json.__file__).read_text() + Path(yaml.__file__).read_text())
    options = json.dumps({**NANO_OPTIONS, "readout": "linear"})
    r = parse_recipe(E2E.format(name="cc", family="userbuilders:nanogpt", path=corpus, head_dim="null",
                                options=options))
    rep = run_coord_check(r, "mup", widths=[16, 32, 64])
    assert not rep.passed and rep.plain_readouts == ["lm_head"], rep.summary()


# ------------------------------------------------------------------------------------------------ export


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("tied")
    url = f"sqlite:///{tmp}/x.db"
    with Store.open(url) as store:
        fill(store, recipe(GPT, tmp, name="tied", model__tie_embeddings=True))
        fill(store, recipe(GPT, tmp, name="untied"))
        fill(store, recipe(GPT, tmp, name="tied-sp", model__tie_embeddings=True, model__parametrization="sp"))
    return url


def _export(db: str, name: str) -> dict[str, Any]:
    with Store.open(db) as store:
        return api.export(store, name, save=False).config


def _megatron_flags(text: str) -> list[str]:
    return [a for line in text.splitlines() if not line.startswith("#") for a in line.split() if a.startswith("--")]


def test_the_export_carries_the_flag_into_the_launchers(db: str) -> None:
    c = _export(db, "tied")
    assert c["model"]["tie_embeddings"] is True
    assert ExportDocument.from_config(c).model.tie_embeddings
    readout = c["mup"]["rules"]["readout"]
    assert readout["init"] == "tied" and readout["output_multiplier"] == pytest.approx(2.0 / 8)
    groups = c["mup"]["param_groups"]
    (wte,) = [g for g in groups if g["name"] == "wte.weight"]
    assert wte["tied_to"] == "head.weight" and wte["lr"] == pytest.approx(c["optimizer"]["lr"])
    assert not [g for g in groups if g["name"] == "head.weight"]

    assert hf_files(c)["config.json"]["tie_word_embeddings"] is True
    lit = yaml.safe_load(render_format(c, "litgpt"))
    assert lit["train"]["tie_embeddings"] is True
    meg = render_format(c, "megatron")
    assert "--untie-embeddings-and-output-weights" not in _megatron_flags(meg)
    assert "zero init of the query" in meg and "readout and the query" not in meg
    for fmt in ("nanogpt", "torchrun"):
        assert "ties lm_head to wte always" not in render_format(c, fmt)  # nanoGPT's own tying: nothing to do
    mupped = render_format(c, "nanogpt-mup")
    assert "an untied readout" not in mupped
    assert "the readout tied to the token embedding" in render_format(c, "nanogpt")


def test_an_untied_export_says_so_where_the_launcher_ties(db: str) -> None:
    c = _export(db, "untied")
    assert c["model"]["tie_embeddings"] is False and c["mup"]["rules"]["readout"]["init"] == "zeros"
    assert hf_files(c)["config.json"]["tie_word_embeddings"] is False
    assert yaml.safe_load(render_format(c, "litgpt"))["train"]["tie_embeddings"] is False
    assert "--untie-embeddings-and-output-weights" in _megatron_flags(render_format(c, "megatron"))
    for fmt in ("nanogpt", "torchrun"):
        text = render_format(c, fmt)
        assert "ties lm_head to wte always" in text and "zero lm_head.weight" in text, fmt
    assert "an untied readout" in render_format(c, "nanogpt-mup")


def test_an_export_written_before_the_field_reads_as_untied(db: str) -> None:
    c = _export(db, "untied")
    del c["model"]["tie_embeddings"]
    assert ExportDocument.from_config(c).model.tie_embeddings is False
    assert hf_files(c)["config.json"]["tie_word_embeddings"] is False


def test_the_sp_export_is_tied_too(db: str) -> None:
    c = _export(db, "tied-sp")
    assert c["parametrization"] == "sp" and c["model"]["tie_embeddings"] is True
    assert hf_files(c)["config.json"]["tie_word_embeddings"] is True
    assert "ties lm_head" not in render_format(c, "nanogpt")


def test_the_target_rebuilds_tied_and_the_runtime_gives_one_group(db: str) -> None:
    from mutransfer import runtime
    from mutransfer.target import build_target

    c = _export(db, "tied")
    t = build_target(c, device="cpu")
    assert t.model.head.weight is t.model.wte.weight and t.config.tie_embeddings
    assert sum(1 for g in t.param_groups if g.get("tied_to")) == 1
    # The runtime on a plain (mup-free) tied model: the shared weight once, vector-like, the base-width LR, its
    # embedding init; the readout hook divides by width_mult.
    plain = build_model(t.config.__class__(**{**t.config.__dict__, "parametrization": "sp"}), "gpt")
    assert plain.head.weight is plain.wte.weight
    groups = runtime.param_groups(plain, c)
    holding = [g for g in groups for p in g["params"] if p is plain.wte.weight]
    assert len(holding) == 1 and holding[0]["name"] == "vector_like"
    assert holding[0]["lr"] == pytest.approx(c["optimizer"]["lr"])
    assert sum(len(g["params"]) for g in groups) == len(list(plain.parameters()))
    torch.manual_seed(0)
    runtime.prepare(plain, c)
    assert float(plain.wte.weight.detach().std()) == pytest.approx(c["mup"]["rules"]["vector_like"]["init_std"],
                                                                   rel=0.1)


# ------------------------------------------------------------------------------------------------ end to end

E2E = """
name: {name}
model: {{family: "{family}", parametrization: mup, base_width: 16, head_dim: {head_dim}, tie_embeddings: true,
         options: {options}}}
data: {{kind: chars, path: {path}, val_fraction: 0.2}}
train: {{steps: 30, eval_interval: 10, optimizer: adamw}}
search: {{samples: 4, seed: 1, space: {{lr: {{loguniform: [1.0e-3, 1.0e-1]}}}}}}
scales: {{base: {{width: 16, depth: 2, batch_size: 8, seq_len: 16}}, vary: {{width: [16, 32]}}}}
target: {{width: 256, depth: 2, batch_size: 16, seq_len: 16, tokens: 1000000}}
"""


def _e2e(tmp_path: Path, name: str, family: str) -> dict[str, Any]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(Path(json.__file__).read_text() + Path(yaml.__file__).read_text())  # some real Python source
    builtin = family == "gpt"
    text = E2E.format(name=name, family=family, path=corpus, head_dim=8 if builtin else "null",
                      options="{}" if builtin else json.dumps(NANO_OPTIONS))
    (tmp_path / "r.yaml").write_text(text)
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    # Through the CLI: its Ray workers import the builder from tests/ (PYTHONPATH), as a user's would from theirs.
    env = {**os.environ, "MUTRANSFER_DB": db, "MUTRANSFER_RAY_DIR": str(tmp_path / "ray"), "MUTRANSFER_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, "-m", "mutransfer.cli", "sweep", "r.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "coordinate check (mup): passed" in res.stdout + res.stderr  # the gate ran on the tied model
    store = api.open_store(db)
    trials = store.trials_frame(api.get_sweep(store, name).id)
    assert (trials["status"] == "completed").sum() >= 6, trials[["status", "error"]].to_string()
    fitted = api.fit(store, name)
    assert fitted.result.parametrizations == ["mup"] or "mup" in fitted.result.parametrizations
    exp = api.export(store, name, allow_extrapolation=True)
    c = exp.config
    assert c["model"]["tie_embeddings"] is True and c["mup"]["rules"]["readout"]["init"] == "tied"
    assert hf_files(c)["config.json"]["tie_word_embeddings"] is True
    for fmt in ("nanogpt", "nanogpt-mup", "torchrun", "litgpt", "megatron"):
        assert api.render(exp, fmt)
    return c


# End to end through the CLI: the nanoGPT-style builder below (the built-in gpt's tied path is the same sweep, fit
# and export code; its build, check, batching and export are the fast tests above: one slow run is enough for CI).
@pytest.mark.slow
def test_a_nanogpt_style_tied_builder_sweeps_fits_and_exports(tmp_path: Path) -> None:
    c = _e2e(tmp_path, "tied-nano", "userbuilders:nanogpt")
    assert c["model"]["family"] == "userbuilders:nanogpt"
    assert [g["tied_to"] for g in c["mup"]["param_groups"] if g.get("tied_to")] == ["lm_head.weight"]
    assert c["target"]["n_heads"] == 256 // 8 and c["target"]["ffn_ratio"] == 4.0
