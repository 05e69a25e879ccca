"""What µP does to each parameter of a model at a given size, grouped by name pattern (layer index -> `*`):
`describe_groups` -> `ParamGroup`s. The export writes them as its `mup.param_groups`, and `mutransfer target` prints
them with absolute learning rates. The multipliers are read off the real optimizer that mutransfer.parametrization
builds, so they are what training does, not a second copy of its rules."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import mup
from torch import nn

from mutransfer.models import is_branch_out, tied_names
from mutransfer.parametrization import (
    BuildConfig,
    Family,
    build_with_shapes,
    init_rules,
    is_builtin,
    optimizer_for,
)


def _kind(module: nn.Module, pname: str, infshape: Any) -> str:
    if infshape.ninf() == 2:
        return "matrix-like"
    # A readout maps width to a fixed size: a weight with fixed fan-out and width fan-in that is not a lookup table
    # (an embedding's (vocab, width) weight has the same infshape but is input-side, vector-like).
    is_lookup = isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    if pname == "weight" and len(infshape) == 2 and not infshape[0].isinf() and infshape[1].isinf() and not is_lookup:
        return "readout"
    return "vector-like"


def _pattern(name: str) -> str:
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)


@dataclass(frozen=True)
class ParamGroup:
    """What µP does to a group of parameters of one name pattern (layer index -> `*`): see `describe_groups`."""

    name: str
    count: int  # tensors in the group
    shape: tuple[int, ...]
    kind: str  # vector-like | matrix-like | readout
    width_mult: float
    lr_mult: float
    wd_mult: float
    depth_lr_mult: float
    eps_mult: float
    forward_mult: float
    init: str | None  # normal | zeros | ones; None for a user's builder
    init_std: float | None
    tied_to: str | None = None  # the readout that shares this weight (model.tie_embeddings): one parameter, one group

    def to_dict(self) -> dict[str, Any]:
        """As the export's `mup.param_groups` entry (shape a list): plain YAML/JSON values; `tied_to` only when
        tied (exports of untied models stay as they were)."""
        out = {**asdict(self), "shape": list(self.shape)}
        if out["tied_to"] is None:
            del out["tied_to"]
        return out


def describe_groups(cfg: BuildConfig, family: Family, optimizer: str) -> list[ParamGroup]:
    """What µP does to every parameter of the model at cfg's size, grouped by name pattern (layer index -> `*`).

    Each entry: name, count (tensors in the group), shape, kind (vector-like | matrix-like | readout), width_mult
    (mup's infshape width_mult; 1 under SP), lr_mult and wd_mult (what the optimizer multiplies the base learning
    rate and weight decay by: MuAdam/MuAdamW/MuSGD's width rule times the depth factor; 1 under SP without depth
    scaling), depth_lr_mult (the depth factor alone, (L / L_base) ** (alpha - 1) inside residual blocks),
    eps_mult (Adam's epsilon factor, model.eps_scaling), forward_mult (what the layer's output is multiplied by:
    the readout's output_mult / width_mult under µP, output_mult under SP; a residual branch's last layer the
    branch multiplier (L / L_base) ** -alpha; 1 elsewhere), init ("normal" | "zeros" | "ones", None for a user's builder)
    and init_std (the std this code's init uses at this size; 0 for zero-init; a user's builder: the std of the
    built tensor when it could not be built on meta, else None) and, for a tied weight, tied_to (the readout that
    shares it: the group is the embedding's, vector-like with its LR and init; the readout's output_mult /
    width_mult is in the export's mup.rules.readout). Built on the meta device: a 4096-wide, 32-layer target costs
    no memory.
    """
    builtin = is_builtin(family)
    model, shapes = build_with_shapes(cfg, family, "meta", shapes=True)
    infshapes = mup.shape.zip_infshapes(mup.make_base_shapes(shapes["base"], shapes["delta"]), model)
    rules = init_rules(model, cfg, family, shapes["base"]) if builtin else {}
    lr_mult: dict[int, float] = {}
    wd_mult: dict[int, float] = {}
    eps_mult: dict[int, float] = {}
    # The real optimizer (mup's under µP) with LR, WD and eps 1: whatever mup and the depth rules do, the
    # multipliers are read off its groups. Under SP only the depth factor can make them differ from 1.
    opt = optimizer_for(model.parameters(), cfg.parametrization, optimizer, lr=1.0, weight_decay=1.0, eps=1.0)
    for g in opt.param_groups:
        for p in g["params"]:
            lr_mult[id(p)], wd_mult[id(p)] = g["lr"], g["weight_decay"]
            eps_mult[id(p)] = g.get("eps", 1.0)
    # A tied weight is one parameter under its first name (the embedding's): the readout that shares it is named
    # in its group's `tied_to`, and gets no group of its own (the optimizer has one entry for it).
    again = tied_names(model)
    tied = {first: _pattern(name) for name, first in again.items()}  # first name -> the sharing readout's
    groups: dict[tuple[Any, ...], ParamGroup] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if name in again:
                continue
            ish = infshapes[name]
            kind = _kind(module, pname, ish)
            if builtin:
                init, std = rules[name]
            else:
                init, std = None, None if p.is_meta or p.numel() < 2 else float(p.detach().float().std())
            forward_mult = cfg.branch_mult if is_branch_out(module) else 1.0
            if kind == "readout":
                mult = getattr(module, "output_mult", cfg.output_mult)
                forward_mult = float(mult / ish.width_mult()) if cfg.mup else float(cfg.output_mult)
            group = ParamGroup(
                name=_pattern(name),
                count=1,
                shape=tuple(p.shape),
                kind=kind,
                width_mult=float(ish.width_mult()) if cfg.mup else 1.0,
                lr_mult=float(lr_mult.get(id(p), 1.0)),
                wd_mult=float(wd_mult.get(id(p), 1.0)),
                depth_lr_mult=float(getattr(p, "_mt_lr_mult", 1.0)),
                eps_mult=float(eps_mult.get(id(p), 1.0)),
                forward_mult=forward_mult,
                init=init,
                init_std=std,
                tied_to=tied.get(name),
            )
            # Tensors that agree on everything but count (the std to 12 digits) are one group.
            key = (replace(group, init_std=None), None if std is None else round(std, 12))
            if key in groups:
                groups[key] = replace(groups[key], count=groups[key].count + 1)
            else:
                groups[key] = group
    return list(groups.values())
