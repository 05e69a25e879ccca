"""What the store takes and returns: frozen values, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mutransfer.storage.status import TrialRole

if TYPE_CHECKING:
    from mutransfer.plan import TrialSpec


@dataclass(frozen=True)
class SweepInfo:
    id: int
    name: str
    status: str
    recipe_hash: str
    recipe_text: str
    recipe_json: str
    total_trials: int
    metric_name: str
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)  # trial status -> number of trials
    best_metric: float | None = None  # smallest metric of a completed trial
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TrialRecord:
    """A planned trial, as `add_trials` stores it."""

    key: str
    group: str
    parametrization: str
    width: int
    depth: int
    batch_size: int
    seq_len: int
    steps_planned: int
    sample: int
    repeat: int
    seed: int
    hparams: dict[str, Any] = field(default_factory=dict)
    role: str = TrialRole.SWEEP.value  # or "verify": a check at a larger size, not part of the fit
    round: int = 0  # 0: the recipe's draws; 1..: a refine round (search.refine)

    @classmethod
    def from_spec(cls, spec: TrialSpec, role: str = TrialRole.SWEEP.value) -> TrialRecord:
        s = spec.scale
        return cls(
            key=spec.key, group=spec.group, parametrization=spec.parametrization, width=s.width, depth=s.depth,
            batch_size=s.batch_size, seq_len=s.seq_len, steps_planned=spec.steps, sample=spec.sample,
            repeat=spec.repeat, seed=spec.seed, hparams=dict(spec.hparams), role=role, round=spec.round,
        )


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial's outcome with its last curve points, as `record_trials` takes it (`finish_trial`'s
    arguments, for several trials in one transaction)."""

    key: str
    status: str
    metric: float | None = None
    best_metric: float | None = None
    steps: int | None = None
    wall_time: float | None = None
    flops: float | None = None
    n_params: int | None = None
    error: str | None = None
    node: str | None = None
    points: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class CheckRecord:
    """A check to store with a sweep (e.g. the coordinate check that gated it), as `save_check` takes it."""

    kind: str  # coord | coord_depth | verify
    parametrization: str
    passed: bool
    summary: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckInfo:
    """A stored check: `kind` "coord" (the coordinate check over width), "coord_depth" (over depth) or "verify" (a
    transfer checked at a larger size)."""

    id: int
    sweep_id: int | None
    kind: str
    parametrization: str
    passed: bool
    summary: str
    result: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ExportInfo:
    id: int
    sweep_id: int
    fit_id: int | None
    format: str
    content: str
    created_at: datetime


__all__ = ["CheckInfo", "CheckRecord", "ExportInfo", "SweepInfo", "TrialRecord"]
