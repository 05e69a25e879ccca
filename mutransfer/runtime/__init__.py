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
takes 1, 1, 1 and zeros. Importing this package imports neither torch nor transformers.

The parts: `rules` (the config read into `Rules`), `classification` (each parameter's kind and role),
`optimizer` (param groups and the optimizer), `initialization` (`init_`), `multipliers` (the forward
multipliers), `hf` (`hf_optimizer`, `MuTrainer`); `prepare`, here, is the init and the multipliers at once.
"""

from __future__ import annotations

from typing import Any

from mutransfer.runtime.classification import classify
from mutransfer.runtime.hf import hf_optimizer
from mutransfer.runtime.initialization import init_
from mutransfer.runtime.multipliers import (
    apply_multipliers,
    attention_scale,
    branch_multiplier,
    embedding_multiplier,
    readout_multiplier,
)
from mutransfer.runtime.optimizer import make_optimizer, param_groups
from mutransfer.runtime.rules import Rules, RuntimeConfigError, load_rules

__all__ = ["Rules", "RuntimeConfigError", "apply_multipliers", "attention_scale", "branch_multiplier", "classify",
           "embedding_multiplier", "hf_optimizer", "init_", "load_rules", "make_optimizer", "param_groups",
           "prepare", "readout_multiplier"]  # and MuTrainer, a transformers.Trainer, built on first use


def prepare(model: Any, config: Any, **kw: Any) -> list[Any]:
    """`init_` then `apply_multipliers`: the model as µP has it at the target width. Returns the hook handles."""
    hooks = {k: kw.pop(k) for k in ("attention", "attr", "branch_out") if k in kw}
    init_(model, config, **kw)
    return apply_multipliers(model, config, **hooks, **kw)


def __getattr__(name: str) -> Any:
    if name == "MuTrainer":  # built on first use (in hf): importing this package does not import transformers
        from mutransfer.runtime import hf

        return hf.MuTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
