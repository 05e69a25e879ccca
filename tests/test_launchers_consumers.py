"""The µP launcher formats (megatron, nanogpt-mup) against what their consumers read, recorded from their source.

tests/data/megatron_arguments*.txt: every flag of Megatron-LM's argparse (megatron/training/arguments.py), for
main (the released µP flags) and for the --scaling-recipe PR branch; tests/data/nanogpt_mup_keys.json: nanoGPT-mup
train.py's config keys with their defaults, for master and the completep branch. Each names repo, path and commit;
tests/data/record_consumers.py writes them. The numeric tests compute what Megatron and nanoGPT-mup would apply from
the flags and keys written, by their source's formulas (cited at each), and compare with the export's µP rules.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from launcher_sweeps import GPT, make_db, recipe
from typer.testing import CliRunner

from mutransfer.cli import app
from mutransfer.conventions import depth_section
from mutransfer.export import mup_section
from mutransfer.launchers import FORMATS, LAUNCHER_FORMATS, render_format
from mutransfer.launchers.megatron import SPELLINGS, megatron
from mutransfer.parametrization import BuildConfig

DATA = Path(__file__).parent / "data"
COMMIT = re.compile(r"\b[0-9a-f]{40}\b")


def _megatron_flags(name: str) -> tuple[set[str], set[str], str]:
    """(flags, deprecated flags, header line) of a recorded Megatron argparse."""
    head, *lines = (DATA / name).read_text().splitlines()
    flags = {x.split()[0] for x in lines}
    return flags, {x.split()[0] for x in lines if x.endswith(" deprecated")}, head


MAIN = _megatron_flags("megatron_arguments.txt")
RECIPE = _megatron_flags("megatron_arguments_scaling_recipe.txt")
FLAGS = {"released": MAIN, "scaling-recipe": RECIPE}
NANOGPT_MUP = json.loads((DATA / "nanogpt_mup_keys.json").read_text())


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The `lg` µP export (head_dim 8 fixed, attn_mult 1.5, output_mult 2, width 32 -> 256, AdamW, wd 0.05) and
    variants: its depth section from recipes with depth-mup / completep (base depth 2, target depth 3) and
    eps_scaling width, an SP copy, an SGD copy and one with attn_mult 1 / sqrt(base_head_dim)."""
    tmp = tmp_path_factory.mktemp("consumers")
    url, _, _ = make_db(tmp)
    out = CliRunner().invoke(app, ["export", "lg", "--db", url, "--format", "json"])
    assert out.exit_code == 0, out.output
    c = json.loads(out.stdout)
    variants = {"mup": c}
    for name, rule, eps in (("depth-mup", "depth-mup", "width"), ("completep", "completep", "none")):
        r = recipe(GPT, tmp, model__depth_scaling=rule, model__base_depth=2, model__eps_scaling=eps)
        v = copy.deepcopy(c)
        v["model"]["depth"] = depth_section(r)
        variants[name] = v
    sp = {k: v for k, v in copy.deepcopy(c).items() if k != "mup"}
    variants["sp"] = {**sp, "parametrization": "sp"}
    sgd = copy.deepcopy(c)
    sgd["optimizer"] = {**sgd["optimizer"], "name": "sgd", "momentum": 0.9}
    values = {k: e["value"] for k, e in c["hyperparameters"].items()}
    sgd["mup"] = mup_section(recipe(GPT, tmp, train__optimizer="sgd"), values, None)  # the export's MuSGD rules
    variants["sgd"] = sgd
    exact = copy.deepcopy(c)
    att = exact["mup"]["rules"]["attention"]
    exact["model"]["multipliers"]["attn_mult"] = 1 / math.sqrt(att["base_head_dim"])
    att["scale"] = 1 / att["head_dim"]  # attn_mult * sqrt(base_head_dim) / head_dim
    variants["exact-attention"] = exact
    return variants


