"""The exported target config in the formats launchers read: nanoGPT, Hugging Face, torchrun, LitGPT, Megatron-LM.

Every renderer reads the dict `mutransfer.export.export_config` returns (or a YAML/JSON export file loaded back),
so all formats share one source of truth. Each states its provenance: the sweep, the recipe hash, where each
tuned value came from (transferred by the fit, with its interval, or the recipe's) and the compute share.

The launcher formats describe a GPT (a decoder with `n_embd`, `n_layer`, `n_head`): a sweep of another family
is refused with a `LauncherError` naming `model.family`. None of these launchers applies µP by itself: the µP
values a µP-aware training script needs (base width, multipliers, per-group learning rates) travel as `mup_*`
extras where the format allows unknown keys (nanoGPT's config file, a Hugging Face config.json) and as comments
elsewhere; the `mup` section of the YAML/JSON export has the full rules.
"""

from __future__ import annotations

import json
import pprint
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from mutransfer.export import render

__all__ = ["FORMATS", "LAUNCHER_FORMATS", "LauncherError", "hf_files", "provenance", "render_format"]

LAUNCHER_FORMATS = ("nanogpt", "hf", "torchrun", "litgpt", "megatron")
FORMATS = ("yaml", "json", *LAUNCHER_FORMATS)
# Launcher key -> the exported hyperparameter its value comes from (for the provenance of each value).
_SOURCES = {
    "learning_rate": "lr", "min_lr": "lr", "weight_decay": "weight_decay", "adam_epsilon": "adam_eps",
    "mup_init_std": "init_std", "mup_output_mult": "output_mult", "mup_embed_mult": "embed_mult",
    "mup_attn_mult": "attn_mult",
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


def _mup_notes(tg: _Target) -> list[str]:
    if tg.mup is None:
        return ["Standard parametrization (SP): use the values as they are."]
    m = tg.mup
    return [
        f"µP: width_mult = {m['width_mult']:g} (base width {m['base_width']}). A launcher without µP applies "
        "learning_rate to every parameter: that is NOT the tuned model.",
        f"µP needs: hidden-matrix LR learning_rate x {m['rules']['hidden']['lr_scale']:.6g}, readout zero-init "
        f"with logits x {m['rules']['readout']['output_multiplier']:.6g}, attention scale "
        f"{m['rules'].get('attention', {}).get('scale', float('nan')):.6g} (1/d); the mup_* keys or the YAML "
        "export's mup section give a µP-aware script all of it.",
    ]


# --------------------------------------------------------------------------------------------- nanoGPT


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
    if m.get("param_groups"):
        out["mup_param_groups"] = [
            {k: g.get(k) for k in ("name", "kind", "lr", "weight_decay", "init", "init_std", "forward_mult")}
            for g in m["param_groups"]
        ]
    return out


def nanogpt(config: dict[str, Any], *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """A config file for nanoGPT: `python train.py this.py` (configurator.py exec's it)."""
    tg = _target(config, "nanogpt", nproc=nproc, micro_batch_size=micro_batch_size)
    keys = _nanogpt_keys(tg)
    if tg.vocab_size is not None:
        keys["vocab_size"] = tg.vocab_size  # nanoGPT reads it from meta.pkl; stated for a script that wants it
    keys.update(_mup_extras(tg, config))
    head = _comment_lines(config, keys)
    head += ["# " + x for x in _mup_notes(tg)]
    note = _schedule_note(tg, "nanoGPT")
    if note:
        head.append("# " + note)
    head.append(f"# Global batch: {tg.batch_size} sequences of {tg.seq_len} tokens = batch_size x "
                "gradient_accumulation_steps (nanoGPT divides the accumulation by the number of processes).")
    body = [f"{k} = {v!r}" for k, v in keys.items()]
    body.append("mutransfer_provenance = " + pprint.pformat(provenance(config), width=110, sort_dicts=False))
    return "\n".join([*head, "", *body]) + "\n"


# --------------------------------------------------------------------------------------------- Hugging Face


def _hf_scheduler(tg: _Target) -> tuple[str, dict[str, Any] | None]:
    if tg.schedule == "cosine":
        return "cosine_with_min_lr", {"min_lr": tg.min_lr}
    if tg.schedule == "linear":
        return "linear", None  # Hugging Face's linear decays to 0, not to min_lr (see the note)
    if tg.schedule == "warmup":
        return "constant_with_warmup", None
    return "constant", None


def hf_files(config: dict[str, Any], *, nproc: int = 1, micro_batch_size: int | None = None) -> dict[str, Any]:
    """{"training_args.json": TrainingArguments kwargs, "config.json": a GPT-2 model config}."""
    tg = _target(config, "hf", nproc=nproc, micro_batch_size=micro_batch_size)
    if tg.vocab_size is None:
        raise LauncherError("model.vocab_size: unknown in this export, and a Hugging Face model config needs it "
                            "(export it again with this mutransfer)")
    sched, sched_kwargs = _hf_scheduler(tg)
    optim = {"adamw": "adamw_torch", "adam": "adamw_torch", "sgd": "sgd"}[tg.optimizer]
    args: dict[str, Any] = {
        "output_dir": f"out-{tg.name}",
        "run_name": tg.name,
        "max_steps": tg.steps,
        "per_device_train_batch_size": tg.micro_batch_size,
        "gradient_accumulation_steps": tg.grad_accum // tg.nproc,  # per process: HF multiplies by the world size
        "learning_rate": tg.lr,
        "weight_decay": tg.weight_decay,
        "adam_beta1": float(tg.betas[0]),
        "adam_beta2": float(tg.betas[1]),
        "adam_epsilon": tg.eps,
        "max_grad_norm": float(tg.grad_clip) if tg.grad_clip is not None else 0.0,
        "lr_scheduler_type": sched,
        "warmup_steps": tg.warmup_steps,
        "optim": optim,
    }
    if sched_kwargs:
        args["lr_scheduler_kwargs"] = sched_kwargs
    if tg.optimizer == "sgd" and tg.momentum is not None:
        args["optim_args"] = f"momentum={tg.momentum}"
    model: dict[str, Any] = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": tg.width,
        "n_layer": tg.depth,
        "n_head": tg.n_heads,
        "n_inner": tg.d_ffn,
        "n_positions": tg.seq_len,
        "vocab_size": tg.vocab_size,
        "activation_function": "gelu",  # the proxies' exact GELU
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": False,  # the proxies' readout is separate from the embedding
        "bos_token_id": None,
        "eos_token_id": None,
    }
    if tg.init_std is not None:
        model["initializer_range"] = tg.init_std
    model.update(_mup_extras(tg, config))
    notes = [*_mup_notes(tg)]
    if tg.optimizer == "adam" and tg.weight_decay:
        notes.append("The recipe's optimizer is Adam (L2 weight decay); adamw_torch decouples it.")
    if tg.schedule == "linear":
        notes.append("Hugging Face's linear schedule decays to 0, not to min_lr.")
    model["mutransfer_provenance"] = {**provenance(config), "notes": notes}
    return {"training_args.json": args, "config.json": model}


# --------------------------------------------------------------------------------------------- torchrun


def torchrun(config: dict[str, Any], *, nproc: int = 1, micro_batch_size: int | None = None,
             script: str = "train.py") -> str:
    """`torchrun ... train.py --key=value ...` for nanoGPT's train.py (configurator.py overrides; argparse reads
    `--key=value` too). Only nanoGPT's own keys: it refuses unknown ones, so the µP extras are comments here."""
    tg = _target(config, "torchrun", nproc=nproc, micro_batch_size=micro_batch_size)
    if tg.grad_accum % nproc:
        raise LauncherError(f"--nproc-per-node: nanoGPT needs gradient_accumulation_steps ({tg.grad_accum}) to be a "
                            f"multiple of the {nproc} processes: pass a smaller --micro-batch-size")
    keys = _nanogpt_keys(tg)
    head = _comment_lines(config, keys)
    head += ["# " + x for x in _mup_notes(tg)]
    if tg.mup is not None:
        extras = _mup_extras(tg, config)
        extras.pop("mup_param_groups", None)
        head.append("# µP extras for a µP-aware train.py: " + " ".join(f"--{k}={v!r}" for k, v in extras.items()))
    note = _schedule_note(tg, "nanoGPT")
    if note:
        head.append("# " + note)
    args = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", script]
    args += [f"--{k}={v!r}" for k, v in keys.items()]
    return "\n".join([*head, shlex.join(args)]) + "\n"


# --------------------------------------------------------------------------------------------- LitGPT


def litgpt(config: dict[str, Any], *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """A config for `litgpt pretrain --config FILE` (its config_hub/pretrain layout). jsonargparse refuses
    unknown keys, so the provenance and the µP values are comments."""
    tg = _target(config, "litgpt", nproc=nproc, micro_batch_size=micro_batch_size)
    if tg.vocab_size is None:
        raise LauncherError("model.vocab_size: unknown in this export, and litgpt's model_config needs it")
    if tg.tokens is None:
        raise LauncherError("target.tokens: the recipe gives no training tokens for the target; litgpt's "
                            "train.max_tokens needs them")
    optimizer: dict[str, Any]
    if tg.optimizer == "sgd":
        optimizer = {"class_path": "torch.optim.SGD",
                     "init_args": {"lr": tg.lr, "weight_decay": tg.weight_decay, "momentum": tg.momentum}}
    else:
        cls = "torch.optim.AdamW" if tg.optimizer == "adamw" else "torch.optim.Adam"
        optimizer = {"class_path": cls, "init_args": {"lr": tg.lr, "weight_decay": tg.weight_decay,
                                                       "betas": [float(b) for b in tg.betas], "eps": tg.eps}}
    doc = {
        "model_config": {
            "name": f"mutransfer-{tg.name}",
            "block_size": tg.seq_len,
            "vocab_size": tg.vocab_size,
            "padded_vocab_size": tg.vocab_size,
            "n_layer": tg.depth,
            "n_head": tg.n_heads,
            "n_query_groups": tg.n_heads,
            "n_embd": tg.width,
            "head_size": tg.head_dim,
            "intermediate_size": tg.d_ffn,
            "norm_class_name": "LayerNorm",
            "mlp_class_name": "GptNeoxMLP",
            "bias": False,
            "lm_head_bias": False,
            "parallel_residual": False,
        },
        "out_dir": f"out/pretrain/{tg.name}",
        "train": {
            "global_batch_size": tg.batch_size,
            "micro_batch_size": tg.micro_batch_size,
            "lr_warmup_steps": tg.warmup_steps,
            "max_tokens": int(tg.tokens),
            "max_seq_length": tg.seq_len,
            "tie_embeddings": False,
            "max_norm": float(tg.grad_clip) if tg.grad_clip is not None else None,
            "min_lr": tg.min_lr,
        },
        "optimizer": optimizer,
        "devices": nproc,
    }
    keys = {"learning_rate": tg.lr, "min_lr": tg.min_lr, "weight_decay": tg.weight_decay}
    head = _comment_lines(config, keys)
    head += ["# " + x for x in _mup_notes(tg)]
    head.append("# litgpt's GPT uses rotary position embeddings; the proxies learned absolute ones.")
    if tg.schedule == "linear":
        head.append("# The recipe's schedule is linear decay; litgpt pretrain decays by a cosine to min_lr instead.")
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
    return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------------------------- Megatron-LM


def megatron(config: dict[str, Any], *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """Megatron-LM's pretrain_gpt.py arguments, one per line (a shell fragment: comments, then the arguments)."""
    tg = _target(config, "megatron", nproc=nproc, micro_batch_size=micro_batch_size)
    if tg.steps is None:
        raise AssertionError("checked by _target")
    style = {"cosine": "cosine", "linear": "linear", "constant": "constant", "warmup": "constant"}[tg.schedule]
    pairs: list[tuple[str, Any]] = [
        ("--num-layers", tg.depth), ("--hidden-size", tg.width), ("--num-attention-heads", tg.n_heads),
        ("--kv-channels", tg.head_dim), ("--ffn-hidden-size", tg.d_ffn), ("--seq-length", tg.seq_len),
        ("--max-position-embeddings", tg.seq_len), ("--position-embedding-type", "learned_absolute"),
        ("--micro-batch-size", tg.micro_batch_size), ("--global-batch-size", tg.batch_size),
        ("--train-iters", tg.steps), ("--lr", tg.lr), ("--min-lr", tg.min_lr), ("--lr-decay-style", style),
        ("--lr-warmup-iters", tg.warmup_steps), ("--lr-decay-iters", tg.steps),
        ("--weight-decay", tg.weight_decay), ("--clip-grad", float(tg.grad_clip) if tg.grad_clip else 0.0),
    ]
    if tg.optimizer == "sgd":
        pairs += [("--optimizer", "sgd"), ("--sgd-momentum", tg.momentum)]
    else:
        pairs += [("--optimizer", "adam"), ("--adam-beta1", float(tg.betas[0])),
                  ("--adam-beta2", float(tg.betas[1])), ("--adam-eps", tg.eps)]
    if tg.init_std is not None:
        pairs.append(("--init-method-std", tg.init_std))
    if tg.vocab_size is not None:
        pairs.append(("--vocab-size", tg.vocab_size))
    lines = [f"{flag} {shlex.quote(str(v))}" for flag, v in pairs]
    lines += ["--disable-bias-linear", "--untie-embeddings-and-output-weights"]
    keys = {"learning_rate": tg.lr, "min_lr": tg.min_lr, "weight_decay": tg.weight_decay}
    head = _comment_lines(config, keys) + ["# " + x for x in _mup_notes(tg)]
    if tg.schedule == "warmup":
        head.append("# The recipe's schedule is warmup then constant: --lr-decay-style constant keeps the warmup.")
    return "\n".join(head) + "\n" + " \\\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- dispatch


def render_format(config: dict[str, Any], fmt: str, *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """The export as text in `fmt` (see FORMATS). `hf` gives one JSON with both of its files."""
    if fmt in ("yaml", "json"):
        return render(config, fmt)  # type: ignore[arg-type]
    kw: dict[str, Any] = {"nproc": nproc, "micro_batch_size": micro_batch_size}
    if fmt == "nanogpt":
        return nanogpt(config, **kw)
    if fmt == "hf":
        return json.dumps(hf_files(config, **kw), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "torchrun":
        return torchrun(config, **kw)
    if fmt == "litgpt":
        return litgpt(config, **kw)
    if fmt == "megatron":
        return megatron(config, **kw)
    raise LauncherError(f"--format: {fmt!r} is not a format: use {', '.join(FORMATS)}")
