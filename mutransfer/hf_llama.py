"""The hf-llama family: transformers' own `LlamaForCausalLM` (RMSNorm, rotary position embeddings, a SwiGLU MLP,
grouped-query attention), built from its `LlamaConfig` and made µP.

What this module changes in the model transformers builds:

- the readout: under µP `lm_head` becomes ``mup.MuReadout(width, vocab, readout_zero_init=True, output_mult=...)``,
  or with ``model.tie_embeddings`` ``mup.MuSharedReadout`` on the token embedding's weight; under SP it stays
  transformers' Linear (tied by transformers itself when asked) and its logits are multiplied by output_mult;
- attention: each `LlamaAttention.scaling`, the softmax scale transformers hands its attention function, becomes
  mutransfer.models.attention_scale's: ``attn_mult * sqrt(base_head_dim) / head_dim`` under µP (1/d),
  ``attn_mult / sqrt(head_dim)`` under SP, equal at the base width;
- init: not transformers' but mutransfer.parametrization's, as for the gpt: every module is tagged here with its
  role (embedding "input", q_proj "query", the other projections "hidden", RMSNorms "norm", lm_head "readout"), so
  embeddings get N(0, σ), hidden matrices N(0, σ·sqrt(base_fan_in / fan_in)), RMSNorm gains 1, the µP readout and
  query zero;
- forward multipliers transformers has no place for, as forward hooks (mutransfer.runtime puts the same ones on an
  exported target): the token embedding's output times embed_mult, and under depth scaling the output of each
  residual branch's last layer (o_proj, down_proj) times the branch multiplier. Decoder layers are residual blocks.

The config (`llama_config`, shared with the Hugging Face export): hidden_size = width; heads from model.head_dim
(heads grow with width) or model.n_heads (head size grows) as the gpt's; intermediate_size = round(ffn_ratio x
width), ffn_ratio meaning what it means for the gpt, the MLP's hidden width over the model width (Llama 2 7B's
11008 / 4096 is 2.6875, Llama 3's 3.5). Llama's own rule, 2/3 · 4 · width rounded up to a multiple of 256, is not
used: at proxy widths it rounds the base and the delta model to the same size, and mup would take the MLP's width
for a fixed dimension. num_key_value_heads: model.options.kv_heads at the base width, the query heads per KV head
fixed at every width (mutransfer.gpt_shape). num_hidden_layers = depth, vocab_size the data's,
max_position_embeddings = seq_len, rope_theta and rms_norm_eps from model.options (LlamaConfig's defaults without),
no biases, no special tokens. The attention implementation is "sdpa": it passes `scaling` to
`torch.nn.functional.scaled_dot_product_attention` as its `scale` (as "eager" multiplies q·k by it) and runs on CPU
and CUDA; the model also builds on the meta device (the base and delta models of set_base_shapes), where
transformers' own init does nothing. Its forward returns a `CausalLMOutputWithPast`, whose `.logits` training reads
(mutransfer.logits).

transformers is imported on first use (`llama_classes`), never by `import mutransfer`; without it the family is one
line: ``pip install 'mutransfer[hf]'``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mup import MuReadout, MuSharedReadout
from torch import nn

from mutransfer.gpt_shape import kv_heads_at
from mutransfer.models import attention_scale, gpt_heads, mark_block, mark_branch_out, set_role
from mutransfer.recipe import RecipeError, missing_extra

if TYPE_CHECKING:
    from mutransfer.parametrization import BuildConfig

__all__ = ["ATTN_IMPLEMENTATION", "build_hf_llama", "llama_classes", "llama_config"]

ATTN_IMPLEMENTATION = "sdpa"  # honours LlamaAttention.scaling (see the module doc)

_CLASSES: tuple[Any, Any] | None = None


def llama_classes() -> tuple[Any, Any]:
    """(LlamaConfig, LlamaForCausalLM), importing transformers the first time; a one-line RecipeError when it is
    not installed.

    torchvision is hidden from transformers while it imports (unless it is imported already, and so loads): a
    causal LM never needs it, transformers reaches it only for image processing (modeling_utils -> the
    object-detection losses -> image_utils), and a torchvision built for another torch than the one installed fails
    on import ("operator torchvision::nms does not exist"), taking the Llama import down with it. No version check
    can tell beforehand (torchvision 0.28 requires torch 2.13 and fails against the CPU build of 2.13), and trying
    the import costs seconds and may leave half a package behind. Hidden, transformers finds no torchvision and
    remembers that (its availability checks are cached); afterwards torchvision is visible again, so the rest of
    the process imports it (or fails to) as it would have.
    """
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    problem = missing_extra("hf-llama")
    if problem is not None:
        raise RecipeError(f"model.family: {problem}")
    hide = "torchvision" not in sys.modules
    if hide:
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # None: "not installed" to the import system
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # a broken install: one line, not transformers' lazy-module traceback
        raise RecipeError(f"model.family: the hf-llama family cannot import transformers' Llama: "
                          f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from e
    finally:
        if hide and "torchvision" in sys.modules and sys.modules["torchvision"] is None:
            del sys.modules["torchvision"]
    _CLASSES = (LlamaConfig, LlamaForCausalLM)
    return _CLASSES


def llama_config(*, width: int, depth: int, n_heads: int, head_dim: int, kv_heads: int, intermediate_size: int,
                 vocab_size: int, seq_len: int, options: Mapping[str, Any], tie_embeddings: bool,
                 init_std: float | None) -> Any:
    """The `LlamaConfig` of an hf-llama model of these sizes: the proxies' (`build_hf_llama`) and the exported
    target's (mutransfer.launchers.hf_files) are made here, so they cannot drift apart."""
    config_cls, _ = llama_classes()
    kw: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": width, "intermediate_size": intermediate_size,
        "num_hidden_layers": depth, "num_attention_heads": n_heads, "num_key_value_heads": kv_heads,
        "head_dim": head_dim, "max_position_embeddings": seq_len, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": tie_embeddings,
        # Character and token corpora here have no special tokens; Llama's defaults (1, 2) would name two of them.
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "architectures": ["LlamaForCausalLM"], "attn_implementation": ATTN_IMPLEMENTATION,
    }
    if init_std is not None and 0.0 < init_std <= 1.0:  # LlamaConfig refuses others; mutransfer's init ignores it
        kw["initializer_range"] = float(init_std)
    for key in ("rope_theta", "rms_norm_eps"):
        if options.get(key) is not None:
            kw[key] = float(options[key])
    return config_cls(**kw)


