"""The driver lease: one driver at a time runs a sweep's trials.

A driver (`mutransfer sweep`, `mutransfer verify`) takes the sweep's lease before it touches its trials, renews it
every LEASE_RENEW_S while it runs (`DriverLease`, a daemon thread) and releases it when it stops, also on errors
and interrupts. Another driver on the same sweep is refused with a `LeaseError` naming the holder (host, pid) and
how old its heartbeat is, having changed nothing. A stale lease is taken over: its heartbeat is past its expiry
(the driver died without releasing it), or its holder was a process of this host that no longer exists (a
SIGKILLed driver resumed at once). Only then are the dead driver's running trials reset (`run_trials`).

Taking is a compare-and-swap in one transaction (read the row, then one conditional INSERT or UPDATE that only
succeeds when the row is still what was read), the same SQL on SQLite and PostgreSQL. Every write of the holder's
trials checks in its own transaction that the lease is still its own (`Store.fence`): a driver that stalled past
its expiry and was taken over writes nothing more (on PostgreSQL under a share lock of the lease row, so a
takeover waits for a write in flight to commit before it resets the trials).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mutransfer.storage.errors import LeaseError, StoreError
from mutransfer.storage.models import Sweep, SweepLease, utcnow

if TYPE_CHECKING:
    from mutransfer.storage.store import Store

log = logging.getLogger(__name__)

# How long a lease outlives its last heartbeat. A renewal can wait up to SQLITE_BUSY_TIMEOUT_MS (30 s) for the
# write lock of a busy database before it fails and is tried again; twice that means a live driver loses its lease
# only when it could not write at all for a minute, and a driver that died on another host (a Slurm requeue, a
# lost node) is taken over a minute after it stopped. A driver that died on this host is taken over at once.
LEASE_EXPIRY_S = 60.0
# How often the holder renews: a dozen renewals per expiry, so a few slow ones cost nothing.
LEASE_RENEW_S = 5.0


@dataclass(frozen=True)
class LeaseOwner:
    """A driver process: its host, its pid, and a token of its own (pids are reused, tokens are not)."""

    host: str
    pid: int
    token: str

    @classmethod
    def here(cls) -> LeaseOwner:
        return cls(socket.gethostname()[:255], os.getpid(), uuid.uuid4().hex)


@dataclass(frozen=True)
class LeaseHolder:
    """A lease as stored, and how old its heartbeat was when it was read."""

    host: str
    pid: int
    token: str
    heartbeat_at: datetime
    expires_at: datetime
    age_s: float

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, last heartbeat {self.age_s:.0f}s ago"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def stale(holder: LeaseHolder, now: datetime) -> bool:
    """Whether `holder`'s driver is gone: its heartbeat past its expiry, or its process gone from this host.
    (Hosts are told apart by name: two containers that share a host name and not a pid namespace wait for the
    expiry instead, as a pid seen alive is never taken over.)"""
    if holder.expires_at <= now:
        return True
    return holder.host == socket.gethostname()[:255] and not _alive(holder.pid)


def db_now(s: Session) -> datetime:
    """Now, by the database's clock on PostgreSQL (drivers on several hosts share it), else this host's."""
    if s.get_bind().dialect.name == "postgresql":
        value = s.scalar(select(func.clock_timestamp()))
        if isinstance(value, datetime):
            return value
    return utcnow()


def _holder(s: Session, sweep_id: int, now: datetime, *, lock: bool) -> LeaseHolder | None:
    q = select(SweepLease).where(SweepLease.sweep_id == sweep_id)
    row = s.scalars(q.with_for_update() if lock else q).one_or_none()
    if row is None:
        return None
    return LeaseHolder(row.host, row.pid, row.token, row.heartbeat_at, row.expires_at,
                       max(0.0, (now - row.heartbeat_at).total_seconds()))


def holder(s: Session, sweep_id: int) -> LeaseHolder | None:
    """The sweep's lease as it is now; None when no driver holds it."""
    return _holder(s, sweep_id, db_now(s), lock=False)


def _name(s: Session, sweep_id: int) -> str:
    name = s.scalar(select(Sweep.name).where(Sweep.id == sweep_id))
    if name is None:
        raise StoreError(f"no sweep with id {sweep_id}")
    return str(name)


def held_message(name: str, h: LeaseHolder) -> str:
    return (f"sweep {name!r} is being run by another driver ({h.describe()}): wait for it to finish or stop it; "
            f"its lease is taken over once its heartbeat is {LEASE_EXPIRY_S:.0f}s old")


def _insert_ignoring_conflict(s: Session) -> Any:
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(SweepLease).on_conflict_do_nothing(index_elements=["sweep_id"])


