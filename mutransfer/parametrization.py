"""µP and SP: how a model is built, initialised and optimised at a given size, and what µP does to each parameter.

Parametrizations
----------------
- µP (``mup``): readout ``mup.MuReadout(width, out, readout_zero_init=True, output_mult=output_mult)`` (tied:
  ``mup.MuSharedReadout(wte.weight, bias=False, output_mult=output_mult)``), query
  projection zero-initialised, attention scale ``attn_mult * sqrt(base_head_dim) / head_dim`` (the 1/d rule, equal
  to SP's at the base width), ``mup.set_base_shapes(model, base, delta=delta)`` with base and delta models built by
  the same builder at ``base_width`` and ``2 * base_width`` on the meta device, optimizers ``MuAdam``/``MuAdamW``/
  ``MuSGD``.
- SP (``sp``): a plain ``nn.Linear`` readout whose logits are multiplied by ``output_mult``, attention scale
  ``attn_mult / sqrt(head_dim)``, plain ``torch.optim`` optimizers.
- Init (both): ``init_std`` (σ) is the std of hidden weight matrices at the base width. Hidden matrices get
  N(0, σ·sqrt(base_fan_in / fan_in)); embeddings and the MLP's input layer N(0, σ); the SP readout
  N(0, σ·sqrt(base_width / width)); the µP readout (and the µP query) zero; biases 0; LayerNorm (and hf-llama's
  RMSNorm) weights 1. A tied readout (``model.tie_embeddings``) is the embedding's weight and keeps its N(0, σ) under
  both (see `init_rules`).
  σ defaults to ``mutransfer.recipe.default_init_std`` (0.02 for the gpt, ``base_width ** -0.5`` for the mlp). The
  embedding output (the MLP's input layer output) is multiplied by ``embed_mult``. The init runs after
  ``set_base_shapes``, which rescales ``MuReadout``.

The built-in families themselves (their modules, and the µP pieces of their architecture) are mutransfer.models,
and mutransfer.hf_llama for transformers' Llama. Every built-in is initialised here (`is_builtin`); only those with
a stacked forward in mutransfer.batched can train several trials as one (recipe ``FamilyTraits.stacks``).

Depth
-----
``depth_scaling`` (recipe ``model.depth_scaling``, with ``model.base_depth``): every residual branch's output is
multiplied by ``(depth / base_depth) ** -alpha`` and the Adam learning rate of every parameter inside a residual
block (weights, biases, LayerNorm gains) by ``(depth / base_depth) ** (alpha - 1)``; embeddings, the final LayerNorm
and the readout keep theirs. ``depth-mup`` is alpha = 1/2 (Tensor Programs VI, Yang et al. 2023: branch
multiplier L^-1/2 and, for Adam, LR L^-1/2); ``completep`` is alpha = 1 (Dey et al. 2025, "Don't be lazy: CompleteP
enables compute-efficient deep transformers", Table 1, and its reference nanoGPT: branch multiplier L^-1, no depth
change to the LR). Init is not changed with depth. mup's base shapes are width only: the depth factor is this
module's own, written on each parameter by ``tag_params`` and applied by ``optimizer_for`` as a group LR that mup's
width split then keeps as its base. ``eps_scaling: width`` multiplies Adam's epsilon by ``1 / width_mult`` and,
under depth scaling, by ``(depth / base_depth) ** -alpha`` (CompleteP's reference code). The MLP gets residual
blocks with ``residual: true``: ``h + m · W relu(h)`` (Tensor Programs VI's network).

A user's builder
----------------
``model.family: "package.module:function"`` names ``fn(cfg: BuildConfig) -> nn.Module``. Its ``forward(x)`` takes the
dataset's batch ``x`` (digits: float (B, input_dim); chars/tokens: long (B, T)) and returns logits, (B, num_classes)
or (B, T, num_classes). ``cfg`` carries the sizes, the trial's multipliers and every trial hyperparameter
(``cfg.hparams``, including names of the user's own) plus ``model.options`` (``cfg.options``). Under µP the builder is
responsible for µP itself: ``mup.MuReadout`` for the output layer, 1/d attention, zero-init where wanted, and an init
that holds when ``set_base_shapes`` rescales it. mutransfer calls the builder three times, at the trial width and, to
set base shapes, at ``base_width`` and ``2 * base_width`` (under a ``torch.device("meta")`` context, falling back to
CPU if the builder fails there); every width dimension must change between the last two. The builder's own init is
kept: mutransfer only initialises the built-in families. ``mark_block`` (mutransfer.models) marks a residual block.
With ``model.tie_embeddings`` (``cfg.tie_embeddings``) the builder ties its readout to its token embedding, under µP
as ``mup.MuSharedReadout(wte.weight, bias=False, output_mult=cfg.output_mult)``; the shared weight keeps the
embedding's init (``_set_base_shapes`` undoes mup's MuReadout rescale of it), so it is one vector-like parameter
with the embedding's LR. The forward may return nanoGPT's ``(logits, loss)`` (mutransfer.logits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import mup
import torch
from torch import nn

from mutransfer.models import FAMILIES, is_block, role_of, tied_names
from mutransfer.recipe import (
    BUILTIN_FAMILIES,
    DEPTH_ALPHA,
    KNOWN_HPARAMS,
    default_init_std,
    resolve_entrypoint,
)

if TYPE_CHECKING:
    from mutransfer.plan import TrialSpec


class ModelShape(Protocol):
    """The architecture a BuildConfig copies: a recipe's `model` section, or an export's."""

    base_width: int
    head_dim: int | None
    n_heads: int | None
    ffn_ratio: float | None
    options: Mapping[str, Any]


class Size(Protocol):
    """A model size: a trial's scale point, a recipe's target, an export's target."""

    width: int
    depth: int
    seq_len: int


