"""A GPT's shape beyond its width and depth: the heads and the FFN width, for the export and the launcher formats.

The built-in gpt has them in the recipe's model keys (`head_dim` or `n_heads`, `ffn_ratio`). A user's builder
(`model.family: package.module:function`) declares them in `model.options`, the dict its builder gets as
`cfg.options`, under the same names:

    model:
      family: mypackage.models:build_gpt
      options: {head_dim: 64, ffn_ratio: 4.0}    # or n_heads: 16

- `head_dim`: every head's size, fixed, so the number of heads grows with width; or `n_heads`: the number of heads,
  fixed, so their size grows with width. One of the two.
- `ffn_ratio`: the MLP's hidden width over the model width (the FFN width at the target: ffn_ratio x width).

The width is the model's width (`n_embd`), the depth its number of blocks (`n_layer`), the vocabulary the data's (or
`model.vocab_size`), as for the built-in gpt. With both declared the export's `model` and `target` sections carry
them, its µP rules the attention rule at the target's head size, and the launcher formats (nanogpt, hf, megatron,
...) describe the target with them; without, those formats are refused naming what is missing. The recipe checks
the declared values (`options_problem`).

The hf-llama family (mutransfer.hf_llama) has the gpt's keys plus its own `model.options` (`LLAMA_OPTIONS`, checked
by `llama_options_problem`): `kv_heads`, the key/value heads at the base width (grouped-query attention; default:
one per query head). Each KV head serves a fixed number of query heads at every width, so when the heads grow with
width (head_dim given) the KV heads grow with them: the key and value projections keep a width dimension, as µP
needs of a hidden matrix. Pure: no torch, and no import of mutransfer.recipe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mutransfer.errors import option

__all__ = ["LLAMA_OPTIONS", "OPTION_KEYS", "GptShape", "gpt_shape", "kv_heads_at", "llama_options_problem",
           "missing_options", "options_problem", "refusal"]

OPTION_KEYS = ("head_dim", "n_heads", "ffn_ratio")
# hf-llama's model.options: KV heads at the base width, RoPE's base, RMSNorm's epsilon (LlamaConfig's names).
LLAMA_OPTIONS = ("kv_heads", "rope_theta", "rms_norm_eps")
DOCS = 'see README "Your own model"'


@dataclass(frozen=True)
class GptShape:
    head_dim: int | None  # fixed head size (heads grow with width)
    n_heads: int | None  # fixed head count (head size grows with width)
    ffn_ratio: float
    kv_heads: int | None = None  # hf-llama: KV heads at the base width; None: one per query head

    def heads_at(self, width: int) -> tuple[int, int]:
        """(head_dim, n_heads) at `width`."""
        if self.head_dim is not None:
            return self.head_dim, width // self.head_dim
        assert self.n_heads is not None
        return width // self.n_heads, self.n_heads

    def d_ffn(self, width: int) -> int:
        """The FFN's hidden width at `width`: round(ffn_ratio x width) (the gpt's, hf-llama's intermediate_size)."""
        return max(1, round(self.ffn_ratio * width))

    def kv_heads_at(self, width: int, base_width: int) -> int:
        """The KV heads at `width` (`kv_heads_at`)."""
        return kv_heads_at(self.kv_heads, self.heads_at(width)[1], self.heads_at(base_width)[1])


def kv_heads_at(kv_heads: int | None, heads: int, base_heads: int) -> int:
    """The KV heads of a model with `heads` query heads, when it has `kv_heads` at the base width's `base_heads`:
    the query heads per KV head stay fixed (every head its own without `kv_heads`)."""
    if kv_heads is None:
        return heads
    return heads // (base_heads // kv_heads)


def missing_options(options: Mapping[str, Any]) -> list[str]:
    """The GPT dimensions a user's builder leaves undeclared, as the recipe fields to add."""
    out = []
    if options.get("head_dim") is None and options.get("n_heads") is None:
        out.append("model.options.head_dim (or n_heads)")
    if options.get("ffn_ratio") is None:
        out.append("model.options.ffn_ratio")
    return out


