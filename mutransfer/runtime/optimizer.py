"""The optimizer: torch param groups with µP's LR, weight decay and Adam epsilon per kind (`param_groups`), and
the export's optimizer over them (`make_optimizer`)."""

from __future__ import annotations

from typing import Any

from mutransfer.runtime.classification import scan
from mutransfer.runtime.rules import load_rules


def param_groups(model: Any, config: Any, *, lr: float | None = None, weight_decay: float | None = None,
                 eps: float | None = None, **kw: Any) -> list[dict[str, Any]]:
    """torch param groups with µP's lr and weight_decay per kind (and Adam's eps) at the target width.

    `lr`, `weight_decay`, `eps` replace the export's base-width values; the width and depth rules still apply.
    Each group also has a `name` (hidden, vector_like, fixed; "/block" inside residual blocks under depth
    scaling) and `param_names`. Frozen parameters are left out. `kw`: the classification keywords.
    """
    r = load_rules(config)
    lr, wd = r.lr if lr is None else lr, r.weight_decay if weight_decay is None else weight_decay
    scales = {"hidden": (r.hidden_lr_scale, r.hidden_wd_scale), "fixed": (1.0, 1.0),
              "vector_like": (r.vector_lr_scale, r.vector_wd_scale)}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for q in scan(model, r, **kw):
        if q.tied or not q.param.requires_grad:
            continue
        key = (q.kind, q.in_block and r.block_lr_scale != 1.0)
        if key not in groups:
            ls, ws = scales[q.kind]
            groups[key] = {"name": q.kind + ("/block" if key[1] else ""), "params": [], "param_names": [],
                           "lr": lr * ls * (r.block_lr_scale if key[1] else 1.0), "weight_decay": wd * ws}
            if r.optimizer != "sgd":
                groups[key]["eps"] = (r.eps if eps is None else eps) * r.eps_mult
        groups[key]["params"].append(q.param)
        groups[key]["param_names"].append(q.name)
    return [groups[k] for k in sorted(groups, key=lambda k: (("hidden", "vector_like", "fixed").index(k[0]), k[1]))]


def make_optimizer(model: Any, config: Any, *, betas: tuple[float, float] | None = None, **kw: Any) -> Any:
    """The export's optimizer (torch Adam, AdamW or SGD) over `param_groups(model, config, **kw)`."""
    import torch

    r = load_rules(config)
    groups = param_groups(model, r, **kw)
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=r.momentum or 0.0)
    adam = torch.optim.Adam if r.optimizer == "adam" else torch.optim.AdamW
    return adam(groups, lr=groups[0]["lr"], betas=tuple(betas or r.betas))
