"""What every launcher format shares: the target read (and checked) once from an export, its provenance lines, and
the keys nanoGPT's train.py and its forks read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Launcher key -> the exported hyperparameter its value comes from (for the provenance of each value).
_SOURCES = {
    "learning_rate": "lr", "min_lr": "lr", "weight_decay": "weight_decay", "adam_epsilon": "adam_eps",
    "mup_init_std": "init_std", "mup_output_mult": "output_mult", "mup_embed_mult": "embed_mult",
    "mup_attn_mult": "attn_mult", "init_std": "init_std", "mup_input_alpha": "embed_mult",
    "mup_output_alpha": "output_mult",
}


class LauncherError(ValueError):
    """An export that cannot be written in a format: one line naming the field."""


@dataclass(frozen=True)
class _Target:
    """What every launcher needs, read (and checked) once from an export."""

    name: str
    width: int
    depth: int
    n_heads: int
    head_dim: int
    d_ffn: int
    seq_len: int
    vocab_size: int | None
    batch_size: int  # global, in sequences
    micro_batch_size: int
    grad_accum: int  # global: micro-batches per optimizer step over all processes
    nproc: int
    steps: int | None
    warmup_steps: int
    tokens: int | None
    schedule: str
    lr: float
    min_lr: float
    weight_decay: float
    optimizer: str
    betas: tuple[float, float]
    eps: float
    momentum: float | None
    grad_clip: float | None
    init_std: float | None
    mup: dict[str, Any] | None
    base_width: int
    output_mult: float
    embed_mult: float
    attn_mult: float
    depth_rule: dict[str, Any]  # the export's model.depth (mutransfer.conventions.depth_section)

    @property
    def depth_scaled(self) -> bool:
        """Whether the proxies had a depth rule (model.depth_scaling depth-mup or completep, with a base depth)."""
        d = self.depth_rule
        return d.get("scaling", "none") != "none" and d.get("base_depth") is not None

    @property
    def eps_mult(self) -> float:
        """The factor on Adam's epsilon of every parameter at the target (mutransfer.proxy.BuildConfig.eps_mult)."""
        d = self.depth_rule
        if d.get("eps_scaling", "none") == "none":
            return 1.0
        return (self.base_width / self.width) * float(d.get("depth_mult", 1.0)) ** -float(d.get("alpha", 0.0))


def _float(x: Any, default: float) -> float:
    return default if x is None else float(x)


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise LauncherError(f"{path}: missing from the export (export it again with this mutransfer)")
        node = node[part]
    return node


def _micro_batch(batch_size: int, nproc: int, micro: int | None) -> int:
    if micro is not None:
        return micro
    per_proc = batch_size // nproc
    # The largest divisor of the per-process batch up to 16: memory-safe default, exact global batch.
    return max(d for d in range(1, min(16, per_proc) + 1) if per_proc % d == 0)


def _target(config: dict[str, Any], fmt: str, *, nproc: int = 1, micro_batch_size: int | None = None,
            need_steps: bool = True) -> _Target:
    family = _get(config, "model.family")
    if family != "gpt":
        raise LauncherError(f"model.family: the {fmt} format describes a GPT; this sweep's model is {family!r} "
                            "(use --format yaml or json)")
    if nproc < 1:
        raise LauncherError(f"--nproc-per-node: {nproc} is not a process count (1 or more)")
    t, opt, sched = _get(config, "target"), _get(config, "optimizer"), _get(config, "schedule")
    batch = int(_get(config, "target.batch_size"))
    if batch % nproc:
        raise LauncherError(f"--nproc-per-node: the target batch size {batch} is not a multiple of {nproc} processes")
    micro = _micro_batch(batch, nproc, micro_batch_size)
    if micro < 1 or batch % (micro * nproc):
        raise LauncherError(f"--micro-batch-size: {micro} x {nproc} processes does not divide the target batch "
                            f"size {batch}")
    steps = sched.get("target_steps")
    if need_steps and steps is None:
        raise LauncherError("target.tokens: the recipe gives no training tokens for the target, so its number of "
                            f"steps is unknown and the {fmt} format needs it: add target.tokens to the recipe")
    lr = float(_get(config, "optimizer.lr"))
    kind = str(sched.get("kind", "constant"))
    min_frac = float(sched.get("min_lr_frac", 0.0)) if kind in ("cosine", "linear") else 1.0
    mult = config.get("model", {}).get("multipliers", {})
    init_std = mult.get("init_std", config.get("hyperparameters", {}).get("init_std", {}).get("value"))
    width = int(_get(config, "target.width"))
    vocab = t.get("vocab_size", config["model"].get("vocab_size"))
    return _Target(
        name=str(_get(config, "provenance.sweep.name")),
        width=width,
        depth=int(_get(config, "target.depth")),
        n_heads=int(_get(config, "target.n_heads")),
        head_dim=int(_get(config, "target.head_dim")),
        d_ffn=max(1, round(float(_get(config, "target.ffn_ratio")) * width)),
        seq_len=int(_get(config, "target.seq_len")),
        vocab_size=int(vocab) if vocab is not None else None,
        batch_size=batch,
        micro_batch_size=micro,
        grad_accum=batch // micro,
        nproc=nproc,
        steps=int(steps) if steps is not None else None,
        # mutransfer's constant schedule ignores warmup_steps (mutransfer.train.lr_factor): so does the target's.
        warmup_steps=0 if kind == "constant" else int(sched.get("target_warmup_steps", sched.get("warmup_steps", 0))),
        tokens=t.get("tokens"),
        schedule=kind,
        lr=lr,
        min_lr=lr * min_frac,
        weight_decay=float(opt.get("weight_decay") or 0.0),
        optimizer=str(opt.get("name", "adamw")),
        betas=tuple(opt.get("betas") or (0.9, 0.95)),  # type: ignore[arg-type]
        eps=float(opt.get("eps") or 1e-8),
        momentum=opt.get("momentum"),
        grad_clip=opt.get("grad_clip"),
        init_std=float(init_std) if init_std is not None else None,
        mup=config.get("mup"),
        base_width=int(config["model"].get("base_width") or width),
        output_mult=_float(mult.get("output_mult"), 1.0),
        embed_mult=_float(mult.get("embed_mult"), 1.0),
        attn_mult=_float(mult.get("attn_mult"), 1.0),
        depth_rule=dict(config["model"].get("depth") or {}),
    )


