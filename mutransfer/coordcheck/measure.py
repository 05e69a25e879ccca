"""The measurement behind the coordinate check: train a model a few steps at several widths (or depths) and record
how much every layer's output moved, with the slope of that change against width in log-log.

It knows nothing of recipes or verdicts: `mutransfer.coordcheck.run` builds the configs from a recipe and judges
the slopes. Imports torch at module level: `run` imports this module only when a check actually runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from mutransfer.coordcheck.attention import AttentionLogits
from mutransfer.coordcheck.report import is_attention, log_slope
from mutransfer.logits import logits_of
from mutransfer.parametrization import BuildConfig, build_model, optimizer_for

if TYPE_CHECKING:
    from mutransfer.parametrization import Family

# (parameters, lr) -> the optimizer a check trains with, in place of the parametrization's.
OptimizerFactory = Callable[[list[nn.Parameter], float], torch.optim.Optimizer]


@dataclass(frozen=True)
class CoordCheck:
    """Per-layer activation statistic at each width, and its slope in log-log (0 is µP's promise)."""

    widths: list[int]
    values: dict[str, list[float]]  # layer -> value per width (mean over seeds)
    slopes: dict[str, float]  # layer -> slope of log(value) vs log(width)
    metric: str  # "change": mean |h_t - h_0| on a fixed probe batch; "l1": mean |h_t|
    # With track_steps: layer -> per optimizer step (1..steps) -> value per width; the last step equals `values`.
    step_values: dict[str, list[list[float]]] = field(default_factory=dict)
    # What `widths` holds: "width", or "depth" for a check over depth (then `widths` are depths and the slopes are
    # against log(depth); only the layers every depth has, e.g. the first blocks, the final norm and the logits).
    axis: str = "width"
    # Parameter (2-D and up, not all zero) -> the std of its initial values per width (mean over seeds), and its
    # fan_in (all dims but the first): whether a hidden weight's init follows 1/sqrt(fan_in), read without training.
    init_std: dict[str, list[float]] = field(default_factory=dict)
    fan_in: dict[str, list[int]] = field(default_factory=dict)

    def unstable(self, threshold: float = 0.25) -> list[str]:
        """Layers whose statistic grows (or shrinks) faster than width**threshold, steepest first."""
        bad = [k for k, s in self.slopes.items() if abs(s) > threshold]
        return sorted(bad, key=lambda k: -abs(self.slopes[k]))


def synthetic_batch(cfg: BuildConfig, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch shaped like the built-in families' data: enough for a coordinate check."""
    if cfg.input_dim is not None:
        x = torch.randn(batch_size, cfg.input_dim, generator=generator)
        return x, torch.randint(cfg.num_classes, (batch_size,), generator=generator)
    if cfg.vocab_size is not None:
        seq = torch.randint(cfg.vocab_size, (batch_size, cfg.seq_len + 1), generator=generator)
        return seq[:, :-1], seq[:, 1:]
    raise ValueError("synthetic batches need input_dim or vocab_size; pass batches= for this model")


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def coord_check(
    make_cfg: Callable[[int], BuildConfig],
    widths: Sequence[int],
    family: Family,
    *,
    steps: int = 3,
    lr: float = 3e-3,
    optimizer: str = "adam",
    batch_size: int = 16,
    seeds: Sequence[int] = (0, 1),
    batch_fn: Callable[[BuildConfig, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    metric: str = "change",
    device: str | torch.device = "cpu",
    track_steps: bool = False,
    axis: str = "width",
    make_optimizer: OptimizerFactory | None = None,
) -> CoordCheck:
    """mup's coordinate check: train each width a few steps on one fixed batch, measure every layer's output.

    For each width (and seed) the model is built with `make_cfg(width)` and trained `steps` steps (µP: MuAdam etc;
    SP: the torch optimizer) on one batch, the same at every width; the output of every named submodule (and the
    model's own, as "logits") is recorded on that batch before and after. `metric="change"` takes the mean
    |h_t - h_0| per coordinate, `"l1"` the mean |h_t|. Under µP the slope of log(value) vs log(width) stays near 0
    in every layer (finite widths pull it a little below 0); a clearly positive slope is a layer that blows up
    with width (`CoordCheck.unstable()`). A fixed batch and a moderate LR keep the signal clean: at lr 1e-2 an SP
    MLP's softmax saturates within a few steps and hides its own blow-up. `batch_fn(cfg, generator) -> (x, y)`
    supplies data for models that `synthetic_batch` does not fit. `track_steps` also records the statistic after
    every step (`CoordCheck.step_values`), for plots like mup's, at one extra forward pass per step.
    `make_optimizer(params, lr)` replaces the parametrization's optimizer (`optimizer_for`): a user's own training
    loop's, to check that. Besides the layers' outputs, every attention call's logit bound is recorded
    (`mutransfer.coordcheck.attention`), and each weight's std at init (`CoordCheck.init_std`).

    `axis="depth"`: `widths` are depths and `make_cfg(depth)` builds each one: the same check over depth. Under
    depth scaling (depth-mup, completep) the change of the residual stream and of the logits stays flat in depth;
    without it each block adds its own Θ(1) update and the change grows with depth.
    """
    if metric not in ("change", "l1"):
        raise ValueError("metric is 'change' or 'l1'")
    if axis not in ("width", "depth"):
        raise ValueError("axis is 'width' or 'depth'")
    widths = sorted(widths)
    per_width: list[dict[str, float]] = []
    per_width_steps: list[list[dict[str, float]]] = []  # [width][step] -> layer -> value
    per_width_std: list[dict[str, float]] = []
    per_width_fan_in: list[dict[str, int]] = []
    for width in widths:
        cfg = make_cfg(width)
        acc: dict[str, float] = {}
        std: dict[str, float] = {}
        fan_in: dict[str, int] = {}
        acc_steps: list[dict[str, float]] = [{} for _ in range(steps)] if track_steps else []
        for seed in seeds:
            trace: list[dict[str, float]] | None = [] if track_steps else None
            init: dict[str, tuple[float, int]] = {}
            run = _coord_run(cfg, family, steps, lr, optimizer, batch_size, seed, batch_fn, metric, device, trace,
                             init, make_optimizer)
            for k, v in run.items():
                acc[k] = acc.get(k, 0.0) + v / len(seeds)
            for k, (v, n) in init.items():
                std[k] = std.get(k, 0.0) + v / len(seeds)
                fan_in[k] = n
            for t, at_t in enumerate(trace or []):
                for k, v in at_t.items():
                    acc_steps[t][k] = acc_steps[t].get(k, 0.0) + v / len(seeds)
        per_width.append(acc)
        per_width_steps.append(acc_steps)
        per_width_std.append(std)
        per_width_fan_in.append(fan_in)
    layers = [k for k in per_width[0] if all(k in d for d in per_width)]
    values = {k: [d[k] for d in per_width] for k in layers}
    slopes = {k: log_slope(widths, v) for k, v in values.items()}
    step_values = {k: [[per_width_steps[i][t].get(k, float("nan")) for i in range(len(widths))]
                       for t in range(steps)] for k in layers} if track_steps else {}
    init_std = {k: [d[k] for d in per_width_std] for k in per_width_std[0]
                if all(k in d for d in per_width_std) and max(d[k] for d in per_width_std) > 0}
    return CoordCheck(widths=list(widths), values=values, slopes=slopes, metric=metric, step_values=step_values,
                      axis=axis, init_std=init_std, fan_in={k: [d[k] for d in per_width_fan_in] for k in init_std})


def _coord_run(
    cfg: BuildConfig,
    family: Family,
    steps: int,
    lr: float,
    optimizer: str,
    batch_size: int,
    seed: int,
    batch_fn: Callable[[BuildConfig, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None,
    metric: str,
    device: str | torch.device,
    trace: list[dict[str, float]] | None = None,
    init_std: dict[str, tuple[float, int]] | None = None,
    make_optimizer: OptimizerFactory | None = None,
) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_model(cfg, family, device)
    if init_std is not None:
        # Every name a tied weight has (a readout sharing the embedding's): each module's parameters are judged.
        init_std.update({n: (float(p.detach().float().std()), p[0].numel())
                         for n, p in model.named_parameters(remove_duplicate=False) if p.dim() >= 2 and p.numel() > 1})
    opt = (make_optimizer(list(model.parameters()), lr) if make_optimizer is not None
           else optimizer_for(model.parameters(), cfg.parametrization, optimizer, lr=lr))
    # The batch depends on the seed only, so widths differ in width alone.
    gen = torch.Generator().manual_seed(10_000 + seed)
    x, y = (t.to(device) for t in (batch_fn or (lambda c, g: synthetic_batch(c, batch_size, g)))(cfg, gen))

    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def fn(_m: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                outputs[name] = out.detach().float()

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    # The last block of every stack also as "<stack>.last" (the residual stream the readout sees): a check over
    # depth compares it across depths, where "blocks.7" exists at some depths only.
    handles += [m[-1].register_forward_hook(hook(f"{n}.last")) for n, m in model.named_modules()
                if n and isinstance(m, nn.ModuleList) and len(m)]

    # The attention logits of every attention call, whatever its module is called (coordcheck.attention).
    attention = AttentionLogits(outputs).attach(model)

    def probe() -> dict[str, torch.Tensor]:
        outputs.clear()
        attention.reset()
        model.eval()
        with torch.no_grad(), attention:
            outputs["logits"] = logits_of(model(x)).detach().float()
        model.train()
        return dict(outputs)

    def stat(ht: dict[str, torch.Tensor], h0: dict[str, torch.Tensor]) -> dict[str, float]:
        # The attention calls' statistic is a size at every step (coordcheck.attention says why), the layers' the
        # metric's.
        sizes = {k: float(v) for k, v in ht.items() if is_attention(k)}
        if metric == "change":
            return {k: float((ht[k] - h0[k]).abs().mean()) for k in ht
                    if k in h0 and ht[k].shape == h0[k].shape and k not in sizes} | sizes
        return {k: float(v.abs().mean()) for k, v in ht.items()}

    try:
        h0 = probe()
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            _loss(logits_of(model(x)), y).backward()
            opt.step()
            if trace is not None and step < steps - 1:
                trace.append(stat(probe(), h0))
        ht = probe()
    finally:
        for h in handles:
            h.remove()
        attention.detach()
    final = stat(ht, h0)
    if trace is not None:
        trace.append(final)
    return final