def _argv(text: str) -> list[str]:
    body = "\n".join(x for x in text.splitlines() if not x.startswith("#"))
    return shlex.split(body.replace("\\\n", " "))


def _args(argv: list[str]) -> dict[str, Any]:
    """--flag value pairs (a flag with no value: True), values as floats where they parse."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--"), flag
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            raw = argv[i + 1]
            try:
                out[flag] = float(raw)
            except ValueError:
                out[flag] = raw
            i += 2
        else:
            out[flag] = True
            i += 1
    return out


def _other_spelling(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("#") and "the µP flags are" in x)
    return shlex.split(line.split("the µP flags are", 1)[1].split(":", 1)[1])


def test_the_recorded_sources_name_repo_path_and_commit() -> None:
    for flags, _, head in (MAIN, RECIPE):
        assert "NVIDIA/Megatron-LM megatron/training/arguments.py @" in head and COMMIT.search(head)
        assert {"--hidden-size", "--num-layers", "--lr", "--adam-eps", "--mup-output-mult"} <= flags
    assert "--scaling-recipe" not in MAIN[0] and not MAIN[1]  # main: the µP flags are the released ones
    assert RECIPE[1] == {"--use-mup", "--mup-base-hidden-size", "--mup-base-head-dim", "--mup-width-mult"}
    for branch in ("master", "completep"):
        src = NANOGPT_MUP[branch]
        assert (src["repo"], src["path"]) == ("EleutherAI/nanoGPT-mup", "train.py") and COMMIT.fullmatch(src["commit"])
        assert {"mup_enabled", "mup_width_multiplier", "mup_input_alpha", "mup_output_alpha", "init_std"} <= set(
            src["keys"])
    assert {"adam_eps", "depth_alpha_enabled", "depth_multiplier", "depth_alpha_exp"} <= set(
        NANOGPT_MUP["completep"]["keys"]) - set(NANOGPT_MUP["master"]["keys"])


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("variant", ["mup", "depth-mup", "completep", "sp", "sgd"])
def test_every_megatron_flag_is_one_of_its_parser(exports: dict[str, Any], variant: str, spelling: str) -> None:
    text = megatron(exports[variant], spelling=spelling)
    flags, deprecated, _ = FLAGS[spelling]
    used = [a for a in _argv(text) if a.startswith("--")]
    assert set(used) <= flags, set(used) - flags
    assert not set(used) & deprecated
    assert len(used) == len(set(used))  # no flag twice
    if variant == "sp":
        assert not [a for a in used if a.startswith(("--use-mup", "--mup-", "--scaling-"))]
        assert "Standard parametrization (SP)" in text
        return
    # The header's other spelling is valid there too.
    other = SPELLINGS[1 - SPELLINGS.index(spelling)]
    alt = [a for a in _other_spelling(text) if a.startswith("--")]
    assert set(alt) <= FLAGS[other][0] and not set(alt) & FLAGS[other][1], alt


def test_the_cli_writes_the_released_megatron_flags(exports: dict[str, Any]) -> None:
    text = render_format(exports["mup"], "megatron")
    assert text == megatron(exports["mup"])
    assert "--use-mup" in _argv(text) and "--scaling-recipe" not in _argv(text)
    assert "--scaling-recipe mup --scaling-base-hidden-size 32" in text  # the other spelling, in the header


def _megatron_applies(a: dict[str, Any]) -> dict[str, float]:
    """What Megatron computes from its flags (NVIDIA/Megatron-LM main d98e8a6 and refs/pull/4999/head ef280a9):
    transformer_config.py __post_init__ / parameterization/spec.py build_scaling_context and model_policy.py,
    optimizer/__init__.py get_mup_config_overrides / training_policy.py."""
    hidden, lr, eps = a["--hidden-size"], a["--lr"], a.get("--adam-eps")
    base = a.get("--scaling-base-hidden-size", a.get("--mup-base-hidden-size"))
    wm = hidden / base  # width_mult = hidden_size / base_hidden_size
    depth_mup = a.get("--scaling-recipe") == "depth_mup"
    dm = a["--num-layers"] / a["--scaling-base-num-layers"] if depth_mup else 1.0
    out = a["--mup-output-mult"]
    if out == 1.0 and wm != 1.0:  # "Only auto-set if user hasn't explicitly configured it"
        out = 1.0 / wm
    base_head_dim = a.get("--scaling-base-head-dim", a.get("--mup-base-head-dim"))
    head_scale = 1.0 if base_head_dim is None else base_head_dim**0.5
    sgd = a["--optimizer"] == "sgd"
    hidden_lr = lr if sgd else lr / wm * dm ** a.get("--scaling-hidden-lr-depth-power", 0.0)
    return {
        "width_mult": wm,
        "readout": out,  # _scale_logits: logits * mup_output_mult
        "softmax_scale": head_scale / a["--kv-channels"] ** a["--mup-attn-scale-power"],
        "embed": a["--mup-embedding-mult"],
        "hidden_init_std": a["--init-method-std"] / math.sqrt(wm),  # init_method_normal(std / sqrt(width_mult))
        "embedding_init_std": a["--init-method-std"],
        "hidden_lr": hidden_lr,
        "vector_lr": lr * wm if sgd else lr,  # SGD: vector-like lr x width_mult
        "hidden_eps": math.nan if sgd else eps / (wm * dm),  # Adam: hidden eps x 1/wm (depth_mup: 1/(wm·dm))
        "branch": dm ** a.get("--scaling-residual-branch-depth-power", 0.0),
        "hidden_wd": a["--weight-decay"] * (wm if depth_mup else 1.0),
    }


def _proxy_eps_mult(c: dict[str, Any]) -> float:
    """Adam's epsilon factor of the proxies at the target, by mutransfer.parametrization itself."""
    d, t = c["model"]["depth"], c["target"]
    return BuildConfig(width=t["width"], depth=t["depth"], base_width=c["model"]["base_width"],
                       depth_scaling=d["scaling"], base_depth=d["base_depth"], eps_scaling=d["eps_scaling"]).eps_mult


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("variant", ["mup", "depth-mup", "completep", "sgd", "exact-attention"])
def test_megatron_applies_the_tuned_multipliers(exports: dict[str, Any], variant: str, spelling: str) -> None:
    c = exports[variant]
    text = megatron(c, spelling=spelling)
    args = _args(_argv(text))
    got = _megatron_applies(args)
    rules, mult, depth = c["mup"]["rules"], c["model"]["multipliers"], c["model"]["depth"]
    assert got["width_mult"] == c["mup"]["width_mult"] == 8.0
    assert got["readout"] == pytest.approx(rules["readout"]["output_multiplier"], rel=1e-12)
    assert got["readout"] == pytest.approx(mult["output_mult"] / 8, rel=1e-12)
    assert got["softmax_scale"] == pytest.approx(rules["attention"]["scale"], rel=1e-12)
    assert got["embed"] == mult["embed_mult"]
    assert got["hidden_init_std"] == pytest.approx(rules["hidden"]["init_std"], rel=1e-12)
    assert got["embedding_init_std"] == rules["vector_like"]["init_std"]
    depth_mup = spelling == "scaling-recipe" and depth["scaling"] != "none" and variant != "sgd"
    assert (args.get("--scaling-recipe") == "depth_mup") == depth_mup
    if variant == "sgd":
        assert got["vector_lr"] == pytest.approx(rules["vector_like"]["lr"], rel=1e-12)
        assert got["hidden_lr"] == pytest.approx(rules["hidden"]["lr"], rel=1e-12)
        return
    # Adam: the hidden matrices' LR, eps (the proxies': eps x BuildConfig.eps_mult) and the depth rule.
    block = depth["block_lr_scale"] if depth_mup else 1.0
    assert got["hidden_lr"] == pytest.approx(rules["hidden"]["lr"] * block, rel=1e-12)
    assert got["hidden_eps"] == pytest.approx(c["optimizer"]["eps"] * _proxy_eps_mult(c), rel=1e-12)
    if depth_mup:
        assert got["branch"] == pytest.approx(depth["branch_multiplier"], rel=1e-12)
        assert got["hidden_wd"] == pytest.approx(rules["hidden"]["weight_decay"], rel=1e-12)
    elif depth["scaling"] != "none":
        assert "NOT the tuned model" in text and "a --scaling-recipe build applies it" in text