# --------------------------------------------------------------------------------------------- provenance


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Sweep, recipe hash, where each tuned value came from, and the compute share: the same in every format."""
    prov = config.get("provenance", {})
    values: dict[str, Any] = {}
    for name, entry in config.get("hyperparameters", {}).items():
        src = entry.get("source", "recipe")
        item: dict[str, Any] = {"value": entry.get("value"),
                                "source": "transferred" if src == "fit" else src}
        if src == "fit" and entry.get("interval") is not None:
            item["interval"] = entry["interval"]
        values[name] = item
    out: dict[str, Any] = {
        "sweep": prov.get("sweep"),
        "recipe_name": prov.get("recipe_name"),
        "recipe_hash": prov.get("recipe_hash"),
        "created": prov.get("created"),
        "mutransfer_version": prov.get("mutransfer_version"),
        "parametrization": config.get("parametrization"),
        "hyperparameters": values,
        "warnings": list(dict.fromkeys(w.get("code") for w in config.get("warnings", []))),
    }
    compute = config.get("compute")
    if compute is not None:
        out["compute"] = {k: compute.get(k) for k in ("sweep_flops", "target_flops", "share", "note")}
    return out


def _comment_lines(config: dict[str, Any], keys: dict[str, Any], prefix: str = "# ") -> list[str]:
    p = provenance(config)
    sweep = p["sweep"] or {}
    lines = [
        f"Generated by mutransfer {p['mutransfer_version']} from sweep {sweep.get('name')!r} (id {sweep.get('id')}), "
        f"recipe {p['recipe_name']!r} hash {p['recipe_hash']}, {p['parametrization']}, {p['created']}.",
    ]
    for key, value in keys.items():
        name = _SOURCES.get(key)
        hp = p["hyperparameters"].get(name) if name else None
        if hp is None:
            continue
        what = "transferred by the fit" if hp["source"] == "transferred" else f"from the {hp['source']}"
        if key == "min_lr":
            what = f"learning_rate x min_lr_frac ({what})"
        interval = hp.get("interval")
        span = f", 95% interval [{_num(interval[0])}, {_num(interval[1])}]" if interval and None not in interval \
            else ""
        lines.append(f"{key} = {_num(value)}: {what}{span}")
    compute = p.get("compute")
    if compute:
        if compute.get("share") is not None:
            lines.append(f"The sweep cost {100 * compute['share']:.3g}% of the target's training compute "
                         f"(6·N·D = {compute['target_flops']:.3g} FLOPs).")
        else:
            lines.append(f"Compute share unknown: {compute.get('note')}")
    if p["warnings"]:
        lines.append(f"Fit warnings: {', '.join(p['warnings'])} (see the YAML export).")
    return [prefix + line for line in lines]


def _num(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _mup_notes(tg: _Target, launcher: str = "This launcher") -> list[str]:
    """For a launcher that applies none of µP's rules: what the tuned model needs that it does not do."""
    if tg.mup is None:
        return ["Standard parametrization (SP): use the values as they are.", *_depth_note(tg, launcher)]
    m = tg.mup
    return [
        f"µP: width_mult = {m['width_mult']:g} (base width {m['base_width']}). {launcher} applies none of µP's "
        "rules itself: it gives learning_rate to every parameter, which is NOT the tuned model.",
        f"µP needs: hidden-matrix LR learning_rate x {m['rules']['hidden']['lr_scale']:.6g}, readout zero-init "
        f"with logits x {m['rules']['readout']['output_multiplier']:.6g}, attention scale "
        f"{m['rules'].get('attention', {}).get('scale', float('nan')):.6g} (1/d); the mup_* keys or the YAML "
        "export's mup section give a µP-aware script all of it.",
        *_depth_note(tg, launcher),
    ]


