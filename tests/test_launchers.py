"""launchers.py through `mutransfer export --format F`: each format read the way its consumer reads it."""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from launcher_sweeps import make_db
from typer.testing import CliRunner

from mutransfer.cli import app
from mutransfer.launchers import LAUNCHER_FORMATS, LauncherError, render_format
from mutransfer.recipe import Recipe

# nanoGPT train.py's defaults for the keys we write: configurator.py refuses a command-line override whose type
# differs from the default's, and a config file is exec'd into these globals.
NANOGPT_DEFAULTS: dict[str, Any] = {
    "n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "bias": False, "dropout": 0.0,
    "batch_size": 12, "gradient_accumulation_steps": 40, "learning_rate": 6e-4, "max_iters": 600000,
    "weight_decay": 1e-1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "decay_lr": True, "warmup_iters": 2000,
    "lr_decay_iters": 600000, "min_lr": 6e-5,
}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Recipe, Recipe, dict[str, Any]]:
    url, g, m = make_db(tmp_path_factory.mktemp("launchers"))
    out = CliRunner().invoke(app, ["export", "lg", "--db", url, "--format", "json"])
    assert out.exit_code == 0, out.output
    return url, g, m, json.loads(out.stdout)


def _export(db: tuple[str, Any, Any, Any], *args: str) -> Any:
    return CliRunner().invoke(app, ["export", "--db", db[0], *args])


def _configurator(argv: list[str], globals_: dict[str, Any]) -> None:
    """nanoGPT's configurator.py, for `--key=value` arguments: literal_eval, and the type must match."""
    for arg in argv:
        assert arg.startswith("--") and "=" in arg, arg
        key, val = arg[2:].split("=", 1)
        assert key in globals_, f"Unknown config key: {key}"
        value = ast.literal_eval(val)
        assert type(value) is type(globals_[key]), (key, value)
        globals_[key] = value


def test_export_carries_the_compute_and_the_model_sizes(db: tuple[str, Any, Any, Any]) -> None:
    c = db[3]
    assert c["compute"]["share"] > 0 and c["compute"]["verify_trials"] == 1
    assert c["model"]["vocab_size"] == c["target"]["vocab_size"] == c["model"]["num_classes"] == 27
    assert c["model"]["multipliers"] == {"init_std": 0.02, "output_mult": 2.0, "embed_mult": 1.0, "attn_mult": 1.5}
    assert c["model"]["head_dim"] == 8 and c["model"]["ffn_ratio"] == 4.0


def test_nanogpt_config_file_execs_like_nanogpt_reads_it(db: tuple[str, Any, Any, Any], tmp_path: Path) -> None:
    c = db[3]
    out = _export(db, "lg", "--format", "nanogpt", "-o", str(tmp_path / "cfg.py"))
    assert out.exit_code == 0, out.output
    text = (tmp_path / "cfg.py").read_text()
    g = dict(NANOGPT_DEFAULTS)
    exec(text, g)  # what configurator.py does with a config file
    for key, default in NANOGPT_DEFAULTS.items():
        assert type(g[key]) is type(default), key
    t, opt, sched = c["target"], c["optimizer"], c["schedule"]
    assert (g["n_embd"], g["n_layer"], g["n_head"], g["block_size"]) == (256, 3, 32, 64)
    assert g["batch_size"] * g["gradient_accumulation_steps"] == t["batch_size"] == 32
    assert g["learning_rate"] == opt["lr"] == c["hyperparameters"]["lr"]["value"]
    assert g["min_lr"] == pytest.approx(opt["lr"] * 0.1) and g["decay_lr"] is True
    assert g["max_iters"] == g["lr_decay_iters"] == sched["target_steps"] == 2_048_000 // (32 * 64)
    assert g["warmup_iters"] == sched["target_warmup_steps"] == 100
    assert (g["weight_decay"], g["beta1"], g["beta2"], g["grad_clip"]) == (0.05, 0.9, 0.95, 1.0)
    assert g["vocab_size"] == 27
    mup = c["mup"]
    assert g["mup_enabled"] is True and g["mup_base_width"] == 32 and g["mup_width_mult"] == 8.0
    assert g["mup_output_mult"] == 2.0 and g["mup_attn_mult"] == 1.5 and g["mup_init_std"] == 0.02
    assert g["mup_readout_mult"] == pytest.approx(2.0 / 8)
    assert g["mup_hidden_lr"] == pytest.approx(opt["lr"] / 8) == mup["rules"]["hidden"]["lr"]
    assert [x["lr"] for x in g["mup_param_groups"]] == [x["lr"] for x in mup["param_groups"]]
    prov = g["mutransfer_provenance"]
    assert prov["sweep"] == {"name": "lg", "id": 1} and prov["recipe_hash"] == db[1].hash()
    lr = prov["hyperparameters"]["lr"]
    assert lr["source"] == "transferred" and lr["interval"] == c["hyperparameters"]["lr"]["interval"]
    assert prov["hyperparameters"]["weight_decay"]["source"] == "recipe"
    assert prov["compute"]["share"] == c["compute"]["share"]
    assert "# learning_rate = " in text and "transferred by the fit, 95% interval" in text
    assert f"{100 * c['compute']['share']:.3g}% of the target's training compute" in text