class DataSizes(Protocol):
    """What the data gives the model: a `mutransfer.data.Dataset`, or the sizes an export states."""

    input_dim: int | None
    vocab_size: int | None
    num_classes: int


@dataclass(frozen=True)
class BuildConfig:
    """Everything a builder needs to make one model. Also the argument of a user's builder (see the module doc)."""

    width: int
    depth: int
    parametrization: str = "mup"  # mup | sp
    input_dim: int | None = None  # digits: 64
    vocab_size: int | None = None  # chars/tokens
    num_classes: int = 10  # output size: classes, or the vocabulary for sequences
    seq_len: int = 1
    head_dim: int | None = None
    n_heads: int | None = None
    ffn_ratio: float = 4.0
    init_std: float | None = None  # None: the family's default (recipe.default_init_std)
    output_mult: float = 1.0
    embed_mult: float = 1.0
    attn_mult: float = 1.0
    base_width: int = 64
    hparams: dict[str, Any] = field(default_factory=dict)  # every hyperparameter of the trial
    options: dict[str, Any] = field(default_factory=dict)  # model.options
    depth_scaling: str = "none"  # none | depth-mup | completep (see the module doc, "Depth")
    base_depth: int | None = None  # the depth at which the depth multipliers are 1
    residual: bool = False  # mlp: residual hidden blocks
    eps_scaling: str = "none"  # none | width: Adam's epsilon over width_mult (and depth_mult ** alpha)
    tie_embeddings: bool = False  # the readout shares the token embedding's weight (mup.MuSharedReadout under µP)

    @property
    def mup(self) -> bool:
        return self.parametrization == "mup"

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    @property
    def depth_alpha(self) -> float:
        return DEPTH_ALPHA[self.depth_scaling]

    @property
    def depth_mult(self) -> float:
        """depth / base_depth under depth scaling, else 1."""
        if self.depth_scaling == "none" or self.base_depth is None:
            return 1.0
        return self.depth / self.base_depth

    @property
    def branch_mult(self) -> float:
        """What every residual branch's output is multiplied by: (L / L_base) ** -alpha (CompleteP Table 1)."""
        return self.depth_mult**-self.depth_alpha

    @property
    def depth_lr_mult(self) -> float:
        """Adam LR factor of the parameters inside residual blocks: (L / L_base) ** (alpha - 1) (CompleteP Table 1).

        With the branch scaled by L^-alpha, an Adam step (whose size does not follow the gradient's) moves each
        block's output by lr·L^-alpha; the L blocks' updates add up to lr·L^(1-alpha), so lr·L^(alpha-1) keeps the
        total change of the residual stream Θ(1) in depth. 1 without depth scaling.
        """
        if self.depth_scaling == "none":
            return 1.0
        return self.depth_mult ** (self.depth_alpha - 1.0)

    @property
    def eps_mult(self) -> float:
        """Adam epsilon factor: CompleteP scales eps by width_mult^-1 · depth_mult^-alpha (their reference code)."""
        if self.eps_scaling == "none":
            return 1.0
        return (1.0 / self.width_mult) * self.depth_mult**-self.depth_alpha

    @classmethod
    def assemble(
        cls,
        model: ModelShape,
        size: Size,
        data: DataSizes,
        *,
        parametrization: str,
        hparams: Mapping[str, Any],
        multipliers: Mapping[str, Any] | None = None,
        depth_rule: Mapping[str, Any] | None = None,
    ) -> BuildConfig:
        """The one way a BuildConfig is made: a model section, a size, the data's sizes and the hyperparameters.

        The multipliers (init_std, output_mult, embed_mult, attn_mult) are `hparams`' values unless `multipliers`
        gives them (an export states them apart from its hyperparameters). The depth rule (depth_scaling,
        base_depth, residual, eps_scaling) is read off `model` (a recipe's section) unless `depth_rule` gives it.
        """
        mult = hparams if multipliers is None else multipliers
        if depth_rule is None:
            depth_rule = {name: getattr(model, name) for name in ("depth_scaling", "base_depth", "residual",
                                                                  "eps_scaling")}
        return cls(
            width=size.width,
            depth=size.depth,
            parametrization=parametrization,
            input_dim=data.input_dim,
            vocab_size=data.vocab_size,
            num_classes=data.num_classes,
            seq_len=size.seq_len,
            head_dim=model.head_dim,
            n_heads=model.n_heads,
            ffn_ratio=model.ffn_ratio or 4.0,  # exports before ffn_ratio have none: the gpt's 4
            init_std=mult.get("init_std"),
            output_mult=mult["output_mult"],
            embed_mult=mult["embed_mult"],
            attn_mult=mult["attn_mult"],
            base_width=model.base_width,
            hparams=dict(hparams),
            options=dict(model.options),
            tie_embeddings=getattr(model, "tie_embeddings", False),  # exports written before the field have none
            **depth_rule,
        )

    def at_width(self, width: int) -> BuildConfig:
        return replace(self, width=width)


