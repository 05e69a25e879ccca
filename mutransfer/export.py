"""The tuned config for the target model, from a recipe and a fit: plain dicts, rendered as YAML or JSON.

Under µP the config spells out the per-parameter rules of mup 1.0's "Table 8" form (what `MuAdam`/`MuAdamW`/
`MuSGD`, `MuReadout` and `set_base_shapes` do), so a launcher that does not use mup can reproduce µP at the
target width. Every number is a plain Python float/int: the dict survives `json.dumps(allow_nan=False)` and a YAML
round trip unchanged.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Literal

import yaml

from mutransfer import __version__
from mutransfer.conventions import conventions, depth_section
from mutransfer.fit import FitResult, Law, Transfer
from mutransfer.gpt_shape import gpt_shape
from mutransfer.recipe import Recipe, default_init_std
from mutransfer.values import plain

__all__ = ["data_sizes", "export_config", "render", "target_build_config"]

# The hyperparameters a config always states, with where their recipe value lives.
_TRAIN = ("lr", "weight_decay", "adam_eps", "momentum")
_MODEL = ("init_std", "output_mult", "embed_mult", "attn_mult")



def _recipe_value(recipe: Recipe, name: str) -> Any:
    if name in _TRAIN or hasattr(recipe.train, name):
        return getattr(recipe.train, name, None)
    return getattr(recipe.model, name, None)


def _law_entry(fit: FitResult, t: Transfer, axis: str) -> dict[str, Any]:
    step = next(s for s in t.steps if s.axis == axis)
    law: Law | None = next(
        (x for x in fit.laws if (x.parametrization, x.hparam, x.axis) == (t.parametrization, t.hparam, axis)), None
    )
    entry: dict[str, Any] = {
        "swept": step.swept,
        "slope": step.slope,  # the slope used: 0 where the data did not carry one (kept: false)
        "slope_interval": [law.slope_lo, law.slope_hi] if law is not None and law.fitted else None,
        "kept": bool(law.kept) if law is not None and law.fitted else False,
        "proxy_scales": list(law.scales) if law is not None else [step.base],
        "target": step.target,
        "target_over_largest_proxy": step.extrapolation,
        "doublings_beyond_largest_proxy": step.doublings,
    }
    if law is not None and law.fitted and law.free_slope is not None:
        entry["free_slope"] = law.free_slope
        entry["free_slope_interval"] = [law.free_slope_lo, law.free_slope_hi]
    if law is not None and law.unstable:
        entry["unstable"] = True
    if step.note:
        entry["note"] = step.note
    return entry


# How each tuned value is applied at the target (mutransfer.parametrization builds the target this way), per parametrization.
_RULES_MUP = {
    "lr": "the base-width LR: MuAdam/MuAdamW divide it by width_mult for hidden matrices; embeddings, biases, "
          "LayerNorm and the readout keep it (MuSGD: the mup package's SGD rule)",
    "output_mult": "the base-width value: MuReadout divides the logits by width_mult at the target",
    "init_std": "the std of hidden matrices at the base width: N(0, init_std * sqrt(base_fan_in / fan_in)) at the "
                "target; embeddings N(0, init_std); readout and query zero",
    "embed_mult": "unchanged with width: the embedding output times embed_mult",
    "attn_mult": "attention scale attn_mult * sqrt(base_head_dim) / head_dim (the 1/d rule)",
}
_RULES_MUP_TIED = {**_RULES_MUP,
                   "init_std": "the std of hidden matrices at the base width: N(0, init_std * sqrt(base_fan_in / "
                               "fan_in)) at the target; embeddings, and the readout tied to the token embedding, "
                               "N(0, init_std); query zero"}
_RULE_SP = "used as it is: SP has no width rule (its optimum moves with width; the laws above moved it)"


def _hyperparameters(
    recipe: Recipe, fit: FitResult, parametrization: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The `hyperparameters` section and the value of each one (fitted, else the recipe's)."""
    section: dict[str, dict[str, Any]] = {}
    values: dict[str, Any] = {}
    tied = recipe.model.tie_embeddings
    for name in fit.hparams:
        try:
            t = fit.transfer(parametrization, name)
        except KeyError:
            continue
        entry: dict[str, Any] = {"source": "fit", "value": t.value}
        if t.value is None:
            entry.update(source="recipe (the fit found no optimum)", value=_recipe_value(recipe, name))
        if t.kind != "choice":
            entry["interval"] = [t.lo, t.hi]
            entry["coordinate"] = "log2" if t.kind == "log" else "linear"
        entry["base_optimum"] = {"value": t.base_value}
        if t.kind != "choice":
            entry["base_optimum"]["interval"] = [t.base_lo, t.base_hi]
        if t.kind != "choice":
            entry["laws"] = {s.axis: _law_entry(fit, t, s.axis) for s in t.steps}
        else:
            entry["laws"] = {s.axis: {"swept": False, "note": s.note} for s in t.steps}
        rule = (_RULES_MUP_TIED if tied else _RULES_MUP).get(name) if parametrization == "mup" else _RULE_SP
        if rule is not None:
            entry["rule"] = rule
        if t.unstable:
            entry["unstable"] = True  # outside its own bootstrap interval: see the note
        if t.note:
            entry["note"] = t.note
        if fit.warnings_with("does_not_transfer", parametrization=parametrization, hparam=name):
            entry["transfers"] = False  # the proxies' optimum, not a value to copy: see the note
        section[name] = entry
        values[name] = entry["value"]
    for name in (*_TRAIN, *_MODEL):
        if name in values:
            continue
        if name == "momentum" and recipe.train.optimizer != "sgd":
            continue
        if name == "attn_mult" and recipe.model.family == "mlp":
            continue
        value = _recipe_value(recipe, name)
        entry = {"source": "recipe", "value": value}
        if value is None:
            entry["note"] = f"the {recipe.model.family} family's default"
        section[name] = entry
        values[name] = value
    return section, values


