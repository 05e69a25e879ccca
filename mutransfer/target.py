"""The target model rebuilt from an exported config: its parameter count and the learning rate of each group.

`mutransfer export` writes everything the built-in families need (sizes, heads, multipliers, the data's input and
vocabulary sizes) into the config's `model` and `target` sections; this module turns a config file (YAML or JSON)
or dict back into a `BuildConfig` and builds the model with `mutransfer.proxy`, mup's base shapes set, on the meta
device by default: a multi-billion-parameter target costs no memory. `device="cpu"` materialises a small one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mutransfer.recipe import BUILTIN_FAMILIES, DEPTH_ALPHA

if TYPE_CHECKING:
    from torch import nn

    from mutransfer.proxy import BuildConfig

__all__ = ["TargetError", "TargetModel", "build_config_from_export", "build_target", "load_export"]


class TargetError(ValueError):
    """An exported config that cannot be rebuilt: one line naming the field."""


@dataclass
class TargetModel:
    """The rebuilt target and what µP does to it."""

    model: nn.Module
    config: BuildConfig
    family: str
    optimizer: str
    n_params: int
    n_params_non_embedding: int
    param_groups: list[dict[str, Any]]  # describe_groups, with absolute lr and weight_decay at the export's values

    def summary(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "parametrization": self.config.parametrization,
            "width": self.config.width,
            "depth": self.config.depth,
            "width_mult": self.config.width_mult,
            "n_params": self.n_params,
            "n_params_non_embedding": self.n_params_non_embedding,
            "optimizer": self.optimizer,
            "param_groups": self.param_groups,
        }


def load_export(path: str | Path) -> dict[str, Any]:
    """An export file (YAML or JSON: JSON is YAML) as a dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"{p}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise TargetError(f"{p}: not a YAML/JSON export: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise TargetError(f"{p}: not an export (a mapping with model, target, optimizer sections)")
    return doc


def _field(config: dict[str, Any], path: str, kind: type | tuple[type, ...] = object, *, required: bool = True) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            if not required:
                return None
            raise TargetError(f"{path}: missing from the export (export the sweep again with this mutransfer)")
        node = node[part]
    if not isinstance(node, kind) or isinstance(node, bool) and kind is not bool:
        raise TargetError(f"{path}: {node!r} is not a {getattr(kind, '__name__', kind)}")
    return node


def build_config_from_export(config: dict[str, Any]) -> tuple[BuildConfig, str, str]:
    """(BuildConfig at the target size, family, optimizer name) from an export."""
    from mutransfer.proxy import BuildConfig

    family = _field(config, "model.family", str)
    if family not in BUILTIN_FAMILIES:
        # A user's builder would import code named by a config file: only a recipe may do that.
        raise TargetError(f"model.family: {family!r} is not a built-in family ({', '.join(BUILTIN_FAMILIES)}); "
                          "build a custom target with mutransfer.proxy.build_model and your builder")
    param = _field(config, "parametrization", str)
    if param not in ("mup", "sp"):
        raise TargetError(f"parametrization: {param!r} is not mup or sp")
    mult = _field(config, "model.multipliers", dict)
    hparams = {name: entry.get("value") for name, entry in _field(config, "hyperparameters", dict).items()
               if isinstance(entry, dict)}
    size = {"input_dim": None, "vocab_size": None}
    if family == "mlp":
        size["input_dim"] = _field(config, "model.input_dim", int)
    else:
        size["vocab_size"] = _field(config, "model.vocab_size", int)
    # model.depth (exports before depth scaling have none: plain residual sums).
    depth = _field(config, "model.depth", dict, required=False) or {}
    if depth.get("scaling", "none") not in DEPTH_ALPHA:
        raise TargetError(f"model.depth.scaling: {depth.get('scaling')!r} is not one of {', '.join(DEPTH_ALPHA)}")
    cfg = BuildConfig(
        width=_field(config, "target.width", int),
        depth=_field(config, "target.depth", int),
        parametrization=param,
        num_classes=_field(config, "model.num_classes", int),
        seq_len=_field(config, "target.seq_len", int),
        head_dim=_field(config, "model.head_dim", int, required=False),
        n_heads=_field(config, "model.n_heads", int, required=False),
        ffn_ratio=float(_field(config, "model.ffn_ratio", (int, float), required=False) or 4.0),
        init_std=_field(config, "model.multipliers.init_std", (int, float), required=False),
        output_mult=float(mult.get("output_mult", 1.0)),
        embed_mult=float(mult.get("embed_mult", 1.0)),
        attn_mult=float(mult.get("attn_mult", 1.0)),
        base_width=_field(config, "model.base_width", int),
        hparams=hparams,
        options=dict(_field(config, "model.options", dict, required=False) or {}),
        depth_scaling=str(depth.get("scaling", "none")),
        base_depth=depth.get("base_depth"),
        residual=bool(depth.get("residual", False)),
        eps_scaling=str(depth.get("eps_scaling", "none")),
        **size,
    )
    return cfg, family, str(_field(config, "optimizer.name", str))


def build_target(config: dict[str, Any] | str | Path, *, device: str = "meta") -> TargetModel:
    """The target model of an export (a dict or a YAML/JSON file), on `device` (meta: no memory)."""
    from mutransfer.compute import param_counts
    from mutransfer.proxy import build_model, describe_groups

    doc = config if isinstance(config, dict) else load_export(config)
    cfg, family, optimizer = build_config_from_export(doc)
    try:
        model = build_model(cfg, family, device)
    except (ValueError, RuntimeError) as e:
        raise TargetError(f"target: cannot build the {family} at width {cfg.width}: {str(e).splitlines()[0]}") \
            from None
    total, non_emb = param_counts(model)
    lr = float(_field(doc, "optimizer.lr", (int, float)))
    wd = float(_field(doc, "optimizer.weight_decay", (int, float), required=False) or 0.0)
    groups = []
    for g in describe_groups(cfg, family, optimizer):
        # The same multipliers the export's param_groups carry, made absolute at the export's LR and WD.
        groups.append({**g, "lr": lr * g["lr_mult"], "weight_decay": wd * g["wd_mult"]})
    return TargetModel(model=model, config=cfg, family=family, optimizer=optimizer, n_params=total,
                       n_params_non_embedding=non_emb, param_groups=groups)
