"""The planted-mistake matrix (issue 18, item 5): `mutransfer sweep`'s coordinate-check gate refuses every µP
mistake planted in a nanoGPT-shaped user model (tests/nanogpt_like.py) and in transformers' Llama, naming the right
cause, and lets every correct model through with a margin, over seeds.

The hf-llama family does µP itself, so a recipe cannot plant a mistake in it: the Llama rows plant each in a user's
builder (tests/llama_builders.py) that starts from the family's model and undoes one µP piece, as a hand-written
µP Llama would get it wrong; its unplanted model is a correct row beside the family's own.

Each mistake row goes through `mutransfer.api.sweep` itself, which runs the gate after the recipe's preflight and
before Ray or the database: a refused sweep raises there, so these rows never train a trial. One mistake cannot be
written in a recipe: under µP the sweep always trains with mup's optimizer, so "plain torch.optim.Adam instead of
MuAdam" happens only in a training loop of the user's own that the exported config goes into. That row checks
the model with such a loop's optimizer (`run_coord_check(make_optimizer=...)`, the check a user would run on their
loop) and asserts on the same headline the gate would print.

The correct models pass the gate itself (seeds 0, 1, the check's own) and the same check on seeds 2, 3, each with
every judged |slope| within MARGIN x the threshold. Run with `-s` to see each row's numbers.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import mutransfer.coordcheck
from mutransfer.api import _coord_gate, preflight, sweep
from mutransfer.coordcheck import BLOW_UP, VANISH, CoordCheckReport, run_coord_check
from mutransfer.errors import UsageError
from mutransfer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # nanogpt_like, as a recipe names it

MARGIN = 0.6  # a correct model's every judged slope within this fraction of the threshold on its side


@dataclass(frozen=True)
class Model:
    """A model a recipe names: its family and model-section keys."""

    family: str
    model: dict[str, Any] = field(default_factory=dict)
    label: str = ""


NANOGPT = "nanogpt_like:build"
HF_LLAMA = "hf-llama"
LLAMA_BUILDER = "llama_builders:build"
NEEDS_TRANSFORMERS = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers is not installed (pip install 'mutransfer[hf]')")


def recipe_text(m: Model, corpus: Path, name: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in m.model.items())
    return f"""