def _target(recipe: Recipe, data_sizes: dict[str, int | None] | None) -> dict[str, Any]:
    t, m = recipe.target, recipe.model
    out: dict[str, Any] = {
        "width": t.width,
        "depth": t.depth,
        "batch_size": t.batch_size,
        "seq_len": t.seq_len,
        "tokens": t.tokens,
    }
    shape = gpt_shape(m)  # the built-in gpt's, or the one a user's builder declares in model.options
    if shape is not None:
        hd, nh = shape.heads_at(t.width)
        out.update(head_dim=hd, n_heads=nh, ffn_ratio=shape.ffn_ratio)
        if m.family == "hf-llama":  # what its LlamaConfig needs besides (mutransfer.hf_llama.llama_config)
            out.update(kv_heads=shape.kv_heads_at(t.width, m.base_width), intermediate_size=shape.d_ffn(t.width))
        vocab = m.vocab_size if m.vocab_size is not None else (data_sizes or {}).get("vocab_size")
        if vocab is not None:
            out["vocab_size"] = int(vocab)
    return out


def _model(recipe: Recipe, values: dict[str, Any], data_sizes: dict[str, int | None] | None) -> dict[str, Any]:
    """The architecture as the proxies had it, and the multipliers at their transferred (or recipe) values."""
    m = recipe.model
    init_std = values.get("init_std")
    if init_std is None:
        init_std = default_init_std(m.family, m.base_width)
    out: dict[str, Any] = {"family": m.family, "base_width": m.base_width}
    if m.family != "mlp":
        s = gpt_shape(m) or m  # a builder's declared shape, else the recipe's keys
        out.update(head_dim=s.head_dim, n_heads=s.n_heads, ffn_ratio=s.ffn_ratio)
    sizes = dict(data_sizes or {})
    if m.vocab_size is not None and sizes.get("vocab_size") is None:
        sizes["vocab_size"] = m.vocab_size
    for key in ("input_dim", "vocab_size", "num_classes"):
        if sizes.get(key) is not None:
            out[key] = int(sizes[key])  # type: ignore[arg-type]
    out["multipliers"] = {
        "init_std": init_std,
        "output_mult": values["output_mult"],
        "embed_mult": values["embed_mult"],
        "attn_mult": values.get("attn_mult", m.attn_mult),
    }
    out["depth"] = depth_section(recipe)  # residual scaling and its factors: mutransfer.target rebuilds from it
    out["tie_embeddings"] = m.tie_embeddings
    if m.options:
        out["options"] = dict(m.options)
    return out


