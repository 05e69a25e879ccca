"""Apply an exported µP config to any PyTorch model: optimizer param groups, init and forward multipliers.

For a launcher with no µP of its own. The config is what `mutransfer export` writes: the YAML/JSON export (or the
dict `mutransfer.export.export_config` returns), or its Hugging Face files (`--format hf`: the directory holding
config.json and training_args.json, the one JSON it prints, the dict `mutransfer.launchers.hf_files` returns, or a
transformers config carrying the `mup_*` keys). Three calls give a plain model µP at the target width::

    from mutransfer import runtime

    model = MyGPT(width=1024)                        # the target, plain PyTorch (no mup)
    runtime.init_(model, "tuned.yaml")               # hidden N(0, init_std / sqrt(width_mult)), readout 0, ...
    runtime.apply_multipliers(model, "tuned.yaml")   # readout x output_mult / width_mult, embed_mult, 1/d attention
    opt = runtime.make_optimizer(model, "tuned.yaml")  # = AdamW(runtime.param_groups(model, "tuned.yaml"), ...)

Classification (`classify`): each parameter gets a *kind*, which sets its LR and weight decay as mup 1.0 does
(MuAdam/MuAdamW: hidden LR / width_mult, weight decay x width_mult; MuSGD: vector-like LR x width_mult, weight
decay / width_mult), and a *role*, which sets its init and forward multiplier.

- kind: ``hidden`` has two dimensions that grow with width, ``vector_like`` one, ``fixed`` none. A size grows with
  width when it is in `Rules.widths`: the target width and FFN width and 2, 3, 4 times them (fused QKV, gated
  MLPs); ``width_sizes=`` adds others. A 2-D weight with no such size is an error, not a guess. A fixed size
  that equals a width size (an MLP's input_dim 64 at width 64) needs its name: ``vector_like="inp"``.
- role: ``embedding`` (nn.Embedding): vector-like, N(0, init_std), output x embed_mult. ``readout`` (names
  lm_head, head, readout, embed_out, output_layer; else a 2-D weight whose fan-in alone is a width): vector-like
  whatever the vocabulary's size, zero init, input x output_mult / width_mult as in mup.MuReadout, its bias fixed.
  ``query`` (q, q_proj, query, wq, to_q): hidden, zero init. ``qkv`` (c_attn, qkv, qkv_proj, Wqkv, in_proj_*):
  hidden, its first `width` outputs (the query) zero. ``input`` (2-D, fan-out alone a width): N(0, init_std).
  ``norm`` (LayerNorm, GroupNorm, any *Norm class): gain 1, bias 0. ``bias``: 0. ``weight``: the rest; hidden
  ones N(0, init_std / sqrt(width_mult)); fixed ones and other 1-D ones keep their values.
- keywords: ``readout=``, ``embedding=``, ``query=``, ``qkv=`` set a role, ``hidden=``, ``vector_like=``,
  ``fixed=`` a kind: regular expressions (or tuples of them) matched on whole dot-separated parts of a parameter's
  name: ``readout="lm_head"`` matches ``lm_head.weight``, ``embedding=("wte", "wpe")`` ``transformer.wte.weight``.
  A pattern that matches nothing is an error. transformers' Conv1D (GPT-2) stores its weight (in, out): its
  fan-in is dimension 0, as the readout/input test and the query slice read it.

Depth (the export's ``model.depth``): parameters inside residual blocks (a name with a layer index; ``block=``)
get LR x ``block_lr_scale``; the output of each ``branch_out=`` module (a residual branch's last layer) is
multiplied by ``branch_multiplier``. Adam's epsilon is multiplied by 1/width_mult and depth_mult ** -alpha under
``eps_scaling: width``. The hf files do not carry these factors, nor the query's zero init: from a Hugging Face
config the runtime reads mup_eps_mult, mup_block_lr_scale, mup_branch_mult and mup_query_init when present, else
takes 1, 1, 1 and zeros. Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mutransfer.document import DocumentError, ExportDocument
from mutransfer.errors import MutransferError

__all__ = ["Rules", "RuntimeConfigError", "apply_multipliers", "attention_scale", "branch_multiplier", "classify",
           "embedding_multiplier", "hf_optimizer", "init_", "load_rules", "make_optimizer", "param_groups",
           "prepare", "readout_multiplier"]  # and MuTrainer, a transformers.Trainer, built on first use

_READOUT = r"lm_head|head|readout|embed_out|output_layer"
_QUERY = r"q|q_proj|query|wq|to_q"
_QKV = r"c_attn|qkv|qkv_proj|Wqkv|in_proj_weight|in_proj_bias"
_BLOCK = r"\d+"  # under a ModuleList index: blocks.3.…, transformer.h.3.…
_BRANCH_OUT = (r"\d+\.(attn|self_attn|attention|mlp|feed_forward)\.(proj|c_proj|o_proj|out_proj|down_proj|w2)"
               r"|hidden\.\d+")
_ATTN_ATTRS = ("scale", "scaling", "softmax_scale")
_KEYS = ("readout", "embedding", "query", "qkv", "hidden", "vector_like", "fixed")


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
        widths=_widths(width, round((t.ffn_ratio or 0) * width), (t.n_heads or 0) * (t.head_dim or 0)),
        eps_mult=eps_mult, block_lr_scale=depth.block_lr_scale, branch_mult=depth.branch_multiplier,
    )


def _optim_rule(optim: str, optim_args: str | None, wm: float) -> dict[str, Any]:
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
    optim = _optim_rule(str(a.get("optim", "adamw_torch")), a.get("optim_args"), wm)
    n_head = cfg.get("n_head") or cfg.get("num_attention_heads")
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
        attn_scale=cfg.get("mup_attn_scale"), head_dim=width // int(n_head) if n_head else None,
        query_zero=cfg.get("mup_query_init", "zeros") == "zeros",  # the export's rule; the hf files omit it
        widths=_widths(width, cfg.get("n_inner") or cfg.get("intermediate_size") or 4 * width),
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


# --------------------------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # hidden | vector_like | fixed
    role: str  # weight | embedding | readout | readout_bias | query | qkv | input | norm | bias
    module: Any
    param: Any
    out_dim: int  # the weight's output dimension (Conv1D: -1)
    in_block: bool
    tied: bool = False  # a readout sharing an embedding's weight: hooked, but no second optimizer entry


def _match(pattern: str | Iterable[str] | None, name: str) -> bool:
    pats = [] if pattern is None else [pattern] if isinstance(pattern, str) else list(pattern)
    return any(re.search(rf"(^|\.)(?:{p})(\.|$)", name) for p in pats)


def _scan(model: Any, rules: Rules, *, width_sizes: Iterable[int] = (), block: str | None = _BLOCK,
          **names: Any) -> list[_Param]:
    from torch import nn

    if set(names) - set(_KEYS):
        raise TypeError(f"unknown keyword {sorted(set(names) - set(_KEYS))[0]!r}: use one of {', '.join(_KEYS)}")
    widths, used = set(rules.widths) | set(width_sizes), set()

    def named(key: str, full: str, default: str | None = None) -> bool:
        if _match(names.get(key), full):
            used.add(key)
            return True
        return not names.get(key) and _match(default, full)

    out, seen = [], set()
    for mname, module in model.named_modules():
        out_dim, in_dim = (-1, 0) if type(module).__name__ == "Conv1D" else (0, 1)  # GPT-2's Conv1D: (in, out)
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if id(p) in seen:  # tied: its first owner (the embedding before lm_head) sets kind and init
                if named("readout", full, _READOUT):
                    out.append(_Param(full, "vector_like", "readout", module, p, out_dim, False, tied=True))
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
            out.append(_Param(full, kind, role, module, p, out_dim, bool(block) and _match(block, full)))
    for key in sorted(set(names) - used):
        if names[key]:
            raise RuntimeConfigError(f"{key}={names[key]!r} matches no parameter of the model: check the names "
                                     "in model.named_parameters()")
    return out


def classify(model: Any, config: Any, **kw: Any) -> dict[str, tuple[str, str]]:
    """{parameter name: (kind, role)}: what the runtime does to each parameter (see the module doc)."""
    return {q.name: (q.kind, q.role) for q in _scan(model, load_rules(config), **kw) if not q.tied}


# --------------------------------------------------------------------------------------------- optimizer


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
    for q in _scan(model, r, **kw):
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


# --------------------------------------------------------------------------------------------- init


def init_(model: Any, config: Any, **kw: Any) -> None:
    """µP init in place (see the module doc's roles). Draws in `model.named_modules()` order, as
    mutransfer.parametrization's init does: from the same seed the built-in GPT built without mup gets the µP proxy's
    tensors. A tied readout keeps its embedding's init."""
    import torch

    r = load_rules(config)
    with torch.no_grad():
        for q in _scan(model, r, **kw):
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


# --------------------------------------------------------------------------------------------- forward multipliers


def readout_multiplier(config: Any) -> float:
    """What the readout's input (its output, without a bias) is multiplied by: output_mult / width_mult."""
    r = load_rules(config)
    return r.output_mult / r.width_mult


def embedding_multiplier(config: Any) -> float:
    """What the embedding output is multiplied by: embed_mult, the same at every width."""
    return load_rules(config).embed_mult


def attention_scale(config: Any) -> float:
    """The softmax scale of q·k: attn_mult · sqrt(base_head_dim) / head_dim (1/d, not 1/sqrt(d))."""
    r = load_rules(config)
    if r.attn_scale is None:
        raise RuntimeConfigError("mup.rules.attention: the export has no attention (not a gpt): no attention scale")
    return float(r.attn_scale)


def branch_multiplier(config: Any) -> float:
    """What each residual branch's output is multiplied by under depth scaling: (L / L_base) ** -alpha, else 1."""
    return load_rules(config).branch_mult


def apply_multipliers(model: Any, config: Any, *, attention: str | None = None, attr: str | None = None,
                      branch_out: str | None = _BRANCH_OUT, **kw: Any) -> list[Any]:
    """Put µP's forward multipliers on the model; returns the hook handles (`handle.remove()` undoes one).

    - readout modules: a forward pre-hook multiplies their input by output_mult / width_mult, computed as
      mup.MuReadout does (`output_mult * x / width_mult`, the bias unscaled);
    - embedding modules: a forward hook multiplies their output by embed_mult (token + position embeddings,
      each times embed_mult, is their sum times it);
    - attention: sets `attr` (default: the first of scale, scaling, softmax_scale the module has) to
      `attention_scale(config)` on every module whose class name ends in "Attention" (or whose name matches the
      `attention` pattern). mutransfer's GPT reads `scale`, transformers' GPT-2 `scaling`. A model whose
      `F.scaled_dot_product_attention` call takes no scale can instead multiply its query by
      `attention_scale(config) * sqrt(head_dim)`: the same function, the same gradients;
    - depth scaling: a forward hook multiplies the output of each `branch_out` module by `branch_multiplier`.

    Example, transformers' GPT-2 from `mutransfer export --format hf -o hf`::

        model = GPT2LMHeadModel(GPT2Config(**json.load(open("hf/config.json"))))
        runtime.init_(model, "hf")
        runtime.apply_multipliers(model, "hf")  # lm_head's input x mup_readout_mult, wte and wpe outputs x
                                                # mup_embed_mult, every GPT2Attention.scaling = mup_attn_scale
        trainer = runtime.MuTrainer(model=model, args=TrainingArguments(**json.load(open("hf/training_args.json"))))
    """
    r = load_rules(config)
    params = _scan(model, r, **kw)
    om, wm, em, bm = r.output_mult, r.width_mult, r.embed_mult, r.branch_mult
    handles: list[Any] = []
    for q in {id(q.module): q for q in params if q.role in ("readout", "embedding") and q.param.dim() >= 2}.values():
        if q.role == "readout":
            handles.append(q.module.register_forward_pre_hook(lambda _m, a: (om * a[0] / wm, *a[1:])))
        elif em != 1.0:
            handles.append(q.module.register_forward_hook(lambda _m, _a, out: out * em))
    if r.attn_scale is not None:
        found = 0
        for name, m in model.named_modules():
            if not (_match(attention, name) if attention else type(m).__name__.endswith("Attention")):
                continue
            a = attr or next((x for x in _ATTN_ATTRS if hasattr(m, x)), None)
            if a is None:
                raise RuntimeConfigError(f"{name}: {type(m).__name__} has none of {', '.join(_ATTN_ATTRS)}: pass "
                                         "attr= (the attribute its softmax scale is read from)")
            hd = getattr(m, "head_dim", None)
            if isinstance(hd, int) and r.head_dim is not None and hd != r.head_dim:
                raise RuntimeConfigError(f"{name}: head_dim {hd}, the export's target has {r.head_dim}: build "
                                         "the model with the exported width and heads")
            setattr(m, a, float(r.attn_scale))
            found += 1
        if not found:
            raise RuntimeConfigError("attention: no module of the model is an *Attention class: pass attention= "
                                     "(a module name pattern) and attr=, or scale q·k by attention_scale(config)")
    if bm != 1.0:
        mods = [m for n, m in model.named_modules() if branch_out and _match(branch_out, n)]
        if not mods:
            raise RuntimeConfigError(f"branch_out: depth scaling multiplies each residual branch by {bm:g} and no "
                                     f"module matches {branch_out!r}: pass branch_out= (the branches' last layers)")
        handles += [m.register_forward_hook(lambda _m, _a, out: out * bm) for m in mods]
    return handles


def prepare(model: Any, config: Any, **kw: Any) -> list[Any]:
    """`init_` then `apply_multipliers`: the model as µP has it at the target width. Returns the hook handles."""
    hooks = {k: kw.pop(k) for k in ("attention", "attr", "branch_out") if k in kw}
    init_(model, config, **kw)
    return apply_multipliers(model, config, **hooks, **kw)


# --------------------------------------------------------------------------------------------- Hugging Face


def hf_optimizer(model: Any, hf: Any = None, **kw: Any) -> Any:
    """The µP optimizer of a transformers model from the export's hf files (`mutransfer export --format hf -o DIR`:
    DIR, the JSON that command prints without -o, or the `hf_files` dict), or, with `hf` None, from the
    `mup_*` keys of `model.config` (a config made from that config.json; learning rate, weight decay and eps
    then come from `kw` or the mup_* values). `kw`: lr, weight_decay, eps, betas and the classification keywords."""
    return make_optimizer(model, load_rules(model.config if hf is None else hf), **kw)


def _mu_trainer() -> type:
    from transformers import Trainer

    class MuTrainer(Trainer):  # type: ignore[misc, valid-type]
        """transformers.Trainer whose optimizer has µP's param groups: the learning rate, weight decay, epsilon,
        betas and optim (adamw_* or sgd, with optim_args momentum=) from its TrainingArguments, the µP rules from
        `mup_config` (hf files) or else the `mup_*` keys of the model's config. The schedulers keep each group's
        LR ratio. `mup_names`: the classification keywords (see the module doc)."""

        def __init__(self, *args: Any, mup_config: Any = None, mup_names: dict[str, Any] | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mup_config, self.mup_names = mup_config, dict(mup_names or {})

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                m, a = self.model if model is None else model, self.args
                rules = load_rules(m.config if self.mup_config is None else self.mup_config)
                optim = _optim_rule(str(getattr(a.optim, "value", a.optim)), a.optim_args, rules.width_mult)
                self.optimizer = make_optimizer(
                    m, replace(rules, **optim), lr=a.learning_rate, weight_decay=a.weight_decay, eps=a.adam_epsilon,
                    betas=(a.adam_beta1, a.adam_beta2), **self.mup_names)
            return self.optimizer

    return MuTrainer


def __getattr__(name: str) -> Any:
    if name == "MuTrainer":  # built on first use: importing this module does not import transformers
        globals()["MuTrainer"] = cls = _mu_trainer()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
