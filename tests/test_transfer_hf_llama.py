"""µTransfer measured for real on transformers' Llama (the hf-llama family), as tests/test_transfer_mup_vs_sp.py
measures it on the MLP: a tiny Llama recipe swept through the CLI under µP and SP on the same LR draws, then
`fit --json`: µP's optimal LR stays put across widths 16, 64, 256 (four doublings), SP's drifts down. The same sweep
is the family's end-to-end test: the coordinate check gates it, and its hf export loads back into transformers'
LlamaForCausalLM, which runtime's µP optimizer takes.

Sized for 2 busy CPU cores (about 3 minutes here): depth 1, batch 8 x 32 characters of the stdlib source, 120 Adam
steps, 11 LR draws over 2^-12.5..2^-2.5 (search seed 3: draws that bracket both optima, at most 2.1 octaves apart).
Measured here (and at 150 steps, 12 draws): µP's free slope +0.01 [-0.13, +0.13] octaves per doubling (the fit sets
it to 0), optimum about 2^-6 at every width; SP's -0.93 [-1.21, -0.70] (-0.76 [-0.94, -0.52] at 150 steps), its
optimum from 2^-6.4 at width 16 to 2^-9.5 at 256.

If this fails, fix the family (mutransfer/hf_llama.py, mutransfer/parametrization.py), not the thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_here import cli
from test_transfer_mup_vs_sp import sweep_and_fit

pytestmark = pytest.mark.slow

WIDTHS = [16, 64, 256]
RECIPE = f"""
name: llama-width
model: {{family: hf-llama, parametrization: [mup, sp], base_width: 16, head_dim: 8, options: {{kv_heads: 1}}}}
data: {{kind: chars, max_chars: 300000}}
train: {{steps: 120, optimizer: adam, schedule: constant, eval_interval: 40}}
search: {{samples: 11, seed: 3, space: {{lr: {{loguniform: [1.7e-4, 0.18]}}}}}}
scales: {{base: {{width: 16, depth: 1, batch_size: 8, seq_len: 32}}, vary: {{width: {WIDTHS}}}}}
target: {{width: 1024, depth: 1, batch_size: 8, seq_len: 32, tokens: 100000000}}
"""


def test_llama_width_slope_is_flat_under_mup_and_negative_under_sp(tmp_path: Path) -> None:
    (tmp_path / "llama.yaml").write_text(RECIPE)
    db = f"sqlite:///{tmp_path / 'mt.db'}"

    laws = sweep_and_fit("llama.yaml", "llama-width", tmp_path, db)

    mup, sp = laws[("mup", "lr", "width")], laws[("sp", "lr", "width")]
    assert list(mup["scales"]) == WIDTHS and list(sp["scales"]) == WIDTHS
    # µP: the optimum stays put; the interval of the slope used and that of the free fit hold 0, both small.
    assert mup["slope_lo"] <= 0.0 <= mup["slope_hi"], mup
    assert mup["free_slope_lo"] <= 0.0 <= mup["free_slope_hi"], mup
    assert abs(mup["slope"]) < 0.35 and abs(mup["free_slope"]) < 0.35, mup
    # SP: the optimum moves down with width, and the interval says so (it excludes 0).
    assert sp["kept"] and sp["slope_hi"] < 0.0, sp
    assert sp["slope"] < -0.5, sp
    assert sp["slope"] < mup["free_slope"] - 0.5

    # The export: transformers' own config class, loaded back into a LlamaForCausalLM that µP's optimizer takes.
    from mutransfer import runtime
    from mutransfer.hf_llama import llama_classes

    res = cli(["export", "llama-width", "--parametrization", "mup", "--format", "hf", "-o", "hf", "--allow-extrapolation"],
              tmp_path, db)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 1024 and cfg["num_key_value_heads"] == 64, cfg
    config_cls, model_cls = llama_classes()
    model = model_cls(config_cls.from_dict(cfg))
    runtime.prepare(model, tmp_path / "hf")
    opt = runtime.hf_optimizer(model, tmp_path / "hf")
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    res = cli(["export", "llama-width", "--parametrization", "mup", "--format", "nanogpt", "--allow-extrapolation"], tmp_path,
              db)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "use hf, yaml or json" in res.stderr
