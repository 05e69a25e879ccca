"""The recipe's sections other than the search space: `Model`, `Data`, `Train`, the proxy sizes (`Scale`,
`Scales`), `Target`, `Resources`, and the names and defaults they rely on."""

from __future__ import annotations

import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mutransfer.recipe.validation import (
    SIZE_CHECKS,
    BatchSize,
    Depth,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SeqLen,
    Strict,
    VocabSize,
    Width,
    at,
)

AXES = ("width", "depth", "batch_size", "seq_len")


@dataclass(frozen=True)
class FamilyTraits:
    """What the rest of mutransfer needs to know about a built-in family, said once here rather than by testing
    its name in each place. Every built-in is built and initialised by mutransfer (mutransfer.parametrization);
    whether its trials can also be stacked is a trait of its own (`stacks`)."""

    decoder: bool  # a causal LM on chars/tokens: heads, an FFN, attention FLOPs, the launcher formats (else the mlp)
    stacks: bool  # mutransfer.batched has its forward in stacked form: train.batch_trials > 1 batches its trials
    requires: str | None = None  # a module outside the core dependencies that building it imports
    extra: str | None = None  # the pip extra that installs `requires`


BUILTINS: dict[str, FamilyTraits] = {
    "mlp": FamilyTraits(decoder=False, stacks=True),
    "gpt": FamilyTraits(decoder=True, stacks=True),
    # transformers' own LlamaForCausalLM in µP (mutransfer.hf_llama); batched.py has no stacked Llama forward.
    "hf-llama": FamilyTraits(decoder=True, stacks=False, requires="transformers", extra="hf"),
}
BUILTIN_FAMILIES = tuple(BUILTINS)


def is_decoder(family: object) -> bool:
    """Whether `family` is a built-in causal LM (gpt, hf-llama)."""
    traits = BUILTINS.get(family) if isinstance(family, str) else None
    return traits is not None and traits.decoder


# Hyperparameters that the built-in trainer knows how to apply. A user's own builder may add names of its own:
# they reach the builder in `BuildConfig.hparams`.
TRAIN_HPARAMS = ("lr", "weight_decay", "momentum", "adam_eps")
MODEL_HPARAMS = ("init_std", "output_mult", "embed_mult", "attn_mult")
KNOWN_HPARAMS = TRAIN_HPARAMS + MODEL_HPARAMS
# model.depth_scaling -> alpha: residual branches times (depth / base_depth) ** -alpha.
DEPTH_ALPHA = {"none": 0.0, "depth-mup": 0.5, "completep": 1.0}


def default_init_std(family: object, base_width: int) -> float | None:
    """The init std of hidden matrices at the base width when the recipe does not sweep it. GPT: 0.02, GPT-2's
    and nanoGPT's (Radford et al. 2019); MLP: base_width ** -0.5, LeCun's 1/sqrt(fan_in). Both are starting points:
    the shipped GPT recipes sweep init_std with the LR, as Tensor Programs V tunes it. None for a user's builder,
    which keeps its own init."""
    if is_decoder(family):
        return 0.02
    if family == "mlp":
        return base_width**-0.5
    return None