Builder = Callable[[BuildConfig], nn.Module]
Family = str | Builder


# --------------------------------------------------------------------------------------------- building


def builder(family: Family) -> Builder:
    """The function that makes the family's model: a built-in class, the callable itself, or the user's builder
    named `package.module:function` (imported)."""
    if callable(family):
        return family
    if family in FAMILIES:
        return FAMILIES[family]
    return resolve_entrypoint(family)


def is_builtin(family: Family) -> bool:
    """Whether the family is one of mutransfer's own (mlp, gpt, hf-llama): those are built and initialised here (a
    user's builder keeps its own init). Whether its trials can be stacked is its trait `stacks`, not this."""
    return isinstance(family, str) and family in BUILTIN_FAMILIES


def construct(fn: Builder, cfg: BuildConfig, device: str | torch.device, builtin: bool) -> nn.Module:
    """The bare module `fn(cfg)` on `device`: no base shapes, no init, no tags. A user's builder that fails on the
    meta device is built on the CPU instead; one that returns something other than an nn.Module is refused."""
    device = torch.device(device)
    if builtin:
        with device:
            return fn(cfg)
    try:
        with device:
            model = _call_builder(fn, cfg)
    except Exception:
        if device.type != "meta":
            raise
        model = _call_builder(fn, cfg)  # a builder that cannot run on meta: pay for a CPU build (base/delta are small)
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model builder returned {type(model).__name__}, not a torch.nn.Module")
    return model if device.type == "meta" else model.to(device)


def _call_builder(fn: Builder, cfg: BuildConfig) -> nn.Module:
    try:
        return fn(cfg)
    except SystemExit as e:
        # sys.exit() in a user's builder would end the whole command silently (or a Ray worker): an error instead.
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        raise RuntimeError(f"the model builder {name} called sys.exit({e.code!r})") from e


def _base_and_delta(fn: Builder, cfg: BuildConfig, builtin: bool) -> tuple[nn.Module, nn.Module]:
    # Built on meta: only shapes matter, so a 4096-wide target costs no memory. The delta doubles every width
    # dimension (d_model, d_ffn, and heads or head size), so mup can tell width dimensions from fixed ones.
    base = construct(fn, cfg.at_width(cfg.base_width), "meta", builtin)
    delta = construct(fn, cfg.at_width(2 * cfg.base_width), "meta", builtin)
    return base, delta


