"""What every launcher format shares: the target read (and checked) once from an export, its provenance lines, and
the keys nanoGPT's train.py and its forks read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mutransfer.document import AGAIN, AttentionRule, DepthSection, ExportDocument, MupSection
from mutransfer.errors import MutransferError, option
from mutransfer.gpt_shape import missing_options, refusal
from mutransfer.recipe import BUILTIN_FAMILIES

# Launcher key -> the exported hyperparameter its value comes from (for the provenance of each value).
_SOURCES = {
    "learning_rate": "lr", "min_lr": "lr", "weight_decay": "weight_decay", "adam_epsilon": "adam_eps",
    "mup_init_std": "init_std", "mup_output_mult": "output_mult", "mup_embed_mult": "embed_mult",
    "mup_attn_mult": "attn_mult", "init_std": "init_std", "mup_input_alpha": "embed_mult",
    "mup_output_alpha": "output_mult",
}

Config = dict[str, Any] | ExportDocument  # what a renderer takes: export_config's dict (or a file's), or its document


class LauncherError(MutransferError, ValueError):
    """An export that cannot be written in a format: one line naming the field."""


def document(config: Config) -> ExportDocument:
    """The export's document, checked once (mutransfer.document): a LauncherError naming the field otherwise."""
    return ExportDocument.from_config(config, LauncherError)


@dataclass(frozen=True)
class Target:
    """What every launcher needs, read (and checked) once from an export."""

    name: str
    family: str  # gpt, hf-llama, or a user's builder that declares its GPT shape (mutransfer.gpt_shape)
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
    mup: MupSection | None
    base_width: int
    output_mult: float
    embed_mult: float
    attn_mult: float
    depth_rule: DepthSection  # the export's model.depth (mutransfer.conventions.depth_section)
    tie_embeddings: bool = False  # the readout is the token embedding's weight (the export's model.tie_embeddings)

    @property
    def attention(self) -> AttentionRule:
        """The µP attention rule (`resolve_target` checks a µP export has it)."""
        assert self.mup is not None and self.mup.rules.attention is not None
        return self.mup.rules.attention

    @property
    def depth_scaled(self) -> bool:
        """Whether the proxies had a depth rule (model.depth_scaling depth-mup or completep, with a base depth)."""
        d = self.depth_rule
        return d.scaling != "none" and d.base_depth is not None

    @property
    def eps_mult(self) -> float:
        """The factor on Adam's epsilon of every parameter at the target (mutransfer.parametrization.BuildConfig.eps_mult)."""
        d = self.depth_rule
        if d.eps_scaling == "none":
            return 1.0
        return (self.base_width / self.width) * d.depth_mult ** -d.alpha


def _missing(path: str) -> LauncherError:
    return LauncherError(f"{path}: missing from the export ({AGAIN})")


def _micro_batch(batch_size: int, nproc: int, micro: int | None) -> int:
    if micro is not None:
        return micro
    per_proc = batch_size // nproc
    # The largest divisor of the per-process batch up to 16: memory-safe default, exact global batch.
    return max(d for d in range(1, min(16, per_proc) + 1) if per_proc % d == 0)


# The launcher formats that describe a Llama (transformers' LlamaConfig); the others write a GPT-2-shaped model.
LLAMA_FORMATS = ("hf",)


def format_problem(fmt: str, family: str) -> str | None:
    """Why launcher format `fmt` cannot describe a model of the built-in `family`, or None."""
    if family == "hf-llama" and fmt not in LLAMA_FORMATS:
        return (f"the {fmt} format writes a GPT-2-shaped model (LayerNorm, GELU MLP, learned positions), not the "
                f"hf-llama family's Llama (RMSNorm, SwiGLU, rotary embeddings, grouped-query attention): use "
                f"{', '.join(LLAMA_FORMATS)}, yaml or json")
    return None


def _gpt(doc: ExportDocument, fmt: str) -> tuple[int, int, float]:
    """(n_heads, head_dim, ffn_ratio) at the target, or why the format cannot describe this model."""
    family, t = doc.model.family, doc.target
    if family == "mlp":
        raise LauncherError(f"model.family: the {fmt} format describes a GPT; this sweep's model is {family!r} "
                            "(use --format yaml or json)")
    problem = format_problem(fmt, family)
    if problem is not None:
        raise LauncherError(f"model.family: {problem}")
    dims = {"n_heads": t.n_heads, "head_dim": t.head_dim, "ffn_ratio": t.ffn_ratio}
    if family not in BUILTIN_FAMILIES and None in dims.values():
        missing = missing_options(doc.model.options)  # a user's builder: its model.options (mutransfer.gpt_shape)
        if missing:
            raise LauncherError(refusal(fmt, family, missing))
    for key, value in dims.items():
        if value is None:
            raise _missing(f"target.{key}")
    if doc.mup is not None and doc.mup.rules.attention is None:
        raise _missing("mup.rules.attention")
    return t.n_heads, t.head_dim, t.ffn_ratio  # type: ignore[return-value]


