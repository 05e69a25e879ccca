"""The µP rules at the target width (`Rules`), read from an export or from its Hugging Face files (`load_rules`).

Every function of mutransfer.runtime takes any of the configs `load_rules` reads; this module turns each into the
one `Rules` record the others apply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mutransfer.document import DocumentError, ExportDocument
from mutransfer.errors import MutransferError


class RuntimeConfigError(MutransferError, ValueError):
    """A config or model the runtime cannot apply: one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class Rules:
    """The µP rules at the target width, from an export or its Hugging Face files (`load_rules`)."""

    width: int
    base_width: int
    width_mult: float
    optimizer: str  # adam | adamw | sgd
    lr: float  # the base-width LR: each kind's LR is lr times its scale
    weight_decay: float
    eps: float
    betas: tuple[float, float]
    momentum: float | None
    hidden_lr_scale: float
    hidden_wd_scale: float
    vector_lr_scale: float
    vector_wd_scale: float
    init_std: float | None  # embeddings and input weights
    hidden_init_std: float | None
    output_mult: float
    embed_mult: float
    attn_scale: float | None  # None: no attention (an mlp)
    head_dim: int | None
    query_zero: bool
    widths: tuple[int, ...]  # the sizes that grow with width at the target
    eps_mult: float = 1.0
    block_lr_scale: float = 1.0
    branch_mult: float = 1.0


def _need(cfg: dict[str, Any], key: str) -> Any:
    """A key a Hugging Face config.json of an export must have."""
    if cfg.get(key) is None:
        raise RuntimeConfigError(f"{key}: missing from config.json (export it again with this mutransfer)")
    return cfg[key]


def _widths(width: int, *others: int | None) -> tuple[int, ...]:
    return tuple(sorted({k * s for s in {width, *(o for o in others if o)} for k in (1, 2, 3, 4)}))


def _from_export(c: ExportDocument) -> Rules:
    if c.parametrization != "mup" or c.mup is None:
        raise RuntimeConfigError(f"parametrization: this export is {c.parametrization!r}, with no µP "
                                 "rules: use optimizer.lr and weight_decay as they are on every parameter")
    m, r, mult = c.mup, c.mup.rules, c.model.multipliers
    wm, width = m.width_mult, m.target_width
    t, depth, opt = c.target, c.model.depth, c.optimizer
    att = r.attention
    eps_mult = 1.0
    if depth.eps_scaling == "width":  # mutransfer.parametrization.BuildConfig.eps_mult
        eps_mult = (1.0 / wm) * depth.depth_mult ** -depth.alpha
    return Rules(
        width=width, base_width=m.base_width, width_mult=wm, optimizer=m.optimizer, lr=opt.lr,
        weight_decay=opt.weight_decay or 0.0, eps=opt.eps or 1e-8,
        betas=tuple(opt.betas or (0.9, 0.95)), momentum=opt.momentum,  # type: ignore[arg-type]
        hidden_lr_scale=r.hidden.lr_scale, hidden_wd_scale=r.hidden.weight_decay_scale,
        vector_lr_scale=r.vector_like.lr_scale, vector_wd_scale=r.vector_like.weight_decay_scale,
        init_std=r.vector_like.init_std, hidden_init_std=r.hidden.init_std,
        output_mult=mult.output_mult if "output_mult" in mult.model_fields_set else r.readout.output_multiplier * wm,
        embed_mult=r.embedding.multiplier,
        attn_scale=att.scale if att else None, head_dim=att.head_dim if att else None,
        query_zero=att is not None and att.query_init == "zeros",
        # The key/value width too: a grouped-query attention's k and v projections (hf-llama) are narrower.
        widths=_widths(width, round((t.ffn_ratio or 0) * width), (t.n_heads or 0) * (t.head_dim or 0),
                       (t.kv_heads or 0) * (t.head_dim or 0)),
        eps_mult=eps_mult, block_lr_scale=depth.block_lr_scale, branch_mult=depth.branch_multiplier,
    )


