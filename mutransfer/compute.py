"""What a sweep cost, against what training the target will cost: the share Tensor Programs V reports.

Tensor Programs V tuned GPT-3 6.7B on a 40M proxy for "7% of its pretraining compute": the FLOPs of every tuning
run over the target's pretraining FLOPs, estimated as 6·N·D (N parameters, D training tokens; Kaplan et al. 2020).
This module computes the same ratio for a sweep:

- numerator: the FLOPs each trial stored (`mutransfer.train`: 6 × its parameters × tokens seen, plus the attention
  term 12 × layers × context × width per token for a gpt), summed over the `sweep` trials; `verify` trials (a check
  at a larger size, run after the fit) are summed separately and reported beside it;
- denominator: 6·N·D with N the target's total parameter count (the same count the proxies' FLOPs use, so both
  sides of the ratio agree; embeddings included) and D `target.tokens` of the recipe. The non-embedding count
  (Kaplan's N) is reported too. The proxies' attention term has no counterpart in 6·N·D, so the share errs high,
  never low.

N comes from the target built on the meta device (`mutransfer.export.target_build_config`): free at any size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mutransfer.recipe import is_decoder

if TYPE_CHECKING:
    from torch import nn

    from mutransfer.fit import FitResult
    from mutransfer.recipe import Recipe

__all__ = ["ComputeReport", "compute_report", "format_flops", "param_counts", "target_param_counts", "trial_flops"]

# Which parameter count the share's 6·N·D uses: see the module doc.
PARAMS_USED = "total"


@dataclass(frozen=True)
class ComputeReport:
    """FLOPs spent by a sweep and the target's training FLOPs. Every FLOP count is a float; None when unknown."""

    sweep_flops: float  # the `sweep` trials (the ones the fit uses), every status
    sweep_trials: int  # sweep trials with a FLOP count (finished: completed or diverged)
    verify_flops: float  # the `verify` trials, reported apart
    verify_trials: int
    trials_without_flops: int  # pending, running or failed trials: nothing counted for them
    sweep_wall_time: float  # seconds, summed over trials (not elapsed time: trials run side by side)
    target_params: int  # N, the count 6·N·D uses (see params_used)
    target_params_total: int
    target_params_non_embedding: int  # without token/position embedding tables
    params_used: str  # "total" | "non_embedding"
    target_tokens: int | None  # D: recipe target.tokens (examples for an MLP)
    target_flops: float | None  # 6·N·D
    share: float | None  # sweep_flops / target_flops
    share_with_verify: float | None  # (sweep_flops + verify_flops) / target_flops
    note: str = ""  # why the share is missing, or what it leaves out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["convention"] = (
            "share = sweep FLOPs / (6·N·D), N the target's parameters, D its training tokens (Tensor Programs V: "
            "7% for GPT-3 6.7B); trial FLOPs are 6·params·tokens plus attention"
        )
        return out

    def lines(self) -> list[str]:
        """One or two readable lines for the terminal."""
        spent = f"sweep compute: {format_flops(self.sweep_flops)} FLOPs over {self.sweep_trials} trials"
        if self.verify_trials:
            spent += f" (+ {format_flops(self.verify_flops)} in {self.verify_trials} verify trials)"
        n = f"N = {self.target_params:,} {self.params_used.replace('_', '-')} params"
        if self.share is None:
            return [spent, f"target: {n}; share of the target's training compute: unknown ({self.note})"]
        share = f"{100 * self.share:.3g}%"
        if self.verify_trials and self.share_with_verify is not None:
            share += f" ({100 * self.share_with_verify:.3g}% with verify)"
        assert self.target_flops is not None and self.target_tokens is not None
        return [spent, f"target: 6·N·D = {format_flops(self.target_flops)} FLOPs ({n}, D = {self.target_tokens:,} "
                       f"tokens): the sweep cost {share} of it (Tensor Programs V: 7% for GPT-3 6.7B)"]


def format_flops(x: float) -> str:
    """3.2e15 -> '3.20e+15'; readable at every scale a sweep reaches."""
    return f"{x:.3g}" if x < 1e4 else f"{x:.2e}"


def trial_flops(frame: pd.DataFrame) -> pd.Series:
    """FLOPs per trial (indexed like `frame`): the stored estimate; NaN for a trial that never finished."""
    if "flops" not in frame.columns:
        raise ValueError("the trials frame has no 'flops' column (use Store.trials_frame)")
    return pd.to_numeric(frame["flops"], errors="coerce").astype("float64")


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameters of a model: embedding tables are `nn.Embedding` weights.

    The MLP's input layer is a matmul on real-valued inputs, not a lookup, so it counts as non-embedding.
    """
    from torch import nn

    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                    for p in m.parameters(recurse=False))
    return total, total - embedding


def target_param_counts(recipe: Recipe, fit: FitResult | None = None) -> tuple[int, int]:
    """(total, non-embedding) parameters of the recipe's target, built on the meta device (no memory)."""
    from mutransfer.export import target_build_config
    from mutransfer.parametrization import build_model

    param = recipe.model.parametrizations[0]  # µP and SP models have the same shapes
    cfg = target_build_config(recipe, param, fit)
    return param_counts(build_model(cfg, recipe.model.family, "meta"))


def compute_report(
    frame: pd.DataFrame,
    recipe: Recipe,
    *,
    params: tuple[int, int] | None = None,
    fit: FitResult | None = None,
) -> ComputeReport:
    """The sweep's FLOPs (from its trials frame) against the target's 6·N·D.

    `params` is (total, non-embedding) of the target; by default the target is built on meta to count them.
    """
    for col in ("role", "status"):
        if col not in frame.columns:
            raise ValueError(f"the trials frame has no {col!r} column (use Store.trials_frame)")
    flops = trial_flops(frame)
    known = flops.notna() & flops.map(math.isfinite)
    role = frame["role"].fillna("sweep")
    is_sweep, is_verify = role == "sweep", role == "verify"
    wall = pd.to_numeric(frame["wall_time"], errors="coerce") if "wall_time" in frame.columns else None
    total, non_emb = params if params is not None else target_param_counts(recipe, fit)
    n = total if PARAMS_USED == "total" else non_emb
    sweep_flops = float(flops[known & is_sweep].sum())
    verify_flops = float(flops[known & is_verify].sum())
    tokens = recipe.target.tokens
    target_flops: float | None = None
    share = share_v = None
    note = ""
    if tokens is None:
        note = ("the recipe's target has no tokens (target.tokens: the target's training tokens, examples for an "
                "MLP), so its training FLOPs 6·N·D cannot be computed")
    elif n <= 0:
        note = "the target has no parameters"
    else:
        target_flops = 6.0 * n * tokens
        share = sweep_flops / target_flops
        share_v = (sweep_flops + verify_flops) / target_flops
        note = "the proxies' FLOPs include attention, 6·N·D does not: the share errs high" if \
            is_decoder(recipe.model.family) else ""
    return ComputeReport(
        sweep_flops=sweep_flops,
        sweep_trials=int((known & is_sweep).sum()),
        verify_flops=verify_flops,
        verify_trials=int((known & is_verify).sum()),
        trials_without_flops=int((~known).sum()),
        sweep_wall_time=float(wall[is_sweep].fillna(0.0).sum()) if wall is not None else 0.0,
        target_params=n,
        target_params_total=total,
        target_params_non_embedding=non_emb,
        params_used=PARAMS_USED,
        target_tokens=tokens,
        target_flops=target_flops,
        share=share,
        share_with_verify=share_v,
        note=note,
    )
