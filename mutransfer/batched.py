"""Batched trials: train K trials of the same shape at once, as one stacked model, each with its own hyperparameters.

A small proxy spends most of a step in Python and in per-op dispatch, not in arithmetic: a 64-wide MLP step is a
dozen tiny matmuls. Stacking K trials' parameters along a leading dimension turns K small matmuls into one batched
matmul (`torch.bmm`), so the fixed cost of a step is paid once for K trials.

Each trial keeps everything that makes it a different trial:
- its own initialisation: every trial's model is built by `parametrization.build` exactly as `train.train` builds it (same
  seed, same µP base shapes and init), then its tensors are stacked;
- its own multipliers (output_mult, embed_mult, attn_mult): per-trial tensors of shape (K, 1, ...) in the forward;
- its own learning rates: the per-parameter LR and weight decay are read off the trial's real optimizer (MuAdam,
  MuAdamW, MuSGD or torch's), so µP's per-group width scaling is whatever mup does; the update itself is Adam/AdamW/
  SGD written on stacked tensors with per-trial (K,) learning rates, following torch's formulas;
- its own gradient clipping (per-trial norm), data (batches drawn from its own seed), divergence (a diverged trial
  leaves the batch at once; the others go on) and learning curve (reported per trial): one `trial.TrialLog` each,
  the books `train.train` keeps.

The losses equal `train.train`'s up to floating-point reassociation (tests/test_batched.py checks both families,
µP and SP, Adam, AdamW and SGD, and the gpt with tied embeddings, whose readout is the stacked token embedding). Only the built-in families can be stacked: their forward is written here in batched
form, reading their parameters by the names `models.STACK_LAYOUTS` declares. A user's builder runs one trial at a
time (`batchable`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mutransfer.models import STACK_LAYOUTS, StackLayout
from mutransfer.parametrization import build, count_params, make_optimizer
from mutransfer.plan import TrialSpec
from mutransfer.train import (
    device_for,
    load_data,
    lr_factor,
    thread_count,
    train_flops_per_token,
    validation_batches,
)
from mutransfer.trial import TrialLog, TrialResult

BatchReport = Callable[[TrialSpec, dict[str, Any]], None]


def batchable(spec: TrialSpec) -> bool:
    """Whether a trial can be stacked with others: the built-in families have a batched forward here."""
    return spec.model.family in STACK_LAYOUTS


def batch_key(spec: TrialSpec) -> tuple[Any, ...]:
    """Trials with equal keys can train as one batch: same model shape, data, steps and training settings.

    Seeds may differ (each trial draws its own batches); hyperparameters may differ (that is the point).
    """
    # JSON, not the models themselves: model.options is a dict, which pydantic's frozen models cannot hash.
    return (spec.parametrization, spec.scale, spec.steps, spec.model.model_dump_json(), spec.data.model_dump_json(),
            spec.train.model_dump_json())


def pack(specs: Sequence[TrialSpec], size: int) -> list[list[TrialSpec]]:
    """Group compatible trials into batches of at most `size`, in plan order; unbatchable trials go alone."""
    by_key: dict[tuple[Any, ...], list[TrialSpec]] = {}
    packs: list[list[TrialSpec]] = []
    for s in specs:
        if size <= 1 or not batchable(s):
            packs.append([s])
            continue
        cur = by_key.setdefault(batch_key(s), [])
        if not cur:
            packs.append(cur)
        cur.append(s)
        if len(cur) >= size:
            del by_key[batch_key(s)]
    return packs


@dataclass
class _Stack:
    """The stacked trials: parameters (K, *shape), optimizer state, per-trial constants; rows are trials."""

    names: list[str]
    params: dict[str, torch.Tensor]
    lr: dict[str, torch.Tensor]  # per parameter: (K,) the trial's group LR (base LR x µP multiplier), unscheduled
    wd: dict[str, torch.Tensor]  # per parameter: (K,) weight decay as the trial's optimizer has it
    eps: torch.Tensor  # (K,)
    momentum: torch.Tensor  # (K,)
    mults: dict[str, torch.Tensor]  # embed, logit, readout (µP's output_mult / width_mult), attn: (K,)
    state: dict[str, dict[str, torch.Tensor]]

    def select(self, rows: list[int]) -> _Stack:
        """The stack without the trials that left (diverged): later steps cost only the trials still running."""
        idx = torch.tensor(rows, dtype=torch.long)

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, idx.to(t.device))

        return _Stack(
            names=self.names,
            params={n: take(p.detach()).requires_grad_(True) for n, p in self.params.items()},
            lr={n: take(v) for n, v in self.lr.items()},
            wd={n: take(v) for n, v in self.wd.items()},
            eps=take(self.eps),
            momentum=take(self.momentum),
            mults={n: take(v) for n, v in self.mults.items()},
            state={n: {k: take(v) for k, v in st.items()} for n, st in self.state.items()},
        )


def _is_matmul_weight(name: str, p: torch.Tensor, layout: StackLayout) -> bool:
    # A Linear's weight (out, in); not the embeddings (rows looked up by token) nor LayerNorm's (1-D).
    return p.dim() == 2 and name.endswith(".weight") and name not in layout.lookup_names()


def _stack_models(models: list[torch.nn.Module], specs: Sequence[TrialSpec], layout: StackLayout,
                  device: torch.device) -> _Stack:
    names = [n for n, _ in models[0].named_parameters()]
    params = {}
    for n, p0 in models[0].named_parameters():
        stacked = torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(device)
        if _is_matmul_weight(n, p0, layout):
            # Stored as (K, in, out): the forward is bmm(x, w) and autograd hands back the gradient in the
            # parameter's own layout. As (K, out, in) every step would transpose-copy each weight's gradient.
            stacked = stacked.transpose(1, 2).contiguous()
        params[n] = stacked.requires_grad_(True)
    lrs: dict[str, list[float]] = {n: [] for n in names}
    wds: dict[str, list[float]] = {n: [] for n in names}
    for model, spec in zip(models, specs, strict=True):
        # The trial's real optimizer says what LR and weight decay each tensor gets (mup's groups included).
        opt = make_optimizer(model, spec)
        by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
        for n, p in model.named_parameters():
            g = by_id[id(p)]
            lrs[n].append(float(g["lr"]))
            wds[n].append(float(g["weight_decay"]))
    embed, logit, readout, attn = [], [], [], []
    for m, spec in zip(models, specs, strict=True):
        embed.append(float(m.embed_mult))
        logit.append(float(m.logit_mult))
        head = m.get_submodule(layout.readout)
        # MuReadout computes linear(output_mult * x / width_mult); a plain Linear readout multiplies by nothing.
        readout.append(float(head.output_mult / head.width_mult()) if hasattr(head, "output_mult") else 1.0)
        attn.append(float(_attention(m, layout, 0).scale) if layout.attention and spec.scale.depth else 1.0)
    kw: dict[str, Any] = dict(dtype=torch.float32, device=device)
    return _Stack(
        names=names,
        params=params,
        lr={n: torch.tensor(v, **kw) for n, v in lrs.items()},
        wd={n: torch.tensor(v, **kw) for n, v in wds.items()},
        eps=torch.tensor([float(s.hparam("adam_eps")) for s in specs], **kw),
        momentum=torch.tensor([float(s.hparam("momentum")) for s in specs], **kw),
        mults={k: torch.tensor(v, **kw) for k, v in
               {"embed": embed, "logit": logit, "readout": readout, "attn": attn}.items()},
        state={n: {} for n in names},
    )


def _attention(model: torch.nn.Module, layout: StackLayout, i: int) -> Any:
    """Layer i's attention module (its scale, n_heads, head_dim)."""
    assert layout.attention is not None
    return model.get_submodule(layout.attention.format(i=i))