def test_torchrun_line_parses_with_shlex_argparse_and_nanogpt_configurator(db: tuple[str, Any, Any, Any]) -> None:
    out = _export(db, "lg", "--format", "torchrun", "--nproc-per-node", "2", "--micro-batch-size", "4")
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert all(x.startswith("#") for x in lines[:-1]) and any("sweep 'lg'" in x for x in lines)
    argv = shlex.split(lines[-1])
    runner = argparse.ArgumentParser(prog="torchrun")
    runner.add_argument("--standalone", action="store_true")
    runner.add_argument("--nproc_per_node", type=int)
    runner.add_argument("script")
    runner.add_argument("script_args", nargs=argparse.REMAINDER)
    ns = runner.parse_args(argv[1:])
    assert argv[0] == "torchrun" and ns.standalone and ns.nproc_per_node == 2 and ns.script == "train.py"
    script = argparse.ArgumentParser()
    for key in NANOGPT_DEFAULTS:
        script.add_argument(f"--{key}", type=str)
    parsed = {k: ast.literal_eval(v) for k, v in vars(script.parse_args(ns.script_args)).items()}
    g = dict(NANOGPT_DEFAULTS)
    _configurator(ns.script_args, g)
    assert parsed == g
    c = db[3]
    assert g["learning_rate"] == c["optimizer"]["lr"] and g["n_embd"] == 256
    # nanoGPT divides gradient_accumulation_steps by the world size: the global batch stays the target's.
    assert g["batch_size"] == 4 and g["gradient_accumulation_steps"] == 8
    assert g["batch_size"] * g["gradient_accumulation_steps"] == c["target"]["batch_size"]


def test_hf_writes_training_arguments_and_a_gpt2_config(db: tuple[str, Any, Any, Any], tmp_path: Path) -> None:
    out = _export(db, "lg", "--format", "hf", "-o", str(tmp_path / "hf"))
    assert out.exit_code == 0, out.output
    args = json.loads((tmp_path / "hf" / "training_args.json").read_text())
    model = json.loads((tmp_path / "hf" / "config.json").read_text())
    both = json.loads(_export(db, "lg", "--format", "hf").stdout)
    for doc in (model, both["config.json"]):
        doc["mutransfer_provenance"].pop("created")  # a timestamp: two exports may straddle a second
    assert both == {"training_args.json": args, "config.json": model}
    c = db[3]
    assert args["learning_rate"] == c["optimizer"]["lr"] and args["max_steps"] == c["schedule"]["target_steps"]
    assert args["lr_scheduler_type"] == "cosine_with_min_lr"
    assert args["lr_scheduler_kwargs"] == {"min_lr": pytest.approx(c["optimizer"]["lr"] * 0.1)}
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 32
    assert (model["n_embd"], model["n_layer"], model["n_head"], model["n_positions"], model["vocab_size"]) == \
        (256, 3, 32, 64, 27)
    assert model["n_inner"] == 1024 and model["mup_width_mult"] == 8.0
    assert model["mutransfer_provenance"]["recipe_hash"] == db[1].hash()
    # Every key is a TrainingArguments field: read from the installed transformers' source (importing it pulls in
    # torchvision; the slow test below constructs TrainingArguments for real).
    fields = _training_argument_fields()
    assert set(args) <= fields, set(args) - fields


