"""The states a sweep and a trial go through, and a trial's role.

`str` enums: a member equals its stored string ("completed" == TrialStatus.COMPLETED), so rows read back as plain
strings compare with the members, and the database holds the same values it always did. The migrations spell the
values out on their own (a revision keeps meaning what it meant when it was written).
"""

from __future__ import annotations

from enum import Enum


class _Value(str, Enum):
    # Python 3.11 formats a str-mixin member as "Class.NAME"; messages and f-strings want the stored value.
    def __str__(self) -> str:
        return str(self.value)


class SweepStatus(_Value):
    PLANNED = "planned"
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class TrialStatus(_Value):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    STOPPED = "stopped"  # stopped early by the sweep's scheduler (search.early_stop): its curve ends where it stopped


# A trial in one of these has run to its end: a resume does not run it again.
FINISHED_STATUSES: tuple[TrialStatus, ...] = (TrialStatus.COMPLETED, TrialStatus.DIVERGED, TrialStatus.FAILED,
                                              TrialStatus.STOPPED)


class TrialRole(_Value):
    SWEEP = "sweep"  # planned by the recipe, fitted
    VERIFY = "verify"  # a check of the transferred value at a larger size, not part of the fit


__all__ = ["FINISHED_STATUSES", "SweepStatus", "TrialRole", "TrialStatus"]