def _col(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(-1, *([1] * (ndim - 1)))


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (K, ..., in) @ w (K, in, out) [+ b (K, out)] as one batched matmul (w stored transposed: _stack_models)."""
    k, shape = x.shape[0], x.shape
    flat = x.reshape(k, -1, shape[-1])
    y = torch.bmm(flat, w) if b is None else torch.baddbmm(b.unsqueeze(1), flat, w)
    return y.view(*shape[:-1], w.shape[2])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    k, c = x.shape[0], x.shape[-1]
    shape = (k, *([1] * (x.dim() - 2)), c)
    return F.layer_norm(x, (c,)) * w.view(shape) + b.view(shape)


def _forward_mlp(st: _Stack, x: torch.Tensor, top: dict[str, str], layers: list[dict[str, str]]) -> torch.Tensor:
    p, m = st.params, st.mults
    h = F.relu(_linear(x, p[top["input.weight"]], p[top["input.bias"]]) * _col(m["embed"], 3))
    for layer in layers:
        h = F.relu(_linear(h, p[layer["weight"]], p[layer["bias"]]))
    return _linear(h * _col(m["readout"], 3), p[top["readout.weight"]], p[top["readout.bias"]]) * _col(m["logit"], 3)


def _forward_gpt(st: _Stack, idx: torch.Tensor, top: dict[str, str], layers: list[dict[str, str]], n_heads: int,
                 head_dim: int, shared_scale: float | None, tied: bool = False) -> torch.Tensor:
    p, m = st.params, st.mults
    k, b, t = idx.shape
    rows = torch.arange(k, device=idx.device).view(k, 1, 1)
    x = (p[top["tokens"]][rows, idx] + p[top["positions"]][:, :t].unsqueeze(1)) * _col(m["embed"], 4)
    c = x.shape[-1]
    for layer in layers:
        h = _layer_norm(x, p[layer["ln1.weight"]], p[layer["ln1.bias"]])

        def heads(w: torch.Tensor, h: torch.Tensor = h) -> torch.Tensor:
            return _linear(h, w).view(k * b, t, n_heads, head_dim).transpose(1, 2)

        q, kk, v = heads(p[layer["q"]]), heads(p[layer["k"]]), heads(p[layer["v"]])
        if shared_scale is not None:
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True, scale=shared_scale)
        else:  # trials with different attn_mult: scaling q by each trial's own scale is the same softmax input
            q = q * m["attn"].repeat_interleave(b).view(k * b, 1, 1, 1)
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True, scale=1.0)
        x = x + _linear(y.transpose(1, 2).reshape(k, b, t, c), p[layer["attn.proj"]])
        h = _layer_norm(x, p[layer["ln2.weight"]], p[layer["ln2.bias"]])
        x = x + _linear(F.gelu(_linear(h, p[layer["fc"]])), p[layer["mlp.proj"]])
    h = _layer_norm(x, p[top["ln_f.weight"]], p[top["ln_f.bias"]])
    if tied:
        # The readout is the token embedding, stored (K, vocab, width) as a lookup: its transpose is the (in, out)
        # matmul weight. MuSharedReadout's output_mult / width_mult is m["readout"], as for an untied MuReadout;
        # autograd adds the readout's gradient to the lookup's in the one tensor.
        return _linear(h * _col(m["readout"], 4), p[top["tokens"]].transpose(1, 2)) * _col(m["logit"], 4)
    return _linear(h * _col(m["readout"], 4), p[top["readout.weight"]]) * _col(m["logit"], 4)


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) mean cross-entropy of each trial, as train._loss computes it for one."""
    k, v = logits.shape[0], logits.shape[-1]
    per = F.cross_entropy(logits.reshape(-1, v).float(), y.reshape(-1), reduction="none")
    return per.view(k, -1).mean(1)


@torch.no_grad()
def _clip(st: _Stack, max_norm: float) -> None:
    # torch.nn.utils.clip_grad_norm_ per trial: the norm over all of that trial's gradients.
    grads = [p.grad for p in st.params.values() if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads])
    coef = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_col(coef, g.dim()))