def _schedule(recipe: Recipe) -> dict[str, Any]:
    tr, t = recipe.train, recipe.target
    proxy_steps = recipe.steps_at(recipe.scales.base)
    out: dict[str, Any] = {
        "kind": tr.schedule,
        "warmup_steps": tr.warmup_steps,
        "min_lr_frac": tr.min_lr_frac,
        "proxy_steps": proxy_steps,
        # The proxies' warmup as a fraction of their run: the part of it that carries over to a longer run.
        "warmup_fraction": tr.warmup_steps / proxy_steps,
    }
    if t.tokens is not None:
        per_step = t.batch_size * (t.seq_len if recipe.model.family != "mlp" else 1)
        steps = max(1, math.ceil(t.tokens / per_step))
        out["target_steps"] = steps
        out["target_warmup_steps"] = round(tr.warmup_steps / proxy_steps * steps)
    out["note"] = "schedules scale each parameter group's LR relative to its own initial LR (initial_lr × factor)"
    return out


def _optimizer(recipe: Recipe, values: dict[str, Any]) -> dict[str, Any]:
    tr = recipe.train
    out: dict[str, Any] = {"name": tr.optimizer, "lr": values["lr"], "weight_decay": values["weight_decay"]}
    if tr.optimizer == "sgd":
        out["momentum"] = values.get("momentum", tr.momentum)
    else:
        out["betas"] = list(tr.betas)
        out["eps"] = values["adam_eps"]
    out["grad_clip"] = tr.grad_clip
    return out