def optim_rule(optim: str, optim_args: str | None, wm: float) -> dict[str, Any]:
    """The Rules fields a Hugging Face `optim` sets: mup 1.0's Adam rule for adamw_*, its SGD rule for sgd."""
    if not optim.startswith(("adam", "sgd")):
        raise RuntimeConfigError(f"training_args.json optim: {optim!r} has no µP rule here: use adamw_torch or sgd")
    if optim.startswith("adam"):
        return {"optimizer": "adamw", "momentum": None, "hidden_lr_scale": 1.0 / wm, "hidden_wd_scale": wm,
                "vector_lr_scale": 1.0, "vector_wd_scale": 1.0}
    m = re.search(r"momentum=([0-9.eE+-]+)", optim_args or "")
    return {"optimizer": "sgd", "momentum": float(m.group(1)) if m else 0.0, "hidden_lr_scale": 1.0,
            "hidden_wd_scale": 1.0, "vector_lr_scale": wm, "vector_wd_scale": 1.0 / wm}


def _from_hf(cfg: dict[str, Any], args: dict[str, Any] | None) -> Rules:
    if not cfg.get("mup_enabled", "mup_width_mult" in cfg):
        raise RuntimeConfigError("config.json: mup_enabled is false (an SP export): train with "
                                 "training_args.json as it is, there are no µP rules to apply")
    wm, width = float(_need(cfg, "mup_width_mult")), int(cfg.get("n_embd") or _need(cfg, "hidden_size"))
    a = args or {}
    optim = optim_rule(str(a.get("optim", "adamw_torch")), a.get("optim_args"), wm)
    n_head = cfg.get("n_head") or cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (width // int(n_head) if n_head else None)  # LlamaConfig states its own
    kv_width = (cfg.get("num_key_value_heads") or 0) * (head_dim or 0)  # grouped-query attention's k and v
    return Rules(
        width=width, base_width=int(_need(cfg, "mup_base_width")), width_mult=wm, **optim,
        lr=float(a["learning_rate"]) if "learning_rate" in a
        else float(_need(cfg, "mup_hidden_lr")) / optim["hidden_lr_scale"],
        weight_decay=float(a.get("weight_decay", (cfg.get("mup_hidden_weight_decay") or 0.0)
                                 / optim["hidden_wd_scale"])),
        eps=float(a.get("adam_epsilon", 1e-8)),
        betas=(float(a.get("adam_beta1", 0.9)), float(a.get("adam_beta2", 0.999))),
        init_std=cfg.get("mup_init_std"), hidden_init_std=cfg.get("mup_hidden_init_std"),
        output_mult=float(cfg.get("mup_output_mult", 1.0)), embed_mult=float(cfg.get("mup_embed_mult", 1.0)),
        attn_scale=cfg.get("mup_attn_scale"), head_dim=head_dim,
        query_zero=cfg.get("mup_query_init", "zeros") == "zeros",  # the export's rule; the hf files omit it
        widths=_widths(width, cfg.get("n_inner") or cfg.get("intermediate_size") or 4 * width, kv_width),
        eps_mult=float(cfg.get("mup_eps_mult", 1.0)), block_lr_scale=float(cfg.get("mup_block_lr_scale", 1.0)),
        branch_mult=float(cfg.get("mup_branch_mult", 1.0)),
    )


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise RuntimeConfigError(f"{path}: cannot read it as YAML/JSON: {str(e).splitlines()[0]}") from e
    if not isinstance(doc, dict):
        raise RuntimeConfigError(f"{path}: not an export (a mapping of sections)")
    return doc


def load_rules(config: Any) -> Rules:
    """The µP rules of an export (dict or YAML/JSON path), of hf files (directory, JSON, `hf_files` dict) or of a
    Hugging Face config with the `mup_*` keys. Every function here takes any of these as `config`."""
    if isinstance(config, Rules):
        return config
    if isinstance(config, ExportDocument):
        return _from_export(config)
    if isinstance(config, (str, Path)):
        p = Path(config)
        if p.is_dir():
            args = p / "training_args.json"
            return _from_hf(_read(p / "config.json"), _read(args) if args.exists() else None)
        config = _read(p)
    if hasattr(config, "to_dict") and not isinstance(config, dict):  # a transformers PretrainedConfig
        config = config.to_dict()
    if not isinstance(config, dict):
        raise RuntimeConfigError(f"config: a {type(config).__name__} is not an export, hf files or a path to one")
    if "config.json" in config:
        return _from_hf(config["config.json"], config.get("training_args.json"))
    if "mup_width_mult" in config or "mup_enabled" in config:
        return _from_hf(config, None)
    try:
        return _from_export(ExportDocument.from_config(config))
    except DocumentError as e:
        raise RuntimeConfigError(str(e)) from e
