"""µP's init in place (`init_`), by each parameter's role."""

from __future__ import annotations

from typing import Any

from mutransfer.runtime.classification import scan
from mutransfer.runtime.rules import RuntimeConfigError, load_rules


def init_(model: Any, config: Any, **kw: Any) -> None:
    """µP init in place (the roles in mutransfer.runtime's doc). Draws in `model.named_modules()` order, as
    mutransfer.parametrization's init does: from the same seed the built-in GPT built without mup gets the µP proxy's
    tensors. A tied readout keeps its embedding's init."""
    import torch

    r = load_rules(config)
    with torch.no_grad():
        for q in scan(model, r, **kw):
            p = q.param
            if q.tied:
                continue
            if q.role in ("bias", "readout", "readout_bias") or (q.role == "query" and r.query_zero):
                p.zero_()
            elif q.role == "norm":
                p.fill_(0.0 if q.name.endswith("bias") else 1.0)
            elif q.kind == "fixed" or (q.role == "weight" and p.dim() < 2):
                continue
            elif q.kind == "vector_like" and p.dim() < 2:
                p.zero_()  # a qkv or query bias
            else:
                std = r.init_std if q.kind == "vector_like" else r.hidden_init_std
                if std is None:
                    raise RuntimeConfigError(f"mup.rules: the export states no init_std (a user's builder): "
                                             f"initialise {q.name} yourself, not with init_")
                p.normal_(0.0, std)
                if q.role == "qkv" and r.query_zero:
                    p.narrow(q.out_dim % p.dim(), 0, r.width).zero_()