name: {name}
model: {{family: "{m.family}", parametrization: mup, base_width: 32{extra}}}
data: {{kind: chars, path: {corpus}}}
train: {{steps: 20, eval_interval: 10, optimizer: adamw}}
search: {{samples: 2, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 8, seq_len: 32}}}}
target: {{width: 1024, depth: 2, batch_size: 8, seq_len: 32}}
"""


def mistake(name: str, attention: str = "sdpa") -> Model:
    label = name if attention == "sdpa" else f"{name}, {attention} softmax"
    return Model(NANOGPT, {"options": f"{{mistake: {name}, attention: {attention}}}"}, label)


def llama(name: str) -> Model:
    """A hand-made µP Llama with one mistake; a fixed head count (head size grows), as sqrt_attention needs."""
    return Model(LLAMA_BUILDER, {"n_heads": 4, "options": f"{{mistake: {name}}}"}, f"llama {name}")


def _plain_adamw(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95))  # the user's loop: torch's AdamW, not mup's


@dataclass(frozen=True)
class Row:
    model: Model
    words: tuple[str, ...]  # in the gate's one-line refusal: the cause, named
    plant_optimizer: bool = False  # the mistake is the training loop's optimizer (see the module doc)


MISTAKES = [
    Row(mistake("plain_readout"), ("'lm_head' is a plain nn.Linear, not a mup.MuReadout",)),
    Row(mistake("sqrt_attention"), ("attention logits", "attention scale is 1/sqrt(head_dim); µP needs 1/head_dim")),
    Row(mistake("sqrt_attention", "explicit"), ("h.0.attn.attn_logits", "attention scale is 1/sqrt(head_dim)")),
    Row(mistake("fixed_init"), ("init does not shrink like 1/sqrt(fan_in)", "h.0.attn.c_attn")),
    Row(mistake("fixed_ffn_in_delta"), ("set_base_shapes takes a width dimension for a fixed one", "mlp.c_fc.weight")),
    Row(mistake("plain_adam"), ("hidden weights", "learning rate is not divided by the width multiplier"),
        plant_optimizer=True),
    Row(mistake("double_readout"), ("lm_head", "stop learning as width grows")),
    Row(mistake("tied_plain"), ("'lm_head' is a plain nn.Linear sharing the weight of the embedding 'wte'", "MuSharedReadout")),
    # The same mistakes in transformers' Llama, as a user who made it µP by hand would get them wrong
    # (tests/llama_builders.py); plain Adam on the hf-llama family's own µP model.
    Row(llama("plain_readout"), ("'lm_head' is a plain nn.Linear, not a mup.MuReadout",)),
    Row(llama("sqrt_attention"), ("model.layers.0.self_attn.attn_logits",
                                  "attention scale is 1/sqrt(head_dim); µP needs 1/head_dim")),
    Row(llama("fixed_init"), ("init does not shrink like 1/sqrt(fan_in)", "model.layers.0.self_attn.k_proj")),
    Row(llama("fixed_ffn_in_delta"), ("set_base_shapes takes a width dimension for a fixed one",
                                      "mlp.gate_proj.weight")),
    Row(Model(HF_LLAMA, {"n_heads": 4}, "hf-llama plain_adam"),
        ("hidden weights", "learning rate is not divided by the width multiplier"), plant_optimizer=True),
    Row(llama("double_readout"), ("lm_head", "stop learning as width grows")),
    Row(llama("tied_plain"), ("'lm_head' is a plain nn.Linear sharing the weight of the embedding 'model.embed_tokens'",
                              "MuSharedReadout")),
]

CORRECT = [
    Model(NANOGPT, label="nanogpt_like"),
    Model(NANOGPT, {"options": "{attention: explicit}"}, "nanogpt_like, explicit softmax"),
    Model("gpt", {"head_dim": 8}, "gpt, head size fixed"),
    Model("gpt", {"n_heads": 4}, "gpt, head count fixed"),
    Model(HF_LLAMA, {"head_dim": 8, "options": "{kv_heads: 2}"}, "hf-llama, head size fixed, grouped KV"),
    Model(HF_LLAMA, {"n_heads": 4}, "hf-llama, head count fixed"),
    Model(LLAMA_BUILDER, {"n_heads": 4}, "llama_builders, no mistake"),  # the mistake rows' builder, unplanted
]


def _judged(rep: CoordCheckReport) -> list[tuple[str, float]]:
    return [(x.name, x.slope) for x in rep.layers if x.judged and x.verdict != "unchanged"]


def _cases(models: list[Model], items: list[Any]) -> list[Any]:
    """pytest params labelled by their model, the Llama ones skipped without transformers (the hf extra)."""
    return [pytest.param(x, id=m.label, marks=[NEEDS_TRANSFORMERS] if m.family in (HF_LLAMA, LLAMA_BUILDER) else [])
            for m, x in zip(models, items, strict=True)]


@pytest.mark.parametrize("row", _cases([r.model for r in MISTAKES], MISTAKES))
def test_the_gate_refuses_each_planted_mistake_naming_its_cause(row: Row, corpus: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    text = recipe_text(row.model, corpus, row.model.label.replace(", ", "-").replace(" ", "-"))
    if row.plant_optimizer:
        rep = run_coord_check(parse_recipe(text), "mup", make_optimizer=_plain_adamw)
        assert not rep.passed, rep.summary()
        line = rep.headline()
    else:
        seen: list[CoordCheckReport] = []
        real = mutransfer.coordcheck.run_coord_check

        def spy(*args: Any, **kwargs: Any) -> CoordCheckReport:  # the gate's own check, kept for the numbers
            seen.append(real(*args, **kwargs))
            return seen[-1]

        monkeypatch.setattr(mutransfer.coordcheck, "run_coord_check", spy)
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
        db = tmp_path / "mt.db"
        with pytest.raises(UsageError, match="coordinate check failed for mup") as e:
            sweep(path, db=f"sqlite:///{db}")
        line = str(e.value)
        assert not db.exists()  # refused before the database was made
        assert "\n" not in line and "check=False" in line
        (rep,) = seen
    for words in row.words:
        assert words in line, line
    bad = rep.offending()
    caught = ", ".join(f"{x.name} {x.slope:+.2f}" for x in bad[:3]) or "no layer: structure alone"
    print(f"\n{row.model.label}: {caught} (thresholds {BLOW_UP:+.2f}/{VANISH:+.2f}); {line}")


@pytest.mark.parametrize("model", _cases(CORRECT, CORRECT))
def test_correct_models_pass_the_gate_with_a_margin_over_seeds(model: Model, corpus: Path) -> None:
    r = parse_recipe(recipe_text(model, corpus, "ok"))
    notes: list[str] = []
    (record,) = _coord_gate(r, "recipe", preflight(r), notes.append)  # the gate itself: raises on a failure
    reports = [CoordCheckReport.from_dict(record.result)]
    reports.append(run_coord_check(r, "mup", seeds=(2, 3)))
    for rep in reports:
        assert rep.passed, rep.summary()
        judged = _judged(rep)
        assert sum(x.role == "attention" for x in rep.layers) == 2, "one attention call per block, measured"
        top, bottom = max(judged, key=lambda x: x[1]), min(judged, key=lambda x: x[1])
        everything = ", ".join(f"{n} {s:+.2f}" for n, s in judged)
        assert top[1] <= MARGIN * BLOW_UP and bottom[1] >= MARGIN * VANISH, everything
        attention = [f"{x.name} {x.slope:+.2f}" for x in rep.layers if x.role == "attention"]
        print(f"\n{model.label}: slopes {bottom[1]:+.2f}..{top[1]:+.2f} (thresholds {VANISH:+.2f}/{BLOW_UP:+.2f}); "
              f"attention {', '.join(attention)}; {rep.seconds:.1f}s")
