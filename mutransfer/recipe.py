"""The recipe: one YAML file that says what to sweep, on what, and what to transfer to.

Validated once, here, at the edge (pydantic, unknown keys refused). Everything downstream takes a `Recipe` or
parts of it. This module stays light: no torch, ray or sqlalchemy.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sysconfig
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mutransfer.errors import MutransferError
from mutransfer.gpt_shape import options_problem

AXES = ("width", "depth", "batch_size", "seq_len")
BUILTIN_FAMILIES = ("mlp", "gpt")
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
    if family == "gpt":
        return 0.02
    if family == "mlp":
        return base_width**-0.5
    return None


# Model keys added after recipes were first stored: left out of the hash while at their default, so a recipe that
# does not use them keeps the hash (and the resumable sweep) it had.
_NEW_MODEL_DEFAULTS = {"depth_scaling": "none", "base_depth": None, "residual": False, "eps_scaling": "none"}


class RecipeError(MutransferError, ValueError):
    """A recipe that cannot be used. The message is one line: `field.path: what is wrong`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Model(_Strict):
    # `mlp`, `gpt`, or a user's builder as `package.module:function` (see mutransfer.parametrization.BuildConfig).
    family: str = "mlp"
    # One parametrization, or both to compare them side by side in one sweep.
    parametrization: Literal["mup", "sp"] | list[Literal["mup", "sp"]] = "mup"
    # The width at which µP and SP coincide; mup's width multiplier is width / base_width.
    base_width: PositiveInt = 64
    # Fixed sizes. GPT: give head_dim (heads grow with width) or n_heads (head size grows with width).
    head_dim: PositiveInt | None = None
    n_heads: PositiveInt | None = None
    ffn_ratio: PositiveFloat = 4.0
    vocab_size: PositiveInt | None = None  # tokens data: taken from meta.pkl or the data when not given
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
    base_depth: PositiveInt | None = None  # the depth at which the depth multipliers are 1 (needed by depth_scaling)
    # mlp only: hidden layers as residual blocks h + m·W·relu(h) (what depth scaling acts on) instead of a plain stack.
    residual: bool = False
    # Adam's epsilon: `width` divides it by width_mult (and, with depth scaling, by (depth / base_depth) ** alpha
    # too, CompleteP's rule) so that it stays below the shrinking µP gradients of a wide (and deep) target.
    eps_scaling: Literal["none", "width"] = "none"
    # Free-form options handed to a user's builder.
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def parametrizations(self) -> tuple[str, ...]:
        p = self.parametrization
        return tuple(dict.fromkeys(p)) if isinstance(p, list) else (p,)

    @property
    def is_builtin(self) -> bool:
        return self.family in BUILTIN_FAMILIES

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
            raise _at(
                "model.base_depth",
                f"depth_scaling {self.depth_scaling!r} needs base_depth (the depth whose multipliers are 1, "
                "usually scales.base.depth)",
            )
        if self.depth_scaling != "none" and self.family == "mlp" and not self.residual:
            raise _at("model.residual", "depth scaling acts on residual branches: the mlp needs residual: true")
        if self.residual and self.family == "gpt":
            raise _at("model.residual", "the gpt is residual already; residual applies to the mlp")
        return self

    @property
    def depth_alpha(self) -> float:
        """alpha of the residual multiplier (depth / base_depth) ** -alpha: 0 without depth scaling."""
        return DEPTH_ALPHA[self.depth_scaling]


class Data(_Strict):
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


class Train(_Strict):
    steps: PositiveInt | None = None  # give steps, or tokens (examples for the MLP) per trial
    tokens: PositiveInt | None = None
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3  # used when the search space has no `lr`
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # sgd only
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    adam_eps: PositiveFloat = 1e-8
    schedule: Literal["constant", "cosine", "linear", "warmup"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
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


class LogUniform(_Strict):
    loguniform: tuple[PositiveFloat, PositiveFloat]

    @field_validator("loguniform")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v


class Uniform(_Strict):
    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v


class Choice(_Strict):
    choice: list[float | int | str | bool]

    @field_validator("choice")
    @classmethod
    def _nonempty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("choice needs at least one value")
        return v


Dist = LogUniform | Uniform | Choice


class Search(_Strict):
    method: Literal["random", "optuna"] = "random"
    samples: PositiveInt = 8  # configurations per scale point (and parametrization)
    repeats: PositiveInt = 1  # seeds per configuration
    seed: int = 0
    space: dict[str, Dist]

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Dist]) -> dict[str, Dist]:
        if not v:
            raise ValueError("empty search space: name at least one hyperparameter, e.g. lr: {loguniform: [1e-4, 1e-1]}")
        for name, dist in v.items():
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a valid hyperparameter name")
            if name in ("lr", "init_std", "output_mult", "embed_mult", "attn_mult", "adam_eps"):
                values = dist.choice if isinstance(dist, Choice) else getattr(dist, "uniform", None) or ()
                if any(not isinstance(x, (int, float)) or isinstance(x, bool) or x <= 0 for x in values):
                    raise ValueError(f"{name} must be positive")
        return v