def _depth_note(tg: _Target, launcher: str) -> list[str]:
    if not tg.depth_scaled:
        return []
    d = tg.depth_rule
    return [f"Depth rule {d['scaling']} (base depth {d['base_depth']}): residual branches x "
            f"{float(d['branch_multiplier']):.6g} and block LR x {float(d['block_lr_scale']):.6g} at depth {tg.depth}; "
            f"{launcher} does not apply them either (the YAML export's model.depth has them)."]


def _nanogpt_keys(tg: _Target) -> dict[str, Any]:
    """nanoGPT train.py's own config keys (types as its defaults: configurator.py checks them)."""
    if tg.steps is None:
        raise AssertionError("nanoGPT keys need the target's steps")
    return {
        "n_layer": tg.depth,
        "n_head": tg.n_heads,
        "n_embd": tg.width,
        "block_size": tg.seq_len,
        "bias": False,  # the proxies' Linear layers have no biases
        "dropout": 0.0,
        "batch_size": tg.micro_batch_size,
        "gradient_accumulation_steps": tg.grad_accum,
        "learning_rate": tg.lr,
        "max_iters": tg.steps,
        "weight_decay": tg.weight_decay,
        "beta1": float(tg.betas[0]),
        "beta2": float(tg.betas[1]),
        "grad_clip": float(tg.grad_clip) if tg.grad_clip is not None else 0.0,  # nanoGPT: 0.0 disables clipping
        # nanoGPT's get_lr: linear warmup, then a cosine from learning_rate to min_lr; with min_lr = learning_rate
        # (the `warmup` schedule) that is warmup then constant, exactly.
        "decay_lr": tg.schedule != "constant",
        "warmup_iters": tg.warmup_steps,
        "lr_decay_iters": tg.steps,
        "min_lr": tg.min_lr,
    }


def _schedule_note(tg: _Target, launcher: str) -> str | None:
    if tg.schedule == "linear":
        return f"The recipe's schedule is linear decay; {launcher} decays by a cosine to min_lr instead."
    return None


def _mup_extras(tg: _Target, config: dict[str, Any]) -> dict[str, Any]:
    mult = config.get("model", {}).get("multipliers", {})
    m = tg.mup
    if m is None:
        return {"mup_enabled": False}
    rules = m["rules"]
    out: dict[str, Any] = {
        # Not `mup`: a µP-aware train.py may `import mup`, and a config file exec'd into its globals would shadow it.
        "mup_enabled": True,
        "mup_base_width": int(m["base_width"]),
        "mup_width_mult": float(m["width_mult"]),
        "mup_output_mult": float(mult.get("output_mult", 1.0)),
        "mup_embed_mult": float(mult.get("embed_mult", 1.0)),
        "mup_attn_mult": float(mult.get("attn_mult", 1.0)),
        "mup_init_std": tg.init_std,
        "mup_readout_mult": float(rules["readout"]["output_multiplier"]),
        "mup_hidden_lr": float(rules["hidden"]["lr"]),
        "mup_hidden_weight_decay": float(rules["hidden"]["weight_decay"]),
        "mup_hidden_init_std": rules["hidden"]["init_std"],
    }
    if "attention" in rules:
        out["mup_attn_scale"] = float(rules["attention"]["scale"])
    # The factors the per-kind rules above leave out (Adam's epsilon under eps_scaling, depth's block LR and branch
    # multiplier, the query's zero init), as mutransfer.runtime reads them back from a Hugging Face config.
    from mutransfer.runtime import load_rules

    r = load_rules(config)
    out.update({"mup_eps_mult": r.eps_mult, "mup_block_lr_scale": r.block_lr_scale,
                "mup_branch_mult": r.branch_mult, "mup_query_init": "zeros" if r.query_zero else "normal"})
    if m.get("param_groups"):
        out["mup_param_groups"] = [
            {k: g.get(k) for k in ("name", "kind", "lr", "weight_decay", "init", "init_std", "forward_mult")}
            for g in m["param_groups"]
        ]
    return out