class _Times:
    """A forward hook multiplying a module's output by a constant (a class, not a lambda: it pickles)."""

    def __init__(self, mult: float) -> None:
        self.mult = mult

    def __call__(self, _module: nn.Module, _args: Any, out: Any) -> Any:
        return out * self.mult


def _sizes(cfg: BuildConfig) -> tuple[int, int, int]:
    """(n_heads, head_dim, kv_heads) at cfg.width; ValueError when the KV heads do not group the query heads."""
    n_heads, head_dim, _ = gpt_heads(cfg)
    base_heads = gpt_heads(cfg.at_width(cfg.base_width))[0]
    kv = cfg.options.get("kv_heads")
    if kv is not None and (base_heads % kv or n_heads % (base_heads // kv)):
        raise ValueError(f"width {cfg.width}: {n_heads} heads do not split into groups of the "
                         f"{base_heads // max(1, kv)} query heads per KV head that model.options.kv_heads {kv} gives")
    return n_heads, head_dim, kv_heads_at(kv, n_heads, base_heads)


def build_hf_llama(cfg: BuildConfig) -> nn.Module:
    """transformers' LlamaForCausalLM at cfg's size, with µP's readout and attention scale (see the module doc).
    Under a `torch.device` context it is built there (meta for the base and delta models)."""
    if cfg.vocab_size is None:
        raise ValueError("the hf-llama family needs vocab_size (chars or tokens data)")
    n_heads, head_dim, kv_heads = _sizes(cfg)
    config = llama_config(
        width=cfg.width, depth=cfg.depth, n_heads=n_heads, head_dim=head_dim, kv_heads=kv_heads,
        intermediate_size=max(1, round(cfg.ffn_ratio * cfg.width)), vocab_size=cfg.vocab_size,
        seq_len=cfg.seq_len, options=cfg.options, tie_embeddings=cfg.tie_embeddings, init_std=cfg.init_std)
    config.use_cache = False  # training: no key/value cache built on every forward
    _, model_cls = llama_classes()
    model = model_cls(config)
    base = model.model
    set_role(base.embed_tokens, "input")
    scale = attention_scale(cfg)
    for layer in base.layers:
        mark_block(layer)
        attn, mlp = layer.self_attn, layer.mlp
        attn.scaling = scale
        set_role(attn.q_proj, "query")
        for proj in (attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            set_role(proj, "hidden")
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            set_role(norm, "norm")
        for out in (attn.o_proj, mlp.down_proj):
            mark_branch_out(out)
            if cfg.branch_mult != 1.0:
                out.register_forward_hook(_Times(cfg.branch_mult))
    set_role(base.norm, "norm")
    if cfg.mup:
        if cfg.tie_embeddings:
            head: nn.Module = MuSharedReadout(base.embed_tokens.weight, bias=False, output_mult=cfg.output_mult)
        else:
            head = MuReadout(cfg.width, cfg.vocab_size, bias=False, readout_zero_init=True,
                             output_mult=cfg.output_mult)
        model.lm_head = head
    elif cfg.output_mult != 1.0:
        model.lm_head.register_forward_hook(_Times(cfg.output_mult))  # MuReadout applies it itself under µP
    set_role(model.lm_head, "readout")
    if cfg.embed_mult != 1.0:
        base.embed_tokens.register_forward_hook(_Times(cfg.embed_mult))
    return model
