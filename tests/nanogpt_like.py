"""A user's builder of nanoGPT's shape, in µP, with one planted µP mistake chosen by `model.options.mistake`
(tests/test_coord_matrix.py): `family: "nanogpt_like:build"` (tests put tests/ on sys.path).

The correct model follows nanoGPT (Karpathy's model.py) where µP allows it: token embedding + learned positions,
pre-LN blocks with a fused `c_attn` and causal self-attention through `F.scaled_dot_product_attention`, an MLP of
4 x width, a final LayerNorm, a forward returning (logits, loss); n_head fixed (`model.options.n_heads`, default 4), so the head size grows with
width, as in nanoGPT's configs. What µP changes: the readout is a `mup.MuReadout` (zero-init, untied), the attention
scale is 1/head_dim (times sqrt(base_head_dim), so it equals nanoGPT's at the base width), the query slice of
`c_attn` starts at zero, and hidden weights start at N(0, 0.02 * sqrt(base_fan_in / fan_in)) (nanoGPT's 0.02 at
the base width, shrinking like 1/sqrt(fan_in)).

MISTAKES names each planted mistake. "plain_adam" builds the correct model: that mistake is in the optimizer,
planted by the test. `model.options.attention: explicit` computes attention as nanoGPT does without flash
attention, softmax((q @ kᵀ) * scale) under a -inf causal mask, instead of `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import mup
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.parametrization import BuildConfig

MISTAKES = (
    "plain_readout",  # nn.Linear readout, not a MuReadout
    "sqrt_attention",  # nanoGPT's 1/sqrt(head_dim) attention scale, with a head size that grows with width
    "fixed_init",  # nanoGPT's fixed N(0, 0.02) for hidden weights at every width
    "fixed_ffn_in_delta",  # d_ffn floored at 8 x base_width: equal in the base and delta models
    "plain_adam",  # the correct model; the test trains it with torch.optim.Adam
    "double_readout",  # the MuReadout's output divided by the width multiplier once more
    "tied_plain",  # nanoGPT's tied readout: a plain nn.Linear sharing wte.weight (not mup.MuSharedReadout)
)
INIT_STD = 0.02


class Attention(nn.Module):
    def __init__(self, cfg: BuildConfig, mistake: str) -> None:
        super().__init__()
        w = cfg.width
        self.n_head = int(cfg.options.get("n_heads", 4))
        self.head_dim = w // self.n_head
        self.c_attn = nn.Linear(w, 3 * w, bias=False)
        self.c_proj = nn.Linear(w, w, bias=False)
        base_head_dim = cfg.base_width // self.n_head
        self.scale = (1 / math.sqrt(self.head_dim) if mistake == "sqrt_attention"
                      else math.sqrt(base_head_dim) / self.head_dim)
        self.explicit = cfg.options.get("attention", "sdpa") == "explicit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if self.explicit:
            att = (q @ k.transpose(-2, -1)) * self.scale
            att = att.masked_fill(torch.ones(t, t, device=x.device).tril() == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: BuildConfig, mistake: str) -> None:
        super().__init__()
        w = cfg.width
        d_ffn = max(4 * w, 8 * cfg.base_width) if mistake == "fixed_ffn_in_delta" else 4 * w
        self.c_fc = nn.Linear(w, d_ffn, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(d_ffn, w, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: BuildConfig, mistake: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width)
        self.attn = Attention(cfg, mistake)
        self.ln_2 = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg, mistake)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TwiceScaledReadout(mup.MuReadout):
    """The user divided by the width multiplier on top of MuReadout's own 1/width_mult."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / self.width_mult())


class NanoGPT(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        mistake = str(cfg.options.get("mistake", "none"))
        if mistake not in (*MISTAKES, "none"):
            raise ValueError(f"model.options.mistake: unknown {mistake!r}")
        assert cfg.vocab_size is not None
        w = cfg.width
        self.wte = nn.Embedding(cfg.vocab_size, w)
        self.wpe = nn.Embedding(cfg.seq_len, w)
        self.h = nn.ModuleList(Block(cfg, mistake) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(w)
        if mistake in ("plain_readout", "tied_plain"):
            self.lm_head: nn.Module = nn.Linear(w, cfg.num_classes, bias=False)
        elif mistake == "double_readout":
            self.lm_head = TwiceScaledReadout(w, cfg.num_classes, bias=False, readout_zero_init=True)
        else:
            self.lm_head = mup.MuReadout(w, cfg.num_classes, bias=False, readout_zero_init=True)
        self._init(cfg, mistake)
        if mistake == "tied_plain":
            self.lm_head.weight = self.wte.weight  # nanoGPT's weight tying

    def _init(self, cfg: BuildConfig, mistake: str) -> None:
        for name, p in self.named_parameters():
            if name.startswith(("wte", "wpe")):
                nn.init.normal_(p, std=INIT_STD)
            elif p.dim() == 2 and not name.startswith("lm_head"):
                fan_in = p.shape[1]
                base_fan_in = fan_in * cfg.base_width / cfg.width
                nn.init.normal_(p, std=INIT_STD if mistake == "fixed_init"
                                else INIT_STD * math.sqrt(base_fan_in / fan_in))
        with torch.no_grad():
            for block in self.h:
                block.attn.c_attn.weight[: cfg.width].zero_()  # the query slice: µP's zero-init query
        if isinstance(self.lm_head, nn.Linear) and not isinstance(self.lm_head, mup.MuReadout):
            nn.init.normal_(self.lm_head.weight, std=INIT_STD)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss  # nanoGPT's (logits, loss)


def build(cfg: BuildConfig) -> nn.Module:
    return NanoGPT(cfg)
