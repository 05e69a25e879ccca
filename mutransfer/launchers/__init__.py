"""The exported target config in the formats launchers read: nanoGPT, Hugging Face, torchrun, LitGPT, Megatron-LM,
EleutherAI's nanoGPT-mup.

Every renderer reads the dict `mutransfer.export.export_config` returns (or a YAML/JSON export file loaded back),
checked once as a `mutransfer.document.ExportDocument` and read by attribute, so all formats share one source of
truth. Each states its provenance: the sweep, the recipe hash, where each tuned value came from (transferred by the
fit, with its interval, or the recipe's) and the compute share.

The launcher formats describe a GPT (a decoder with `n_embd`, `n_layer`, `n_head`): the built-in gpt, or a user's
builder that declares its heads and FFN ratio in `model.options` (mutransfer.gpt_shape). An mlp is refused with a
`LauncherError` naming `model.family`, a builder that does not declare them with one naming the missing options.
The hf-llama family exports `hf` only: its config.json is transformers' own LlamaConfig; the other formats write a
GPT-2-shaped model and refuse it in one line (`format_problem`). nanoGPT, Hugging Face, torchrun and LitGPT apply no µP
rule by themselves: the µP values a µP-aware training script needs (base width, multipliers, per-group learning
rates) travel as `mup_*` extras where the format allows unknown keys (nanoGPT's config file, a Hugging Face
config.json) and as comments elsewhere; the `mup` section of the YAML/JSON export has the full rules. Megatron-LM
(`mutransfer.launchers.megatron`) and nanoGPT-mup (`mutransfer.launchers.nanogpt_mup`) have µP of their own: a µP
export turns it on, with the values mapped onto their flags and keys. Every format's header says which µP rules its
launcher applies and which it cannot, and what to do about those.
"""

from __future__ import annotations

import json
import pprint
import shlex
from typing import Any

import yaml

from mutransfer.document import AGAIN, ExportDocument
from mutransfer.errors import MutransferError, option
from mutransfer.export import render
from mutransfer.launchers.common import (
    Config,
    LauncherError,
    Target,
    builder_note,
    comment_lines,
    document,
    format_problem,
    mup_extras,
    mup_notes,
    nanogpt_keys,
    nanogpt_tying_note,
    provenance,
    resolve_target,
    schedule_note,
)
from mutransfer.launchers.megatron import megatron
from mutransfer.launchers.nanogpt_mup import nanogpt_mup
from mutransfer.recipe import BUILTIN_FAMILIES

__all__ = ["FORMATS", "LAUNCHER_FORMATS", "LauncherError", "format_problem", "hf_files", "megatron", "nanogpt", "nanogpt_mup",
           "provenance", "render_format"]

LAUNCHER_FORMATS = ("nanogpt", "nanogpt-mup", "hf", "torchrun", "litgpt", "megatron")
FORMATS = ("yaml", "json", *LAUNCHER_FORMATS)


# --------------------------------------------------------------------------------------------- nanoGPT


