"""Megatron-LM's pretrain_gpt.py arguments; for a µP export, with Megatron's own µP turned on and mapped.

What Megatron does with its µP flags, read from NVIDIA/Megatron-LM main @ d98e8a64ddf3 (2026-08-22; the µP of
PR #3058, also in core_v0.17.0 to core_v0.19.0):

- megatron/core/transformer/transformer_config.py, `__post_init__` ("MuP"): width_mult = hidden_size /
  mup_base_hidden_size; softmax_scale = sqrt(mup_base_head_dim) / kv_channels ** mup_attn_scale_power (1 over it
  without a base head dim); an mup_output_mult left at 1.0 becomes 1 / width_mult; init_method N(0, init_method_std
  / sqrt(width_mult)); output_layer_init_method (each block's linear_proj and linear_fc2) N(0, init_method_std /
  sqrt(2 * num_layers * width_mult)); embeddings and the untied output layer N(0, init_method_std).
- megatron/core/models/common/embeddings/language_model_embedding.py: (word + position embeddings) times
  mup_embedding_mult; language_module.py `_scale_logits`: logits times mup_output_mult.
- megatron/core/optimizer/__init__.py `get_mup_config_overrides`: Adam, hidden matrices (not 1-D, not embedding or
  output): lr and min_lr / width_mult, eps / width_mult; SGD: vector-like lr and min_lr x width_mult. Weight decay is
  not scaled; 1-D parameters and biases get none (`get_standard_config_overrides`).

The `--scaling-recipe` interface (PRs #4998 and #4999, refs/pull/4999/head @ ef280a9308bb, not merged into main at
d98e8a6) spells the same width µP `--scaling-recipe mup --scaling-base-hidden-size --scaling-base-head-dim`, the
flags above being its deprecated aliases, and adds `depth_mup` (megatron/core/parameterization/spec.py,
model_policy.py, training_policy.py): residual branches x depth_mult ** --scaling-residual-branch-depth-power
(default -1), hidden-matrix LR x depth_mult ** --scaling-hidden-lr-depth-power (default 0), the blocks' output
projections' init x depth_mult ** --scaling-block-out-proj-init-depth-power (default 0.5), Adam eps of hidden
matrices and vectors / (width_mult * depth_mult) and of embeddings and output / width_mult, hidden-matrix weight
decay x width_mult; Adam only. `megatron(spelling="scaling-recipe")` writes that; the default writes the released
flags and gives the other spelling as a comment.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from mutransfer.launchers.common import (
    Config,
    LauncherError,
    Target,
    comment_lines,
    document,
    mup_notes,
    resolve_target,
)

__all__ = ["SPELLINGS", "megatron", "mup_flags"]

SPELLINGS = ("released", "scaling-recipe")
_RECIPE_NOTE = "NVIDIA/Megatron-LM PRs #4998/#4999, not in main at d98e8a6"


def _eps_factors(tg: Target, depth_mup: bool) -> tuple[float, float, float]:
    """What Megatron multiplies --adam-eps by for (hidden matrices, hidden vectors, embedding/output) under µP."""
    if tg.optimizer == "sgd" or tg.mup is None:
        return 1.0, 1.0, 1.0
    wm = tg.mup.width_mult
    if depth_mup:
        dm = tg.depth_rule.depth_mult
        return 1.0 / (wm * dm), 1.0 / (wm * dm), 1.0 / wm
    return 1.0 / wm, 1.0, 1.0


def _eps_ratio(tg: Target, depth_mup: bool) -> float:
    """--adam-eps / the recipe's eps such that the hidden matrices get the proxies' epsilon, eps x tg.eps_mult:
    tg.eps_mult / _eps_factors(...)[0], as powers (exact where it is 1)."""
    assert tg.mup is not None
    wm = tg.mup.width_mult
    width = tg.depth_rule.eps_scaling == "width"  # the proxies': (1 / wm) x depth_mult ** -alpha
    dm, alpha = tg.depth_rule.depth_mult, tg.depth_rule.alpha
    return wm ** (0.0 if width else 1.0) * dm ** ((1.0 if depth_mup else 0.0) - (alpha if width else 0.0))


def _depth_mup(tg: Target, spelling: str) -> bool:
    return spelling == "scaling-recipe" and tg.depth_scaled and tg.optimizer != "sgd"


def mup_flags(tg: Target, spelling: str) -> tuple[list[tuple[str, Any]], float | None]:
    """Megatron's µP flags for the export, and the --adam-eps that gives the hidden matrices the proxies' epsilon
    (None for SGD)."""
    m = tg.mup
    assert m is not None
    rules = m.rules
    wm = m.width_mult
    readout = rules.readout.output_multiplier  # output_mult / width_mult
    # Megatron turns an mup_output_mult of exactly 1.0 into 1 / width_mult: 1.0 is written as the next float up.
    out_mult = math.nextafter(1.0, 2.0) if readout == 1.0 and wm != 1.0 else readout
    # softmax_scale = sqrt(base_head_dim) / kv_channels: Megatron has no attn_mult, so it goes into the base head dim.
    head_dim = float(tg.attention.base_head_dim) * tg.attn_mult**2
    depth_mup = _depth_mup(tg, spelling)
    if spelling == "released":
        flags: list[tuple[str, Any]] = [("--use-mup", None), ("--mup-base-hidden-size", m.base_width),
                                        ("--mup-base-head-dim", head_dim)]
    else:
        flags = [("--scaling-recipe", "depth_mup" if depth_mup else "mup"),
                 ("--scaling-base-hidden-size", m.base_width)]
        if depth_mup:
            alpha = tg.depth_rule.alpha
            flags += [("--scaling-base-num-layers", tg.depth_rule.base_depth),
                      ("--scaling-residual-branch-depth-power", -alpha),
                      ("--scaling-hidden-lr-depth-power", alpha - 1.0),
                      ("--scaling-block-out-proj-init-depth-power", 0.5)]
        flags.append(("--scaling-base-head-dim", head_dim))
    flags += [("--mup-embedding-mult", tg.embed_mult), ("--mup-output-mult", out_mult),
              ("--mup-attn-scale-power", 1.0)]
    return flags, None if tg.optimizer == "sgd" else tg.eps * _eps_ratio(tg, depth_mup)


def _line(flags: list[tuple[str, Any]]) -> str:
    return " ".join(f if v is None else f"{f} {shlex.quote(str(v))}" for f, v in flags)


def _mup_notes_megatron(tg: Target, spelling: str, eps: float | None) -> list[str]:
    m = tg.mup
    assert m is not None
    wm, rules = m.width_mult, m.rules
    att = tg.attention
    depth_mup = _depth_mup(tg, spelling)
    d = tg.depth_rule
    where = "main d98e8a6, core_v0.17.0 on" if spelling == "released" else f"the --scaling-recipe build, {_RECIPE_NOTE}"
    lr_rule = (f"vector-like LR and min_lr x {wm:g} (MuSGD)" if tg.optimizer == "sgd" else
               f"hidden-matrix LR and min_lr x {1 / wm:.6g} (MuAdam{'W' if tg.optimizer == 'adamw' else ''})")
    readout = rules.readout.output_multiplier
    one = " (1.0 written as the next float up: Megatron turns exactly 1.0 into 1/width_mult)" \
        if readout == 1.0 and wm != 1.0 else ""
    notes = [
        f"µP: Megatron-LM's own µP is on (the flags at the end; {where}): width_mult = hidden_size / base "
        f"{m.base_width} = {wm:g}.",
        f"Megatron applies: {lr_rule}; hidden-matrix init N(0, init_method_std / sqrt({wm:g})); embeddings "
        f"N(0, init_method_std) x embedding mult {tg.embed_mult:.6g}; logits x --mup-output-mult = output_mult / "
        f"width_mult = {readout:.6g}{one}; attention softmax_scale = sqrt(base head dim) / kv_channels = attn_mult x "
        f"sqrt(base_head_dim) / head_dim = {att.scale:.6g} (Megatron has no attn_mult: the base head dim "
        f"given is base_head_dim x attn_mult^2 = {float(att.base_head_dim) * tg.attn_mult ** 2:.6g}).",
    ]
    if depth_mup:
        notes.append(f"depth_mup applies the depth rule {d.scaling} (base depth {d.base_depth}): residual "
                     f"branches x {d.branch_multiplier:.6g}, hidden-matrix LR x "
                     f"{d.block_lr_scale:.6g}, hidden-matrix weight decay x width_mult (as MuAdamW).")
    if eps is not None:
        fh, fv, fe = _eps_factors(tg, depth_mup)
        ours = tg.eps * tg.eps_mult
        off = [(what, eps * f) for what, f in (("LayerNorm gains", fv), ("embeddings and the readout", fe))
               if not math.isclose(eps * f, ours, rel_tol=1e-9)]
        if len(off) == 2 and math.isclose(off[0][1], off[1][1], rel_tol=1e-9):
            off = [("all other parameters", off[0][1])]
        others = " and ".join(f"{what} get {x:.6g}" for what, x in off)
        notes.append(f"Adam epsilon: Megatron multiplies the hidden matrices' eps by {fh:.6g}; --adam-eps {eps:.6g} gives "
                     f"them the proxies' {ours:.6g}" + (f"; {others} instead (no flag sets them apart)." if off
                                                         else "."))
    if tg.tie_embeddings:  # the output layer is the word embedding: its N(0, init_method_std) and base LR, as tied
        cannot = [
            "zero init of the query (the proxies' µP start): Megatron draws the query rows of linear_qkv like the "
            "keys; for the tuned model zero them after the model is built (in the model provider)",
        ]
    else:
        cannot = [
            "zero init of the readout and the query (the proxies' µP start): Megatron draws output_layer from "
            "N(0, init_method_std) and the query rows of linear_qkv like the keys; for the tuned model zero both "
            "after the model is built (in the model provider)",
        ]
    L, Lb = tg.depth, int(d.base_depth or tg.depth)
    shrink = 1 / math.sqrt(2 * Lb) if depth_mup else 1 / math.sqrt(2 * L)
    layers = f"{Lb} base layers" if depth_mup else f"{L} layers"
    cannot.append(f"the init of the blocks' output projections (linear_proj, linear_fc2): Megatron divides their "
                  f"std by sqrt(2 x {layers}) more than the proxies did (x {shrink:.3g}); no flag changes it alone "
                  "(--init-method-std moves every layer)")
    if tg.weight_decay:
        if tg.optimizer == "sgd":
            cannot.append(f"weight decay: MuSGD divided the vector-like parameters' by {wm:g}, Megatron does not")
        elif not depth_mup:
            cannot.append(f"weight decay: the proxies' optimizer multiplied the hidden matrices' by width_mult, "
                          f"Megatron's width µP does not (their decay is {wm:g}x weaker)")
        cannot.append("weight decay on 1-D parameters (LayerNorm): the proxies decayed them, Megatron does not")
    if depth_mup and d.block_lr_scale != 1.0:
        cannot.append(f"the depth LR factor {d.block_lr_scale:.6g} on the blocks' LayerNorm gains (the "
                      "proxies scaled every block parameter, depth_mup only hidden matrices)")
    if tg.depth_scaled and not depth_mup:
        why = "Megatron-LM main has no depth rule" if spelling == "released" else "depth_mup is Adam only"
        cannot.append(f"the depth rule {d.scaling} (base depth {d.base_depth}; {why}): residual branches x "
                      f"{d.branch_multiplier:.6g} and block LR x {d.block_lr_scale:.6g} are "
                      "missing, which is NOT the tuned model"
                      + ("; a --scaling-recipe build applies it (the line below)" if spelling == "released"
                         and tg.optimizer != "sgd" else ""))
    notes.append("Megatron cannot apply (do it by hand, or the target differs from the tuned model there):")
    notes += [f"  - {x}." for x in cannot]
    other = SPELLINGS[1 - SPELLINGS.index(spelling)]
    flags, other_eps = mup_flags(tg, other)
    if other_eps is not None and other_eps != eps:
        flags.append(("--adam-eps", other_eps))
    if spelling == "released":
        notes.append(f"With the --scaling-recipe interface ({_RECIPE_NOTE}; there --use-mup and --mup-base-* are "
                     f"deprecated aliases) the µP flags are: {_line(flags)}")
    else:
        notes.append(f"Megatron-LM main and its releases have no --scaling-recipe: there the µP flags are"
                     f"{' (and no depth rule)' if _depth_mup(tg, spelling) else ''}: {_line(flags)}")
    return notes


def megatron(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None,
             spelling: str = "released") -> str:
    """Megatron-LM's pretrain_gpt.py arguments, one per line (a shell fragment: comments, then the arguments).

    `spelling`: "released" (Megatron-LM main and its releases: --use-mup, --mup-base-*) or "scaling-recipe" (the
    --scaling-recipe interface of the unmerged PRs #4998/#4999, which adds depth_mup)."""
    if spelling not in SPELLINGS:
        raise LauncherError(f"spelling: {spelling!r} is not one of {', '.join(SPELLINGS)}")
    doc = document(config)
    tg = resolve_target(doc, "megatron", nproc=nproc, micro_batch_size=micro_batch_size)
    if tg.steps is None:
        raise AssertionError("checked by resolve_target")
    flags, mup_eps = mup_flags(tg, spelling) if tg.mup is not None else ([], None)
    style = {"cosine": "cosine", "linear": "linear", "constant": "constant", "warmup": "constant"}[tg.schedule]
    pairs: list[tuple[str, Any]] = [
        ("--num-layers", tg.depth), ("--hidden-size", tg.width), ("--num-attention-heads", tg.n_heads),
        ("--kv-channels", tg.head_dim), ("--ffn-hidden-size", tg.d_ffn), ("--seq-length", tg.seq_len),
        ("--max-position-embeddings", tg.seq_len), ("--position-embedding-type", "learned_absolute"),
        ("--micro-batch-size", tg.micro_batch_size), ("--global-batch-size", tg.batch_size),
        ("--train-iters", tg.steps), ("--lr", tg.lr), ("--min-lr", tg.min_lr), ("--lr-decay-style", style),
        ("--lr-warmup-iters", tg.warmup_steps), ("--lr-decay-iters", tg.steps),
        ("--weight-decay", tg.weight_decay), ("--clip-grad", float(tg.grad_clip) if tg.grad_clip else 0.0),
        ("--hidden-dropout", 0.0), ("--attention-dropout", 0.0),  # Megatron's default is 0.1; the proxies had none
    ]
    if tg.optimizer == "sgd":
        pairs += [("--optimizer", "sgd"), ("--sgd-momentum", tg.momentum)]
    else:
        pairs += [("--optimizer", "adam"), ("--adam-beta1", float(tg.betas[0])),
                  ("--adam-beta2", float(tg.betas[1])), ("--adam-eps", mup_eps if mup_eps is not None else tg.eps)]
    if tg.init_std is not None:
        pairs.append(("--init-method-std", tg.init_std))
    if tg.vocab_size is not None:
        pairs.append(("--vocab-size", tg.vocab_size))
    lines = [f"{flag} {shlex.quote(str(v))}" for flag, v in pairs]
    # Megatron shares the word embedding with the output layer unless told otherwise: the proxies' choice.
    lines += ["--disable-bias-linear"] + ([] if tg.tie_embeddings else ["--untie-embeddings-and-output-weights"])
    lines += [f if v is None else f"{f} {shlex.quote(str(v))}" for f, v in flags]
    keys = {"learning_rate": tg.lr, "min_lr": tg.min_lr, "weight_decay": tg.weight_decay}
    notes = _mup_notes_megatron(tg, spelling, mup_eps) if tg.mup is not None else mup_notes(tg)
    head = comment_lines(doc, keys) + ["# " + x for x in notes]
    if tg.optimizer == "adam" and tg.weight_decay:
        head.append("# The recipe's optimizer is Adam (L2 weight decay); Megatron's --optimizer adam decouples it.")
    if tg.schedule == "warmup":
        head.append("# The recipe's schedule is warmup then constant: --lr-decay-style constant keeps the warmup.")
    return "\n".join(head) + "\n" + " \\\n".join(lines) + "\n"