def resolve_target(config: Config, fmt: str, *, nproc: int = 1, micro_batch_size: int | None = None,
            need_steps: bool = True) -> Target:
    doc = document(config)
    n_heads, head_dim, ffn_ratio = _gpt(doc, fmt)
    if nproc < 1:
        raise LauncherError(f"{option('nproc')}: {nproc} is not a process count (1 or more)")
    t, m, opt, sched = doc.target, doc.model, doc.optimizer, doc.schedule
    batch = t.batch_size
    if batch % nproc:
        raise LauncherError(f"{option('nproc')}: the target batch size {batch} is not a multiple of {nproc} processes")
    micro = _micro_batch(batch, nproc, micro_batch_size)
    if micro < 1 or batch % (micro * nproc):
        raise LauncherError(f"{option('micro_batch_size')}: {micro} x {nproc} processes does not divide the target batch "
                            f"size {batch}")
    steps = sched.target_steps
    if need_steps and steps is None:
        raise LauncherError("target.tokens: the recipe gives no training tokens for the target, so its number of "
                            f"steps is unknown and the {fmt} format needs it: add target.tokens to the recipe")
    kind = sched.kind
    min_frac = sched.min_lr_frac if kind in ("cosine", "linear") else 1.0
    hp_std = doc.hyperparameters.get("init_std")
    init_std = m.multipliers.init_std if "init_std" in m.multipliers.model_fields_set or hp_std is None \
        else hp_std.value
    vocab = t.vocab_size if t.vocab_size is not None else m.vocab_size
    warmup = sched.target_warmup_steps if sched.target_warmup_steps is not None else sched.warmup_steps
    return Target(
        name=doc.provenance.sweep.name,
        family=m.family,
        width=t.width,
        depth=t.depth,
        n_heads=n_heads,
        head_dim=head_dim,
        d_ffn=max(1, round(ffn_ratio * t.width)),
        seq_len=t.seq_len,
        vocab_size=vocab,
        batch_size=batch,
        micro_batch_size=micro,
        grad_accum=batch // micro,  # a multiple of nproc (checked above): nanoGPT's train.py splits it
        nproc=nproc,
        steps=steps,
        # mutransfer's constant schedule ignores warmup_steps (mutransfer.train.lr_factor): so does the target's.
        warmup_steps=0 if kind == "constant" else warmup,
        tokens=t.tokens,
        schedule=kind,
        lr=opt.lr,
        min_lr=opt.lr * min_frac,
        weight_decay=opt.weight_decay or 0.0,
        optimizer=opt.name,
        betas=tuple(opt.betas or (0.9, 0.95)),  # type: ignore[arg-type]
        eps=opt.eps or 1e-8,
        momentum=opt.momentum,
        grad_clip=opt.grad_clip,
        init_std=float(init_std) if init_std is not None else None,
        mup=doc.mup,
        base_width=m.base_width or t.width,
        output_mult=m.multipliers.output_mult,
        embed_mult=m.multipliers.embed_mult,
        attn_mult=m.multipliers.attn_mult,
        depth_rule=m.depth,
        tie_embeddings=m.tie_embeddings,
    )


# --------------------------------------------------------------------------------------------- provenance


def provenance(config: Config) -> dict[str, Any]:
    """Sweep, recipe hash, where each tuned value came from, and the compute share: the same in every format."""
    doc = document(config)
    prov = doc.provenance
    values: dict[str, Any] = {}
    for name, entry in doc.hyperparameters.items():
        src = entry.source
        item: dict[str, Any] = {"value": entry.value, "source": "transferred" if src == "fit" else src}
        if src == "fit" and entry.interval is not None:
            item["interval"] = entry.interval
        values[name] = item
    out: dict[str, Any] = {
        "sweep": prov.sweep.model_dump(),
        "recipe_name": prov.recipe_name,
        "recipe_hash": prov.recipe_hash,
        "created": prov.created,
        "mutransfer_version": prov.mutransfer_version,
        "parametrization": doc.parametrization,
        "hyperparameters": values,
        "warnings": list(dict.fromkeys(w.get("code") for w in doc.warnings)),
    }
    if doc.compute is not None:
        out["compute"] = {k: doc.compute.get(k) for k in ("sweep_flops", "target_flops", "share", "note")}
    return out


