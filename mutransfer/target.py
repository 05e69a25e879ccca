"""The target model rebuilt from an exported config: its parameter count and the learning rate of each group.

`mutransfer export` writes everything the built-in families need (sizes, heads, multipliers, the data's input and
vocabulary sizes) into the config's `model` and `target` sections; this module turns a config file (YAML or JSON)
or dict, checked once as a `mutransfer.document.ExportDocument` and read by attribute, back into a `BuildConfig`
and builds the model with `mutransfer.parametrization`, mup's base shapes set, on the meta device by default: a
multi-billion-parameter target costs no memory. `device="cpu"` materialises a small one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mutransfer.document import AGAIN, DocumentError, ExportDocument, read_export
from mutransfer.errors import MutransferError
from mutransfer.recipe import BUILTIN_FAMILIES

if TYPE_CHECKING:
    from torch import nn

    from mutransfer.parametrization import BuildConfig

__all__ = ["TargetError", "TargetModel", "build_config_from_export", "build_target", "load_export"]


class TargetError(MutransferError, ValueError):
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
    try:
        return read_export(path)
    except DocumentError as e:
        raise TargetError(str(e)) from e



@dataclass(frozen=True)
class _Sizes:
    """What the data gave the proxies, as the export states it (BuildConfig.assemble's `data`)."""

    input_dim: int | None
    vocab_size: int | None
    num_classes: int


def _need(value: Any, path: str) -> Any:
    """A field this family needs and the schema leaves optional (the mlp has no vocabulary, the gpt no input)."""
    if value is None:
        raise TargetError(f"{path}: missing from the export ({AGAIN})")
    return value


def build_config_from_export(config: dict[str, Any] | ExportDocument) -> tuple[BuildConfig, str, str]:
    """(BuildConfig at the target size, family, optimizer name) from an export."""
    from mutransfer.parametrization import BuildConfig

    doc = ExportDocument.from_config(config, TargetError)
    m, t = doc.model, doc.target
    if m.family not in BUILTIN_FAMILIES:
        # A user's builder would import code named by a config file: only a recipe may do that.
        raise TargetError(f"model.family: {m.family!r} is not a built-in family ({', '.join(BUILTIN_FAMILIES)}); "
                          "build a custom target with mutransfer.parametrization.build_model and your builder")
    hparams = {name: entry.value for name, entry in doc.hyperparameters.items()}
    mlp = m.family == "mlp"
    sizes = _Sizes(input_dim=_need(m.input_dim, "model.input_dim") if mlp else None,
                   vocab_size=None if mlp else _need(m.vocab_size, "model.vocab_size"),
                   num_classes=_need(m.num_classes, "model.num_classes"))
    d = m.depth  # exports before depth scaling have none: plain residual sums
    cfg = BuildConfig.assemble(
        m, t, sizes, parametrization=doc.parametrization, hparams=hparams,
        multipliers=m.multipliers.model_dump(),
        depth_rule={"depth_scaling": d.scaling, "base_depth": d.base_depth, "residual": d.residual,
                    "eps_scaling": d.eps_scaling},
    )
    return cfg, m.family, doc.optimizer.name


def build_target(config: dict[str, Any] | ExportDocument | str | Path, *, device: str = "meta") -> TargetModel:
    """The target model of an export (a dict or a YAML/JSON file), on `device` (meta: no memory)."""
    from mutransfer.compute import param_counts
    from mutransfer.param_groups import describe_groups
    from mutransfer.parametrization import build_model

    doc = ExportDocument.from_config(config, TargetError)
    cfg, family, optimizer = build_config_from_export(doc)
    try:
        model = build_model(cfg, family, device)
    except (ValueError, RuntimeError) as e:
        raise TargetError(f"target: cannot build the {family} at width {cfg.width}: {str(e).splitlines()[0]}") \
            from e
    total, non_emb = param_counts(model)
    lr, wd = doc.optimizer.lr, doc.optimizer.weight_decay or 0.0
    groups = []
    for g in describe_groups(cfg, family, optimizer):
        # The same multipliers the export's param_groups carry, made absolute at the export's LR and WD.
        groups.append({**g.to_dict(), "lr": lr * g.lr_mult, "weight_decay": wd * g.wd_mult})
    return TargetModel(model=model, config=cfg, family=family, optimizer=optimizer, n_params=total,
                       n_params_non_embedding=non_emb, param_groups=groups)
