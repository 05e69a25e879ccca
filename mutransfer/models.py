"""The built-in model families, plain nanoGPT-style modules; what µP and SP do to them is mutransfer.parametrization's.

- ``mlp``: ``Linear(input_dim, width)`` -> ``depth`` hidden ``Linear(width, width)`` layers (``depth`` counts the
  hidden width x width layers, so ``depth >= 1``), ReLU after each, -> readout to ``num_classes``. With
  ``residual: true`` the hidden layers are residual blocks ``h + m · W relu(h)`` (Tensor Programs VI's network).
- ``gpt``: a nanoGPT-like decoder: token + learned position embeddings, ``depth`` pre-LN blocks (causal
  self-attention through ``F.scaled_dot_product_attention(..., is_causal=True, scale=...)`` and a GELU MLP of width
  ``ffn_ratio * width``), a final LayerNorm and a readout to the vocabulary; no Linear biases. With
  ``tie_embeddings`` the readout is the token embedding's weight (nanoGPT's tying): ``mup.MuSharedReadout`` under
  µP, a bias-free ``nn.Linear`` whose weight is ``wte.weight`` under SP; ``named_parameters()`` then lists it once,
  as ``wte.weight``. Heads: ``width // head_dim`` when ``head_dim`` is given (heads grow with width), else
  ``n_heads`` fixed.

- ``hf-llama``: transformers' own ``LlamaForCausalLM`` (RMSNorm, rotary embeddings, SwiGLU, grouped-query
  attention) made µP in mutransfer.hf_llama; transformers is imported only when this family is built.

The modules read their sizes and multipliers off a ``BuildConfig``; the µP pieces that live in the architecture
itself (the ``MuReadout`` readout, the 1/d attention scale) are chosen here from ``cfg.mup``. Each weight is tagged
with its role (``role_of``), residual blocks and branch outputs likewise (``is_block``, ``is_branch_out``): the init
and the per-group description read the tags, so one place decides what each weight is.

``STACK_LAYOUTS`` names the parameters mutransfer.batched reads to run K trials of a family as one stacked model: the
families whose recipe trait ``stacks`` is true (mlp and gpt; not hf-llama).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from mup import MuReadout, MuSharedReadout
from torch import nn

if TYPE_CHECKING:
    # Annotations only: parametrization imports this module for FAMILIES.
    from mutransfer.parametrization import BuildConfig


# --------------------------------------------------------------------------------------------- role tags


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


def mark_branch_out(module: nn.Module) -> nn.Module:
    """The module is the last layer of a residual branch (mutransfer.hf_llama tags transformers' modules so)."""
    return _branch_out(module)


def set_role(module: nn.Module, role: str) -> nn.Module:
    """Tag a built-in family's module with its weights' role (see `role_of`): what its init follows."""
    return _role(module, role)


def role_of(module: nn.Module) -> str | None:
    """The role `_role` gave a built-in module's weights: input | hidden | query | readout | norm; None if
    untagged."""
    return getattr(module, "_mt_role", None)


def is_block(module: nn.Module) -> bool:
    """Whether the module is a residual block (built-in, or `mark_block` in a user's builder)."""
    return bool(getattr(module, "_mt_block", False))


def is_branch_out(module: nn.Module) -> bool:
    """Whether the module is the last layer of a residual branch (its output takes the branch multiplier)."""
    return bool(getattr(module, "_mt_branch_out", False))


# --------------------------------------------------------------------------------------------- families


def tied_names(model: nn.Module) -> dict[str, str]:
    """The names under which a parameter appears again after its first (a tied weight: a readout sharing the token
    embedding's), each mapped to that first name, in `named_modules()` order. `named_parameters()` lists a tied
    weight once, under its first name; walking the modules finds the others."""
    first: dict[int, str] = {}
    again: dict[str, str] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if id(p) in first:
                again[name] = first[id(p)]
            else:
                first[id(p)] = name
    return again


def _readout(cfg: BuildConfig, out: int, bias: bool) -> nn.Module:
    if cfg.mup:
        return _role(MuReadout(cfg.width, out, bias=bias, readout_zero_init=True, output_mult=cfg.output_mult), "readout")
    return _role(nn.Linear(cfg.width, out, bias=bias), "readout")


def _tied_readout(cfg: BuildConfig, embedding: nn.Embedding) -> nn.Module:
    """A bias-free readout whose weight is the embedding's own (vocab, width) tensor, one parameter for both."""
    if cfg.mup:
        # MuSharedReadout: MuReadout's output_mult / width_mult on the embedding's weight. No bias: its bias would
        # be sized by the weight's second dimension (the width), not the vocabulary.
        return _role(MuSharedReadout(embedding.weight, bias=False, output_mult=cfg.output_mult), "readout")
    head = nn.Linear(cfg.width, embedding.num_embeddings, bias=False)
    head.weight = embedding.weight  # nanoGPT's `wte.weight = lm_head.weight`, the other way round: named wte.weight
    return _role(head, "readout")


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


def attention_scale(cfg: BuildConfig) -> float:
    """The softmax scale of q·k at cfg.width: µP's attn_mult · sqrt(base_head_dim) / head_dim, SP's
    attn_mult / sqrt(head_dim)."""
    _, head_dim, base_head_dim = gpt_heads(cfg)
    if cfg.mup:
        # 1/d: q·k grows like d once q and k correlate in training; sqrt(base) makes it equal SP at base width.
        return cfg.attn_mult * math.sqrt(base_head_dim) / head_dim
    return cfg.attn_mult / math.sqrt(head_dim)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        w = cfg.width
        self.n_heads, self.head_dim, _ = gpt_heads(cfg)
        # Separate q, k, v (not one fused c_attn) so the query alone can be zero-initialised under µP.
        self.q = _role(nn.Linear(w, w, bias=False), "query")
        self.k = _role(nn.Linear(w, w, bias=False), "hidden")
        self.v = _role(nn.Linear(w, w, bias=False), "hidden")
        self.proj = _branch_out(_role(nn.Linear(w, w, bias=False), "hidden"))
        self.scale = attention_scale(cfg)

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
        if cfg.tie_embeddings:
            if cfg.num_classes != cfg.vocab_size:
                raise ValueError(f"tied embeddings need num_classes == vocab_size, got {cfg.num_classes} and "
                                 f"{cfg.vocab_size}")
            self.head = _tied_readout(cfg, self.wte)
        else:
            self.head = _readout(cfg, cfg.num_classes, bias=False)
        self.embed_mult = cfg.embed_mult
        self.logit_mult = 1.0 if cfg.mup else cfg.output_mult

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = (self.wte(idx) + self.wpe(pos)) * self.embed_mult
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)) * self.logit_mult