class Scale(_Strict):
    width: PositiveInt
    depth: PositiveInt = 2
    batch_size: PositiveInt = 32
    seq_len: PositiveInt = 1  # tokens per example (gpt); 1 for the mlp
    # Training length as a scale axis (the token horizon): optimizer steps of this proxy; None: train.steps/tokens.
    steps: PositiveInt | None = None

    def tag(self) -> str:
        # The steps suffix only when set: keys of sweeps that do not vary steps stay what they were.
        tail = f"-t{self.steps}" if self.steps is not None else ""
        return f"w{self.width}-d{self.depth}-b{self.batch_size}-s{self.seq_len}{tail}"


class Scales(_Strict):
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
                raise _at(f"scales.vary.{axis}", "give at least one value")
            if len(set(values)) != len(values):
                raise _at(f"scales.vary.{axis}", f"repeated values {values}")
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


class Target(_Strict):
    width: PositiveInt
    depth: PositiveInt
    batch_size: PositiveInt
    seq_len: PositiveInt = 1
    tokens: PositiveInt | None = None  # training tokens of the target run (examples for an MLP)


class Resources(_Strict):
    cpus: Annotated[float, Field(gt=0)] = 1.0
    gpus: Annotated[float, Field(ge=0)] = 0.0
    custom: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    max_concurrent: PositiveInt | None = None  # default: as many trials as the cluster's resources fit


class Recipe(_Strict):
    name: str | None = None
    description: str = ""
    model: Model
    data: Data = Field(default_factory=Data)
    train: Train
    search: Search
    scales: Scales
    target: Target
    resources: Resources = Field(default_factory=Resources)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v or not all(c.isalnum() or c in "-_." for c in v)):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        m, d = self.model, self.data
        if m.family == "mlp" and d.kind != "digits":
            raise _at("data.kind", f"the mlp family trains on digits, not {d.kind!r} (use family: gpt)")
        if m.family == "gpt" and d.kind == "digits":
            raise _at("data.kind", "the gpt family needs a sequence corpus: chars or tokens")
        if m.is_builtin:
            unknown = sorted(set(self.search.space) - set(KNOWN_HPARAMS))
            if unknown:
                raise _at(
                    f"search.space.{unknown[0]}",
                    f"unknown hyperparameter for the built-in {m.family}: use {', '.join(KNOWN_HPARAMS)}",
                )
        if m.family == "mlp":
            for axis in ("seq_len",):
                if axis in self.scales.vary:
                    raise _at(f"scales.vary.{axis}", "the mlp family has no sequence length to vary")
        if "steps" in self.scales.vary and self.scales.base.steps is None:
            raise _at("scales.base.steps", "varying steps needs the base proxy's steps (the horizon the laws start from)")
        if m.depth_scaling != "none" and self.train.optimizer == "sgd":
            raise _at("model.depth_scaling", "the depth rules implemented are Adam's (CompleteP Table 1): use adam or adamw")
        if m.eps_scaling != "none" and self.train.optimizer == "sgd":
            raise _at("model.eps_scaling", "sgd has no epsilon to scale")
        if getattr(self.train, "batch_trials", 1) > 1 and (m.depth_scaling != "none" or m.residual):
            # mutransfer.batched writes the forward of the plain families; it has no residual multiplier yet.
            raise _at("train.batch_trials", "batched trials do not support depth scaling or a residual mlp yet: use 1")
        if self.train.optimizer != "sgd" and "momentum" in self.search.space:
            raise _at("search.space.momentum", f"momentum applies to sgd, not {self.train.optimizer}")
        widths = [p.width for p in self.scales.points()]
        depths = [p.depth for p in self.scales.points()]
        if self.target.width < max(widths):
            raise _at("target.width", f"{self.target.width} is smaller than the widest proxy ({max(widths)})")
        if self.target.depth < max(depths):
            raise _at("target.depth", f"{self.target.depth} is smaller than the deepest proxy ({max(depths)})")
        if m.family == "gpt":
            hd, nh = m.head_dim, m.n_heads
            for p in [*self.scales.points(), self.target]:
                where = "scales" if p is not self.target else "target"
                if hd is not None and p.width % hd:
                    raise _at(f"{where}.width", f"{p.width} is not a multiple of model.head_dim {hd}")
                if nh is not None and p.width % nh:
                    raise _at(f"{where}.width", f"{p.width} is not a multiple of model.n_heads {nh}")
            if self.scales.base.seq_len < 2:
                raise _at("scales.base.seq_len", "the gpt family needs the proxy's sequence length (2 or more)")
            if hd is None and nh is None:
                raise _at("model.head_dim", "the gpt family needs head_dim (or n_heads)")
            if m.base_width % (hd or nh or 1):
                raise _at("model.base_width", f"{m.base_width} is not a multiple of the head size/count")
        elif not m.is_builtin:  # a builder's declared GPT shape (mutransfer.gpt_shape)
            sizes = [("model.base_width", m.base_width), *(("scales.width", p.width) for p in self.scales.points()),
                     ("target.width", self.target.width)]
            problem = options_problem(m.options, sizes)
            if problem is not None:
                raise _at(*problem)
        return self

    def hash(self) -> str:
        """Identity of the sweep: the same validated recipe (whatever its comments or key order) gives the same hash."""
        # batch_trials changes how trials run, not their results: a sweep resumed with another value is the same
        # sweep (and recipes written before the key existed keep their hash).
        data = self.model_dump(mode="json", exclude={"train": {"batch_trials"}})
        for key, default in _NEW_MODEL_DEFAULTS.items():
            if data["model"].get(key) == default:
                del data["model"][key]
        if data["train"].get("metric_window") == 1:
            del data["train"]["metric_window"]  # recipes written before the key existed keep their hash
        scales = data["scales"]
        for point in (scales["base"], data["target"]):
            if point.get("steps", "absent") is None:
                del point["steps"]
        canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def target_steps(self) -> int | None:
        """Optimizer steps of the target run (its tokens over tokens per step); None without target.tokens."""
        t = self.target
        if t.tokens is None:
            return None
        per_step = t.batch_size * (t.seq_len if self.model.family != "mlp" else 1)
        return max(1, math.ceil(t.tokens / per_step))

    def steps_at(self, scale: Scale) -> int:
        """Optimizer steps of a trial at `scale`: fixed, or its token budget over tokens per step."""
        if getattr(scale, "steps", None) is not None:
            return scale.steps  # type: ignore[union-attr, return-value]
        if self.train.steps is not None:
            return self.train.steps
        per_step = scale.batch_size * (scale.seq_len if self.model.family != "mlp" else 1)
        return max(1, math.ceil(self.train.tokens / per_step))  # type: ignore[operator]


