"""The conventions that make a transferred value mean the same thing at the target, stated in words.

µTransfer copies numbers from a proxy to a target; a number only transfers together with the rule that scales it.
`conventions(recipe)` says, for one recipe, what those rules are (weight decay with width, Adam's epsilon, the
schedule, depth, the training horizon), in short strings the export carries, so a launcher that reproduces the
target knows what it must do besides copying values. `does_not_transfer(recipe, name)` names the hyperparameters
that the literature says do not transfer under the recipe's conventions: the fit flags them and the export marks
them instead of copying them silently. Pure: no torch, reads the recipe only.
"""

from __future__ import annotations

from mutransfer.recipe import Recipe

__all__ = ["conventions", "depth_section", "does_not_transfer"]

# A target trained on at least this many times the base proxy's steps is a different horizon for weight decay.
HORIZON_RATIO = 2.0
# Regularisers: Tensor Programs V (Yang et al. 2022), Table 1: "not µTransferable: regularization (dropout, weight
# decay, etc.)": their optimum depends on how big the model is relative to the data, which changes with the target.
_REGULARIZERS = ("dropout", "label_smoothing", "stochastic_depth", "drop_path")


def _horizon_ratio(recipe: Recipe) -> float | None:
    """Target steps over the base proxy's steps; None when the target states no token budget."""
    target = recipe.target_steps()
    if target is None:
        return None
    return target / recipe.steps_at(recipe.scales.base)


def does_not_transfer(recipe: Recipe, name: str) -> str | None:
    """Why the optimum of `name` found on the proxies should not be copied to the target; None if it transfers."""
    if any(r in name for r in _REGULARIZERS):
        return (
            f"{name} is a regularizer: its optimum depends on model size relative to the data, not only on the "
            "parametrization (Tensor Programs V, Table 1: regularization is not µTransferable); tune it at the target"
        )
    if name != "weight_decay":
        return None
    opt = recipe.train.optimizer
    if opt == "adam":
        return (
            "weight_decay under adam is an L2 term added to the gradient, which Adam then normalises: the decay each "
            "weight feels depends on its gradient scale, which changes with size (MuAdam multiplies the L2 term of "
            "hidden matrices by width_mult); use adamw for a weight decay that transfers across width"
        )
    if opt == "sgd":
        return (
            "weight_decay under MuSGD is divided by width_mult for vector-like parameters and multiplied by the "
            "fan-in/fan-out ratio for matrices: a regularizer whose optimum moves with the data/model ratio"
        )
    ratio = _horizon_ratio(recipe)
    if ratio is not None and ratio >= HORIZON_RATIO and "steps" not in recipe.scales.vary:
        return (
            f"the target trains {ratio:.3g}x the base proxy's steps: AdamW's decay timescale 1/(lr·wd) should be a "
            "fixed fraction of the run (Wang & Aitchison 2024), so the optimal weight_decay shrinks with the horizon; "
            "vary scales.steps to fit that law, or scale weight_decay by the inverse of the step ratio"
        )
    return None


