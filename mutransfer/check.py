"""The coordinate check as a gate: does the recipe's model keep every layer's update size flat as it widens?

mup's coordinate check (Tensor Programs V, appendix D.1): build the model at a few widths, train each a few steps
on one fixed batch, and measure how much every layer's output moved, per coordinate (mean |h_t - h_0|). Under µP
that size does not depend on width: the slope of log(change) against log(width) is about 0 in every layer. A
layer whose slope is clearly positive "blows up" (a wider model would take larger and larger steps there, so its
optimal learning rate would shrink with width and would not transfer); a clearly negative slope "vanishes" (the
layer stops learning as width grows). `run_coord_check` does this for a recipe, `CoordCheckReport.summary()` says in
words which layers fail and the likely cause, and `figure` plots it (log-log, one line per layer, one panel per step).

Data: real batches of the recipe's own data (`load_dataset(recipe.data, recipe.model)`, the train split), one fixed
batch the same at every width, at the recipe's base depth, batch size and sequence length. Real rather than
synthetic batches because the sizes a builder gets (input_dim, vocab_size, num_classes) come from the dataset
anyway, a user's model sees exactly the input it will train on (dtype, token range, shape), and the gate in
`mutransfer sweep` reuses the dataset that the sweep has already loaded (cached in-process): it costs no extra I/O.

Calibration (3 Adam steps at lr 3e-3, 2 seeds, widths base x 1, 2, 4, 8 on the shipped recipes): µP's largest
|slope| was 0.13 (gpt, 32..256) and 0.07 (mlp); SP's logits +0.8..+1.1 and hidden layers +0.5..+1.5; a readout that
skips MuReadout's 1/width +0.8..+1.0 (logits); a µP model with plain Adam +0.8..+1.3 in the hidden layers. SGD
(lr 0.1, MuSGD): µP within 0.15, SP logits +0.3..+0.8. At lr 1e-2 finite-width effects push µP's attention to +0.3,
hence the moderate LR. Thresholds: "blows up" above +0.3, "vanishes" below -0.4.

Over depth (`run_coord_check(..., depths=[2, 4, 8])`, `mutransfer coord-check --depths`): the same measurement at
the base scale point's width, one model per depth. Only the residual stream the readout sees (`<stack>.last`, the
last block's output) and the logits are judged: an interior block's own change is expected to shrink as more blocks
share the update (it is reported, not judged). With a depth rule (model.depth_scaling depth-mup or completep) they
stay flat and the check passes; without one each block adds its own Θ(1) update, so they grow with depth: reported,
as SP's growth over width is, and not a failure. Calibration (3 Adam steps, 2 seeds, widths 32 and 64, depths
2..4 and 2..16, lr 3e-3 and 1e-2, µP and SP): with depth-µP or CompleteP the stream's slope was -0.56..+0.60 (the
residual MLP's +0.26..+0.53 at lr 3e-3 under depth-µP, lower over depths 4..16 than over 2..8: a finite-depth
effect) and the logits' -0.35..+0.56; without a depth rule the stream's was +0.77..+1.95 at lr 3e-3 (+0.61 at
lr 1e-2, GPT), the residual MLP's logits mostly +0.5..+1.5, the GPT's about 0 (its final LayerNorm hides the
stream's growth).
Hence wider thresholds over depth: "blows up" above +0.65, "vanishes" below -0.65.

This module imports torch, mup and plotly only inside functions: reading a stored report is cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from mutransfer.data import Dataset
    from mutransfer.recipe import Recipe

KIND = "coord"  # the `kind` of a stored coordinate check (over width)
KIND_DEPTH = "coord_depth"  # ... over depth: a separate kind so `show` keeps the latest of each
BLOW_UP = 0.3  # slope of log(change) vs log(width) above which a layer blows up
VANISH = -0.4  # ... below which it vanishes (finite widths pull µP a little below 0: more room on this side)
DEPTH_BLOW_UP = 0.65  # the same over depth: finite depths move the depth rules' stream further from 0 (see above)
DEPTH_VANISH = -0.65
DEFAULT_STEPS = 3
DEFAULT_LR = {"adam": 3e-3, "adamw": 3e-3, "sgd": 0.1}
N_WIDTHS = 4  # base_width x 1, 2, 4, 8
MIN_WIDTHS = 3  # the FLOP budget may drop the widest, never below this many
FLOP_BUDGET = 1.5e11  # estimated training FLOPs of the whole check: a few seconds on a laptop CPU
SEEDS = (0, 1)

# Roles of a layer, from which of its parameters' dimensions grow with width.
ROLE_WORDS = {
    "readout": "readout", "hidden": "hidden", "input": "input", "vector": "norm/bias", "other": "no weights",
    "output": "model output", "stream": "residual stream",
}


class CheckError(ValueError):
    """A coordinate check that cannot run (bad widths, a model that fails to build or run): one line."""


@dataclass(frozen=True)
class LayerCheck:
    name: str  # module name (as `named_modules` gives it), or "logits" for the model's output
    role: str  # readout | hidden | input | vector | other | output
    module: str  # the module's class name
    slope: float  # of log(value) vs log(width)
    values: list[float]  # per width, mean over seeds
    verdict: str  # flat | blows up | vanishes | unchanged | non-finite
    step_values: list[list[float]] = field(default_factory=list)  # per step (1..steps), per width
    # False: measured and shown, but its verdict cannot fail the check (interior layers over depth).
    judged: bool = True

    @property
    def bad(self) -> bool:
        return self.judged and self.verdict in ("blows up", "vanishes", "non-finite")

    @property
    def has_weights(self) -> bool:
        return self.role in ("readout", "hidden", "input", "vector", "output")


@dataclass(frozen=True)
class CoordCheckReport:
    recipe: str
    family: str
    parametrization: str
    optimizer: str
    lr: float
    steps: int
    widths: list[int]  # the values along `axis`: widths, or the depths of a check over depth
    depth: int  # the base scale point's depth (the depth of a check over width)
    batch_size: int
    seq_len: int
    data: str
    metric: str
    layers: list[LayerCheck]
    # µP only, found from the model's shapes before any training (each fails the check by itself):
    shape_problems: list[str] = field(default_factory=list)  # "param: dims that grow but base/delta keep fixed"
    plain_readouts: list[str] = field(default_factory=list)  # modules mapping width to a fixed size, not MuReadout
    blow_up: float = BLOW_UP
    vanish: float = VANISH
    seconds: float = 0.0
    # Stored checks from before these fields have none of them: they were checks over width.
    axis: str = "width"  # width | depth
    width: int | None = None  # depth: the width every depth is built at
    depth_scaling: str = "none"  # the recipe's model.depth_scaling

    # ------------------------------------------------------------------------------------------ verdicts

    @property
    def mup(self) -> bool:
        return self.parametrization == "mup"

    @property
    def over_depth(self) -> bool:
        return self.axis == "depth"

    @property
    def expects_flat(self) -> bool:
        """Whether the model claims to be stable along the axis: width, µP; depth, a depth rule."""
        return self.depth_scaling != "none" if self.over_depth else self.mup

    @property
    def stable(self) -> bool:
        """No judged layer blows up, vanishes or turns non-finite, and (µP) the model's structure is µP's."""
        return not any(layer.bad for layer in self.layers) and not self.shape_problems and not self.plain_readouts

    @property
    def passed(self) -> bool:
        """Stable, when the model claims to be. SP over width and no depth rule over depth are expected to grow:
        the check informs, it does not fail."""
        return self.stable or not self.expects_flat

    def offending(self, verdict: str | None = None) -> list[LayerCheck]:
        """Failing layers, steepest first; layers with weights (and the logits) before containers/activations."""
        bad = [x for x in self.layers if x.bad and (verdict is None or x.verdict == verdict)]
        return sorted(bad, key=lambda x: (not x.has_weights, -abs(x.slope) if math.isfinite(x.slope) else -math.inf))

    def culprits(self, limit: int = 4) -> list[str]:
        """The names to put in a one-line message: structural problems first, then failing layers with weights
        (else any failing layer)."""
        names = list(self.plain_readouts)
        names += [p.split(" ", 1)[0].rsplit(".", 1)[0] for p in self.shape_problems]
        bad = self.offending()
        names += [x.name for x in ([x for x in bad if x.has_weights] or bad)]
        return list(dict.fromkeys(names))[:limit]

    def diagnosis(self) -> list[tuple[str, str]]:
        """The likely causes, most specific first: (short, explanation) in words."""
        if self.over_depth:
            return self._depth_diagnosis()
        out: list[tuple[str, str]] = []
        up = self.offending("blows up")
        hidden = [x for x in up if x.role == "hidden"]
        readouts = [x for x in up if x.role == "readout" and x.name not in self.plain_readouts]
        logits = [x for x in up if x.role == "output"]
        inputs = [x for x in up if x.role == "input"]
        slope = {x.name: x.slope for x in self.layers}
        for name in self.plain_readouts:
            measured = f" (slope {slope[name]:+.2f} here)" if name in slope else ""
            out.append((f"the readout layer {name!r} is a plain nn.Linear, not a mup.MuReadout",
                        f"without MuReadout's 1/width its output grows with width{measured}, and mup's "
                        "set_base_shapes refuses such a layer, so every trial would fail; use mup.MuReadout for the "
                        "output layer"))
        if self.shape_problems:
            out.append((f"set_base_shapes takes a width dimension for a fixed one ({self.shape_problems[0]}"
                        + (f" and {len(self.shape_problems) - 1} more" if len(self.shape_problems) > 1 else "") + ")",
                        "the base and delta models (built at base_width and 2 x base_width) have the same size "
                        "there, so mup does not scale that weight's learning rate; make every width dimension "
                        "differ between them: " + "; ".join(self.shape_problems[:4])))
        if hidden and not self.shape_problems:
            out.append((f"hidden weights ({_names(hidden)}) blow up: their learning rate is not divided by the "
                        "width multiplier",
                        "train them with mup's optimizer (MuAdam, MuAdamW, MuSGD) after set_base_shapes, make the "
                        "base and delta models differ in every width dimension, and let their init shrink like "
                        "1/sqrt(fan_in)"))
        if (readouts or logits) and not hidden and not self.plain_readouts:
            for r in readouts:
                out.append((f"the readout layer {r.name!r} ({r.module}) is not scaled by 1/width",
                            "it grows with width while the layers before it do not: a MuReadout whose forward is "
                            "overridden, or whose output is multiplied back up by the width"))
            if not readouts:
                out.append(("the output layer is not scaled by 1/width",
                            "the logits grow with width while no layer before them does: use mup.MuReadout for the "
                            "output layer"))
        if inputs and not hidden:
            out.append((f"input layers ({_names(inputs)}) blow up",
                        "their learning rate or init grows with width; under µP they keep the base values at every "
                        "width"))
        gone = self.offending("vanishes")
        if gone:
            out.append((f"{_names(gone)} stop learning as width grows",
                        "a width scaling applied twice (e.g. a MuReadout's output divided by the width again, or a "
                        "learning rate divided twice)"))
        if self.offending("non-finite"):
            out.append(("the loss became NaN or inf",
                        f"in {self.steps} steps at lr {self.lr:g}: try a smaller --lr"))
        return out

    def _depth_diagnosis(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.offending("blows up"):
            out.append(("the residual stream grows with depth although the recipe sets depth_scaling "
                        f"{self.depth_scaling!r}",
                        "every residual branch must be multiplied by (depth / base_depth)^-alpha (a builder gets "
                        "it as cfg.branch_mult) and the blocks trained with the depth-scaled optimizer groups; a "
                        "builder that ignores cfg.branch_mult, or a residual sum outside the model's ModuleList of "
                        "blocks, adds a full-size update per block"))
        if self.offending("vanishes"):
            out.append(("the residual stream stops learning as depth grows",
                        "a depth factor applied twice (e.g. a builder that scales its branches by depth itself on "
                        "top of cfg.branch_mult)"))
        if self.offending("non-finite"):
            out.append(("the loss became NaN or inf", f"in {self.steps} steps at lr {self.lr:g}: try a smaller --lr"))
        return out

    def causes(self) -> list[str]:
        return [f"{short}: {why}" for short, why in self.diagnosis()]

    def _failing_parts(self, along: str) -> list[str]:
        parts = []
        for verdict in ("blows up", "vanishes", "non-finite"):
            layers = self.offending(verdict)
            if layers:
                shown = ", ".join(f"{x.name} ({x.slope:+.2f})" for x in layers[:6])
                more = f" and {len(layers) - 6} more" if len(layers) > 6 else ""
                word = {"blows up": "blow up", "vanishes": "vanish", "non-finite": "turn NaN/inf"}[verdict]
                parts.append(f"{len(layers)} layer(s) {word} with {along}: {shown}{more}")
        return parts

    def _depth_summary(self) -> str:
        span = (f"depths {self.widths[0]}..{self.widths[-1]} at width {self.width}, {self.steps} {self.optimizer} "
                f"steps at lr {self.lr:g}")
        judged = [x for x in self.layers if x.judged]
        names = ", ".join(x.name for x in judged)
        finite = [abs(x.slope) for x in judged if math.isfinite(x.slope) and x.verdict != "unchanged"]
        worst = max(finite, default=0.0)
        if self.stable:
            head = (f"Depth check passed ({self.depth_scaling})" if self.expects_flat
                    else "Depth check (no depth scaling): flat here all the same")
            return (f"{head}: the residual stream the readout sees and the logits ({names}) stay flat as depth "
                    f"grows ({span}; largest |slope| {worst:.2f}, growth above {self.blow_up:+.2f}).")
        parts = self._failing_parts("depth")
        if self.expects_flat:
            return self._failed(f"Depth check FAILED ({self.depth_scaling}, {span})", parts)
        how = "depth-mup or completep (with model.base_depth" + (
            ", and model.residual: true for the mlp)" if self.family == "mlp" else ")")
        return (f"Depth check: not depth-stable, as expected without depth scaling ({span}): " + "; ".join(parts)
                + ". The recipe has no depth scaling (model.depth_scaling: none), so its optimal learning rate will "
                f"drift with depth; set model.depth_scaling to {how} to make it transfer. Not a failure.")

    def _failed(self, head: str, parts: list[str]) -> str:
        """A failed check in words: what went wrong, then the likely causes."""
        text = f"{head}: " + "; ".join(parts) + "."
        causes = self.causes()
        if causes:
            text += " Likely cause: " + " Also: ".join(c + "." for c in causes)
        return text

    def summary(self) -> str:
        """A paragraph in words: passed or not, which layers blow up or vanish, the likely cause."""
        if self.over_depth:
            return self._depth_summary()
        span = f"widths {self.widths[0]}..{self.widths[-1]}, {self.steps} {self.optimizer} steps at lr {self.lr:g}"
        finite = [abs(x.slope) for x in self.layers if math.isfinite(x.slope) and x.verdict != "unchanged"]
        worst = max(finite, default=0.0)
        if self.stable:
            head = ("µP check passed" if self.mup else "SP check: unexpectedly flat")
            return (f"{head}: every layer's activation change stays flat as width grows ({span}; largest |slope| "
                    f"{worst:.2f}, a layer blows up above {self.blow_up:+.2f}).")
        parts = self._failing_parts("width")
        if not parts:
            parts.append("every layer stays flat in these few steps, but the model's structure is not µP's")
        if self.mup:
            return self._failed(f"µP check FAILED ({span})", parts)
        return (f"SP is not width-stable, as expected ({span}): " + "; ".join(parts) + ". This is what µP fixes: "
                "not a failure.")

    def headline(self, recipe_path: str | None = None) -> str:
        """One line for a sweep refused by the (width) gate: the failing layers, the first cause, what to run next."""
        names = ", ".join(self.culprits())
        diagnosis = self.diagnosis()
        cause = f": {diagnosis[0][0]}" if diagnosis else ""
        where = recipe_path or "RECIPE"
        return (f"coordinate check failed for {self.parametrization} at {names}{cause}; run `mutransfer "
                f"coord-check {where}` for the plot and the details, or pass --skip-check to sweep anyway")

    # ------------------------------------------------------------------------------------------ (de)serialise

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["stable"] = self.stable
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoordCheckReport:
        d = {k: v for k, v in d.items() if k not in ("passed", "stable")}
        d["layers"] = [LayerCheck(**x) for x in d.get("layers", [])]
        return cls(**d)


def _names(layers: Sequence[LayerCheck], limit: int = 4) -> str:
    names = [x.name for x in layers[:limit]]
    return ", ".join(names) + (f" and {len(layers) - limit} more" if len(layers) > limit else "")


def verdict(values: Sequence[float], slope: float, *, blow_up: float = BLOW_UP, vanish: float = VANISH,
            floor: float = 0.0) -> str:
    """flat | blows up | vanishes | unchanged (no change at any width) | non-finite."""
    if not all(math.isfinite(v) for v in values) or not math.isfinite(slope):
        return "non-finite"
    if max(values) <= floor:
        return "unchanged"
    if slope > blow_up:
        return "blows up"
    if slope < vanish:
        return "vanishes"
    return "flat"


# ---------------------------------------------------------------------------------------------- running


def default_widths(recipe: Recipe, parametrization: str = "mup", dataset: Dataset | None = None, *,
                   steps: int = DEFAULT_STEPS, budget: float = FLOP_BUDGET) -> list[int]:
    """base_width x 1, 2, 4, 8, dropping the widest while the check's estimated FLOPs exceed `budget` (min 3)."""
    from mutransfer.proxy import count_params

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
    except ValueError:
        raise CheckError(f"--{axis}s: {text!r} is not a comma-separated list of integers") from None
    if len(sizes) < 2 or sizes[0] < 1:
        raise CheckError(f"--{axis}s: give at least two different positive {axis}s, got {text!r}")
    return sizes


