"""Each parameter's kind (its LR and weight decay) and role (its init and forward multiplier): `classify`.

The rules (which names and shapes give which kind and role, the keywords that override them) are in
mutransfer.runtime's doc; `scan` is what the optimizer, the init and the multipliers walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mutransfer.runtime.rules import Rules, RuntimeConfigError, load_rules

_READOUT = r"lm_head|head|readout|embed_out|output_layer"
_QUERY = r"q|q_proj|query|wq|to_q"
_QKV = r"c_attn|qkv|qkv_proj|Wqkv|in_proj_weight|in_proj_bias"
_BLOCK = r"\d+"  # under a ModuleList index: blocks.3.…, transformer.h.3.…
_KEYS = ("readout", "embedding", "query", "qkv", "hidden", "vector_like", "fixed")


@dataclass(frozen=True)
class Param:
    """One parameter as the runtime sees it: its name, kind and role, and the module that owns it."""

    name: str
    kind: str  # hidden | vector_like | fixed
    role: str  # weight | embedding | readout | readout_bias | query | qkv | input | norm | bias
    module: Any
    param: Any
    out_dim: int  # the weight's output dimension (Conv1D: -1)
    in_block: bool
    tied: bool = False  # a readout sharing an embedding's weight: hooked, but no second optimizer entry


def match(pattern: str | Iterable[str] | None, name: str) -> bool:
    """Whether a pattern (or any of several) matches whole dot-separated parts of a parameter or module name."""
    pats = [] if pattern is None else [pattern] if isinstance(pattern, str) else list(pattern)
    return any(re.search(rf"(^|\.)(?:{p})(\.|$)", name) for p in pats)


def scan(model: Any, rules: Rules, *, width_sizes: Iterable[int] = (), block: str | None = _BLOCK,
         **names: Any) -> list[Param]:
    """Every parameter of `model` classified, in `named_modules()` order (a tied readout listed again, `tied`);
    `names`: the classification keywords. Raises RuntimeConfigError for a parameter it cannot place."""
    from torch import nn

    if set(names) - set(_KEYS):
        raise TypeError(f"unknown keyword {sorted(set(names) - set(_KEYS))[0]!r}: use one of {', '.join(_KEYS)}")
    widths, used = set(rules.widths) | set(width_sizes), set()

    def named(key: str, full: str, default: str | None = None) -> bool:
        if match(names.get(key), full):
            used.add(key)
            return True
        return not names.get(key) and match(default, full)

    out, seen = [], set()
    for mname, module in model.named_modules():
        out_dim, in_dim = (-1, 0) if type(module).__name__ == "Conv1D" else (0, 1)  # GPT-2's Conv1D: (in, out)
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if id(p) in seen:  # tied: its first owner (the embedding before lm_head) sets kind and init
                if named("readout", full, _READOUT):
                    out.append(Param(full, "vector_like", "readout", module, p, out_dim, False, tied=True))
                continue
            seen.add(id(p))
            n = sum(d in widths for d in p.shape)
            role = "weight"
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower():
                role = "norm"
            elif named("readout", full, _READOUT):
                role = "readout_bias" if pname.endswith("bias") else "readout"
            elif named("embedding", full) or isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                role = "embedding"
            elif named("qkv", full, _QKV):
                role = "qkv"
            elif named("query", full, _QUERY):
                role = "query"
            elif pname.endswith("bias"):
                role = "bias"
            kind = next((k for k in ("hidden", "vector_like", "fixed") if named(k, full)), None)
            if kind is None:
                if role in ("embedding", "readout") and p.dim() >= 2:
                    kind = "vector_like"  # one width dimension, whatever the vocabulary's size
                elif role == "readout_bias":
                    kind = "fixed"
                elif n > 2:
                    raise RuntimeConfigError(f"{full}: shape {tuple(p.shape)} has {n} dimensions that grow with "
                                             f"width, µP rules cover two: pass hidden=, vector_like= or fixed={full!r}")
                elif n == 0 and p.dim() >= 2 and role == "weight":
                    raise RuntimeConfigError(
                        f"{full}: shape {tuple(p.shape)} has no size that grows with width (target width "
                        f"{rules.width}; width sizes {', '.join(map(str, sorted(widths)))}): pass "
                        f"width_sizes=({p.shape[0]},) if one grows with width, or fixed={full!r} if none does")
                else:
                    kind = ("fixed", "vector_like", "hidden")[n]
            if role == "weight" and kind == "vector_like" and p.dim() == 2:
                role = "readout" if p.shape[in_dim] in widths and p.shape[out_dim] not in widths else "input"
            out.append(Param(full, kind, role, module, p, out_dim, bool(block) and match(block, full)))
    for key in sorted(set(names) - used):
        if names[key]:
            raise RuntimeConfigError(f"{key}={names[key]!r} matches no parameter of the model: check the names "
                                     "in model.named_parameters()")
    return out


def classify(model: Any, config: Any, **kw: Any) -> dict[str, tuple[str, str]]:
    """{parameter name: (kind, role)}: what the runtime does to each parameter (see mutransfer.runtime's doc)."""
    return {q.name: (q.kind, q.role) for q in scan(model, load_rules(config), **kw) if not q.tied}