def take(s: Session, sweep_id: int, owner: LeaseOwner) -> LeaseHolder | None:
    """Take the sweep's lease for `owner` in this transaction; returns the stale holder taken over, if any.
    Raises LeaseError when a live driver holds it."""
    now = db_now(s)
    values = {"token": owner.token, "host": owner.host, "pid": owner.pid, "taken_at": now, "heartbeat_at": now,
              "expires_at": now + timedelta(seconds=LEASE_EXPIRY_S)}
    h = _holder(s, sweep_id, now, lock=True)
    if h is None:
        if s.execute(_insert_ignoring_conflict(s).values(sweep_id=sweep_id, **values)).rowcount == 1:  # type: ignore[attr-defined]
            return None
        h = _holder(s, sweep_id, now, lock=True)  # another driver inserted it first
        if h is None:
            raise LeaseError(f"the lease of sweep {_name(s, sweep_id)!r} changed hands while taking it: try again")
    if h.token == owner.token:
        values.pop("taken_at")
        s.execute(update(SweepLease).where(SweepLease.sweep_id == sweep_id).values(**values))
        return None
    if not stale(h, now):
        raise LeaseError(held_message(_name(s, sweep_id), h))
    res = s.execute(update(SweepLease).where(SweepLease.sweep_id == sweep_id, SweepLease.token == h.token)
                    .values(**values))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        now_held = _holder(s, sweep_id, now, lock=False)
        raise LeaseError(held_message(_name(s, sweep_id), now_held or h))
    return h


def renew(s: Session, sweep_id: int, owner: LeaseOwner) -> bool:
    """Push the lease's expiry out; False when `owner` no longer holds it (taken over while it could not renew)."""
    now = db_now(s)
    res = s.execute(update(SweepLease).where(SweepLease.sweep_id == sweep_id, SweepLease.token == owner.token)
                    .values(heartbeat_at=now, expires_at=now + timedelta(seconds=LEASE_EXPIRY_S)))
    return res.rowcount == 1  # type: ignore[attr-defined]


def release(s: Session, sweep_id: int, owner: LeaseOwner) -> None:
    """Give the lease up (nothing when `owner` no longer holds it)."""
    s.execute(delete(SweepLease).where(SweepLease.sweep_id == sweep_id, SweepLease.token == owner.token))


def check_held(s: Session, sweep_id: int, token: str) -> None:
    """Refuse this transaction's writes to the sweep's trials unless the lease `token` still holds it."""
    q = select(SweepLease).where(SweepLease.sweep_id == sweep_id).with_for_update(read=True)
    row = s.scalars(q).one_or_none()
    if row is None or row.token != token:
        now = db_now(s)
        who = (f" by another driver (host {row.host}, pid {row.pid}, heartbeat "
               f"{max(0.0, (now - row.heartbeat_at).total_seconds()):.0f}s ago)" if row is not None else "")
        raise LeaseError(f"this driver lost the lease of sweep {_name(s, sweep_id)!r}: it was taken over{who} "
                         f"while this one could not renew it for {LEASE_EXPIRY_S:.0f}s; this driver stops writing "
                         "(the other one runs the trials)")


class DriverLease:
    """Holds a sweep's lease while the block runs: takes it (refusing when a live driver holds it), fences the
    store's writes to its trials, renews it in a daemon thread, and releases it when the block ends, however.
    `owner`: this driver, when it took the lease already (with the sweep it created)."""

    def __init__(self, store: Store, sweep_id: int, owner: LeaseOwner | None = None) -> None:
        self.store, self.sweep_id = store, sweep_id
        self.owner = owner or LeaseOwner.here()
        self.taken_over: LeaseHolder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DriverLease:
        self.taken_over = self.store.take_lease(self.sweep_id, self.owner)
        if self.taken_over is not None:
            log.warning("sweep %s: took over the lease of a driver that is gone (%s)", self.sweep_id,
                        self.taken_over.describe())
        self.store.fence(self.sweep_id, self.owner.token)
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.sweep_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * LEASE_RENEW_S)
        self.store.fence(self.sweep_id, None)
        try:
            self.store.release_lease(self.sweep_id, self.owner)
        except StoreError as e:  # the error being raised, if any, matters more; the lease expires on its own
            log.warning("could not release the lease of sweep %s (it expires in %.0fs): %s", self.sweep_id,
                        LEASE_EXPIRY_S, e)

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                if not self.store.renew_lease(self.sweep_id, self.owner):
                    # The fence refuses this driver's next write to the trials, which stops the run.
                    log.error("sweep %s: this driver lost its lease to another one", self.sweep_id)
                    return
            except StoreError as e:  # a busy or briefly unreachable database: the next beat tries again
                log.warning("could not renew the lease of sweep %s: %s", self.sweep_id, e)


__all__ = [
    "LEASE_EXPIRY_S", "LEASE_RENEW_S", "DriverLease", "LeaseHolder", "LeaseOwner", "check_held", "db_now",
    "held_message", "holder", "release", "renew", "stale", "take",
]
