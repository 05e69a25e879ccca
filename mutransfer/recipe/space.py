"""The search space: its distributions (`LogUniform`, `Uniform`, `Choice`) and the `Search` section."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from mutransfer.recipe.validation import PositiveFloat, PositiveInt, Strict


class LogUniform(Strict):
    loguniform: tuple[PositiveFloat, PositiveFloat]

    @field_validator("loguniform")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v


class Uniform(Strict):
    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v


class Choice(Strict):
    choice: list[float | int | str | bool]

    @field_validator("choice")
    @classmethod
    def _nonempty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("choice needs at least one value")
        return v


Dist = LogUniform | Uniform | Choice


class Search(Strict):
    method: Literal["random", "optuna"] = "random"
    samples: PositiveInt = 8  # configurations per scale point (and parametrization)
    repeats: PositiveInt = 1  # seeds per configuration
    seed: Annotated[int, Field(ge=-(10**15), le=10**15)] = 0  # a trial's seed, seed * 1000 + repeat, is 64-bit
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