def test_an_output_multiplier_of_one_survives_megatrons_default(exports: dict[str, Any]) -> None:
    """Megatron turns an mup_output_mult of exactly 1.0 into 1/width_mult: output_mult = width_mult must not."""
    c = copy.deepcopy(exports["mup"])
    c["model"]["multipliers"]["output_mult"] = 8.0
    c["mup"]["rules"]["readout"]["output_multiplier"] = 1.0
    for spelling in SPELLINGS:
        got = _megatron_applies(_args(_argv(megatron(c, spelling=spelling))))
        assert got["readout"] == pytest.approx(1.0, rel=1e-15) and got["readout"] != 0.125


def test_megatron_header_says_what_it_cannot_apply(exports: dict[str, Any]) -> None:
    text = megatron(exports["mup"])
    head = "\n".join(x for x in text.splitlines() if x.startswith("#"))
    assert "Megatron applies:" in head and "Megatron cannot apply" in head
    for what in ("zero init of the readout and the query", "output projections", "weight decay"):
        assert what in head, what
    assert "8x weaker" in head  # MuAdamW's hidden weight decay x width_mult, which width µP does not do


def _nanogpt_mup_globals(branch: str) -> dict[str, Any]:
    return {k: v for k, (_, v) in NANOGPT_MUP[branch]["keys"].items()}