class Model(Strict):
    # `mlp`, `gpt`, `hf-llama` (transformers' LlamaForCausalLM, see mutransfer.hf_llama), or a user's builder as `package.module:function` (see mutransfer.parametrization.BuildConfig).
    family: str = "mlp"
    # One parametrization, or both to compare them side by side in one sweep.
    parametrization: Literal["mup", "sp"] | list[Literal["mup", "sp"]] = "mup"
    # The width at which µP and SP coincide; mup's width multiplier is width / base_width.
    base_width: Width = 64
    # Fixed sizes. GPT and hf-llama: give head_dim (heads grow with width) or n_heads (head size grows with width).
    head_dim: PositiveInt | None = None
    n_heads: PositiveInt | None = None
    ffn_ratio: PositiveFloat = 4.0
    vocab_size: VocabSize | None = None  # tokens data: taken from meta.pkl or the data when not given
    # Base values of the µP multipliers; a search space entry of the same name overrides them per trial.
    init_std: PositiveFloat | None = None  # std of hidden weights at base width; None: the family's default
    output_mult: PositiveFloat = 1.0
    embed_mult: PositiveFloat = 1.0
    attn_mult: PositiveFloat = 1.0
    # Depth: residual branches multiplied by (depth / base_depth) ** -alpha, block parameters' Adam LR by
    # (depth / base_depth) ** (alpha - 1). depth-mup: alpha 1/2 (Tensor Programs VI, Yang et al. 2023); completep:
    # alpha 1 (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep transformers", Table 1).
    # none: the residual stream is a plain sum and the optimal LR drifts with depth. See mutransfer.parametrization.
    depth_scaling: Literal["none", "depth-mup", "completep"] = "none"
    base_depth: Depth | None = None  # the depth at which the depth multipliers are 1 (needed by depth_scaling)
    # mlp only: hidden layers as residual blocks h + m·W·relu(h) (what depth scaling acts on) instead of a plain stack.
    residual: bool = False
    # Adam's epsilon: `width` divides it by width_mult (and, with depth scaling, by (depth / base_depth) ** alpha
    # too, CompleteP's rule) so that it stays below the shrinking µP gradients of a wide (and deep) target.
    eps_scaling: Literal["none", "width"] = "none"
    # The readout shares the token embedding's weight: mup.MuSharedReadout under µP; gpt, hf-llama and sequence
    # builders only.
    tie_embeddings: bool = False
    # Free-form options handed to a user's builder; hf-llama's: kv_heads, rope_theta, rms_norm_eps.
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def parametrizations(self) -> tuple[str, ...]:
        p = self.parametrization
        return tuple(dict.fromkeys(p)) if isinstance(p, list) else (p,)

    @property
    def is_builtin(self) -> bool:
        return self.family in BUILTIN_FAMILIES

    @property
    def traits(self) -> FamilyTraits | None:
        """The built-in family's traits; None for a user's builder."""
        return BUILTINS.get(self.family)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if v in BUILTIN_FAMILIES:
            return v
        mod, sep, fn = v.partition(":")
        if not sep or not mod or not fn.isidentifier() or not all(p.isidentifier() for p in mod.split(".")):
            raise ValueError(
                f"unknown family {v!r}: use one of {', '.join(BUILTIN_FAMILIES)} or a builder 'package.module:function'"
            )
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Free-form, so pydantic's finite-float rule does not reach here: an inf would be stored as JSON null.
        stack: list[tuple[str, Any]] = [(f"model.options.{k}", x) for k, x in v.items()]
        while stack:
            path, x = stack.pop()
            if isinstance(x, float) and not math.isfinite(x):
                raise at(path, f"{x} is not a finite number")
            if isinstance(x, dict):
                stack.extend((f"{path}.{k}", y) for k, y in x.items())
            elif isinstance(x, (list, tuple)):
                stack.extend((f"{path}.{i}", y) for i, y in enumerate(x))
        return v

    @field_validator("parametrization")
    @classmethod
    def _param(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one of mup, sp")
        return v

    @model_validator(mode="after")
    def _heads(self) -> Model:
        if self.head_dim is not None and self.n_heads is not None:
            raise ValueError("give head_dim or n_heads, not both")
        if self.depth_scaling != "none" and self.base_depth is None:
            raise at(
                "model.base_depth",
                f"depth_scaling {self.depth_scaling!r} needs base_depth (the depth whose multipliers are 1, "
                "usually scales.base.depth)",
            )
        if self.depth_scaling != "none" and self.family == "mlp" and not self.residual:
            raise at("model.residual", "depth scaling acts on residual branches: the mlp needs residual: true")
        if self.residual and is_decoder(self.family):
            raise at("model.residual", f"the {self.family} is residual already; residual applies to the mlp")
        if self.tie_embeddings and self.family == "mlp":
            raise at("model.tie_embeddings", "the mlp has no token embedding to share with its readout: use false")
        return self

    @property
    def depth_alpha(self) -> float:
        """alpha of the residual multiplier (depth / base_depth) ** -alpha: 0 without depth scaling."""
        return DEPTH_ALPHA[self.depth_scaling]


class Data(Strict):
    # digits: scikit-learn's 8x8 digits (MLP). chars: a text file or folder, character level (GPT); the default
    # path is this Python's standard library source. tokens: nanoGPT's uint16 memmaps (a folder with train.bin and
    # val.bin, or one .bin file split by val_fraction).
    kind: Literal["digits", "chars", "tokens"] = "digits"
    path: str | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_chars: PositiveInt = 2_000_000  # chars: read at most this much text (files in sorted order)
    glob: str = "*.py"  # chars: files to read from a folder

    def resolved_path(self) -> Path | None:
        """The data path made absolute: Ray Tune runs trials in another working directory."""
        if self.kind == "digits":
            return None
        if self.path is None:
            if self.kind == "chars":
                return Path(sysconfig.get_paths()["stdlib"]).resolve()
            return None
        return Path(os.path.expanduser(self.path)).resolve()


class Train(Strict):
    steps: Annotated[int, Field(gt=0, lt=2**31)] | None = None  # or tokens (examples for the MLP); a 32-bit column
    tokens: PositiveInt | None = None
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3  # used when the search space has no `lr`
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # sgd only
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    adam_eps: PositiveFloat = 1e-8
    schedule: Literal["constant", "cosine", "linear", "warmup"] = "constant"
    warmup_steps: NonNegativeInt = 0
    min_lr_frac: Annotated[float, Field(ge=0, le=1)] = 0.1  # cosine/linear decay to this fraction of the LR
    grad_clip: PositiveFloat | None = 1.0
    eval_interval: PositiveInt = 50
    eval_batches: PositiveInt = 4
    metric: Literal["val_loss", "train_loss"] = "val_loss"
    # The trial's metric is the mean of its last this-many evaluations of `metric` (1: the last one). Averaging a
    # few evaluations near the end costs nothing and shrinks the evaluation noise the fit has to see through.
    metric_window: PositiveInt = 1
    # Stop a trial as diverged when its loss is NaN/inf or exceeds this multiple of its first loss.
    diverge_factor: Annotated[float, Field(gt=1)] | None = 4.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Train up to this many trials of the same shape at once, as one stacked model (mutransfer.batched); built-in
    # families only. How trials run, not what they compute: left out of the recipe's hash.
    batch_trials: PositiveInt = 1

    @model_validator(mode="after")
    def _budget(self) -> Train:
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps, tokens")
        if self.schedule == "warmup" and self.warmup_steps == 0:
            raise ValueError("schedule 'warmup' needs warmup_steps > 0")
        return self


class Scale(Strict):
    width: Width
    depth: Depth = 2
    batch_size: BatchSize = 32
    seq_len: SeqLen = 1  # tokens per example (gpt); 1 for the mlp
    # Training length as a scale axis (the token horizon): optimizer steps of this proxy; None: train.steps/tokens.
    steps: PositiveInt | None = None

    def tag(self) -> str:
        # The steps suffix only when set: keys of sweeps that do not vary steps stay what they were.
        tail = f"-t{self.steps}" if self.steps is not None else ""
        return f"w{self.width}-d{self.depth}-b{self.batch_size}-s{self.seq_len}{tail}"


class Scales(Strict):
    base: Scale
    vary: dict[Literal["width", "depth", "batch_size", "seq_len", "steps"], list[PositiveInt]] = Field(
        default_factory=dict
    )
    mode: Literal["one_at_a_time", "grid"] = "one_at_a_time"

    @field_validator("vary")
    @classmethod
    def _vary(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for axis, values in v.items():
            if not values:
                raise at(f"scales.vary.{axis}", "give at least one value")
            if len(set(values)) != len(values):
                raise at(f"scales.vary.{axis}", f"repeated values {values}")
            if axis in SIZE_CHECKS:
                try:
                    SIZE_CHECKS[axis](max(values))
                except ValueError as e:
                    raise at(f"scales.vary.{axis}", str(e)) from e
        return {axis: sorted(values) for axis, values in v.items()}

    def points(self) -> list[Scale]:
        """The proxy sizes to sweep, base first, each once."""
        base = self.base
        pts: list[Scale] = [base]
        if self.mode == "grid" and self.vary:
            import itertools

            axes = list(self.vary)
            for combo in itertools.product(*(self.vary[a] for a in axes)):
                pts.append(base.model_copy(update=dict(zip(axes, combo, strict=True))))
        else:
            for axis, values in self.vary.items():
                pts.extend(base.model_copy(update={axis: val}) for val in values)
        return list(dict.fromkeys(pts))


class Target(Strict):
    width: Width
    depth: Depth
    batch_size: BatchSize
    seq_len: SeqLen = 1
    tokens: PositiveInt | None = None  # training tokens of the target run (examples for an MLP)


class Resources(Strict):
    cpus: Annotated[float, Field(gt=0)] = 1.0
    gpus: Annotated[float, Field(ge=0)] = 0.0
    custom: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    max_concurrent: PositiveInt | None = None  # default: as many trials as the cluster's resources fit
