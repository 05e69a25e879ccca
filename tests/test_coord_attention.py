"""The coordinate check's view of attention (mutransfer/coordcheck/attention.py): every attention call's logit bound
scale·|q|·|k|, the same whichever way the model computes attention, named by the module that ran it. No training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.coordcheck.attention import AttentionLogits, logit_bound
from mutransfer.coordcheck.report import is_attention, site_of


def _qk(heads: int = 2, kv_heads: int | None = None, t: int = 6, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, heads, t, d, generator=g), torch.randn(3, kv_heads or heads, t, d, generator=g)


def _record(fn: nn.Module, *args: torch.Tensor) -> dict[str, float]:
    out: dict[str, torch.Tensor] = {}
    mode = AttentionLogits(out).attach(fn)
    try:
        with torch.no_grad(), mode:
            fn(*args)
    finally:
        mode.detach()
    return {k: float(v) for k, v in out.items()}


class SDPA(nn.Module):
    def __init__(self, scale: float | None = None, positional: bool = False, gqa: bool = False) -> None:
        super().__init__()
        self.scale, self.positional, self.gqa = scale, positional, gqa

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.positional:
            return F.scaled_dot_product_attention(q, k, k, None, 0.0, True, scale=self.scale)
        return F.scaled_dot_product_attention(q, k, k, is_causal=True, scale=self.scale, enable_gqa=self.gqa)


class NanoGPTSlow(nn.Module):
    """nanoGPT's path without flash attention: (q @ kᵀ) / sqrt(d), a -inf causal mask, F.softmax."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        t = q.shape[-2]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(torch.ones(t, t).tril() == 0, float("-inf"))
        return F.softmax(att, dim=-1) @ k


class HFEager(nn.Module):
    """transformers' eager attention: torch.matmul, an additive finfo.min mask, softmax in float32."""

    def __init__(self, scaling: float) -> None:
        super().__init__()
        self.scaling = scaling

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        t = q.shape[-2]
        mask = torch.full((t, t), torch.finfo(q.dtype).min).triu(1)
        w = torch.matmul(q, k.transpose(2, 3)) * self.scaling + mask
        return torch.matmul(nn.functional.softmax(w, dim=-1, dtype=torch.float32), k)


def test_every_way_of_computing_attention_gives_the_same_bound() -> None:
    q, k = _qk()
    d = q.shape[-1]
    want = logit_bound(q, k, d**-0.5)
    assert want == pytest.approx(d**-0.5 * q.norm(dim=-1).mean().item() * k.norm(dim=-1).mean().item())
    for module in (SDPA(), SDPA(d**-0.5), SDPA(d**-0.5, positional=True), NanoGPTSlow(), HFEager(d**-0.5)):
        (value,) = _record(module, q, k).values()
        assert value == pytest.approx(want, rel=1e-4), type(module).__name__
    # µP's 1/d, and a query that carries the scale itself: the bound follows the logits, not the argument.
    assert _record(SDPA(1 / d), q, k)["attn_logits"] == pytest.approx(logit_bound(q, k, 1 / d))
    assert _record(SDPA(1.0), q / d, k)["attn_logits"] == pytest.approx(logit_bound(q, k, 1 / d), rel=1e-5)
    assert _record(HFEager(1 / d), q, k)["attn_logits"] == pytest.approx(logit_bound(q, k, 1 / d), rel=1e-4)


def test_grouped_query_and_zero_queries() -> None:
    q, k = _qk(heads=4, kv_heads=2)
    assert _record(SDPA(0.25, gqa=True), q, k)["attn_logits"] == pytest.approx(logit_bound(q, k, 0.25))
    zero = torch.zeros_like(q[:, :2])
    assert _record(HFEager(0.25), zero, k) == {"attn_logits": 0.0}  # a zero-initialised query at step 0
    assert _record(SDPA(0.25), zero, k) == {"attn_logits": 0.0}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = SDPA()
        self.cross = HFEager(0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        y = self.attn(q, k) + self.cross(q, k)
        y = y + F.scaled_dot_product_attention(q, k, k)  # called by the block itself, twice
        y = y + F.scaled_dot_product_attention(q, k, k)
        return F.softmax(self.head(y.mean(dim=(1, 2))), dim=-1)  # a classifier's softmax: not attention


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            b(q, k)
        return F.softmax(torch.randn(2, 3, 5, 5), dim=-1)  # 4-D, but made by no matmul: not recorded


def test_calls_are_named_by_their_module_in_call_order() -> None:
    q, k = _qk()
    got = _record(Net(), q, k)
    assert sorted(got) == sorted(f"blocks.{i}.{n}" for i in (0, 1) for n in (
        "attn.attn_logits", "cross.attn_logits", "attn_logits", "attn_logits#2"))
    assert all(is_attention(n) for n in got) and not is_attention("blocks.0.attn") and not is_attention("logits")
    assert site_of("blocks.0.attn.attn_logits") == "blocks.0.attn" and site_of("attn_logits#2") == ""
    # Outside the mode nothing is recorded, and detach removes the hooks.
    out: dict[str, torch.Tensor] = {}
    net = Net()
    AttentionLogits(out).attach(net).detach()
    net(q, k)
    assert out == {} and all(not m._forward_pre_hooks for m in net.modules())