def _exec_nanogpt_mup(text: str) -> dict[str, Any]:
    """What configurator.py does with a config file (exec into train.py's globals), on the completep branch; every
    name assigned is one of its keys, with its default's type."""
    keys = NANOGPT_MUP["completep"]["keys"]
    assigned = [t.id for n in ast.parse(text).body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)]
    assert assigned and set(assigned) <= set(keys), set(assigned) - set(keys)
    g = _nanogpt_mup_globals("completep")
    exec(text, g)
    for k in assigned:
        assert type(g[k]).__name__ == keys[k][0], (k, g[k])
    return g


@pytest.mark.parametrize("variant", ["mup", "depth-mup", "completep", "sp", "exact-attention"])
def test_nanogpt_mup_config_has_its_keys_and_types(exports: dict[str, Any], variant: str) -> None:
    text = render_format(exports[variant], "nanogpt-mup")
    g = _exec_nanogpt_mup(text)
    assert g["mup_enabled"] is (variant != "sp")
    assert (g["n_embd"], g["n_layer"], g["n_head"], g["block_size"]) == (256, 3, 32, 64)
    assert g["batch_size"] * g["gradient_accumulation_steps"] == 32
    # master has no adam_eps nor depth keys, and exec would set them without a word: the file stops itself there.
    with pytest.raises(AssertionError, match="completep branch"):
        exec(text, _nanogpt_mup_globals("master"))