@torch.no_grad()
def _step(st: _Stack, optimizer: str, betas: tuple[float, float], factor: float, step: int) -> None:
    """One optimizer step on every trial, torch's Adam/AdamW/SGD formulas with per-trial (K,) LR and decay.

    In place, through one scratch tensor per parameter: a stacked tensor is K times a trial's, and fresh
    full-size temporaries at every op (allocation, page faults, a pass over memory each) cost more than the math.
    """
    beta1, beta2 = betas
    for n, p in st.params.items():
        g = p.grad
        if g is None:
            continue
        if not g.is_contiguous():
            g = p.grad = g.contiguous()
        nd = p.dim()
        lr = _col(st.lr[n] * factor, nd)
        wd = _col(st.wd[n], nd)
        s = st.state[n]
        if "tmp" not in s:
            s["tmp"] = torch.empty_like(p)
        tmp = s["tmp"]
        if optimizer != "adamw" and bool((st.wd[n] != 0).any()):
            g.add_(torch.mul(p, wd, out=tmp))  # coupled L2 (Adam, SGD): g + wd * p
        if optimizer == "sgd":
            if "buf" not in s:
                s["buf"] = g.clone()
            else:
                s["buf"].mul_(_col(st.momentum, nd)).add_(g)
            p.sub_(torch.mul(s["buf"], lr, out=tmp))
            continue
        if optimizer == "adamw":
            p.mul_(1 - lr * wd)
        if "m" not in s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        s["m"].lerp_(g, 1 - beta1)
        s["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        # p -= (lr / bc1) * m / (sqrt(v) / bc2_sqrt + eps)
        torch.sqrt(s["v"], out=tmp).div_(bc2_sqrt).add_(_col(st.eps, nd))
        torch.div(s["m"], tmp, out=tmp).mul_(lr / bc1)
        p.sub_(tmp)


def train_batch(specs: Sequence[TrialSpec], report: BatchReport, *, threads: int | None = None) -> list[TrialResult]:
    """Train compatible trials (see `batch_key`) as one stacked model; one TrialResult per spec, in order.

    `report(spec, point)` is called for each trial at each of its evaluations, with the same points `train.train`
    reports. A trial's wall_time is its share of the batch's time (the batch's time / K): the sum over a sweep
    stays the compute it cost. Points' `elapsed` is the time since the batch started.
    """
    specs = list(specs)
    if not specs:
        return []
    if len({batch_key(s) for s in specs}) != 1 or not all(batchable(s) for s in specs):
        raise ValueError("train_batch: the trials differ in shape, data, steps or settings, or are not built-in")
    start = time.perf_counter()
    torch.set_num_threads(thread_count(threads))
    first = specs[0]
    cfg = first.train
    device = device_for(cfg)
    dataset, batch_size, seq_len = load_data(first)

    models = []
    for s in specs:
        torch.manual_seed(s.seed)  # the same draws as train.train's build
        models.append(build(s, dataset, device))
    n_params = count_params(models[0])
    family = first.model.family
    layout = STACK_LAYOUTS[family]
    tied = bool(getattr(first.model, "tie_embeddings", False))
    if tied and layout.tied_to is None:
        raise ValueError(f"train_batch: the {family} family has no tied readout to stack")
    # names resolved once, not at every step
    top, layers = layout.top_roles(tied), layout.layers(first.scale.depth)
    st = _stack_models(models, specs, layout, device)
    if layout.attention is not None:
        attn = _attention(models[0], layout, 0)
        n_heads, head_dim = attn.n_heads, attn.head_dim
        scales = {float(_attention(m, layout, 0).scale) for m in models}
        shared = scales.pop() if len(scales) == 1 else None
    del models

    def forward(x: torch.Tensor) -> torch.Tensor:
        if family == "mlp":
            return _forward_mlp(st, x, top, layers)
        return _forward_gpt(st, x, top, layers, n_heads, head_dim, shared, tied)

    factor = lr_factor(cfg, first.steps)
    tokens_per_step = batch_size * seq_len
    flops_per_token = train_flops_per_token(first, n_params, seq_len)
    val_batches = validation_batches(first, dataset, seq_len, device)
    # One generator per distinct seed: trials that share a seed see the same batches, drawn once per step.
    gens = {s.seed: torch.Generator().manual_seed(s.seed) for s in specs}

    active = list(range(len(specs)))  # row i of the stack is trial active[i]
    logs = [TrialLog(base_lr=float(s.hparam("lr")), factor=factor, tokens_per_step=tokens_per_step,
                     metric=cfg.metric, window=cfg.metric_window, diverge_factor=cfg.diverge_factor, start=start,
                     flops_per_token=flops_per_token, n_params=n_params)
            for s in specs]

    def batch_of(rows: list[int], draws: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        seeds = [specs[i].seed for i in rows]
        if len(set(seeds)) == 1:  # a view, no copy: every row reads the same batch
            x, y = draws[seeds[0]]
            return x.unsqueeze(0).expand(len(rows), *x.shape), y.unsqueeze(0).expand(len(rows), *y.shape)
        return torch.stack([draws[s][0] for s in seeds]), torch.stack([draws[s][1] for s in seeds])

    @torch.no_grad()
    def evaluate() -> list[float]:
        total = torch.zeros(len(active), device=device)  # on the trials' device: += a CUDA loss
        for x, y in val_batches:
            xs = x.unsqueeze(0).expand(len(active), *x.shape)
            total += _losses(forward(xs), y.unsqueeze(0).expand(len(active), *y.shape))
        return (total / len(val_batches)).tolist()

    for step in range(1, first.steps + 1):
        if not active:
            break
        draws = {seed: tuple(t.to(device, non_blocking=True)
                             for t in dataset.get_batch("train", batch_size, seq_len, gen))
                 for seed, gen in gens.items() if any(specs[i].seed == seed for i in active)}
        x, y = batch_of(active, draws)
        losses = _losses(forward(x), y)
        values = losses.tolist()  # one sync per step for K trials
        keep: list[int] = []
        for row, i in enumerate(active):
            if logs[i].diverges(step, values[row]):
                report(specs[i], logs[i].last)
            else:
                keep.append(row)
        for p in st.params.values():
            p.grad = None
        # Trials are independent, so d(sum of kept losses)/d(trial k's params) = d(loss_k)/d(params_k). A trial
        # that diverged at this step is left out of the sum and dropped after the update: every op here is per
        # trial (bmm slices, per-trial norms and clip), so its NaNs stay in its own rows.
        kept = losses if len(keep) == len(active) else losses[torch.tensor(keep, dtype=torch.long)]
        kept.sum().backward()
        if cfg.grad_clip is not None:
            _clip(st, cfg.grad_clip)
        _step(st, cfg.optimizer, cfg.betas, factor(step - 1), step)
        if len(keep) < len(active):
            active = [active[r] for r in keep]
            if not active:
                break
            st = st.select(keep)
        for row, i in enumerate(active):
            logs[i].stepped(step, values[keep[row]])
        if step % cfg.eval_interval == 0 or step == first.steps:
            vals = evaluate()
            left: list[int] = []
            for row, i in enumerate(active):
                goes_on = logs[i].evaluated(step, vals[row])
                report(specs[i], logs[i].last)
                if goes_on:
                    left.append(row)
            if len(left) < len(active):
                active = [active[r] for r in left]
                if active:
                    st = st.select(left)

    wall = (time.perf_counter() - start) / len(specs)
    return [log.result(wall_time=wall, flops_per_token=flops_per_token, n_params=n_params) for log in logs]