class _FieldError(ValueError):
    def __init__(self, path: str, msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg


def _at(path: str, msg: str) -> _FieldError:
    return _FieldError(path, msg)


def _format(err: ValidationError) -> str:
    e = err.errors()[0]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _FieldError):
        return f"{ctx_err.path}: {ctx_err.msg}"
    # Drop pydantic's union-branch names (e.g. 'LogUniform') so the path reads like the YAML.
    loc = [str(p) if isinstance(p, int) or str(p).isidentifier() else repr(p)  # a key like "\n" stays on one line
           for p in e["loc"] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
    path = ".".join(loc) or "recipe"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling; see the README's recipe format)"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif isinstance(e.get("input"), (str, int, float)) and e["type"] not in ("value_error", "assertion_error"):
        msg = f"{msg} (got {e['input']!r})"
    if len(err.errors()) > 1 and {x["loc"][:1] for x in err.errors()} != {e["loc"][:1]}:
        msg += f" (and {len(err.errors()) - 1} more problems)"
    return f"{path}: {msg}".replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the YAML held


def parse_recipe(text: str, *, default_name: str = "sweep", source: str = "recipe") -> Recipe:
    """Validate recipe YAML text. Raises RecipeError with a one-line `field.path: problem` message."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise RecipeError(f"{source}: not valid YAML{where}: {problem}") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with model, train, search, scales and target")
    raw.setdefault("name", default_name)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{source}: {_format(e)}") from e
    _check_environment(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file; the sweep's name defaults to the file's stem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: cannot read recipe: {getattr(e, 'strerror', None) or e}") from e
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in p.stem) or "sweep"
    return parse_recipe(text, default_name=name, source=str(p))


def _check_environment(recipe: Recipe, source: str) -> None:
    """Checks that need the file system or an import: data paths and a user's builder."""
    d = recipe.data
    path = d.resolved_path()
    if d.kind == "tokens" and path is None:
        raise RecipeError(f"{source}: data.path: tokens data needs a path (a .bin file or a folder with train.bin)")
    if path is not None:
        if not path.exists():
            raise RecipeError(f"{source}: data.path: {path} does not exist")
        if not os.access(path, os.R_OK):
            raise RecipeError(f"{source}: data.path: {path} is not readable")
        if d.kind == "tokens" and path.is_dir() and not (path / "train.bin").exists():
            raise RecipeError(f"{source}: data.path: {path} has no train.bin")
        if d.kind == "chars" and path.is_dir() and next(path.rglob(d.glob), None) is None:
            raise RecipeError(f"{source}: data.path: no files matching {d.glob!r} under {path}")
    if not recipe.model.is_builtin:
        try:
            resolve_entrypoint(recipe.model.family)
        except RecipeError as e:
            raise RecipeError(f"{source}: model.family: {e}") from e


def resolve_entrypoint(spec: str) -> Any:
    """Import a user's builder named `package.module:function`. Only called for recipes that name one."""
    mod_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # any failure while importing user code is a recipe problem, reported in one line
        raise RecipeError(f"cannot import {mod_name!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RecipeError(f"{mod_name!r} has no function {fn_name!r}")
    return fn
