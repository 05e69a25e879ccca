"""The coordinate check's verdicts: a layer's slope judged against the thresholds, and the report in words.

`verdict` judges one layer; `CoordCheckReport` holds every layer's `LayerCheck`, decides whether the check passed,
and says why in words (`summary`, `diagnosis`, the sweep gate's `headline`). A stored check is its `to_dict`, read
back by `from_dict`. Plain Python: reading or printing a stored report imports neither torch nor plotly.

Calibration over width (3 Adam/AdamW steps at lr 3e-3, seeds (0, 1) and (2, 3), widths 32..256 from base width
32, on digits and on two char corpora, Python source and one repeated sentence; tests/test_coord_matrix.py plants
the nanoGPT-shaped mistakes and the same ones in transformers' Llama): correct µP models' slopes were -0.21..+0.08 in
every judged layer (nanoGPT-shaped with SDPA or an explicit softmax -0.16..+0.08, the gpt -0.18..+0.02 with its
head size or its head count fixed, hf-llama -0.15..+0.04 with either, a user's gpt at PyTorch's default init -0.21,
the mlp -0.06..-0.04), their attention logits (the bound scale·|q|·|k| of `mutransfer.coordcheck.attention`)
-0.18..+0.05: finite widths pull µP a little below 0, and the vanishing side keeps more room for it. Mistakes:
1/sqrt(head_dim) attention with a fixed head count +0.44..+0.47 in the attention logits (+0.37..+0.58 on one seed;
a Llama's `scaling` left at head_dim ** -0.5 +0.41..+0.46 over seeds 0..5) while every other layer stayed flat;
plain Adam on a µP model +0.95..+1.35 in the hidden layers (a Llama's +0.62..+1.44); a readout that skips
MuReadout's 1/width +0.72..+0.91 (logits), one that divides by the width twice -0.92..-1.15; SP's logits +0.8..+1.1
and hidden layers +0.5..+1.5. A plain or tied nn.Linear readout, a width dimension the base and delta models keep
fixed and a fixed init (nanoGPT's 0.02) are caught from the model's structure, exactly, and blow up +0.5..+1.3 as
well. SGD (lr 0.1, MuSGD): µP within 0.15, SP logits +0.3..+0.8. Thresholds: "blows up" above +0.3, "vanishes"
below -0.4: the margins are +0.08 against +0.3 and -0.21 against -0.4 for correct models, +0.11 beyond +0.3 for
the closest mistake (a Llama's 1/sqrt(d) attention).

Steps, LR and widths: 4 or 6 steps instead of 3 moved neither side (1/sqrt(d) +0.39..+0.49 at each); at lr 1e-2
finite-width effects push correct models to -0.22 and one seed's to +0.6 after 5 steps; at lr 1e-3 they sink to
-0.26: hence 3 steps at 3e-3 and base x 1..8, a couple of seconds on a CPU. The attention logits themselves (the
change of q·kᵀ·scale) were no statistic for the gate: in a few steps q and k have barely begun to align, and a
correct model's slope there ranged -0.49..+0.48 with steps, LR and seed (-0.35 at the defaults), the 1/sqrt(d)
model's always +0.5 above it, on both sides of any threshold; the bound leaves the alignment out.

Over depth only the residual stream the readout sees and the logits are judged (see `mutransfer.coordcheck`).
Calibration (3 Adam steps, 2 seeds, widths 32 and 64, depths 2..4 and 2..16, lr 3e-3 and 1e-2, µP and SP): with
depth-µP or CompleteP the stream's slope was -0.56..+0.60 (the residual MLP's +0.26..+0.53 at lr 3e-3 under
depth-µP, lower over depths 4..16 than over 2..8: a finite-depth effect) and the logits' -0.35..+0.56; without a
depth rule the stream's was +0.77..+1.95 at lr 3e-3 (+0.61 at lr 1e-2, GPT), the residual MLP's logits mostly
+0.5..+1.5, the GPT's about 0 (its final LayerNorm hides the stream's growth).
Hence wider thresholds over depth: "blows up" above +0.65, "vanishes" below -0.65.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

KIND = "coord"  # the `kind` of a stored coordinate check (over width)
KIND_DEPTH = "coord_depth"  # ... over depth: a separate kind so `show` keeps the latest of each
BLOW_UP = 0.3  # slope of log(change) vs log(width) above which a layer blows up
VANISH = -0.4  # ... below which it vanishes (finite widths pull µP a little below 0: more room on this side)
DEPTH_BLOW_UP = 0.65  # the same over depth: finite depths move the depth rules' stream further from 0 (module docstring)
DEPTH_VANISH = -0.65

# Roles of a layer, from which of its parameters' dimensions grow with width.
ROLE_WORDS = {
    "readout": "readout", "hidden": "hidden", "input": "input", "vector": "norm/bias", "other": "no weights",
    "output": "model output", "stream": "residual stream", "attention": "attention logits",
}
ATTENTION_SUFFIX = "attn_logits"  # an attention call's row: "<module>.attn_logits" (mutransfer.coordcheck.attention)


def is_attention(name: str) -> bool:
    """Whether a measured layer's name is an attention call's ("h.0.attn.attn_logits", "...attn_logits#2")."""
    return name.rsplit(".", 1)[-1].split("#", 1)[0] == ATTENTION_SUFFIX


def site_of(name: str) -> str:
    """The module an attention call ran in ("" at the model's top level)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def log_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of log(value) against log(width); inf when a value is not finite."""
    if not all(math.isfinite(v) for v in values):
        return float("inf")
    xs = [math.log(w) for w in widths]
    ys = [math.log(max(v, 1e-30)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


@dataclass(frozen=True)
class LayerCheck:
    """One layer of a check: its change per width (or depth), the slope of that in log-log, and the verdict."""

    name: str  # module name (as `named_modules` gives it), or "logits" for the model's output
    role: str  # readout | hidden | input | vector | other | output | stream (over depth) | attention
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
        """A layer with weights of its own, or the attention logits (what q, k and the scale make): the names a
        one-line message gives before containers and activations."""
        return self.role in ("readout", "hidden", "input", "vector", "output", "attention")


@dataclass(frozen=True)
class CoordCheckReport:
    """A finished coordinate check of one recipe and parametrization: every layer, and whether the check passed."""

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
    # µP only, and stored checks from before these have none: plain readouts tied to an embedding (readout ->
    # embedding), and hidden weights whose init std does not shrink like 1/sqrt(fan_in) ("param: in words").
    tied_readouts: dict[str, str] = field(default_factory=dict)
    init_problems: list[str] = field(default_factory=list)

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
        return (not any(layer.bad for layer in self.layers) and not self.shape_problems and not self.plain_readouts
                and not self.init_problems)

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
        names += [p.split(":", 1)[0].rsplit(".", 1)[0] for p in self.init_problems]
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
        attention = [x for x in up if x.role == "attention"]
        slope = {x.name: x.slope for x in self.layers}
        for name in self.plain_readouts:
            measured = f" (slope {slope[name]:+.2f} here)" if name in slope else ""
            embedding = self.tied_readouts.get(name)
            if embedding is not None:
                out.append((f"the readout layer {name!r} is a plain nn.Linear sharing the weight of the embedding "
                            f"{embedding!r}, not a mup.MuSharedReadout",
                            f"without MuSharedReadout's 1/width its output grows with width{measured}, and mup's "
                            "set_base_shapes refuses such a layer, so every trial would fail; tie it with "
                            f"mup.MuSharedReadout({embedding}.weight), or untie it as a mup.MuReadout"))
                continue
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
        if self.init_problems:
            out.append((f"hidden weights' init does not shrink like 1/sqrt(fan_in) ({self.init_problems[0]}"
                        + (f" and {len(self.init_problems) - 1} more" if len(self.init_problems) > 1 else "") + ")",
                        "under µP a hidden weight starts at N(0, σ² · base_fan_in / fan_in): σ at the base width, "
                        "shrinking like 1/sqrt(fan_in) as nn.Linear's default init does; a fixed std (nanoGPT's "
                        "0.02) makes every layer's output grow like sqrt(width) as the model widens: "
                        + "; ".join(self.init_problems[:4])))
        structural = bool(self.shape_problems or self.init_problems)
        if hidden and not structural:
            also = (" (the attention logits grow with them: queries and keys are these layers' outputs)"
                    if attention else "")
            out.append((f"hidden weights ({_names(hidden)}) blow up: their learning rate is not divided by the "
                        "width multiplier",
                        "train them with mup's optimizer (MuAdam, MuAdamW, MuSGD) after set_base_shapes, make the "
                        "base and delta models differ in every width dimension, and let their init shrink like "
                        f"1/sqrt(fan_in){also}"))
        if attention and not hidden and not structural:
            out.append((f"the attention logits ({_names(attention)}) grow with width: the attention scale is "
                        "1/sqrt(head_dim); µP needs 1/head_dim",
                        "once training aligns q and k, q·kᵀ grows like head_dim, and with a head size that grows "
                        "with width a 1/sqrt(head_dim) scale (scaled_dot_product_attention's default, nanoGPT's) "
                        "lets the logits grow like sqrt(head_dim) (slope +0.5 with a fixed head count); pass "
                        "scale=attn_mult * sqrt(base_head_dim) / head_dim to scaled_dot_product_attention (µP's "
                        "1/head_dim, equal to 1/sqrt(head_dim) at the base width), or divide q·kᵀ by head_dim "
                        "instead of its square root"))
        if (readouts or logits) and not hidden and not self.plain_readouts:
            for r in readouts:
                out.append((f"the readout layer {r.name!r} ({r.module}) is not scaled by 1/width",
                            "it grows with width while the layers before it do not: a MuReadout whose forward is "
                            "overridden, or whose output is multiplied back up by the width"))
            if not readouts and not attention:
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
                        f"in {self.steps} steps at lr {self.lr:g}: try a smaller learning rate for the check"))
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
            out.append(("the loss became NaN or inf", f"in {self.steps} steps at lr {self.lr:g}: try a smaller learning rate for the check"))
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
        """One line for a sweep refused by the (width) gate: the failing layers, the first cause, what to run next
        (the API adds how to sweep anyway)."""
        names = ", ".join(self.culprits())
        diagnosis = self.diagnosis()
        cause = f": {diagnosis[0][0]}" if diagnosis else ""
        where = recipe_path or "RECIPE"
        return (f"coordinate check failed for {self.parametrization} at {names}{cause}; run `mutransfer "
                f"coord-check {where}` for the plot and the details")

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