def mup_section(recipe: Recipe, values: dict[str, Any], param_groups: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The export's `mup` section: the multipliers and the per-group rules (LR, init, weight decay, eps) the target
    trains with, from the recipe's optimizer and the transferred `values`."""
    m, t, opt = recipe.model, recipe.target, recipe.train.optimizer
    wm = t.width / m.base_width
    lr, wd = values["lr"], values["weight_decay"]
    init_std = values.get("init_std")
    if init_std is None:
        # The family's default: stated, so a launcher need not know it.
        init_std = default_init_std(recipe.model.family, recipe.model.base_width)
    output_mult, embed_mult = values["output_mult"], values["embed_mult"]
    sgd = opt == "sgd"
    # mup 1.0: MuAdam/MuAdamW divide hidden (two width dims) LR by width_mult and multiply their weight decay by it;
    # MuSGD instead multiplies vector-like (one width dim) LR by width_mult and divides their weight decay by it,
    # and leaves square hidden matrices alone.
    hidden_lr_scale = 1.0 if sgd else 1.0 / wm
    hidden_wd_scale = 1.0 if sgd else wm
    vector_lr_scale = wm if sgd else 1.0
    vector_wd_scale = 1.0 / wm if sgd else 1.0
    rules: dict[str, Any] = {
        "hidden": {
            "applies_to": "matrix-like weights whose fan-in and fan-out both grow with width "
            "(hidden-to-hidden, attention and MLP projections)",
            "lr": lr * hidden_lr_scale,
            "lr_scale": hidden_lr_scale,
            "weight_decay": wd * hidden_wd_scale,
            "weight_decay_scale": hidden_wd_scale,
            "init_std": init_std / math.sqrt(wm) if init_std is not None else None,
            "init_std_scale": 1.0 / math.sqrt(wm),
            "init_note": "std ∝ 1/sqrt(fan_in): init_std at base width, divided by sqrt(width_mult)",
        },
        "vector_like": {
            "applies_to": "parameters with one width dimension: embeddings, biases, norm gains, input weights, "
            "the readout weight",
            "lr": lr * vector_lr_scale,
            "lr_scale": vector_lr_scale,
            "weight_decay": wd * vector_wd_scale,
            "weight_decay_scale": vector_wd_scale,
            "init_std": init_std,
            "init_std_scale": 1.0,
        },
        "readout": {
            "init": "zeros",
            "output_multiplier": output_mult / wm,
            "formula": "logits = readout(h) * output_mult / width_mult",
        } if not m.tie_embeddings else {
            # One tensor: it cannot start at zero without zeroing the embedding (mutransfer.parametrization.init_rules).
            "init": "tied",
            "output_multiplier": output_mult / wm,
            "formula": "logits = (h @ embedding.weight^T) * output_mult / width_mult: the readout is the token "
                       "embedding's weight (one vector-like parameter, N(0, init_std), the embedding's LR)",
        },
        "embedding": {"multiplier": embed_mult, "formula": "x = embedding(tokens) * embed_mult"},
    }
    if sgd:
        rules["fixed"] = {
            "applies_to": "parameters with no width dimension (e.g. the readout bias)",
            "lr": lr,
            "lr_scale": 1.0,
            "weight_decay": wd,
        }
    shape = gpt_shape(m)
    if shape is not None:
        attn_mult = values.get("attn_mult", m.attn_mult)
        base_hd, hd = shape.heads_at(m.base_width)[0], shape.heads_at(t.width)[0]
        rules["attention"] = {
            "scale": attn_mult * math.sqrt(base_hd) / hd,
            "formula": "softmax(q·k * attn_mult * sqrt(base_head_dim) / head_dim): 1/d, not 1/sqrt(d)",
            "base_head_dim": base_hd,
            "head_dim": hd,
            "query_init": "zeros",
        }
    out: dict[str, Any] = {
        "base_width": m.base_width,
        "target_width": t.width,
        "width_mult": wm,
        "optimizer": opt,
        "rules": rules,
    }
    if param_groups is not None:
        groups = []
        for g in param_groups:
            if "lr_mult" not in g:
                raise ValueError(f"param group {g.get('name', g)!r} has no lr_mult")
            group = {**g, "lr": lr * float(g["lr_mult"])}
            if g.get("wd_mult") is not None:
                group["weight_decay"] = wd * float(g["wd_mult"])
            groups.append(group)
        out["param_groups"] = groups
    return out


def export_config(
    recipe: Recipe,
    fit: FitResult,
    *,
    sweep_name: str,
    sweep_id: int,
    recipe_hash: str,
    param_groups: list[dict[str, Any]] | None = None,
    parametrization: str = "mup",
    data_sizes: dict[str, int | None] | None = None,
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The target config: provenance, sizes, tuned hyperparameters, optimizer, schedule, µP rules, warnings.

    `data_sizes` (input_dim, vocab_size, num_classes: what the data gives the model, see `target_build_config`)
    and the model's own sizes and multipliers go into `model`, so `mutransfer.target` can rebuild the target from
    the file alone. `compute` (`mutransfer.compute.ComputeReport.to_dict()`) goes under `compute`.
    """
    if parametrization not in fit.parametrizations:
        have = ", ".join(fit.parametrizations) or "none"
        raise ValueError(f"the fit has no {parametrization!r} trials (it has: {have})")
    section, values = _hyperparameters(recipe, fit, parametrization)
    config: dict[str, Any] = {
        "provenance": {
            "sweep": {"name": sweep_name, "id": sweep_id},
            "recipe_name": recipe.name,
            "recipe_hash": recipe_hash,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mutransfer_version": __version__,
            "fit": {"metric": fit.metric, "seed": fit.seed, "n_boot": fit.n_boot},
        },
        "parametrization": parametrization,
        "model": _model(recipe, values, data_sizes),
        "proxy_base": recipe.scales.base.model_dump(),
        "target": _target(recipe, data_sizes),
        "hyperparameters": section,
        "optimizer": _optimizer(recipe, values),
        "schedule": _schedule(recipe),
        "conventions": conventions(recipe),
    }
    if parametrization == "mup":
        config["mup"] = mup_section(recipe, values, param_groups)
    else:
        config["scaling"] = (
            "none: standard parametrization (SP); use the values above as they are, with no µP width scaling"
            + ("; the given param_groups were left out (they carry µP multipliers)" if param_groups else "")
        )
    if compute is not None:
        config["compute"] = compute
    config["parametrization_choice"] = choice_of(fit, parametrization)
    fc = fit.forecast(parametrization)
    if fc is not None:
        config["predicted_metric"] = predicted_metric(fc, fit.metric)
    config["fit_checks"] = {
        "model": fit.model.get(parametrization, {}),
        "backtests": [vars(b) for b in fit.backtests if b.parametrization == parametrization],
        "noise": [vars(n) for n in fit.noise if n.parametrization == parametrization],
    }
    config["warnings"] = [
        {k: v for k, v in vars(w).items() if v is not None}
        for w in fit.warnings
        if w.parametrization in (None, parametrization)
    ]
    return plain(config)


def default_parametrization(fit: FitResult) -> str:
    """What `export` writes when not told: the parametrization predicted to train the better target, else µP when
    the sweep has it (µP's values are the ones that transfer), else the only one."""
    if fit.preferred in fit.parametrizations:
        return fit.preferred  # type: ignore[return-value]
    return "mup" if "mup" in fit.parametrizations else fit.parametrizations[0]


def choice_of(fit: FitResult, parametrization: str) -> dict[str, Any]:
    """Which parametrization this export describes, and why."""
    if len(fit.parametrizations) < 2:
        why = "the sweep has only this parametrization"
    elif fit.preferred == parametrization:
        why = fit.preferred_reason
    elif fit.preferred is not None:
        why = f"asked for, although {fit.preferred_reason}"
    else:
        why = (fit.preferred_reason or "no prediction at the target for both") + (
            "; µP by default" if parametrization == "mup" else "; asked for")
    return {"chosen": parametrization, "why": why,
            "predicted": {f.parametrization: {"value": f.value, "lo": f.lo, "hi": f.hi} for f in fit.forecasts}}


def predicted_metric(fc: Any, metric: str) -> dict[str, Any]:
    """The loss to expect at the target (mutransfer.fit.forecast), with how far it extrapolates."""
    far = ", ".join(f"{v:.1f} doublings of {a}" for a, v in fc.doublings.items() if v > 0)
    return {
        "metric": metric,
        "value": fc.value,
        "lo": fc.lo,
        "hi": fc.hi,
        "law": f"{fc.form} law through the proxies' floors: exponents {fc.exponents}",
        "extrapolates": f"{far} beyond the largest proxy" if far else "within the proxies' sizes",
        "backtest": {"left_out": fc.backtest_scale, "predicted": fc.backtest_predicted,
                     "observed": fc.backtest_observed, "relative_error": fc.backtest_error},
        "unstable": fc.unstable,
        "note": fc.note,
    }


# The extrapolation guard. A transferred value whose 95% interval spans more octaves than this (a factor 8 between
# its ends) says "somewhere in this range", not a value to train a large model with.
GUARD_OCTAVES = 3.0
GUARD_LINEAR = 0.5  # of the searched range, for a uniform hyperparameter


def extrapolation_problem(recipe: Recipe, fit: FitResult, parametrization: str) -> str | None:
    """One line naming the first transferred value that is not a plain number to export, and the remedy (the API
    adds the way round it, allow_extrapolation, to its refusal: an export made that way records only this); None
    when every value is inside the searched range with an interval narrower than GUARD_OCTAVES."""
    for t in fit.transfers:
        if t.parametrization != parametrization or t.kind == "choice" or t.value is None:
            continue
        if fit.warnings_with("does_not_transfer", parametrization=parametrization, hparam=t.hparam):
            continue  # exported as the proxies' optimum, marked transfers: false
        dist = recipe.search.space.get(t.hparam)
        bounds = getattr(dist, "loguniform", None) or getattr(dist, "uniform", None)
        field = f"search.space.{t.hparam}"
        beyond = ", ".join(f"{s.axis} {s.doublings:.1f} doublings beyond the largest proxy" for s in t.steps
                           if s.swept and s.doublings > 0)
        if bounds is not None and not (bounds[0] <= t.value <= bounds[1]):
            return (f"{field}: the transferred {t.hparam} {t.value:.3g} lies outside the searched range "
                    f"[{bounds[0]:.3g}, {bounds[1]:.3g}]{' (' + beyond + ')' if beyond else ''}: widen the range, "
                    "or add a larger proxy to scales.vary")
        if bounds is not None and any(math.isclose(v, b, rel_tol=1e-9) for v in (t.value, t.base_value)
                                      if isinstance(v, (int, float)) for b in bounds):
            # The joint model keeps the base optimum inside the searched range (fit.model.clip): one that sits on
            # a bound says only "this far or further", not where the optimum is.
            return (f"{field}: the fitted optimum of {t.hparam} sits at the edge of the searched range "
                    f"[{bounds[0]:.3g}, {bounds[1]:.3g}], so it may lie beyond it: widen the range and run the sweep "
                    "again")
        if t.lo is None or t.hi is None:
            continue
        if t.kind == "log":
            width = math.log2(t.hi / t.lo) if t.lo > 0 else math.inf
            too_wide, shown = width > GUARD_OCTAVES, f"{width:.1f} octaves wide (more than {GUARD_OCTAVES:g})"
        else:
            span = (bounds[1] - bounds[0]) if bounds is not None else abs(t.value) or 1.0
            width = t.hi - t.lo
            too_wide, shown = width > GUARD_LINEAR * span, f"{width / span:.0%} of the searched range wide"
        if too_wide:
            return (f"{field}: the transferred {t.hparam} {t.value:.3g} has a 95% interval [{t.lo:.3g}, {t.hi:.3g}], "
                    f"{shown}: add search.samples near the optimum or search.repeats and run the sweep again")
    return None


def render(config: dict[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The config as YAML or JSON text; either parses back to an equal dict."""
    if fmt == "yaml":
        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=110)
    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use yaml or json")


def target_build_config(recipe: Recipe, parametrization: str = "mup", fit: FitResult | None = None) -> Any:
    """The `mutransfer.parametrization.BuildConfig` of the target, for `describe_groups` (the export's param_groups).

    Multipliers and init are the fit's transferred values when a fit is given, else the recipe's. Imports torch
    and reads the data (for the input and vocabulary sizes) lazily: the rest of this module stays pure.
    """
    from mutransfer.data import load_dataset
    from mutransfer.parametrization import BuildConfig

    m, t = recipe.model, recipe.target
    dataset = load_dataset(recipe.data, m)
    values: dict[str, Any] = {name: _recipe_value(recipe, name) for name in (*_TRAIN, *_MODEL)}
    if fit is not None and parametrization in fit.parametrizations:
        for tr in fit.transfers:
            if tr.parametrization == parametrization and tr.value is not None:
                values[tr.hparam] = tr.value
    return BuildConfig.assemble(m, t, dataset, parametrization=parametrization, hparams=values)


def data_sizes(cfg: Any) -> dict[str, int | None]:
    """What the data gives the model (from a `BuildConfig`): the `data_sizes` argument of `export_config`."""
    return {"input_dim": cfg.input_dim, "vocab_size": cfg.vocab_size, "num_classes": cfg.num_classes}