def _dataset(recipe: Recipe, dataset: Dataset | None) -> Dataset:
    if dataset is not None:
        return dataset
    from mutransfer.data import load_dataset

    return load_dataset(recipe.data, recipe.model)


def _make_cfg(recipe: Recipe, parametrization: str, dataset: Dataset, axis: str = "width") -> Any:
    """width (or depth, `axis="depth"`) -> the BuildConfig a trial at the base scale point, at that width (depth),
    would get (base hyperparameters; the depth rule's base_depth is the recipe's)."""
    from mutransfer.plan import spec_for
    from mutransfer.proxy import build_config

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

    `depths` instead of `widths`: the check over depth, at the base scale point's width (see the module docstring;
    `CoordCheckReport.axis` is "depth" and its `widths` hold the depths).
    """
    import torch

    from mutransfer.proxy import coord_check

    if parametrization not in ("mup", "sp"):
        raise CheckError(f"--parametrization: use mup or sp, not {parametrization!r}")
    if steps < 1:
        raise CheckError("--steps: give at least 1 step")
    if widths is not None and depths is not None:
        raise CheckError("--widths, --depths: give one of them (a check varies one axis at a time)")
    axis = "depth" if depths is not None else "width"
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
                             device=device or _device(recipe), track_steps=track_steps, axis=axis)
    except Exception as e:
        raise CheckError(f"coordinate check: the {family} model did not train at {axis}s {widths}: "
                         f"{type(e).__name__}: {_one_line(e)}") from None
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


def is_stream(name: str) -> bool:
    """`<stack>.last` of a top-level stack of blocks (proxy.coord_check's name for the last block's output): the
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

    from mutransfer.proxy import _builder, _construct, _is_builtin

    fn, builtin = _builder(family), _is_builtin(family)
    small, large = make_cfg(widths[0]), make_cfg(widths[-1])

    def build(cfg: Any) -> nn.Module:
        try:
            return _construct(fn, cfg, "meta", builtin)
        except Exception as e:
            raise CheckError(f"coordinate check: building the {family} model at width {cfg.width} failed: "
                             f"{type(e).__name__}: {_one_line(e)}") from None

    model, wider = build(small), build(large)
    wide_shapes = {n: tuple(p.shape) for n, p in wider.named_parameters()}
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


