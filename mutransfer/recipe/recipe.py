"""`Recipe`: the whole recipe, its checks across sections, its hash (the sweep's identity) and its step counts."""

from __future__ import annotations

import hashlib
import json
import math

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mutransfer.gpt_shape import llama_options_problem, options_problem
from mutransfer.recipe.bounds import MAX_TRIALS
from mutransfer.recipe.sections import (
    KNOWN_HPARAMS,
    Data,
    Model,
    Resources,
    Scale,
    Scales,
    Target,
    Train,
    is_decoder,
)
from mutransfer.recipe.space import Search
from mutransfer.recipe.validation import Strict, at

# The validation context of a recipe read back from the store (mutransfer.recipe.loading.stored_recipe).
STORED = "stored"
# Model keys added after recipes were first stored: left out of the hash while at their default, so a recipe that
# does not use them keeps the hash (and the resumable sweep) it had.
_NEW_MODEL_DEFAULTS = {"depth_scaling": "none", "base_depth": None, "residual": False, "eps_scaling": "none",
                       "tie_embeddings": False}


class Recipe(Strict):
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
    def _consistent(self, info: ValidationInfo) -> Recipe:
        # A recipe read back from the store (context STORED) ran already: the checks added since that are about
        # starting a sweep (its size, its warmup) do not refuse it, or a sweep of an earlier version would not read.
        new = not (info.context or {}).get(STORED)
        if new:
            self._bounded()  # before scales.points() enumerates a grid that may have no end
        m, d = self.model, self.data
        if m.family == "mlp" and d.kind != "digits":
            raise at("data.kind", f"the mlp family trains on digits, not {d.kind!r} (use family: gpt)")
        if is_decoder(m.family) and d.kind == "digits":
            raise at("data.kind", f"the {m.family} family needs a sequence corpus: chars or tokens")
        if m.tie_embeddings and d.kind == "digits":
            raise at("model.tie_embeddings", "digits data has no tokens to embed: tied embeddings need chars or tokens")
        if m.is_builtin:
            unknown = sorted(set(self.search.space) - set(KNOWN_HPARAMS))
            if unknown:
                raise at(
                    f"search.space.{unknown[0]}",
                    f"unknown hyperparameter for the built-in {m.family}: use {', '.join(KNOWN_HPARAMS)}",
                )
        if m.family == "mlp":
            for axis in ("seq_len",):
                if axis in self.scales.vary:
                    raise at(f"scales.vary.{axis}", "the mlp family has no sequence length to vary")
        if "steps" in self.scales.vary and self.scales.base.steps is None:
            raise at("scales.base.steps", "varying steps needs the base proxy's steps (the horizon the laws start from)")
        if m.depth_scaling != "none" and self.train.optimizer == "sgd":
            raise at("model.depth_scaling", "the depth rules implemented are Adam's (CompleteP Table 1): use adam or adamw")
        if m.eps_scaling != "none" and self.train.optimizer == "sgd":
            raise at("model.eps_scaling", "sgd has no epsilon to scale")
        if getattr(self.train, "batch_trials", 1) > 1 and (m.depth_scaling != "none" or m.residual):
            # mutransfer.batched writes the forward of the plain families; it has no residual multiplier yet.
            raise at("train.batch_trials", "batched trials do not support depth scaling or a residual mlp yet: use 1")
        if getattr(self.train, "batch_trials", 1) > 1 and m.traits is not None and not m.traits.stacks:
            raise at("train.batch_trials", f"the {m.family} family has no stacked forward (mutransfer.batched): use 1")
        self._search_options()
        if self.train.optimizer != "sgd" and "momentum" in self.search.space:
            raise at("search.space.momentum", f"momentum applies to sgd, not {self.train.optimizer}")
        widths = [p.width for p in self.scales.points()]
        depths = [p.depth for p in self.scales.points()]
        if self.target.width < max(widths):
            raise at("target.width", f"{self.target.width} is smaller than the widest proxy ({max(widths)})")
        if self.target.depth < max(depths):
            raise at("target.depth", f"{self.target.depth} is smaller than the deepest proxy ({max(depths)})")
        if is_decoder(m.family):
            hd, nh = m.head_dim, m.n_heads
            for p in [*self.scales.points(), self.target]:
                where = "scales" if p is not self.target else "target"
                if hd is not None and p.width % hd:
                    raise at(f"{where}.width", f"{p.width} is not a multiple of model.head_dim {hd}")
                if nh is not None and p.width % nh:
                    raise at(f"{where}.width", f"{p.width} is not a multiple of model.n_heads {nh}")
            if self.scales.base.seq_len < 2:
                raise at("scales.base.seq_len", f"the {m.family} family needs the proxy's sequence length (2 or more)")
            if hd is None and nh is None:
                raise at("model.head_dim", f"the {m.family} family needs head_dim (or n_heads)")
            if m.base_width % (hd or nh or 1):
                raise at("model.base_width", f"{m.base_width} is not a multiple of the head size/count")
            if m.family == "hf-llama":
                sizes = [("model.base_width", m.base_width), *(("scales.width", p.width) for p in self.scales.points()),
                         ("target.width", self.target.width)]
                problem = llama_options_problem(m.options, hd, nh, sizes)
                if problem is not None:
                    raise at(*problem)
        elif not m.is_builtin:  # a builder's declared GPT shape (mutransfer.gpt_shape)
            sizes = [("model.base_width", m.base_width), *(("scales.width", p.width) for p in self.scales.points()),
                     ("target.width", self.target.width)]
            problem = options_problem(m.options, sizes)
            if problem is not None:
                raise at(*problem)
        if new:
            self._warmup_fits()
        return self

    def _search_options(self) -> None:
        """search.early_stop and search.refine against the rest of the recipe."""
        es, rf = self.search.early_stop, self.search.refine
        if es is not None:
            k = getattr(self.train, "batch_trials", 1)
            if k > 1:
                raise at("search.early_stop", f"Ray Tune's schedulers stop a Ray trial as a whole, and train.batch_trials: "
                                              f"{k} trains {k} trials as one: set batch_trials: 1, or drop early_stop")
            # The other method's knob, set to anything but its default (a written-out recipe has every field).
            other = {"asha": "min_samples", "median": "reduction_factor"}[es.method]
            if getattr(es, other) != type(es).model_fields[other].default:
                owner = "median" if es.method == "asha" else "asha"
                raise at(f"search.early_stop.{other}", f"applies to method: {owner}, not {es.method}")
            shortest = min(self.steps_at(p) for p in self.scales.points())
            if es.grace_steps >= shortest:
                raise at("search.early_stop.grace_steps", f"{es.grace_steps} is not below the {shortest} steps of the "
                                                          f"shortest proxy run: no trial could ever be stopped")
        if self.search.sampler != "random" and self.search.method == "optuna":
            raise at("search.sampler", f"{self.search.sampler} spreads a random search's draws (optuna picks its own): "
                                       f"use method: random, or drop sampler")
        if rf is not None and self.search.method == "optuna":
            raise at("search.refine", "refine rounds follow a random search's first round (optuna already "
                                      "concentrates its draws): use method: random, or drop refine")

    def _bounded(self) -> None:
        """The sweep's size within MAX_TRIALS, counted without enumerating it."""
        vary = self.scales.vary
        if self.scales.mode == "grid" and vary:
            points = 1 + math.prod(len(v) for v in vary.values())  # an upper bound: the base may be in the grid
            if points > MAX_TRIALS:
                raise at("scales.vary", f"a grid of {points - 1} scale points is more than a sweep may have "
                                        f"({MAX_TRIALS} trials, mutransfer.recipe.bounds.MAX_TRIALS)")
        points = len(self.scales.points())
        s = self.search
        samples = s.samples + (s.refine.rounds * s.refine.samples if s.refine is not None else 0)
        trials = len(self.model.parametrizations) * points * samples * s.repeats
        if trials > MAX_TRIALS:
            raise at("search.samples", f"{samples} samples x {s.repeats} repeats x {points} scale points x "
                                       f"{len(self.model.parametrizations)} parametrizations is {trials} trials, more "
                                       f"than a sweep may have ({MAX_TRIALS}, mutransfer.recipe.bounds.MAX_TRIALS)")

    def _warmup_fits(self) -> None:
        """Warmup no longer than the shortest proxy's run: past it the trial would never reach its LR."""
        warm = self.train.warmup_steps
        if not warm:
            return
        points = self.scales.points()
        shortest = min(points, key=self.steps_at)
        steps = self.steps_at(shortest)
        if warm > steps:
            which = f" (proxy {shortest.tag()})" if len({self.steps_at(p) for p in points}) > 1 else ""
            raise at("train.warmup_steps", f"{warm} warmup steps is longer than the run: {steps} steps{which}")

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
        for key in ("early_stop", "refine"):  # recipes written before the keys existed keep their hash
            if data["search"].get(key, "absent") is None:
                del data["search"][key]
        if data["search"].get("sampler") == "random":
            del data["search"]["sampler"]
        if (data["search"].get("refine") or {}).get("allocate") == "even":
            del data["search"]["refine"]["allocate"]
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