def _nanogpt_mup_applies(g: dict[str, Any], lr: float) -> dict[str, float]:
    """What nanoGPT-mup (completep @ 6f8bc3b) builds from its keys: model.py GPT.__init__ / forward /
    configure_optimizers, Block (residual_scaling), CausalSelfAttention (attention_scale)."""
    wm, dm, a = g["mup_width_multiplier"], g["depth_multiplier"], g["depth_alpha_exp"]
    depth_on = g["depth_alpha_enabled"]
    head_dim = g["n_embd"] // g["n_head"]
    return {
        "readout": g["mup_output_alpha"] / wm,  # x *= mup_output_alpha / mup_width_multiplier before lm_head
        "embed": g["mup_input_alpha"],  # x *= mup_input_alpha
        "hidden_init_std": g["init_std"] / math.sqrt(wm),  # c_attn, c_fc, c_proj (completep)
        "embedding_init_std": g["init_std"],
        "hidden_lr": lr * (1 / wm) * (dm ** (a - 1) if depth_on else 1.0),
        "hidden_wd": g["weight_decay"] / (1 / wm) if depth_on else g["weight_decay"],
        "eps": g["adam_eps"] * (1 / wm) * dm**-a if depth_on else g["adam_eps"],
        "branch": 1 / dm**a if depth_on else 1.0,
        "attention": 1 / math.sqrt(head_dim) if g["mup_disable_attention_scaling"] else 1 / head_dim,
    }


@pytest.mark.parametrize("variant", ["mup", "depth-mup", "completep", "exact-attention"])
def test_nanogpt_mup_applies_the_tuned_multipliers(exports: dict[str, Any], variant: str) -> None:
    c = exports[variant]
    text = render_format(c, "nanogpt-mup")
    g = _exec_nanogpt_mup(text)
    got = _nanogpt_mup_applies(g, g["learning_rate"])
    rules, mult, depth = c["mup"]["rules"], c["model"]["multipliers"], c["model"]["depth"]
    assert g["learning_rate"] == c["optimizer"]["lr"]
    assert got["readout"] == pytest.approx(rules["readout"]["output_multiplier"], rel=1e-12)
    assert got["embed"] == mult["embed_mult"]
    assert got["hidden_init_std"] == pytest.approx(rules["hidden"]["init_std"], rel=1e-12)
    assert got["embedding_init_std"] == rules["vector_like"]["init_std"]
    assert got["hidden_lr"] == pytest.approx(rules["hidden"]["lr"] * depth["block_lr_scale"], rel=1e-12)
    assert got["hidden_wd"] == pytest.approx(rules["hidden"]["weight_decay"], rel=1e-12)
    assert got["eps"] == pytest.approx(c["optimizer"]["eps"] * _proxy_eps_mult(c), rel=1e-12)
    assert got["branch"] == pytest.approx(depth["branch_multiplier"], rel=1e-12)
    # No attn_mult knob: the nearer of its two scales, and the header names what is left.
    ours = rules["attention"]["scale"]
    off = ours / got["attention"]
    assert off == pytest.approx(1.5 if variant != "exact-attention" else 1.0, rel=1e-12)
    assert ("attention_scale = " in text) == (variant != "exact-attention")
    if variant != "exact-attention":
        assert f"the proxies' is {off:.6g}x it" in text and repr(ours) in text


def test_every_format_says_which_mup_rules_its_launcher_applies(exports: dict[str, Any]) -> None:
    assert "nanogpt-mup" in LAUNCHER_FORMATS and set(LAUNCHER_FORMATS) <= set(FORMATS)
    for fmt in LAUNCHER_FORMATS:
        text = render_format(exports["depth-mup"], fmt)
        if fmt == "hf":
            notes = " ".join(json.loads(text)["config.json"]["mutransfer_provenance"]["notes"])
        else:
            notes = "\n".join(x for x in text.splitlines() if x.lstrip().startswith("#"))
        if fmt in ("megatron", "nanogpt-mup"):
            assert "applies:" in notes and "cannot apply" in notes, fmt
        else:
            assert "applies none of µP's rules itself" in notes and "Depth rule depth-mup" in notes, fmt


def test_the_cli_help_lists_every_format() -> None:
    import typer

    cmd = typer.main.get_command(app).commands["export"]  # type: ignore[attr-defined]
    help_text = next(p.help for p in cmd.params if "--format" in p.opts)
    for fmt in FORMATS:
        assert re.search(rf"(^|[ ,]){re.escape(fmt)}([ ,]|$)", help_text), fmt
