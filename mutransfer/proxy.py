"""Proxy models in µP or SP: the built-in families, a user's own builder, and what µP does at a given size.

Built-in families
-----------------
- ``mlp``: ``Linear(input_dim, width)`` -> ``depth`` hidden ``Linear(width, width)`` layers (``depth`` counts the
  hidden width x width layers, so ``depth >= 1``), ReLU after each, -> readout to ``num_classes``.
- ``gpt``: a nanoGPT-like decoder: token + learned position embeddings, ``depth`` pre-LN blocks (causal
  self-attention through ``F.scaled_dot_product_attention(..., is_causal=True, scale=...)`` and a GELU MLP of width
  ``ffn_ratio * width``), a final LayerNorm and a readout to the vocabulary; no weight tying, no Linear biases.
  Heads: ``width // head_dim`` when ``head_dim`` is given (heads grow with width), else ``n_heads`` fixed.

Parametrizations
----------------
- µP (``mup``): readout ``mup.MuReadout(width, out, readout_zero_init=True, output_mult=output_mult)``, query
  projection zero-initialised, attention scale ``attn_mult * sqrt(base_head_dim) / head_dim`` (the 1/d rule, equal
  to SP's at the base width), ``mup.set_base_shapes(model, base, delta=delta)`` with base and delta models built by
  the same builder at ``base_width`` and ``2 * base_width`` on the meta device, optimizers ``MuAdam``/``MuAdamW``/
  ``MuSGD``.
- SP (``sp``): a plain ``nn.Linear`` readout whose logits are multiplied by ``output_mult``, attention scale
  ``attn_mult / sqrt(head_dim)``, plain ``torch.optim`` optimizers.
- Init (both): ``init_std`` (σ) is the std of hidden weight matrices at the base width. Hidden matrices get
  N(0, σ·sqrt(base_fan_in / fan_in)); embeddings and the MLP's input layer N(0, σ); the SP readout
  N(0, σ·sqrt(base_width / width)); the µP readout (and the µP query) zero; biases 0; LayerNorm weights 1.
  σ defaults to 0.02 (gpt) and ``base_width ** -0.5`` (mlp). The embedding output (the MLP's input layer output) is
  multiplied by ``embed_mult``. The init runs after ``set_base_shapes``, which rescales ``MuReadout``.

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
kept: mutransfer only initialises the built-in families.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import mup
import torch
import torch.nn.functional as F
from mup import MuReadout
from torch import nn

from mutransfer.recipe import BUILTIN_FAMILIES, DEPTH_ALPHA, KNOWN_HPARAMS, resolve_entrypoint

if TYPE_CHECKING:
    from mutransfer.data import Dataset
    from mutransfer.plan import TrialSpec
    from mutransfer.recipe import Model


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
    init_std: float | None = None  # None: the family's default (builders resolve it)
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

    def at_width(self, width: int) -> BuildConfig:
        return replace(self, width=width)


Builder = Callable[[BuildConfig], nn.Module]
Family = str | Builder


# --------------------------------------------------------------------------------------------- built-in families


def _role(module: nn.Module, role: str) -> nn.Module:
    # The init (and describe_groups) reads these tags: one place decides what each weight is.
    module._mt_role = role  # type: ignore[assignment]
    return module


def _block(module: nn.Module) -> nn.Module:
    # A residual block: its parameters take the depth LR factor (cfg.depth_lr_mult), the CompleteP reference's
    # "hidden" weights, biases and LayerNorms, as opposed to the embeddings, final norm and readout.
    module._mt_block = True  # type: ignore[assignment]
    return module


def _branch_out(module: nn.Module) -> nn.Module:
    # The last layer of a residual branch: its output is what the branch multiplier scales (describe_groups).
    module._mt_branch_out = True  # type: ignore[assignment]
    return module


def mark_block(module: nn.Module) -> nn.Module:
    """For a user's builder: the module is a residual block, its parameters get the depth LR factor."""
    return _block(module)


def _readout(cfg: BuildConfig, out: int, bias: bool) -> nn.Module:
    if cfg.mup:
        return _role(MuReadout(cfg.width, out, bias=bias, readout_zero_init=True, output_mult=cfg.output_mult), "readout")
    return _role(nn.Linear(cfg.width, out, bias=bias), "readout")