def conventions(recipe: Recipe) -> dict[str, str]:
    """The scaling conventions a run of this recipe follows, one short sentence per topic."""
    m, tr = recipe.model, recipe.train
    mu = "mup" in m.parametrizations
    out: dict[str, str] = {}

    if tr.optimizer == "adamw":
        wd = (
            "MuAdamW (mup 1.0) divides the LR of matrix-like parameters (two width dimensions) by width_mult and "
            "multiplies their weight_decay by width_mult, so lr·wd, AdamW's per-step decay, is the same at every "
            "width; vector-like parameters keep lr and wd"
        )
    elif tr.optimizer == "adam":
        wd = (
            "MuAdam (mup 1.0) divides the LR of matrix-like parameters by width_mult and multiplies their "
            "weight_decay by width_mult; under Adam weight_decay is a coupled L2 term (added to the gradient before "
            "normalisation), so lr·wd is not a decay rate and the value does not transfer"
        )
    else:
        wd = (
            "MuSGD (mup 1.0) multiplies the LR of vector-like parameters by width_mult and divides their "
            "weight_decay by it; matrix-like parameters get LR / (fan_in/fan_out ratio) and wd x that ratio"
        )
    out["weight_decay"] = wd if mu else "standard parametrization: weight_decay used as given at every size"
    if m.depth_scaling != "none":
        out["weight_decay"] += (
            "; weight_decay is not changed with depth, so inside residual blocks lr·wd follows the depth LR factor "
            "(as in the CompleteP reference code)"
        )

    if tr.optimizer == "sgd":
        out["adam_eps"] = "not used (sgd)"
    elif m.eps_scaling == "width":
        eps = "Adam epsilon multiplied by 1/width_mult"
        if m.depth_scaling != "none":
            eps += f" and by (depth/{m.base_depth})^-{m.depth_alpha:g}"
        out["adam_eps"] = eps + " (CompleteP's rule): it stays below the gradients, which shrink with width under µP"
    else:
        out["adam_eps"] = (
            "Adam epsilon used as given at every size: at a wide target µP's smaller gradients can fall under it "
            "(set model.eps_scaling: width to scale it)"
        )

    out["schedule"] = (
        f"{tr.schedule} schedule as a factor on each parameter group's own initial LR (LambdaLR): µP's and the "
        "depth rule's per-group LR ratios hold at every step"
        + (f"; warmup is {tr.warmup_steps} proxy steps, carried to the target as a fraction of the run"
           if tr.warmup_steps else "")
    )

    if m.depth_scaling == "none":
        out["depth"] = (
            "none: residual branches summed as they are; the optimal LR may drift with depth (fit it with a depth "
            "axis, or use depth-mup / completep)"
        )
    else:
        a = m.depth_alpha
        paper = "Tensor Programs VI (Yang et al. 2023)" if m.depth_scaling == "depth-mup" else (
            "CompleteP (Dey et al. 2025)")
        out["depth"] = (
            f"{m.depth_scaling} ({paper}): residual branches x (depth/{m.base_depth})^-{a:g}; Adam LR of "
            f"parameters inside residual blocks x (depth/{m.base_depth})^{a - 1:g}; embeddings, final norm and "
            "readout unchanged; init unchanged"
        )

    ratio = _horizon_ratio(recipe)
    if "steps" in recipe.scales.vary:
        out["token_horizon"] = (
            "training steps swept as a scale axis: the fit's law of each optimum against log2(steps) moves it to the "
            "target's steps (target.tokens / tokens per step)"
        )
    elif ratio is not None and ratio >= HORIZON_RATIO:
        out["token_horizon"] = (
            f"the target trains {ratio:.3g}x the base proxy's steps and the sweep does not vary steps: the LR is "
            "transferred as if the horizon did not matter (it usually shrinks with it)"
        )
    else:
        out["token_horizon"] = "the target trains about as long as the proxies: no horizon correction needed"

    out["multipliers"] = (
        "init_std, output_mult, embed_mult, attn_mult are base-width values: the target applies them through µP's "
        "rules (hidden init std / sqrt(width_mult), readout output_mult / width_mult, attention attn_mult·"
        "sqrt(base_head_dim)/head_dim)" if mu else "init_std, output_mult, embed_mult, attn_mult used as given"
    )
    return out


def depth_section(recipe: Recipe) -> dict[str, object]:
    """The export's `model.depth`: the depth rule and its factors at the target, for `mutransfer.target` to rebuild.

    Keys: scaling (none | depth-mup | completep), alpha, base_depth, residual (mlp residual blocks), eps_scaling,
    and at the target's depth: depth_mult, branch_multiplier ((L / L_base) ** -alpha on every residual branch) and
    block_lr_scale ((L / L_base) ** (alpha - 1) on the Adam LR of parameters inside residual blocks).
    """
    m, t = recipe.model, recipe.target
    scaled = m.depth_scaling != "none" and m.base_depth is not None
    mult = t.depth / m.base_depth if scaled else 1.0  # type: ignore[operator]
    a = m.depth_alpha
    return {
        "scaling": m.depth_scaling,
        "alpha": a,
        "base_depth": m.base_depth,
        "residual": m.residual,
        "eps_scaling": m.eps_scaling,
        "depth_mult": mult,
        "branch_multiplier": mult**-a if scaled else 1.0,
        "block_lr_scale": mult ** (a - 1.0) if scaled else 1.0,
    }