def gpt_shape(model: Any) -> GptShape | None:
    """The shape of a recipe's model (mutransfer.recipe.Model): the built-in gpt's, a user builder's declared one,
    or None (the mlp; a builder that does not declare all of it)."""
    if model.family == "gpt":
        return GptShape(model.head_dim, model.n_heads, float(model.ffn_ratio))
    if model.family == "hf-llama":
        return GptShape(model.head_dim, model.n_heads, float(model.ffn_ratio), model.options.get("kv_heads"))
    if model.family == "mlp" or missing_options(model.options):
        return None
    o = model.options
    return GptShape(o.get("head_dim"), o.get("n_heads"), float(o["ffn_ratio"]))


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def options_problem(options: Mapping[str, Any], widths: Iterable[tuple[str, int]]) -> tuple[str, str] | None:
    """(field path, what is wrong) with the GPT dimensions a user's builder declares, or None. `widths`: (field,
    width) of the base width, each proxy and the target, which must be multiples of the head size or count."""
    hd, nh, ratio = (options.get(k) for k in OPTION_KEYS)
    for key, v in (("head_dim", hd), ("n_heads", nh)):
        if v is not None and not _positive_int(v):
            return f"model.options.{key}", f"{v!r} is not a positive integer"
    if hd is not None and nh is not None:
        return "model.options.head_dim", "give head_dim or n_heads, not both"
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                              or not (math.isfinite(ratio) and ratio > 0)):
        return "model.options.ffn_ratio", f"{ratio!r} is not a positive number"
    size, key = (hd, "head_dim") if hd is not None else (nh, "n_heads")
    if size is not None:
        for where, width in widths:
            if width % size:
                return where, f"{width} is not a multiple of model.options.{key} {size}"
    return None


def llama_options_problem(options: Mapping[str, Any], head_dim: int | None, n_heads: int | None,
                          widths: Iterable[tuple[str, int]]) -> tuple[str, str] | None:
    """(field path, what is wrong) with hf-llama's `model.options`, or None. `widths`: (field, width) of the base
    width first, then each proxy and the target, all multiples of the head size or count (checked before)."""
    for key, v in options.items():
        if key not in LLAMA_OPTIONS:
            return f"model.options.{key}", f"not an option of the hf-llama family: use {', '.join(LLAMA_OPTIONS)}"
        if key == "kv_heads" and not _positive_int(v):
            return f"model.options.{key}", f"{v!r} is not a positive integer"
        if key != "kv_heads" and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not (math.isfinite(v) and v > 0)):
            return f"model.options.{key}", f"{v!r} is not a positive number"
    kv = options.get("kv_heads")
    if kv is None:
        return None
    (_, base_width), *rest = list(widths)
    shape = GptShape(head_dim, n_heads, 1.0)
    base_heads = shape.heads_at(base_width)[1]
    if base_heads % kv:
        return "model.options.kv_heads", f"{kv} does not divide the {base_heads} heads at model.base_width {base_width}"
    group = base_heads // kv
    for where, width in rest:
        heads = shape.heads_at(width)[1]
        if heads % group:
            return where, (f"{width} has {heads} heads, not a multiple of the {group} query heads per KV head that "
                           f"model.options.kv_heads {kv} gives at the base width")
    return None


def refusal(fmt: str, family: str, missing: list[str], sweep: str | None = None) -> str:
    """The one line that refuses a launcher format for a user's builder that does not declare its GPT shape."""
    who = f"sweep {sweep!r} uses builder {family!r}, which" if sweep is not None else f"builder {family!r}"
    return (f"{option('fmt')} {fmt}: {who} does not declare {', '.join(missing)}: declare them ({DOCS}) or "
            f"use {option('fmt')} yaml or json")
