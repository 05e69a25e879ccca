"""Running the coordinate check on a recipe: the widths (or depths) to try, the recipe's data, the model's
structure, and the measurement (`mutransfer.coordcheck.measure`) turned into a `CoordCheckReport`.

Data: real batches of the recipe's own data (`load_dataset(recipe.data, recipe.model)`, the train split), one fixed
batch the same at every width, at the recipe's base depth, batch size and sequence length. Real rather than
synthetic batches because the sizes a builder gets (input_dim, vocab_size, num_classes) come from the dataset
anyway, a user's model sees exactly the input it will train on (dtype, token range, shape), and the gate in
`mutransfer sweep` reuses the dataset that the sweep has already loaded (cached in-process): it costs no extra I/O.

Before training, `run_coord_check` reads the model's structure on the meta device: each module's role (which of
its weights' dimensions grow with width) and, under µP, what set_base_shapes would get wrong (a plain nn.Linear
readout, a width dimension that the base and delta models keep fixed). Each of those fails the check by itself.

This module imports torch and mup only inside functions: parsing flags or catching CheckError is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mutransfer.coordcheck.report import (
    BLOW_UP,
    DEPTH_BLOW_UP,
    DEPTH_VANISH,
    VANISH,
    CoordCheckReport,
    LayerCheck,
    verdict,
)
from mutransfer.errors import MutransferError, option

if TYPE_CHECKING:
    from mutransfer.data import Dataset
    from mutransfer.recipe import Recipe

DEFAULT_STEPS = 3
DEFAULT_LR = {"adam": 3e-3, "adamw": 3e-3, "sgd": 0.1}
N_WIDTHS = 4  # base_width x 1, 2, 4, 8
MIN_WIDTHS = 3  # the FLOP budget may drop the widest, never below this many
FLOP_BUDGET = 1.5e11  # estimated training FLOPs of the whole check: a few seconds on a laptop CPU
SEEDS = (0, 1)


class CheckError(MutransferError, ValueError):
    """A coordinate check that cannot run (bad widths, a model that fails to build or run): one line."""


def default_widths(recipe: Recipe, parametrization: str = "mup", dataset: Dataset | None = None, *,
                   steps: int = DEFAULT_STEPS, budget: float = FLOP_BUDGET) -> list[int]:
    """base_width x 1, 2, 4, 8, dropping the widest while the check's estimated FLOPs exceed `budget` (min 3)."""
    from mutransfer.parametrization import count_params

    base = recipe.model.base_width
    widths = [base * 2**k for k in range(N_WIDTHS)]
    make_cfg = _make_cfg(recipe, parametrization, _dataset(recipe, dataset))
    scale = recipe.scales.base
    tokens = scale.batch_size * (scale.seq_len if recipe.model.family != "mlp" else 1)
    per_param = (6 * steps + 2 * (steps + 1)) * tokens * len(SEEDS)  # fwd+bwd per step, a probe per step + 1

    def cost(ws: list[int]) -> float:
        try:
            return sum(per_param * count_params(make_cfg(w), recipe.model.family) for w in ws)
        except Exception:
            return 0.0  # a model that cannot be built on meta: the check itself will say why

    while len(widths) > MIN_WIDTHS and cost(widths) > budget:
        widths.pop()
    return widths


