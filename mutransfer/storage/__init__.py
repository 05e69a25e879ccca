"""Storage: every sweep, trial, learning curve, fit and export, in SQLite or PostgreSQL (like optuna's storages).

Open a `Store` with `Store.open(url)`; it takes and returns the frozen values of `records` and pandas DataFrames,
never ORM rows, and every failure is a `StoreError` whose one-line message masks the URL's password.

| module | job |
|---|---|
| `store` | `Store`: transactions (with retries) and every read and write |
| `records` | the frozen values the store takes and returns |
| `frames` | a sweep's trials and curves as DataFrames |
| `status` | `SweepStatus`, `TrialStatus` (and `FINISHED_STATUSES`), `TrialRole` |
| `models` | the tables (ORM) and how values are stored in them |
| `schema` | the schema's revision: Alembic over `migrations/`, shipped as package data |
| `engine` | the engine, configured for SQLite and PostgreSQL |
| `urls` | the default URL, normalizing URLs, masking passwords in messages |
| `lease` | `DriverLease`: the one driver that runs a sweep now (owner, heartbeat, expiry) |
| `outputs` | fits, exports and checks: the part of `Store` that keeps what was made from the trials |
| `errors` | `StoreError`, `LeaseError` |
"""

from mutransfer.storage.engine import make_engine
from mutransfer.storage.errors import LeaseError, StoreError
from mutransfer.storage.lease import LEASE_EXPIRY_S, DriverLease, LeaseHolder, LeaseOwner
from mutransfer.storage.records import (
    CheckInfo,
    CheckRecord,
    ExportInfo,
    SweepInfo,
    TrialOutcome,
    TrialRecord,
)
from mutransfer.storage.schema import current_revision, downgrade, head_revision, upgrade
from mutransfer.storage.status import FINISHED_STATUSES, SweepStatus, TrialRole, TrialStatus
from mutransfer.storage.store import Store
from mutransfer.storage.urls import default_url, mask_url, normalize_url

__all__ = [
    "FINISHED_STATUSES", "LEASE_EXPIRY_S", "CheckInfo", "CheckRecord", "DriverLease", "ExportInfo", "LeaseError",
    "LeaseHolder", "LeaseOwner", "Store", "StoreError", "SweepInfo", "SweepStatus", "TrialOutcome", "TrialRecord",
    "TrialRole", "TrialStatus", "current_revision", "default_url", "downgrade", "head_revision",
    "make_engine", "mask_url", "normalize_url", "upgrade",
]