class MLP(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        if cfg.input_dim is None:
            raise ValueError("the mlp family needs input_dim (digits data)")
        if cfg.depth < 1:
            raise ValueError("the mlp family needs depth >= 1 (hidden width x width layers)")
        w = cfg.width
        self.inp = _role(nn.Linear(cfg.input_dim, w), "input")
        self.residual = cfg.residual
        self.hidden = nn.ModuleList(
            (_branch_out(_block(_role(nn.Linear(w, w), "hidden"))) if cfg.residual else _role(nn.Linear(w, w), "hidden"))
            for _ in range(cfg.depth)
        )
        self.out = _readout(cfg, cfg.num_classes, bias=True)
        self.embed_mult = cfg.embed_mult
        self.branch_mult = cfg.branch_mult
        self.logit_mult = 1.0 if cfg.mup else cfg.output_mult  # MuReadout applies output_mult itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            # Tensor Programs VI's residual network: h_l = h_(l-1) + L^-alpha · W_l relu(h_(l-1)).
            h = self.inp(x) * self.embed_mult
            for layer in self.hidden:
                h = h + self.branch_mult * layer(F.relu(h))
            return self.out(F.relu(h)) * self.logit_mult
        h = F.relu(self.inp(x) * self.embed_mult)
        for layer in self.hidden:
            h = F.relu(layer(h))
        return self.out(h) * self.logit_mult


def gpt_heads(cfg: BuildConfig) -> tuple[int, int, int]:
    """(n_heads, head_dim, base_head_dim) of a gpt at cfg.width."""
    if cfg.head_dim is not None:
        if cfg.width % cfg.head_dim:
            raise ValueError(f"width {cfg.width} is not a multiple of head_dim {cfg.head_dim}")
        return cfg.width // cfg.head_dim, cfg.head_dim, cfg.head_dim
    if cfg.n_heads is not None:
        if cfg.width % cfg.n_heads or cfg.base_width % cfg.n_heads:
            raise ValueError(f"width {cfg.width} / base_width {cfg.base_width} not multiples of n_heads {cfg.n_heads}")
        return cfg.n_heads, cfg.width // cfg.n_heads, cfg.base_width // cfg.n_heads
    raise ValueError("the gpt family needs head_dim or n_heads")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        w = cfg.width
        self.n_heads, self.head_dim, base_head_dim = gpt_heads(cfg)
        # Separate q, k, v (not one fused c_attn) so the query alone can be zero-initialised under µP.
        self.q = _role(nn.Linear(w, w, bias=False), "query")
        self.k = _role(nn.Linear(w, w, bias=False), "hidden")
        self.v = _role(nn.Linear(w, w, bias=False), "hidden")
        self.proj = _branch_out(_role(nn.Linear(w, w, bias=False), "hidden"))
        if cfg.mup:
            # 1/d: q·k grows like d once q and k correlate in training; sqrt(base) makes it equal SP at base width.
            self.scale = cfg.attn_mult * math.sqrt(base_head_dim) / self.head_dim
        else:
            self.scale = cfg.attn_mult / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (f(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        d_ffn = max(1, round(cfg.ffn_ratio * cfg.width))
        self.fc = _role(nn.Linear(cfg.width, d_ffn, bias=False), "hidden")
        self.act = nn.GELU()
        self.proj = _branch_out(_role(nn.Linear(d_ffn, cfg.width, bias=False), "hidden"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = FeedForward(cfg)
        self.branch_mult = cfg.branch_mult
        _block(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Depth scaling multiplies each branch by (L / L_base) ** -alpha (1 without it), as the CompleteP reference
        # nanoGPT does: x + m·attn(ln1(x)), then x + m·mlp(ln2(x)).
        x = x + self.branch_mult * self.attn(self.ln1(x))
        return x + self.branch_mult * self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("the gpt family needs vocab_size (chars or tokens data)")
        gpt_heads(cfg)
        self.wte = _role(nn.Embedding(cfg.vocab_size, cfg.width), "input")
        self.wpe = _role(nn.Embedding(cfg.seq_len, cfg.width), "input")
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = _readout(cfg, cfg.num_classes, bias=False)
        self.embed_mult = cfg.embed_mult
        self.logit_mult = 1.0 if cfg.mup else cfg.output_mult

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = (self.wte(idx) + self.wpe(pos)) * self.embed_mult
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)) * self.logit_mult


_BUILTIN: dict[str, Builder] = {"mlp": MLP, "gpt": GPT}


def default_init_std(family: Family, cfg: BuildConfig) -> float | None:
    """The init std of hidden matrices at the base width when the recipe does not sweep it. GPT: 0.02, GPT-2's
    and nanoGPT's (Radford et al. 2019); MLP: base_width ** -0.5, LeCun's 1/sqrt(fan_in). Both are starting points:
    the shipped GPT recipes sweep init_std with the LR, as Tensor Programs V tunes it."""
    if family == "gpt":
        return 0.02
    if family == "mlp":
        return cfg.base_width**-0.5
    return None


# --------------------------------------------------------------------------------------------- building


def _builder(family: Family) -> Builder:
    if callable(family):
        return family
    if family in _BUILTIN:
        return _BUILTIN[family]
    return resolve_entrypoint(family)


def _is_builtin(family: Family) -> bool:
    return isinstance(family, str) and family in BUILTIN_FAMILIES


def _construct(fn: Builder, cfg: BuildConfig, device: str | torch.device, builtin: bool) -> nn.Module:
    device = torch.device(device)
    if builtin:
        with device:
            return fn(cfg)
    try:
        with device:
            model = fn(cfg)
    except Exception:
        if device.type != "meta":
            raise
        model = fn(cfg)  # a builder that cannot run on meta: pay for a CPU build (base/delta are small)
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model builder returned {type(model).__name__}, not a torch.nn.Module")
    return model if device.type == "meta" else model.to(device)


def _base_and_delta(fn: Builder, cfg: BuildConfig, builtin: bool) -> tuple[nn.Module, nn.Module]:
    # Built on meta: only shapes matter, so a 4096-wide target costs no memory. The delta doubles every width
    # dimension (d_model, d_ffn, and heads or head size), so mup can tell width dimensions from fixed ones.
    base = _construct(fn, cfg.at_width(cfg.base_width), "meta", builtin)
    delta = _construct(fn, cfg.at_width(2 * cfg.base_width), "meta", builtin)
    return base, delta


def _assemble(
    cfg: BuildConfig, family: Family, device: str | torch.device, *, shapes: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The model (µP base shapes set, built-ins initialised) and, when made, the base/delta shapes."""
    builtin = _is_builtin(family)
    fn = _builder(family)
    model = _construct(fn, cfg, device, builtin)
    tag_params(model, cfg)
    if not (cfg.mup or builtin or shapes):
        return model, {}  # a user's SP model: nothing to rescale, no reason to call the builder twice more
    base, delta = _base_and_delta(fn, cfg, builtin)
    if cfg.mup:
        mup.set_base_shapes(model, base, delta=delta)
    if builtin:
        init_builtin(model, cfg, family, base_shapes=mup.get_shapes(base))
    return model, {"base": mup.get_shapes(base), "delta": mup.get_shapes(delta)}


def tag_params(model: nn.Module, cfg: BuildConfig) -> None:
    """Write the depth LR factor and the epsilon factor on each parameter, where `optimizer_for` reads them.

    On the tensors (as mup's `infshape`) rather than in a side table: whoever builds an optimizer from
    `model.parameters()` (train.py, batched trials, the export's describe_groups) gets the same groups.
    """
    for p in model.parameters():
        p._mt_lr_mult = 1.0  # type: ignore[attr-defined]
        p._mt_eps_mult = cfg.eps_mult  # type: ignore[attr-defined]
    for m in model.modules():
        if getattr(m, "_mt_block", False):
            for p in m.parameters():
                p._mt_lr_mult = cfg.depth_lr_mult  # type: ignore[attr-defined]


def build_model(cfg: BuildConfig, family: Family, device: str | torch.device = "cpu") -> nn.Module:
    """A model at cfg's size: a built-in family name, a `package.module:function`, or a builder callable."""
    return _assemble(cfg, family, device)[0]


def build_config(spec: TrialSpec, dataset: Dataset) -> BuildConfig:
    """The BuildConfig of a trial: its scale point, its sampled hyperparameters, its data's sizes."""
    m = spec.model
    hparams = {name: spec.hparam(name) for name in KNOWN_HPARAMS}
    hparams.update(spec.hparams)
    return BuildConfig(
        width=spec.scale.width,
        depth=spec.scale.depth,
        parametrization=spec.parametrization,
        input_dim=dataset.input_dim,
        vocab_size=dataset.vocab_size,
        num_classes=dataset.num_classes,
        seq_len=spec.scale.seq_len,
        head_dim=m.head_dim,
        n_heads=m.n_heads,
        ffn_ratio=m.ffn_ratio,
        init_std=spec.hparam("init_std"),
        output_mult=spec.hparam("output_mult"),
        embed_mult=spec.hparam("embed_mult"),
        attn_mult=spec.hparam("attn_mult"),
        base_width=m.base_width,
        hparams=hparams,
        options=dict(m.options),
        **depth_fields(m),
    )


def depth_fields(m: Model) -> dict[str, Any]:
    """The BuildConfig fields that come from the recipe's depth and epsilon conventions (model section)."""
    return {"depth_scaling": m.depth_scaling, "base_depth": m.base_depth, "residual": m.residual,
            "eps_scaling": m.eps_scaling}


def build(spec: TrialSpec, dataset: Dataset, device: str | torch.device = "cpu") -> nn.Module:
    """The trial's model on `device`, base shapes set under µP."""
    return build_model(build_config(spec, dataset), spec.model.family, device)


# --------------------------------------------------------------------------------------------- init


def init_rules(
    model: nn.Module, cfg: BuildConfig, family: Family, base_shapes: dict[str, Any]
) -> dict[str, tuple[str, float]]:
    """Per parameter of a built-in model: ("normal", std) | ("zeros", 0) | ("ones", 0)."""
    sigma = cfg.init_std if cfg.init_std is not None else default_init_std(family, cfg)
    assert sigma is not None
    rules: dict[str, tuple[str, float]] = {}
    for mname, module in model.named_modules():
        role = getattr(module, "_mt_role", None)
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if isinstance(module, nn.LayerNorm):
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
        model_or_cfg = _construct(_builder(family), model_or_cfg, "meta", _is_builtin(family))
    return sum(p.numel() for p in model_or_cfg.parameters())


def _kind(module: nn.Module, pname: str, infshape: Any) -> str:
    if infshape.ninf() == 2:
        return "matrix-like"
    # A readout maps width to a fixed size: a weight with fixed fan-out and width fan-in that is not a lookup table
    # (an embedding's (vocab, width) weight has the same infshape but is input-side, vector-like).
    is_lookup = isinstance(module, (nn.Embedding, nn.EmbeddingBag))
    if pname == "weight" and len(infshape) == 2 and not infshape[0].isinf() and infshape[1].isinf() and not is_lookup:
        return "readout"
    return "vector-like"


def _pattern(name: str) -> str:
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)


def describe_groups(cfg: BuildConfig, family: Family, optimizer: str) -> list[dict[str, Any]]:
    """What µP does to every parameter of the model at cfg's size, grouped by name pattern (layer index -> `*`).

    Each entry: name, count (tensors in the group), shape, kind (vector-like | matrix-like | readout), width_mult
    (mup's infshape width_mult; 1 under SP), lr_mult and wd_mult (what the optimizer multiplies the base learning
    rate and weight decay by: MuAdam/MuAdamW/MuSGD's width rule times the depth factor; 1 under SP without depth
    scaling), depth_lr_mult (the depth factor alone, (L / L_base) ** (alpha - 1) inside residual blocks),
    eps_mult (Adam's epsilon factor, model.eps_scaling), forward_mult (what the layer's output is multiplied by:
    the readout's output_mult / width_mult under µP, output_mult under SP; a residual branch's last layer the
    branch multiplier (L / L_base) ** -alpha; 1 elsewhere), init ("normal" | "zeros" | "ones", None for a user's builder)
    and init_std (the std this code's init uses at this size; 0 for zero-init; a user's builder: the std of the
    built tensor when it could not be built on meta, else None). Built on the meta device: a 4096-wide, 32-layer
    target costs no memory.
    """
    builtin = _is_builtin(family)
    model, shapes = _assemble(cfg, family, "meta", shapes=True)
    infshapes = mup.shape.zip_infshapes(mup.make_base_shapes(shapes["base"], shapes["delta"]), model)
    rules = init_rules(model, cfg, family, shapes["base"]) if builtin else {}
    lr_mult: dict[int, float] = {}
    wd_mult: dict[int, float] = {}
    eps_mult: dict[int, float] = {}
    # The real optimizer (mup's under µP) with LR, WD and eps 1: whatever mup and the depth rules do, the
    # multipliers are read off its groups. Under SP only the depth factor can make them differ from 1.
    opt = optimizer_for(model.parameters(), cfg.parametrization, optimizer, lr=1.0, weight_decay=1.0, eps=1.0)
    for g in opt.param_groups:
        for p in g["params"]:
            lr_mult[id(p)], wd_mult[id(p)] = g["lr"], g["weight_decay"]
            eps_mult[id(p)] = g.get("eps", 1.0)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            ish = infshapes[name]
            kind = _kind(module, pname, ish)
            if builtin:
                init, std = rules[name]
            else:
                init, std = None, None if p.is_meta or p.numel() < 2 else float(p.detach().float().std())
            forward_mult = cfg.branch_mult if getattr(module, "_mt_branch_out", False) else 1.0
            if kind == "readout":
                mult = getattr(module, "output_mult", cfg.output_mult)
                forward_mult = float(mult / ish.width_mult()) if cfg.mup else float(cfg.output_mult)
            row = {
                "name": _pattern(name),
                "shape": list(p.shape),
                "kind": kind,
                "width_mult": float(ish.width_mult()) if cfg.mup else 1.0,
                "lr_mult": float(lr_mult.get(id(p), 1.0)),
                "wd_mult": float(wd_mult.get(id(p), 1.0)),
                "depth_lr_mult": float(getattr(p, "_mt_lr_mult", 1.0)),
                "eps_mult": float(eps_mult.get(id(p), 1.0)),
                "forward_mult": forward_mult,
                "init": init,
                "init_std": std,
            }
            key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in row.items() if k != "init_std")
            key += (None if std is None else round(std, 12),)
            if key in groups:
                groups[key]["count"] += 1
            else:
                groups[key] = {"name": row.pop("name"), "count": 1, **row}
    return list(groups.values())