def nanogpt(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """A config file for nanoGPT: `python train.py this.py` (configurator.py exec's it)."""
    doc = document(config)
    tg = resolve_target(doc, "nanogpt", nproc=nproc, micro_batch_size=micro_batch_size)
    keys = nanogpt_keys(tg)
    if tg.vocab_size is not None:
        keys["vocab_size"] = tg.vocab_size  # nanoGPT reads it from meta.pkl; stated for a script that wants it
    keys.update(mup_extras(tg, doc))
    head = comment_lines(doc, keys)
    head += ["# " + x for x in [*mup_notes(tg, "nanoGPT"), *nanogpt_tying_note(tg)]]
    note = schedule_note(tg, "nanoGPT")
    if note:
        head.append("# " + note)
    head.append(f"# Global batch: {tg.batch_size} sequences of {tg.seq_len} tokens = batch_size x "
                "gradient_accumulation_steps (nanoGPT divides the accumulation by the number of processes).")
    body = [f"{k} = {v!r}" for k, v in keys.items()]
    body.append("mutransfer_provenance = " + pprint.pformat(provenance(doc), width=110, sort_dicts=False))
    return "\n".join([*head, "", *body]) + "\n"


# --------------------------------------------------------------------------------------------- Hugging Face


def _hf_scheduler(tg: Target) -> tuple[str, dict[str, Any] | None]:
    if tg.schedule == "cosine":
        return "cosine_with_min_lr", {"min_lr": tg.min_lr}
    if tg.schedule == "linear":
        return "linear", None  # Hugging Face's linear decays to 0, not to min_lr (see the note)
    if tg.schedule == "warmup":
        return "constant_with_warmup", None
    return "constant", None


def _llama_config(doc: ExportDocument, tg: Target) -> dict[str, Any]:
    """The target's LlamaConfig as transformers writes it (`to_dict()`: model_type llama, LlamaForCausalLM), made by
    the function that made the proxies' (mutransfer.hf_llama.llama_config). Imports transformers."""
    from mutransfer.hf_llama import llama_config

    t, m = doc.target, doc.model
    if t.kv_heads is None or t.intermediate_size is None:
        raise LauncherError(f"target.{'kv_heads' if t.kv_heads is None else 'intermediate_size'}: missing from the "
                            f"export ({AGAIN})")
    assert tg.vocab_size is not None  # checked by hf_files
    try:
        config = llama_config(width=tg.width, depth=tg.depth, n_heads=tg.n_heads, head_dim=tg.head_dim,
                              kv_heads=t.kv_heads, intermediate_size=t.intermediate_size, vocab_size=tg.vocab_size,
                              seq_len=tg.seq_len, options=m.options, tie_embeddings=m.tie_embeddings,
                              init_std=tg.init_std)
    except MutransferError as e:  # transformers not installed: the same line, as this module's error
        raise LauncherError(str(e)) from e
    return config.to_dict()


def hf_files(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None) -> dict[str, Any]:
    """{"training_args.json": TrainingArguments kwargs, "config.json": the model config}: a GPT-2 config for the
    gpt and a builder's GPT, transformers' own LlamaConfig for hf-llama; each with the µP values as mup_* keys."""
    doc = document(config)
    tg = resolve_target(doc, "hf", nproc=nproc, micro_batch_size=micro_batch_size)
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
    model: dict[str, Any] = _llama_config(doc, tg) if tg.family == "hf-llama" else {
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
        "tie_word_embeddings": tg.tie_embeddings,  # GPT2LMHeadModel: lm_head.weight is wte.weight when true
        "bos_token_id": None,
        "eos_token_id": None,
    }
    if tg.init_std is not None and tg.family != "hf-llama":  # llama_config sets it where LlamaConfig allows it
        model["initializer_range"] = tg.init_std
    model.update(mup_extras(tg, doc))
    notes = [*mup_notes(tg, "Hugging Face's Trainer")]
    if tg.family == "hf-llama" and tg.mup is not None:
        notes.append("LlamaForCausalLM(LlamaConfig(**config)) is the proxies' model; mutransfer.runtime.prepare(model, "
                     "this folder) gives it µP's init, readout multiplier and LlamaAttention.scaling, "
                     "mutransfer.runtime.MuTrainer (or hf_optimizer) its optimizer.")
    if tg.family not in BUILTIN_FAMILIES:
        notes.append(builder_note(tg.family))
    if tg.optimizer == "adam" and tg.weight_decay:
        notes.append("The recipe's optimizer is Adam (L2 weight decay); adamw_torch decouples it.")
    if tg.schedule == "linear":
        notes.append("Hugging Face's linear schedule decays to 0, not to min_lr.")
    model["mutransfer_provenance"] = {**provenance(doc), "notes": notes}
    return {"training_args.json": args, "config.json": model}


# --------------------------------------------------------------------------------------------- torchrun


def torchrun(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None,
             script: str = "train.py") -> str:
    """`torchrun ... train.py --key=value ...` for nanoGPT's train.py (configurator.py overrides; argparse reads
    `--key=value` too). Only nanoGPT's own keys: it refuses unknown ones, so the µP extras are comments here."""
    doc = document(config)
    tg = resolve_target(doc, "torchrun", nproc=nproc, micro_batch_size=micro_batch_size)
    keys = nanogpt_keys(tg)
    head = comment_lines(doc, keys)
    head += ["# " + x for x in [*mup_notes(tg, "nanoGPT's train.py"), *nanogpt_tying_note(tg)]]
    if tg.mup is not None:
        extras = mup_extras(tg, doc)
        extras.pop("mup_param_groups", None)
        head.append("# µP extras for a µP-aware train.py: " + " ".join(f"--{k}={v!r}" for k, v in extras.items()))
    note = schedule_note(tg, "nanoGPT")
    if note:
        head.append("# " + note)
    args = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", script]
    args += [f"--{k}={v!r}" for k, v in keys.items()]
    return "\n".join([*head, shlex.join(args)]) + "\n"


# --------------------------------------------------------------------------------------------- LitGPT


def litgpt(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """A config for `litgpt pretrain --config FILE` (its config_hub/pretrain layout). jsonargparse refuses
    unknown keys, so the provenance and the µP values are comments."""
    doc = document(config)
    tg = resolve_target(doc, "litgpt", nproc=nproc, micro_batch_size=micro_batch_size)
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
    out = {
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
            "tie_embeddings": tg.tie_embeddings,  # litgpt's TrainArgs: lm_head.weight is wte.weight when true
            "max_norm": float(tg.grad_clip) if tg.grad_clip is not None else None,
            "min_lr": tg.min_lr,
        },
        "optimizer": optimizer,
        "devices": nproc,
    }
    keys = {"learning_rate": tg.lr, "min_lr": tg.min_lr, "weight_decay": tg.weight_decay}
    head = comment_lines(doc, keys)
    head += ["# " + x for x in mup_notes(tg, "litgpt pretrain")]
    head.append("# litgpt's GPT uses rotary position embeddings; the proxies learned absolute ones.")
    if tg.schedule == "linear":
        head.append("# The recipe's schedule is linear decay; litgpt pretrain decays by a cosine to min_lr instead.")
    body = yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=110)
    return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------------------------- dispatch


def render_format(config: dict[str, Any], fmt: str, *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """The export as text in `fmt` (see FORMATS). `hf` gives one JSON with both of its files."""
    if fmt in ("yaml", "json"):
        return render(config, fmt)  # type: ignore[arg-type]
    if fmt not in FORMATS:
        raise LauncherError(f"{option('fmt')}: {fmt!r} is not a format: use {', '.join(FORMATS)}")
    doc = document(config)  # checked once: every renderer reads it by attribute
    kw: dict[str, Any] = {"nproc": nproc, "micro_batch_size": micro_batch_size}
    if fmt == "nanogpt":
        return nanogpt(doc, **kw)
    if fmt == "nanogpt-mup":
        return nanogpt_mup(doc, **kw)
    if fmt == "hf":
        return json.dumps(hf_files(doc, **kw), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "torchrun":
        return torchrun(doc, **kw)
    if fmt == "litgpt":
        return litgpt(doc, **kw)
    if fmt == "megatron":
        return megatron(doc, **kw)
    raise AssertionError(f"format {fmt!r} has no renderer")
