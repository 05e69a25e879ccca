"""A user's own model builders, as a recipe would name them: `userbuilders:mlp` (tests put tests/ on sys.path)."""

from __future__ import annotations

import mup
import torch
from torch import nn

from mutransfer.parametrization import BuildConfig


class TwoLayer(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        readout = mup.MuReadout if cfg.parametrization == "mup" else nn.Linear
        self.head = readout(cfg.width, cfg.num_classes)
        self.scale = float(cfg.options.get("scale", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x) * self.scale))))


def mlp(cfg: BuildConfig) -> nn.Module:
    return TwoLayer(cfg)


def not_a_module(cfg: BuildConfig) -> object:
    return object()


# Broken µP, for the coordinate check (tests/test_check.py): each is declared `parametrization: mup` in a recipe.


class PlainReadout(nn.Module):
    """µP's classic mistake: the output layer is a plain nn.Linear, not a mup.MuReadout."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        self.readout = nn.Linear(cfg.width, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def plain_readout(cfg: BuildConfig) -> nn.Module:
    return PlainReadout(cfg)


class FlooredHidden(nn.Module):
    """A hidden size floored at 8 x base_width: equal in the base and delta models that set_base_shapes compares,
    so mup takes it for a fixed dimension, yet it grows at larger widths."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        hidden = max(2 * cfg.width, 8 * cfg.base_width)
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, hidden)
        self.fc3 = nn.Linear(hidden, cfg.width)
        self.head = mup.MuReadout(cfg.width, cfg.num_classes, readout_zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(h)))))


def floored_hidden(cfg: BuildConfig) -> nn.Module:
    return FlooredHidden(cfg)


class BypassedReadout(mup.MuReadout):
    """A MuReadout whose forward was rewritten (say, to add a temperature) and lost the 1/width_mult: mup's shape
    assertion passes, trials train, but the logits grow with width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.output_mult * x, self.weight, self.bias)


class BypassedMLP(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        self.head = BypassedReadout(cfg.width, cfg.num_classes, readout_zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def bypassed_readout(cfg: BuildConfig) -> nn.Module:
    return BypassedMLP(cfg)


class DoubleScaledReadout(mup.MuReadout):
    """MuReadout's 1/width_mult applied twice (the user divided by the width multiplier again): the logits stop
    learning as width grows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / self.width_mult())


class DoubleScaledMLP(BypassedMLP):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__(cfg)
        # No bias: a bias learns at the same pace at every width and would hide the vanishing weight's part.
        self.head = DoubleScaledReadout(cfg.width, cfg.num_classes, bias=False, readout_zero_init=True)


def double_scaled(cfg: BuildConfig) -> nn.Module:
    return DoubleScaledMLP(cfg)


def gpt(cfg: BuildConfig) -> nn.Module:
    """A GPT-like builder (the built-in GPT) that reads its shape from model.options, as README "Your own model"
    asks a builder to declare it: head_dim or n_heads, ffn_ratio. Undeclared, its own defaults: head_dim 8, ratio 4."""
    from dataclasses import replace

    from mutransfer.models import GPT

    o = cfg.options
    head_dim = o.get("head_dim", 8 if o.get("n_heads") is None else None)
    return GPT(replace(cfg, head_dim=head_dim, n_heads=o.get("n_heads"), ffn_ratio=float(o.get("ffn_ratio", 4.0))))


def exits(cfg: BuildConfig) -> nn.Module:
    """A builder that calls sys.exit() (tests/test_bad_input.py): an error naming it, not a silent exit."""
    import sys

    sys.exit(3)


# Forward outputs as people write them (tests/test_logits.py): the logits inside a tuple, a dict, an object.


class Wrapped(nn.Module):
    """TwoLayer whose forward returns its logits wrapped as `cfg.options["output"]` says."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        self.inner = TwoLayer(cfg)
        self.output = cfg.options.get("output", "tuple")

    def forward(self, x: torch.Tensor) -> object:
        logits = self.inner(x)
        if self.output == "tuple":
            return logits, None  # nanoGPT's (logits, loss) without targets
        if self.output == "dict":
            return {"loss": None, "logits": logits}
        if self.output == "model_output":
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=logits)
        if self.output == "no_logits":
            return {"scores": logits}
        return None


def wrapped(cfg: BuildConfig) -> nn.Module:
    return Wrapped(cfg)


# A nanoGPT-style model (tests/test_tied.py): nanoGPT's module names, fused c_attn, forward(idx, targets=None)
# returning (logits, loss), and nanoGPT's weight tying when the recipe asks for model.tie_embeddings.


class _NanoBlock(nn.Module):
    def __init__(self, cfg: BuildConfig, head_dim: int, d_ffn: int) -> None:
        super().__init__()
        w = cfg.width
        self.n_head, self.head_dim = w // head_dim, head_dim
        # Heads grow with width at a fixed head_dim, so µP's 1/d rule (sqrt(base_head_dim) / head_dim) is SP's.
        self.scale = cfg.attn_mult / head_dim**0.5
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.c_attn = nn.Linear(w, 3 * w, bias=False)
        self.attn_proj = nn.Linear(w, w, bias=False)
        self.c_fc = nn.Linear(w, d_ffn, bias=False)
        self.c_proj = nn.Linear(d_ffn, w, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
                   for z in self.c_attn(self.ln_1(x)).split(c, dim=2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.c_proj(nn.functional.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.vocab_size is not None
        head_dim, ratio = int(cfg.options["head_dim"]), float(cfg.options["ffn_ratio"])
        mu = cfg.parametrization == "mup"
        w, vocab = cfg.width, cfg.vocab_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, w), wpe=nn.Embedding(cfg.seq_len, w),
            h=nn.ModuleList(_NanoBlock(cfg, head_dim, round(ratio * w)) for _ in range(cfg.depth)),
            ln_f=nn.LayerNorm(w)))
        wte = self.transformer.wte
        if mu and cfg.tie_embeddings and cfg.options.get("readout") == "linear":
            # µP's classic mistake, tied: nanoGPT's own line kept, so the readout has no 1/width_mult.
            self.lm_head = nn.Linear(w, vocab, bias=False)
            wte.weight = self.lm_head.weight
        elif mu and cfg.tie_embeddings:
            self.lm_head: nn.Module = mup.MuSharedReadout(wte.weight, bias=False, output_mult=cfg.output_mult)
        elif mu:
            self.lm_head = mup.MuReadout(w, vocab, bias=False, readout_zero_init=True, output_mult=cfg.output_mult)
        else:
            self.lm_head = nn.Linear(w, vocab, bias=False)
            if cfg.tie_embeddings:
                wte.weight = self.lm_head.weight  # nanoGPT's line
        self.logit_mult = 1.0 if mu else cfg.output_mult
        std = 0.02 * ((cfg.base_width / w) ** 0.5 if mu else 1.0)  # hidden matrices: 1 / sqrt(fan_in) under µP
        with torch.no_grad():
            for name, p in self.named_parameters():  # a tied weight once, as transformer.wte.weight
                if "wte" in name or "wpe" in name or (name.startswith("lm_head") and not mu):
                    p.normal_(0.0, 0.02)  # the embeddings (tied: the readout too) N(0, 0.02) at every width
                elif p.dim() == 2 and not name.startswith("lm_head"):  # µP's untied MuReadout stays zero
                    p.normal_(0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x)) * self.logit_mult
        loss = None if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def nanogpt(cfg: BuildConfig) -> nn.Module:
    return NanoGPT(cfg)