def _training_argument_fields() -> set[str]:
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("transformers is not installed (pip install -e '.[dev]')")
    src = Path(next(iter(spec.submodule_search_locations))) / "training_args.py"
    tree = ast.parse(src.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingArguments")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


@pytest.mark.slow
def test_hf_files_load_into_transformers(db: tuple[str, Any, Any, Any], tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    out = _export(db, "lg", "--format", "hf", "-o", str(tmp_path / "hf"))
    assert out.exit_code == 0, out.output
    code = f"""
import json, sys
sys.modules["torchvision"] = None  # never import torchvision (its build does not match this torch)
from transformers import GPT2Config, TrainingArguments
d = {str(tmp_path / "hf")!r}
args = TrainingArguments(**json.load(open(d + "/training_args.json")), use_cpu=True)
cfg = GPT2Config(**json.load(open(d + "/config.json")))
print(json.dumps({{"lr": args.learning_rate, "steps": args.max_steps, "sched": str(args.lr_scheduler_type.value),
                  "n_embd": cfg.n_embd, "n_head": cfg.n_head, "mup": cfg.mup_width_mult}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    c = db[3]
    assert got == {"lr": c["optimizer"]["lr"], "steps": c["schedule"]["target_steps"],
                   "sched": "cosine_with_min_lr", "n_embd": 256, "n_head": 32, "mup": 8.0}


def test_litgpt_yaml_has_the_pretrain_layout(db: tuple[str, Any, Any, Any]) -> None:
    out = _export(db, "lg", "--format", "litgpt", "--micro-batch-size", "8")
    assert out.exit_code == 0, out.output
    doc = yaml.safe_load(out.stdout)
    c = db[3]
    assert set(doc) == {"model_config", "out_dir", "train", "optimizer", "devices"}
    mc = doc["model_config"]
    assert (mc["n_embd"], mc["n_layer"], mc["n_head"], mc["head_size"], mc["block_size"]) == (256, 3, 32, 8, 64)
    assert mc["vocab_size"] == 27 and mc["intermediate_size"] == 1024 and mc["bias"] is False
    tr = doc["train"]
    assert (tr["global_batch_size"], tr["micro_batch_size"], tr["max_tokens"]) == (32, 8, 2_048_000)
    assert tr["lr_warmup_steps"] == c["schedule"]["target_warmup_steps"] and tr["max_seq_length"] == 64
    assert tr["min_lr"] == pytest.approx(0.1 * c["optimizer"]["lr"])
    assert doc["optimizer"] == {"class_path": "torch.optim.AdamW", "init_args": {
        "lr": c["optimizer"]["lr"], "weight_decay": 0.05, "betas": [0.9, 0.95], "eps": 1e-8}}
    assert "# learning_rate = " in out.stdout and db[1].hash() in out.stdout


def test_megatron_arguments_parse(db: tuple[str, Any, Any, Any]) -> None:
    out = _export(db, "lg", "--format", "megatron")
    assert out.exit_code == 0, out.output
    body = "\n".join(x for x in out.stdout.splitlines() if not x.startswith("#"))
    argv = shlex.split(body.replace("\\\n", " "))  # backslash-newline continues the line, as in a shell
    p = argparse.ArgumentParser()
    for flag in ("--num-layers", "--hidden-size", "--num-attention-heads", "--kv-channels", "--ffn-hidden-size",
                 "--seq-length", "--max-position-embeddings", "--micro-batch-size", "--global-batch-size",
                 "--train-iters", "--lr-warmup-iters", "--lr-decay-iters", "--vocab-size"):
        p.add_argument(flag, type=int)
    for flag in ("--lr", "--min-lr", "--weight-decay", "--clip-grad", "--adam-beta1", "--adam-beta2", "--adam-eps",
                 "--init-method-std", "--hidden-dropout", "--attention-dropout", "--mup-base-head-dim",
                 "--mup-embedding-mult", "--mup-output-mult", "--mup-attn-scale-power"):
        p.add_argument(flag, type=float)
    p.add_argument("--mup-base-hidden-size", type=int)
    for flag in ("--lr-decay-style", "--optimizer", "--position-embedding-type"):
        p.add_argument(flag)
    for flag in ("--disable-bias-linear", "--untie-embeddings-and-output-weights", "--use-mup"):
        p.add_argument(flag, action="store_true")
    ns = p.parse_args(argv)
    c = db[3]
    assert (ns.hidden_size, ns.num_layers, ns.num_attention_heads, ns.seq_length) == (256, 3, 32, 64)
    assert ns.lr == c["optimizer"]["lr"] and ns.global_batch_size == 32 and ns.lr_decay_style == "cosine"
    assert ns.train_iters == c["schedule"]["target_steps"] and ns.adam_beta2 == 0.95 and ns.disable_bias_linear
    assert ns.use_mup and ns.mup_base_hidden_size == 32 and ns.hidden_dropout == ns.attention_dropout == 0.0


@pytest.mark.parametrize("fmt", LAUNCHER_FORMATS)
def test_an_mlp_sweep_is_refused_in_one_line(db: tuple[str, Any, Any, Any], fmt: str) -> None:
    out = _export(db, "lm", "--format", fmt)
    assert out.exit_code == 2
    assert out.stderr.count("\n") == 1 and "is a 'mlp' model: use --format yaml or json" in out.stderr
    assert "Traceback" not in out.output


def test_bad_launcher_input_gives_one_line(db: tuple[str, Any, Any, Any]) -> None:
    out = _export(db, "lg-notok", "--format", "nanogpt")
    assert out.exit_code == 2 and out.stderr.startswith("error: target.tokens:")
    out = _export(db, "lg", "--format", "torchrun", "--nproc-per-node", "3")
    assert out.exit_code == 2 and out.stderr.startswith("error: --nproc-per-node:")
    out = _export(db, "lg", "--format", "toml")
    assert out.exit_code == 2 and "--format: 'toml' is not a format" in out.stderr
    with pytest.raises(LauncherError, match="^model.family:"):
        render_format({**db[3], "model": {**db[3]["model"], "family": "mlp"}}, "litgpt")
    broken = {k: v for k, v in db[3].items() if k != "target"}
    with pytest.raises(LauncherError, match="^target"):
        render_format(broken, "nanogpt")
