"""A user's hand-written µP Llama with one planted µP mistake, chosen by `model.options.mistake`
(tests/test_coord_matrix.py): `family: "llama_builders:build"` (tests put tests/ on sys.path).

The `hf-llama` family does µP itself, so its recipe cannot say any of these mistakes. A user who makes
transformers' `LlamaForCausalLM` µP by hand can: this builder starts from the family's own model
(`mutransfer.hf_llama.build_hf_llama`: µP's MuReadout, 1/head_dim `LlamaAttention.scaling`, the sizes) and, being a
user's builder, gives it the init mutransfer gives the family (a user's builder keeps its own init, and
transformers' is nanoGPT's fixed N(0, 0.02)): embeddings N(0, σ), hidden matrices N(0, σ·sqrt(base_fan_in /
fan_in)), q_proj and the readout zero, RMSNorm gains 1. Then it undoes one µP piece, as a hand-written one would get
it wrong. With no mistake it is the family's model.

MISTAKES names each. "plain_adam" builds the correct model: that mistake is in the optimizer, planted by the test.
"sqrt_attention" wants `model.n_heads` (a fixed head count, so that the head size grows with width).
"""

from __future__ import annotations

import dataclasses
import math

import mup
import torch
from torch import nn

from mutransfer.hf_llama import build_hf_llama
from mutransfer.parametrization import BuildConfig

MISTAKES = (
    "plain_readout",  # lm_head back to transformers' plain nn.Linear
    "sqrt_attention",  # LlamaAttention.scaling back to transformers' head_dim ** -0.5
    "fixed_init",  # hidden weights at transformers' fixed N(0, 0.02) at every width
    "fixed_ffn_in_delta",  # intermediate_size floored at 2 x ffn_ratio x base_width: equal in the base and delta
    "plain_adam",  # the correct model; the test trains it with torch.optim.AdamW
    "double_readout",  # the MuReadout's output divided by the width multiplier once more
    "tied_plain",  # transformers' tied lm_head: a plain nn.Linear sharing embed_tokens.weight
)


class TwiceScaledReadout(mup.MuReadout):
    """The user divided by the width multiplier on top of MuReadout's own 1/width_mult."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / self.width_mult())


def build(cfg: BuildConfig) -> nn.Module:
    mistake = str(cfg.options.get("mistake", "none"))
    if mistake not in (*MISTAKES, "none"):
        raise ValueError(f"model.options.mistake: unknown {mistake!r}")
    assert cfg.vocab_size is not None and cfg.mup
    base_ffn = round(_ffn_cfg(cfg.at_width(cfg.base_width), mistake).ffn_ratio * cfg.base_width)
    cfg = _ffn_cfg(cfg, mistake)
    model = build_hf_llama(cfg)
    w, vocab = cfg.width, cfg.vocab_size
    if mistake in ("plain_readout", "tied_plain"):
        model.lm_head = nn.Linear(w, vocab, bias=False)
    elif mistake == "double_readout":
        model.lm_head = TwiceScaledReadout(w, vocab, bias=False, readout_zero_init=True, output_mult=cfg.output_mult)
    _init(model, cfg, mistake, base_ffn)
    if mistake == "sqrt_attention":
        for layer in model.model.layers:
            layer.self_attn.scaling = layer.self_attn.head_dim**-0.5
    if mistake == "tied_plain":
        model.lm_head.weight = model.model.embed_tokens.weight  # transformers' tie_word_embeddings
    return model


def _ffn_cfg(cfg: BuildConfig, mistake: str) -> BuildConfig:
    if mistake != "fixed_ffn_in_delta":
        return cfg
    # intermediate_size = max(ffn_ratio x width, 2 x ffn_ratio x base_width): the same at base_width and twice it.
    return dataclasses.replace(cfg, ffn_ratio=cfg.ffn_ratio * max(1.0, 2 * cfg.base_width / cfg.width))


@torch.no_grad()
def _init(model: nn.Module, cfg: BuildConfig, mistake: str, base_ffn: int) -> None:
    """`base_ffn`: intermediate_size at the base width (down_proj's fan-in there; every other hidden matrix's is
    base_width)."""
    sigma = cfg.init_std if cfg.init_std is not None else 0.02
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.startswith("model.embed_tokens"):
            p.normal_(0.0, sigma)
        elif name.startswith("lm_head"):
            if isinstance(model.lm_head, mup.MuReadout):
                p.zero_()  # µP's zero readout
            else:
                p.normal_(0.0, sigma)  # transformers' readout init
        elif ".q_proj." in name:
            p.zero_()  # µP's zero query
        else:
            fan_in = p.shape[1]
            base_fan_in = base_ffn if ".down_proj." in name else cfg.base_width
            p.normal_(0.0, sigma if mistake == "fixed_init" else sigma * math.sqrt(base_fan_in / fan_in))
