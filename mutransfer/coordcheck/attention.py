"""The attention logits a model computes, seen whatever its layers are called: a `TorchFunctionMode`, active during
the coordinate check's probe passes, finds every attention call and records how large its logits can get.

What is recorded, per attention call: `scale · |q| · |k|`, the mean query norm times the mean key norm times the
scale, that is the largest logit q·kᵀ·scale these queries and keys make once they align, which training makes them
do. µP's 1/head_dim keeps it flat in width (|q| and |k| grow like sqrt(head_dim), their dot product once aligned
like head_dim); 1/sqrt(head_dim) with a head size that grows with width lets it grow like sqrt(head_dim): slope
+0.5 against width when the head count is fixed. Why this and not the logits themselves: in a check's few steps
q and k have barely begun to align, and how far they have is a finite-width effect (Adam's sign noise, larger at
small widths): the change of the realised logits drifted from -0.49 to +0.48 with steps, LR and seed for a correct
nanoGPT-shaped model, so that a 1/sqrt(d) model sat at +0.1..+0.4, on either side of any threshold. The bound
leaves the alignment out: norms average over head_dim coordinates, so its slope is clean (correct models within
±0.1 here), and it holds whatever the layers are called, wherever the scale is applied (a query pre-multiplied by
the scale shows in |q|), and from step 0 (except for a zero-initialised query, whose size is then its update's,
Θ(1) under µP). It is a size, not a change from step 0, unlike the other layers' statistic.

The calls seen:
- `F.scaled_dot_product_attention(q, k, v, ..., scale=None, enable_gqa=False)`: its own scale (`scale=`, default
  1/sqrt(E)).
- a softmax (`torch.softmax`, `F.softmax`, `Tensor.softmax`) over the last dim of a 4-D tensor, or of a 3-D one
  with equal last two dims, whose input a matmul of this pass made (`@`, `torch.matmul`, `bmm`, the last one with
  that output shape): the user's softmax(q·kᵀ·scale + mask). The scale is the softmax input's least-squares ratio
  to q·kᵀ over the entries no mask hides (finite, above MASKED). A softmax whose input no matmul made (einsum, a
  kernel) is not recorded; nor is nn.MultiheadAttention (its functional form hides its inner calls from the mode).

Each call is named by the innermost named module running it ("h.0.attn" -> "h.0.attn.attn_logits"; a second call
in the same module's forward gets "#2"), which forward pre-hooks and hooks on every named module keep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from mutransfer.coordcheck.report import ATTENTION_SUFFIX

MASKED = -1e3  # softmax inputs below this are a mask (-inf, finfo.min, -1e4, -1e9), left out of the scale's fit
_SDPA = F.scaled_dot_product_attention
_SOFTMAXES = (torch.softmax, F.softmax, torch.Tensor.softmax)
_MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm)


def logit_bound(q: torch.Tensor, k: torch.Tensor, scale: float) -> float:
    """|scale| x mean |q_t| x mean |k_s| (norms over the last dim): the largest logit these queries and keys make
    once aligned."""
    qn = torch.linalg.vector_norm(q.float(), dim=-1).mean()
    kn = torch.linalg.vector_norm(k.float(), dim=-1).mean()
    return float(abs(scale) * qn * kn)


class AttentionLogits(TorchFunctionMode):
    """While active, records `logit_bound` of every attention call into `outputs` (name -> 0-d tensor);
    `attach(model)` adds the hooks that name each call by its module (removed by `detach`)."""

    def __init__(self, outputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.outputs = outputs
        self._stack: list[str] = []
        self._calls: dict[str, int] = {}
        self._products: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._handles: list[Any] = []

    def attach(self, model: nn.Module) -> AttentionLogits:
        for name, m in model.named_modules():
            if name:
                self._handles.append(m.register_forward_pre_hook(self._enter(name)))
                self._handles.append(m.register_forward_hook(self._leave(name), always_call=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.reset()

    def reset(self) -> None:
        """Before a probe pass: calls are numbered per pass, products kept within one."""
        self._stack.clear()
        self._calls.clear()
        self._products.clear()

    def _enter(self, name: str) -> Callable[..., None]:
        def fn(_m: nn.Module, _inp: Any) -> None:
            self._stack.append(name)

        return fn

    def _leave(self, name: str) -> Callable[..., None]:
        def fn(_m: nn.Module, _inp: Any, _out: Any) -> None:
            if self._stack and self._stack[-1] == name:
                self._stack.pop()

        return fn

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            self._record(_sdpa_bound(*args, **kwargs))
        elif func in _SOFTMAXES:
            x = args[0] if args else kwargs.get("input")
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if _attention_shaped(x, dim):
                self._record(self._softmax_bound(x))
        out = func(*args, **kwargs)
        if func in _MATMULS and len(args) == 2 and isinstance(out, torch.Tensor) and out.dim() >= 3:
            a, b = args
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and out.is_floating_point():
                self._products[tuple(out.shape)] = (a, b, out)  # q, kᵀ and q·kᵀ, should a softmax take it next
        return out

    def _softmax_bound(self, x: torch.Tensor) -> float | None:
        found = self._products.pop(tuple(x.shape), None)
        if found is None:
            return None
        q, kt, qk = (t.detach().float() for t in found)
        logits = x.detach().float()
        live = torch.isfinite(logits) & (logits > MASKED)
        den = (qk * qk)[live].sum()
        if not bool(den > 0):
            return 0.0  # q·kᵀ is 0 (a zero-initialised query at step 0): so is the bound
        scale = float((logits * qk)[live].sum() / den)
        return logit_bound(q, kt.transpose(-2, -1), scale)

    def _record(self, bound: float | None) -> None:
        if bound is None:
            return
        site = self._stack[-1] if self._stack else ""
        n = self._calls[site] = self._calls.get(site, 0) + 1
        name = (f"{site}.{ATTENTION_SUFFIX}" if site else ATTENTION_SUFFIX) + (f"#{n}" if n > 1 else "")
        self.outputs[name] = torch.tensor(bound)


def _attention_shaped(x: Any, dim: Any) -> bool:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or dim is None:
        return False
    if x.dim() not in (3, 4) or dim not in (-1, x.dim() - 1):
        return False
    return x.dim() == 4 or x.shape[-1] == x.shape[-2]


def _sdpa_bound(query: Any, key: Any, *_: Any, scale: float | None = None, **__: Any) -> float | None:
    """`logit_bound` of a scaled_dot_product_attention call, from its arguments (`scale` is keyword-only)."""
    if not (isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor)) or query.dim() < 2:
        return None
    s = scale if scale is not None else query.shape[-1] ** -0.5
    return logit_bound(query.detach(), key.detach(), s)
