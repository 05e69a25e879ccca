"""A config file for EleutherAI/nanoGPT-mup's train.py, with its µP (and CompleteP's depth rule) mapped.

What nanoGPT-mup does with its keys, read from its completep branch @ 6f8bc3bdc744 (train.py, model.py; master @
b2a5e60948d2 has the same µP without `adam_eps` and the depth keys, and its c_proj init is divided by
sqrt(2 * n_layer) more):

- `mup_enabled`: hidden weights (c_attn, c_fc, c_proj) N(0, init_std / sqrt(mup_width_multiplier)); wte, wpe and
  the tied lm_head N(0, init_std); `x = (wte + wpe) * mup_input_alpha`; logits = lm_head(ln_f(x) * mup_output_alpha
  / mup_width_multiplier); attention scale 1 / head_dim (1 / sqrt(head_dim) with `mup_disable_attention_scaling`).
- `configure_optimizers` with `depth_alpha_enabled` (CompleteP): hidden weights lr x (1 / mup_width_multiplier) x
  depth_multiplier ** (depth_alpha_exp - 1) and weight decay x mup_width_multiplier; the blocks' LayerNorms (and
  biases) lr x depth_multiplier ** (depth_alpha_exp - 1), no weight decay; embeddings and ln_f lr x 1; one AdamW
  eps, adam_eps x (1 / mup_width_multiplier) x depth_multiplier ** -depth_alpha_exp. Without it: hidden weights lr
  / mup_width_multiplier, weight decay unscaled, eps adam_eps. Blocks: x + depth_multiplier ** -depth_alpha_exp *
  branch(x).

So under µP the file sets `depth_alpha_enabled = True` always (with `depth_multiplier = 1.0` when the proxies had no
depth rule: no depth scaling, but the optimizer groups whose hidden weight decay is mup's MuAdamW's), and `adam_eps`
such that the one epsilon is the proxies'.
"""

from __future__ import annotations

import math
from typing import Any

from mutransfer.launchers.common import (
    Config,
    Target,
    comment_lines,
    depth_note,
    document,
    nanogpt_keys,
    resolve_target,
    schedule_note,
)

__all__ = ["nanogpt_mup", "nanogpt_mup_keys"]

BRANCH, COMMIT = "completep", "6f8bc3bdc744556141255f810a22387b2255b6c1"
# A config file is exec'd into train.py's globals, so master would take the keys it lacks without a word: stop it.
_GUARD = ('assert "depth_alpha_enabled" in globals() and "adam_eps" in globals(), "this config is for '
          f'EleutherAI/nanoGPT-mup\'s {BRANCH} branch (git checkout {BRANCH}): master has no adam_eps and no depth keys"')


def _attention(tg: Target) -> tuple[bool, float]:
    """(mup_disable_attention_scaling, what nanoGPT-mup's scale must be multiplied by to be the proxies')."""
    assert tg.mup is not None
    ours = tg.attention.scale  # attn_mult * sqrt(base_head_dim) / head_dim
    one_over_d, one_over_sqrt_d = 1.0 / tg.head_dim, 1.0 / math.sqrt(tg.head_dim)
    # nanoGPT-mup has no attn_mult: of its two scales, the one nearer the proxies' (in ratio).
    disable = abs(math.log(ours / one_over_sqrt_d)) < abs(math.log(ours / one_over_d))
    return disable, ours / (one_over_sqrt_d if disable else one_over_d)


def nanogpt_mup_keys(tg: Target) -> dict[str, Any]:
    """nanoGPT-mup train.py's config keys (completep branch), types as its defaults."""
    keys = nanogpt_keys(tg)
    keys["init_std"] = tg.init_std if tg.init_std is not None else 0.02
    if tg.mup is None:
        # SP: train.py's own path; AdamW with eps adam_eps as it is.
        return {**keys, "adam_eps": tg.eps * tg.eps_mult, "mup_enabled": False}
    wm = tg.mup.width_mult
    d = tg.depth_rule
    depth_mult = d.depth_mult if tg.depth_scaled else 1.0
    alpha = d.alpha if tg.depth_scaled else 1.0
    disable, _ = _attention(tg)
    # CompleteP multiplies adam_eps by (1 / width_mult) * depth_mult ** -alpha, the proxies' eps_scaling: width
    # (tg.eps_mult); undone where the proxies did not scale it.
    eps = tg.eps if d.eps_scaling == "width" else tg.eps * wm * depth_mult**alpha
    return {
        **keys,
        "adam_eps": eps,
        "mup_enabled": True,
        "mup_disable_attention_scaling": disable,
        "mup_disable_hidden_lr_scaling": False,
        "mup_width_multiplier": wm,
        "mup_input_alpha": tg.embed_mult,
        "mup_output_alpha": tg.output_mult,
        "depth_alpha_enabled": True,
        "depth_multiplier": depth_mult,
        "depth_alpha_exp": alpha,
    }