def _hf_llama(cfg: BuildConfig) -> nn.Module:
    # Imported here: mutransfer.hf_llama builds on this module's tags, and transformers loads only for this family.
    from mutransfer.hf_llama import build_hf_llama

    return build_hf_llama(cfg)


FAMILIES: dict[str, Callable[[BuildConfig], nn.Module]] = {"mlp": MLP, "gpt": GPT, "hf-llama": _hf_llama}


# --------------------------------------------------------------------------------------------- stacked layout


@dataclass(frozen=True)
class StackLayout:
    """What mutransfer.batched reads of a built-in family's model by name.

    batched.py re-implements the family's forward on K stacked trials, addressing each tensor by its parameter
    name, so the names here and the modules above must agree: tests/test_batched.py checks `names(depth)` against
    the models' own `named_parameters()`, and a renamed attribute fails there instead of silently in a sweep.
    """

    top: Mapping[str, str]  # role -> parameter name, once per model
    layer: Mapping[str, str] = field(default_factory=dict)  # role -> name in layer i ("{i}": the layer index)
    readout: str = ""  # the readout module (a MuReadout carries output_mult / width_mult)
    lookups: tuple[str, ...] = ()  # roles read by row (embeddings): not stacked as matmul weights
    attention: str | None = None  # layer i's attention module ("{i}"): its scale, n_heads and head_dim
    tied_to: str | None = None  # tie_embeddings: the role whose tensor the readout shares (no readout.weight then)

    def layers(self, depth: int) -> list[dict[str, str]]:
        """Role -> parameter name of each of `depth` layers."""
        return [{role: name.format(i=i) for role, name in self.layer.items()} for i in range(depth)]

    def top_roles(self, tied: bool = False) -> dict[str, str]:
        """Role -> parameter name, once per model; a tied model has no readout weight of its own."""
        return {r: n for r, n in self.top.items() if not (tied and r == "readout.weight")}

    def names(self, depth: int, tied: bool = False) -> set[str]:
        """Every parameter name of the family's model at `depth` (`tied`: with model.tie_embeddings)."""
        return set(self.top_roles(tied).values()) | {n for layer in self.layers(depth) for n in layer.values()}

    def lookup_names(self) -> set[str]:
        return {self.top[role] for role in self.lookups}


STACK_LAYOUTS: dict[str, StackLayout] = {
    # MLP without residual blocks: batched trials refuse model.residual (mutransfer/recipe/recipe.py).
    "mlp": StackLayout(
        top={"input.weight": "inp.weight", "input.bias": "inp.bias",
             "readout.weight": "out.weight", "readout.bias": "out.bias"},
        layer={"weight": "hidden.{i}.weight", "bias": "hidden.{i}.bias"},
        readout="out",
    ),
    "gpt": StackLayout(
        top={"tokens": "wte.weight", "positions": "wpe.weight", "ln_f.weight": "ln_f.weight",
             "ln_f.bias": "ln_f.bias", "readout.weight": "head.weight"},
        layer={"ln1.weight": "blocks.{i}.ln1.weight", "ln1.bias": "blocks.{i}.ln1.bias",
               "q": "blocks.{i}.attn.q.weight", "k": "blocks.{i}.attn.k.weight", "v": "blocks.{i}.attn.v.weight",
               "attn.proj": "blocks.{i}.attn.proj.weight",
               "ln2.weight": "blocks.{i}.ln2.weight", "ln2.bias": "blocks.{i}.ln2.bias",
               "fc": "blocks.{i}.mlp.fc.weight", "mlp.proj": "blocks.{i}.mlp.proj.weight"},
        readout="head",
        lookups=("tokens", "positions"),
        attention="blocks.{i}.attn",
        tied_to="tokens",
    ),
}