def build_with_shapes(
    cfg: BuildConfig, family: Family, device: str | torch.device, *, shapes: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The model (µP base shapes set, built-ins initialised) and, when made, the base/delta shapes ("base",
    "delta": mup's shapes of the models at ``base_width`` and ``2 * base_width``). They are made under µP and for
    the built-ins; `shapes=True` makes them for a user's SP model too (describe_groups reads every model's width
    dimensions off them), else it gets {}."""
    builtin = is_builtin(family)
    fn = builder(family)
    model = construct(fn, cfg, device, builtin)
    tag_params(model, cfg)
    if not (cfg.mup or builtin or shapes):
        return model, {}  # a user's SP model: nothing to rescale, no reason to call the builder twice more
    base, delta = _base_and_delta(fn, cfg, builtin)
    if cfg.mup:
        _set_base_shapes(model, base, delta)
    if builtin:
        init_builtin(model, cfg, family, base_shapes=mup.get_shapes(base))
    return model, {"base": mup.get_shapes(base), "delta": mup.get_shapes(delta)}


def _set_base_shapes(model: nn.Module, base: nn.Module, delta: nn.Module) -> None:
    """mup.set_base_shapes, keeping the values of the weights a MuReadout shares with another module.

    set_base_shapes multiplies every MuReadout's weight by sqrt(width_mult): right for a weight that nn.Linear's
    default init drew with variance 1/fan_in (it becomes 1/base_fan_in, the same at every width), wrong for a tied
    one (mup.MuSharedReadout), which is the embedding's weight, drawn N(0, σ) at every width: the rescale would make
    the token embedding grow like sqrt(width_mult). A shared weight keeps the values its owner's init gave it.
    """
    tied = tied_names(model)
    names = {*tied, *tied.values()}
    shared = [m.weight for n, m in model.named_modules()
              if isinstance(m, mup.MuReadout) and (f"{n}.weight" if n else "weight") in names]
    kept = [w.detach().clone() for w in shared]
    mup.set_base_shapes(model, base, delta=delta)
    with torch.no_grad():
        for w, v in zip(shared, kept, strict=True):
            w.copy_(v)


def tag_params(model: nn.Module, cfg: BuildConfig) -> None:
    """Write the depth LR factor and the epsilon factor on each parameter, where `optimizer_for` reads them.

    On the tensors (as mup's `infshape`) rather than in a side table: whoever builds an optimizer from
    `model.parameters()` (train.py, batched trials, the export's describe_groups) gets the same groups.
    """
    for p in model.parameters():
        p._mt_lr_mult = 1.0  # type: ignore[attr-defined]
        p._mt_eps_mult = cfg.eps_mult  # type: ignore[attr-defined]
    for m in model.modules():
        if is_block(m):
            for p in m.parameters():
                p._mt_lr_mult = cfg.depth_lr_mult  # type: ignore[attr-defined]


def build_model(cfg: BuildConfig, family: Family, device: str | torch.device = "cpu") -> nn.Module:
    """A model at cfg's size: a built-in family name, a `package.module:function`, or a builder callable."""
    return build_with_shapes(cfg, family, device)[0]


def build_config(spec: TrialSpec, dataset: DataSizes) -> BuildConfig:
    """The BuildConfig of a trial: its scale point, its sampled hyperparameters, its data's sizes."""
    hparams = {name: spec.hparam(name) for name in KNOWN_HPARAMS}  # sampled, else the recipe's base value
    hparams.update(spec.hparams)  # and the names of a user's own
    return BuildConfig.assemble(spec.model, spec.scale, dataset, parametrization=spec.parametrization,
                                hparams=hparams)


def build(spec: TrialSpec, dataset: DataSizes, device: str | torch.device = "cpu") -> nn.Module:
    """The trial's model on `device`, base shapes set under µP."""
    return build_model(build_config(spec, dataset), spec.model.family, device)


# --------------------------------------------------------------------------------------------- init


def init_rules(
    model: nn.Module, cfg: BuildConfig, family: Family, base_shapes: dict[str, Any]
) -> dict[str, tuple[str, float]]:
    """Per parameter of a built-in model: ("normal", std) | ("zeros", 0) | ("ones", 0)."""
    sigma = cfg.init_std if cfg.init_std is not None else default_init_std(family, cfg.base_width)
    assert sigma is not None
    rules: dict[str, tuple[str, float]] = {}
    tied = tied_names(model)
    for mname, module in model.named_modules():
        role = role_of(module)
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if name in tied:
                # A tied readout (model.tie_embeddings): its weight is the embedding's, which came first in
                # named_modules() and keeps the embedding's N(0, σ). It cannot be zero-initialised as µP's readout
                # is: that would zero the token embedding too, and the first steps would see no token at all. mup's
                # own Transformer example does the same (init_weights zeros the decoder only when it is untied).
                # µP still holds: MuSharedReadout divides the logits by width_mult, so at init they shrink like
                # 1/sqrt(width_mult) (a sum of width random terms over width_mult) instead of starting at 0.
                continue
            if isinstance(module, nn.LayerNorm) or role == "norm":  # "norm": hf-llama's RMSNorms
                rules[name] = ("ones", 0.0) if pname == "weight" else ("zeros", 0.0)
            elif pname == "bias":
                rules[name] = ("zeros", 0.0)
            elif role == "input":
                rules[name] = ("normal", sigma)
            elif role in ("readout", "query") and cfg.mup:
                # Zero readout and query under µP: Tensor Programs V (Yang et al. 2022), appendix D.2, and the mup
                # README's Transformer recipe; the logits and attention start at 0 at every width, so the base
                # proxy's start is the target's (tests/test_proxy.py checks both are zero).
                rules[name] = ("zeros", 0.0)
            elif role in ("hidden", "query", "readout"):
                fan_in, base_fan_in = p.shape[1], base_shapes[name][1]
                rules[name] = ("normal", sigma * math.sqrt(base_fan_in / fan_in))
            else:
                raise AssertionError(f"parameter {name} of a built-in model has no init rule")
    return rules


@torch.no_grad()
def init_builtin(model: nn.Module, cfg: BuildConfig, family: Family, base_shapes: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    for name, (how, std) in init_rules(model, cfg, family, base_shapes).items():
        p = params[name]
        if how == "normal":
            p.normal_(0.0, std)
        elif how == "ones":
            p.fill_(1.0)
        else:
            p.zero_()


# --------------------------------------------------------------------------------------------- optimizers


def optimizer_for(
    params: Iterable[nn.Parameter],
    parametrization: str,
    optimizer: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """MuAdam/MuAdamW/MuSGD under µP (params need base shapes), else the plain torch optimizer.

    Parameters tagged by `tag_params` (every model built here) are split into groups by their depth LR factor and
    epsilon factor: group lr = lr · depth factor, eps = eps · eps factor. mup then splits each group by width as
    usual, keeping the group's lr as its base, so width and depth factors multiply. weight_decay is left as given:
    as in the CompleteP reference, AdamW's lr·wd then shrinks with the depth factor inside blocks.
    """
    mu = parametrization == "mup"
    params = list(params)
    if params and not isinstance(params[0], dict):
        by: dict[tuple[float, float], list[nn.Parameter]] = {}
        for p in params:
            key = (float(getattr(p, "_mt_lr_mult", 1.0)), float(getattr(p, "_mt_eps_mult", 1.0)))
            by.setdefault(key, []).append(p)
        if set(by) != {(1.0, 1.0)}:
            adam = optimizer in ("adam", "adamw")
            params = [
                {"params": ps, "lr": lr * lm, **({"eps": eps * em} if adam else {})} for (lm, em), ps in by.items()
            ]
    if optimizer in ("adam", "adamw"):
        kw: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas), "eps": eps}
        if mu:
            return (mup.MuAdam if optimizer == "adam" else mup.MuAdamW)(params, **kw)
        return (torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW)(params, **kw)
    if optimizer == "sgd":
        kw = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
        return mup.MuSGD(params, **kw) if mu else torch.optim.SGD(params, **kw)
    raise ValueError(f"unknown optimizer {optimizer!r}")


def make_optimizer(model: nn.Module, spec: TrialSpec) -> torch.optim.Optimizer:
    return optimizer_for(
        model.parameters(),
        spec.parametrization,
        spec.train.optimizer,
        lr=float(spec.hparam("lr")),
        weight_decay=float(spec.hparam("weight_decay")),
        betas=spec.train.betas,
        eps=float(spec.hparam("adam_eps")),
        momentum=float(spec.hparam("momentum")),
    )


# --------------------------------------------------------------------------------------------- describe


def count_params(model_or_cfg: nn.Module | BuildConfig, family: Family | None = None) -> int:
    """Parameters of a model, or of the model a BuildConfig describes (built on meta: free at any size)."""
    if isinstance(model_or_cfg, BuildConfig):
        if family is None:
            raise ValueError("count_params(cfg, family): give the family")
        model_or_cfg = construct(builder(family), model_or_cfg, "meta", is_builtin(family))
    return sum(p.numel() for p in model_or_cfg.parameters())