def comment_lines(config: Config, keys: dict[str, Any], prefix: str = "# ") -> list[str]:
    doc = document(config)
    p = provenance(doc)
    sweep = p["sweep"]
    lines = [
        f"Generated by mutransfer {p['mutransfer_version']} from sweep {sweep['name']!r} (id {sweep['id']}), "
        f"recipe {p['recipe_name']!r} hash {p['recipe_hash']}, {p['parametrization']}, {p['created']}.",
    ]
    if doc.model.family not in BUILTIN_FAMILIES:
        lines.append(builder_note(doc.model.family))
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


def builder_note(family: str) -> str:
    return (f"The proxies were built by your builder {family!r}: heads and FFN width below are what it declares in "
            "model.options; check that the launcher's model matches the rest of it (activation, norms, biases, "
            "positions, tied embeddings).")


def mup_notes(tg: Target, launcher: str = "This launcher") -> list[str]:
    """For a launcher that applies none of µP's rules: what the tuned model needs that it does not do."""
    if tg.mup is None:
        return ["Standard parametrization (SP): use the values as they are.", *depth_note(tg, launcher)]
    m = tg.mup
    att = m.rules.attention
    return [
        f"µP: width_mult = {m.width_mult:g} (base width {m.base_width}). {launcher} applies none of µP's "
        "rules itself: it gives learning_rate to every parameter, which is NOT the tuned model.",
        f"µP needs: hidden-matrix LR learning_rate x {m.rules.hidden.lr_scale:.6g}, "
        f"{'the readout tied to the token embedding (its init and LR)' if tg.tie_embeddings else 'readout zero-init'} "
        f"with logits x {m.rules.readout.output_multiplier:.6g}, attention scale "
        f"{att.scale if att is not None else float('nan'):.6g} (1/d); the mup_* keys or the YAML "
        "export's mup section give a µP-aware script all of it.",
        *depth_note(tg, launcher),
    ]


def nanogpt_tying_note(tg: Target, launcher: str = "nanoGPT") -> list[str]:
    """nanoGPT's model.py ties lm_head to wte with no option to untie: a note for an untied export, none for a tied
    one (the proxies had nanoGPT's tying)."""
    if tg.tie_embeddings:
        return []
    zero = " and zero lm_head.weight (the proxies' µP readout started at zero)" if tg.mup is not None else ""
    return [f"{launcher} ties lm_head to wte always (model.py's `self.transformer.wte.weight = self.lm_head.weight`, "
            f"no config key); the proxies' readout was separate (model.tie_embeddings: false): for the tuned model "
            f"delete that line{zero}."]


def depth_note(tg: Target, launcher: str) -> list[str]:
    if not tg.depth_scaled:
        return []
    d = tg.depth_rule
    return [f"Depth rule {d.scaling} (base depth {d.base_depth}): residual branches x "
            f"{d.branch_multiplier:.6g} and block LR x {d.block_lr_scale:.6g} at depth {tg.depth}; "
            f"{launcher} does not apply them either (the YAML export's model.depth has them)."]


def nanogpt_keys(tg: Target) -> dict[str, Any]:
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


def schedule_note(tg: Target, launcher: str) -> str | None:
    if tg.schedule == "linear":
        return f"The recipe's schedule is linear decay; {launcher} decays by a cosine to min_lr instead."
    return None


def mup_extras(tg: Target, config: Config) -> dict[str, Any]:
    m = tg.mup
    if m is None:
        return {"mup_enabled": False}
    rules = m.rules
    out: dict[str, Any] = {
        # Not `mup`: a µP-aware train.py may `import mup`, and a config file exec'd into its globals would shadow it.
        "mup_enabled": True,
        "mup_base_width": m.base_width,
        "mup_width_mult": m.width_mult,
        "mup_output_mult": tg.output_mult,
        "mup_embed_mult": tg.embed_mult,
        "mup_attn_mult": tg.attn_mult,
        "mup_init_std": tg.init_std,
        "mup_readout_mult": rules.readout.output_multiplier,
        "mup_hidden_lr": rules.hidden.lr,
        "mup_hidden_weight_decay": rules.hidden.weight_decay,
        "mup_hidden_init_std": rules.hidden.init_std,
    }
    if rules.attention is not None:
        out["mup_attn_scale"] = rules.attention.scale
    # The factors the per-kind rules above leave out (Adam's epsilon under eps_scaling, depth's block LR and branch
    # multiplier, the query's zero init), as mutransfer.runtime reads them back from a Hugging Face config.
    from mutransfer.runtime import load_rules

    r = load_rules(document(config))
    out.update({"mup_eps_mult": r.eps_mult, "mup_block_lr_scale": r.block_lr_scale,
                "mup_branch_mult": r.branch_mult, "mup_query_init": "zeros" if r.query_zero else "normal"})
    if m.param_groups:
        out["mup_param_groups"] = [
            {k: getattr(g, k) for k in ("name", "kind", "lr", "weight_decay", "init", "init_std", "forward_mult")}
            for g in m.param_groups
        ]
    return out


