"""µP's forward multipliers: their values (readout, embedding, attention, residual branch) and
`apply_multipliers`, which puts them on a model as hooks and attention scales."""

from __future__ import annotations

from typing import Any

from mutransfer.runtime.classification import match, scan
from mutransfer.runtime.rules import RuntimeConfigError, load_rules

_BRANCH_OUT = (r"\d+\.(attn|self_attn|attention|mlp|feed_forward)\.(proj|c_proj|o_proj|out_proj|down_proj|w2)"
               r"|hidden\.\d+")
_ATTN_ATTRS = ("scale", "scaling", "softmax_scale")


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
    params = scan(model, r, **kw)
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
            if not (match(attention, name) if attention else type(m).__name__.endswith("Attention")):
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
        mods = [m for n, m in model.named_modules() if branch_out and match(branch_out, n)]
        if not mods:
            raise RuntimeConfigError(f"branch_out: depth scaling multiplies each residual branch by {bm:g} and no "
                                     f"module matches {branch_out!r}: pass branch_out= (the branches' last layers)")
        handles += [m.register_forward_hook(lambda _m, _a, out: out * bm) for m in mods]
    return handles