# ---------------------------------------------------------------------------------------------- plot


def figure_data(report: CoordCheckReport) -> list[dict[str, Any]]:
    """Long rows for the plot: layer, role, verdict, slope, step, width (or depth: the report's axis), value (the
    last step when steps were not tracked). Pure: a stored report's dict, through `CoordCheckReport.from_dict`,
    plots the same."""
    rows: list[dict[str, Any]] = []
    for layer in report.layers:
        per_step = layer.step_values or [layer.values]
        first = report.steps - len(per_step) + 1
        for t, values in enumerate(per_step, start=first):
            for width, value in zip(report.widths, values, strict=True):
                rows.append({"layer": layer.name, "role": layer.role, "verdict": layer.verdict,
                             "slope": layer.slope, "step": t, report.axis: width, "value": value})
    return rows


def figure(report: CoordCheckReport) -> go.Figure:
    """Log-log activation change against width (or depth), one line per layer, one panel per step; failing layers
    bold; over depth, the layers not judged (interior blocks) dotted."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = figure_data(report)
    steps = sorted({r["step"] for r in rows})
    fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"after step {t}" for t in steps])
    palette = px.colors.qualitative.Dark24
    axis = report.axis
    for i, layer in enumerate(report.layers):
        color = palette[i % len(palette)]
        note = ", " + layer.verdict if layer.bad else "" if layer.judged else ", not judged"
        label = f"{layer.name} ({layer.slope:+.2f}{note})"
        for col, t in enumerate(steps, start=1):
            pts = [(r[axis], r["value"]) for r in rows if r["layer"] == layer.name and r["step"] == t
                   and r["value"] is not None and math.isfinite(r["value"]) and r["value"] > 0]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label,
                legendgroup=layer.name, showlegend=col == 1,
                line={"color": color, "width": 3.5 if layer.bad else 1.2, "dash": "solid" if layer.judged else "dot"},
                marker={"size": 7 if layer.bad else 4}, opacity=1.0 if layer.bad else 0.75,
                hovertemplate=f"{layer.name} ({ROLE_WORDS.get(layer.role, layer.role)})<br>{axis} %{{x}}<br>"
                              f"change %{{y:.3g}}<extra>step {t}</extra>",
            ), row=1, col=col)
    fig.update_xaxes(type="log", title_text=axis, tickvals=report.widths)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="mean |Δ activation| per coordinate" if report.metric == "change"
                     else "mean |activation|", row=1, col=1)
    if report.over_depth:
        status = "passed" if report.stable else (
            "FAILED" if report.expects_flat else "grows with depth (expected without depth scaling)")
        what = f"over depth, width {report.width}, depth_scaling {report.depth_scaling}"
        flat = "flat lines = depth-stable (judged: the residual stream and the logits)"
    else:
        status = "passed" if report.stable else ("FAILED" if report.mup else "not width-stable (expected for SP)")
        what, flat = "", "flat lines = width-stable"
    fig.update_layout(
        title={"text": f"Coordinate check{' ' + what if what else ''}: {report.recipe} ({report.parametrization}, "
                       f"{report.family}): {status}"
                       f"<br><sup>{flat}; slope > {report.blow_up:+.2f} blows up, "
                       f"< {report.vanish:+.2f} vanishes; {report.optimizer} lr {report.lr:g}</sup>"},
        legend={"title": {"text": "layer (slope)"}}, template="plotly_white", height=520,
        width=max(700, 330 * len(steps) + 300),
    )
    return fig


def save_figure(report: CoordCheckReport, path: Any) -> None:
    """The plot as a standalone HTML page (plotly.js from its CDN); PNG would need kaleido."""
    figure(report).write_html(str(path), include_plotlyjs="cdn")


__all__ = [
    "BLOW_UP", "DEPTH_BLOW_UP", "DEPTH_VANISH", "KIND", "KIND_DEPTH", "VANISH", "CheckError", "CoordCheckReport",
    "LayerCheck", "default_widths", "figure", "figure_data", "is_stream", "parse_depths", "parse_widths",
    "run_coord_check", "save_figure", "verdict",
]