def parse_widths(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; at least two distinct positive widths."""
    return _parse_sizes(text, "width")


def parse_depths(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8]; at least two distinct positive depths."""
    return _parse_sizes(text, "depth")


def _parse_sizes(text: str, axis: str) -> list[int]:
    try:
        sizes = sorted({int(w) for w in text.replace(" ", "").split(",") if w})
    except ValueError as e:
        raise CheckError(f"{option(axis + 's')}: {text!r} is not a comma-separated list of integers") from e
    if len(sizes) < 2 or sizes[0] < 1:
        raise CheckError(f"{option(axis + 's')}: give at least two different positive {axis}s, got {text!r}")
    return sizes


def _dataset(recipe: Recipe, dataset: Dataset | None) -> Dataset:
    if dataset is not None:
        return dataset
    from mutransfer.data import load_dataset

    return load_dataset(recipe.data, recipe.model)


def _make_cfg(recipe: Recipe, parametrization: str, dataset: Dataset, axis: str = "width") -> Any:
    """width (or depth, `axis="depth"`) -> the BuildConfig a trial at the base scale point, at that width (depth),
    would get (base hyperparameters; the depth rule's base_depth is the recipe's)."""
    from mutransfer.parametrization import build_config
    from mutransfer.plan import spec_for

    base = recipe.scales.base

    def make(size: int) -> Any:
        spec = spec_for(recipe, parametrization, base.model_copy(update={axis: size}), 0, 0, {})
        return build_config(spec, dataset)

    return make


def _device(recipe: Recipe) -> str:
    import torch

    want = recipe.train.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def run_coord_check(
    recipe: Recipe,
    parametrization: str = "mup",
    widths: Sequence[int] | None = None,
    *,
    depths: Sequence[int] | None = None,
    steps: int = DEFAULT_STEPS,
    lr: float | None = None,
    seeds: Sequence[int] = SEEDS,
    dataset: Dataset | None = None,
    device: str | None = None,
    track_steps: bool = True,
    blow_up: float | None = None,
    vanish: float | None = None,
    threads: int = 1,
) -> CoordCheckReport:
    """mup's coordinate check on the recipe's model (built-in or the user's builder), with the recipe's optimizer.

    Widths default to `default_widths` (base_width x 1..8 within a FLOP budget); depth, batch size and sequence
    length are the recipe's base scale point's; the multipliers and init are the recipe's base values. The
    thresholds default to BLOW_UP and VANISH (DEPTH_BLOW_UP and DEPTH_VANISH over depth). `lr`
    defaults to 3e-3 (Adam, AdamW) or 0.1 (SGD): the calibrated values. Raises CheckError when the model cannot
    be built or run. Runs on `threads` torch threads (1: these models are small, and more threads on a busy
    machine made the check 15x slower here), restored afterwards.

    `depths` instead of `widths`: the check over depth, at the base scale point's width (see `mutransfer.coordcheck`;
    `CoordCheckReport.axis` is "depth" and its `widths` hold the depths).
    """
    import torch

    from mutransfer.coordcheck.measure import coord_check

    if parametrization not in ("mup", "sp"):
        raise CheckError(f"{option('parametrization')}: use mup or sp, not {parametrization!r}")
    if steps < 1:
        raise CheckError(f"{option('steps')}: give at least 1 step")
    if widths is not None and depths is not None:
        raise CheckError(f"{option('widths')}, {option('depths')}: give one of them (a check varies one axis at a time)")
    axis = "depth" if depths is not None else "width"
    given = widths is not None or depths is not None  # else sized from model.base_width
    blow_up = (DEPTH_BLOW_UP if axis == "depth" else BLOW_UP) if blow_up is None else blow_up
    vanish = (DEPTH_VANISH if axis == "depth" else VANISH) if vanish is None else vanish
    t0 = time.perf_counter()
    ds = _dataset(recipe, dataset)
    optimizer = recipe.train.optimizer
    lr = float(lr if lr is not None else DEFAULT_LR[optimizer])
    if depths is not None:
        widths = sorted(set(depths))
        if len(widths) < 2 or widths[0] < 1:
            raise CheckError("the coordinate check over depth needs at least two positive depths")
    else:
        widths = (sorted(set(widths)) if widths is not None
                  else default_widths(recipe, parametrization, ds, steps=steps))
        if len(widths) < 2:
            raise CheckError("the coordinate check needs at least two widths")
    scale = recipe.scales.base
    is_seq = ds.input_dim is None
    seq_len = scale.seq_len if is_seq else 1
    if is_seq:
        ds.check(seq_len)
    make_cfg = _make_cfg(recipe, parametrization, ds, axis)
    family = recipe.model.family
    device = device or _device(recipe)
    _check_memory(recipe, make_cfg, widths, axis, given=given, device=device)

    def batch_fn(_cfg: Any, generator: Any) -> Any:
        return ds.get_batch("train", scale.batch_size, seq_len, generator)

    if axis == "width":
        roles, shape_problems, plain_readouts = _inspect(make_cfg, family, widths, parametrization)
    else:
        # Roles still come from which dimensions grow with width (base width and twice it, at the base depth).
        # µP's structural problems are the width check's business: a depth check reports the depth rule alone.
        roles, _, _ = _inspect(_make_cfg(recipe, parametrization, ds), family, [scale.width, 2 * scale.width],
                               parametrization)
        shape_problems, plain_readouts = [], []
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        # mup's set_base_shapes refuses a plain nn.Linear from width to a fixed size (a readout that is not a
        # MuReadout, or a width dimension that base and delta keep fixed). `_inspect` has named those already;
        # training anyway measures what they do, for the plot and the verdicts.
        with _mup_readout_assertion_off():
            cc = coord_check(make_cfg, widths, family, steps=steps, lr=lr, optimizer=optimizer,
                             batch_size=scale.batch_size, seeds=tuple(seeds), batch_fn=batch_fn, metric="change",
                             device=device, track_steps=track_steps, axis=axis)
    except Exception as e:
        raise CheckError(f"coordinate check: the {family} model did not train at {axis}s {widths}: "
                         f"{type(e).__name__}: {_one_line(e)}") from e
    finally:
        torch.set_num_threads(before)
    top = max((max(v) for v in cc.values.values() if v and all(math.isfinite(x) for x in v)), default=0.0)
    floor = 1e-9 * top

    def role(name: str) -> tuple[str, str]:
        if axis == "depth" and is_stream(name):
            return "stream", roles.get(f"{name[:-len('.last')]}.0", ("other", "?"))[1]
        return roles.get(name, ("other", "?"))

    layers = [
        LayerCheck(name=name, role=role(name)[0], module=role(name)[1],
                   slope=cc.slopes[name], values=[float(v) for v in values],
                   verdict=verdict(values, cc.slopes[name], blow_up=blow_up, vanish=vanish, floor=floor),
                   step_values=[[float(v) for v in row] for row in cc.step_values.get(name, [])],
                   judged=axis == "width" or name == "logits" or is_stream(name))
        for name, values in cc.values.items()
    ]
    return CoordCheckReport(
        recipe=recipe.name or "recipe", family=family, parametrization=parametrization, optimizer=optimizer, lr=lr,
        steps=steps, widths=list(widths), depth=scale.depth, batch_size=scale.batch_size, seq_len=seq_len,
        data=recipe.data.kind, metric=cc.metric, layers=layers, shape_problems=shape_problems,
        plain_readouts=plain_readouts, blow_up=blow_up, vanish=vanish, seconds=time.perf_counter() - t0,
        axis=axis, width=scale.width if axis == "depth" else None, depth_scaling=recipe.model.depth_scaling,
    )


def _check_memory(recipe: Recipe, make_cfg: Any, sizes: Sequence[int], axis: str, *, given: bool,
                  device: str) -> None:
    """A CheckError, before anything is allocated, when the largest model of the check surely does not fit in the
    memory free on `device` (mutransfer.coordcheck.memory); it names what sized it: model.base_width (the default
    widths), or the widths or depths given."""
    from mutransfer.coordcheck.memory import free_bytes, gigabytes, needed_bytes
    from mutransfer.parametrization import count_params

    largest = max(sizes)
    try:
        params = count_params(make_cfg(largest), recipe.model.family)
    except Exception:
        return  # a model that cannot be built on meta: the check itself will say why
    need, free = needed_bytes(params, recipe.train.optimizer), free_bytes(device)
    if free is None or need <= free:
        return
    if given:
        field = option(axis + "s")
        fix = f"give smaller {field}" + (" or a narrower scales.base.width (the check's width)" if axis == "depth" else "")
    else:
        field = "model.base_width"
        fix = (f"lower model.base_width (the check trains base_width x {', '.join(str(w // sizes[0]) for w in sizes)})"
               f", or give the coordinate check smaller {option('widths')}")
    raise CheckError(f"{field}: the coordinate check's largest model ({axis} {largest}, {params:,} parameters) needs "
                     f"at least {gigabytes(need)} for its weights, gradients and optimizer state, more than the "
                     f"{gigabytes(free)} free on {device}: {fix}")


def is_stream(name: str) -> bool:
    """`<stack>.last` of a top-level stack of blocks (measure.coord_check's name for the last block's output): the
    residual stream the readout sees. A stack nested in a block ("blocks.0.heads.last") is not."""
    return name.endswith(".last") and not any(part.isdigit() for part in name.split("."))


@contextmanager
def _mup_readout_assertion_off() -> Iterator[None]:
    import mup.shape

    real = mup.shape.assert_hidden_size_inf
    mup.shape.assert_hidden_size_inf = lambda model: None
    try:
        yield
    finally:
        mup.shape.assert_hidden_size_inf = real


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


def _inspect(make_cfg: Any, family: str, widths: Sequence[int], parametrization: str
             ) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """Each module's role (from which of its weights' dimensions grow between the smallest and the largest check
    width) and class name; under µP, the parameter dimensions that grow with width but that set_base_shapes will
    take for fixed, and the plain nn.Linear readouts (width to a fixed size, not a MuReadout). On the meta device."""
    from mup import MuReadout
    from torch import nn

    from mutransfer.parametrization import builder, construct, is_builtin

    fn, builtin = builder(family), is_builtin(family)
    small, large = make_cfg(widths[0]), make_cfg(widths[-1])

    def build(cfg: Any) -> nn.Module:
        try:
            return construct(fn, cfg, "meta", builtin)
        except Exception as e:
            raise CheckError(f"coordinate check: building the {family} model at width {cfg.width} failed: "
                             f"{type(e).__name__}: {_one_line(e)}") from e

    model, wider = build(small), build(large)
    # By owner, not named_parameters(): a tied readout's weight is listed there once, under the embedding's name.
    wide_shapes = {f"{mn}.{pn}" if mn else pn: tuple(p.shape) for mn, m in wider.named_modules()
                   for pn, p in m.named_parameters(recurse=False)}
    roles: dict[str, tuple[str, str]] = {"logits": ("output", type(model).__name__)}
    grows: dict[str, list[bool]] = {}
    plain: list[str] = []
    for mname, module in model.named_modules():
        if not mname:
            continue
        kinds = []
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}"
            other = wide_shapes.get(full)
            g = [a != b for a, b in zip(p.shape, other, strict=False)] if other and len(other) == p.dim() else []
            grows[full] = g
            if p.dim() >= 2 and len(g) >= 2:
                out_grows, in_grows = g[0], g[1]
                if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                    kinds.append("input")
                elif out_grows and in_grows:
                    kinds.append("hidden")
                elif in_grows:
                    kinds.append("readout")
                elif out_grows:
                    kinds.append("input")
            else:
                kinds.append("vector")
        role = next((k for k in ("readout", "hidden", "input", "vector") if k in kinds), "other")
        roles[mname] = (role, type(module).__name__)
        if (parametrization == "mup" and role == "readout" and isinstance(module, nn.Linear)
                and not isinstance(module, MuReadout)):
            plain.append(mname)

    problems: list[str] = []
    if parametrization == "mup":
        base_cfg = small.at_width(small.base_width)
        base, delta = build(base_cfg), build(base_cfg.at_width(2 * small.base_width))
        delta_shapes = {n: tuple(p.shape) for n, p in delta.named_parameters()}
        for name, p in base.named_parameters():
            g = grows.get(name)
            d = delta_shapes.get(name)
            if not g or d is None or len(d) != p.dim():
                continue
            fixed = [i for i, (a, b) in enumerate(zip(p.shape, d, strict=True)) if a == b and g[i]]
            for i in fixed:
                problems.append(f"{name} dim {i}: {p.shape[i]} at widths {base_cfg.width} and {2 * base_cfg.width}, "
                                f"{wide_shapes[name][i]} at {widths[-1]}")
    return roles, problems, plain