def _notes(tg: Target) -> list[str]:
    notes = [f"For EleutherAI/nanoGPT-mup's {BRANCH} branch (commit {COMMIT[:12]}): `git checkout {BRANCH}`, then "
             "`python train.py this.py`. Its master has no adam_eps nor depth keys and would ignore them: the assert "
             "below stops it."]
    if tg.mup is None:
        return [*notes, "Standard parametrization (SP): mup_enabled = False; use the values as they are.",
                *depth_note(tg, "nanoGPT-mup's SP path")]
    m, d = tg.mup, tg.depth_rule
    wm = m.width_mult
    disable, off = _attention(tg)
    readout = float(m.rules.readout.output_multiplier)
    depth = (f"residual branches x depth_multiplier^-depth_alpha_exp = {d.branch_multiplier:.6g} and block "
             f"LR x {d.block_lr_scale:.6g} (the depth rule {d.scaling}, base depth {d.base_depth})"
             if tg.depth_scaled else "no depth rule (depth_multiplier = 1.0: depth_alpha_enabled only selects "
             "CompleteP's optimizer groups)")
    notes.append(
        f"nanoGPT-mup applies: hidden-weight (c_attn, c_fc, c_proj) LR x {1 / wm:.6g}, their weight decay x {wm:g} "
        f"(as MuAdamW) and init N(0, init_std / sqrt({wm:g})); embeddings x mup_input_alpha; logits x "
        f"mup_output_alpha / mup_width_multiplier = {readout:.6g}; {depth}; Adam eps adam_eps x (1 / "
        f"mup_width_multiplier) x depth_multiplier^-depth_alpha_exp = the proxies' {tg.eps * tg.eps_mult:.6g}.")
    scale = "1/sqrt(head_dim)" if disable else "1/head_dim"
    cannot = []
    if not math.isclose(off, 1.0, rel_tol=1e-9):
        ours = tg.attention.scale
        cannot.append(f"attn_mult: its attention scale is 1/head_dim or (mup_disable_attention_scaling) "
                      f"1/sqrt(head_dim); the nearer to the proxies' attn_mult x sqrt(base_head_dim) / head_dim = "
                      f"{ours:.6g}, {scale}, is set, the proxies' is {off:.6g}x it: for the tuned model set "
                      f"attention_scale = {ours!r} in model.py's CausalSelfAttention.forward")
    if not tg.tie_embeddings:  # a tied export is nanoGPT-mup's own tying: lm_head is wte, N(0, init_std), its LR
        cannot.append(
            "an untied readout: its lm_head is wte (weight tying), N(0, init_std); the proxies' readout is separate "
            "and zero-initialised: for the tuned model delete model.py's `self.transformer.wte.weight = "
            "self.lm_head.weight` and zero lm_head.weight")
    cannot += [
        "the query's zero init: c_attn draws q like k and v (zero its first n_embd rows for the tuned model)",
        "LayerNorm biases: bias = False (the proxies' Linear layers have none) drops the LayerNorms' biases too",
    ]
    if tg.weight_decay:
        cannot.append("weight decay on LayerNorm gains: the proxies decayed them, nanoGPT-mup does not")
    if tg.d_ffn != 4 * tg.width:
        cannot.append(f"the MLP width: nanoGPT-mup's is 4 x n_embd, the proxies' {tg.d_ffn}")
    notes.append("nanoGPT-mup cannot apply (do it by hand, or the target differs from the tuned model there):")
    notes += [f"  - {x}." for x in cannot]
    return notes


def nanogpt_mup(config: Config, *, nproc: int = 1, micro_batch_size: int | None = None) -> str:
    """A config file for nanoGPT-mup (completep branch): `python train.py this.py` (configurator.py exec's it)."""
    doc = document(config)
    tg = resolve_target(doc, "nanogpt-mup", nproc=nproc, micro_batch_size=micro_batch_size)
    keys = nanogpt_mup_keys(tg)
    head = comment_lines(doc, keys) + ["# " + x for x in _notes(tg)]
    if tg.optimizer != "adamw":
        head.append(f"# The recipe's optimizer is {tg.optimizer}; nanoGPT-mup trains with AdamW (decoupled weight "
                    "decay), which the values were not tuned for.")
    note = schedule_note(tg, "nanoGPT-mup")
    if note:
        head.append("# " + note)
    if tg.vocab_size is not None:
        head.append(f"# vocab_size {tg.vocab_size}: nanoGPT-mup reads it from data/<dataset>/meta.pkl.")
    head.append(f"# Global batch: {tg.batch_size} sequences of {tg.seq_len} tokens = batch_size x "
                "gradient_accumulation_steps (train.py divides the accumulation by the number of processes).")
    body = [f"{k} = {v!r}" for k, v in keys.items()]
    return "\n".join([*head, "", _GUARD, *body]) + "\n"
