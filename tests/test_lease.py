"""One driver per sweep (the lease), sweeps created with their trials in one transaction, integers checked against
their columns: through the store API with two `Store` objects, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from mutransfer.storage import DriverLease, LeaseError, LeaseOwner, Store, StoreError, TrialRecord, lease
from mutransfer.storage.models import utcnow


def record(key: str, **changes: object) -> TrialRecord:
    fields: dict[str, object] = dict(key=key, group="mup/w16", parametrization="mup", width=16, depth=2,
                                     batch_size=32, seq_len=1, steps_planned=10, sample=0, repeat=0, seed=0,
                                     hparams={"lr": 0.01})
    fields.update(changes)
    return TrialRecord(**fields)  # type: ignore[arg-type]


def new_sweep(store: Store, name: str = "s", n: int = 3) -> int:
    return store.create_sweep(name, "text", "{}", "hash", n, "val_loss",
                              trials=[record(f"mup/w16/{i:03d}") for i in range(n)]).id


def age(store: Store, sweep_id: int, seconds: float) -> None:
    """Make the sweep's lease look `seconds` older (its holder stopped renewing that long ago)."""
    h = store.lease_holder(sweep_id)
    assert h is not None
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE sweep_leases SET heartbeat_at = :hb, expires_at = :ex WHERE sweep_id = :id"),
                     {"hb": h.heartbeat_at - timedelta(seconds=seconds),
                      "ex": h.expires_at - timedelta(seconds=seconds), "id": sweep_id})


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def stores(db_url: str):  # noqa: ANN201
    """Two stores on one database: two drivers."""
    a, b = Store.open(db_url), Store.open(db_url)
    yield a, b
    a.close()
    b.close()


def test_a_second_driver_is_refused_naming_the_holder_and_changes_nothing(stores: tuple[Store, Store]) -> None:
    a, b = stores
    sid = new_sweep(a)
    with DriverLease(a, sid) as held:
        a.mark_running(sid, "mup/w16/000")
        a.add_points(sid, "mup/w16/000", [{"step": 1, "val_loss": 2.0}])
        def state() -> tuple[object, ...]:
            h = b.lease_holder(sid)
            assert h is not None
            return b.trials_frame(sid).to_json(date_format="iso"), b.curves_frame(sid).to_json(date_format="iso"), h.token, h.heartbeat_at

        before = state()
        with pytest.raises(LeaseError) as err, DriverLease(b, sid):
            b.reset_unfinished(sid)  # never reached
        msg = str(err.value)
        assert "\n" not in msg
        assert f"host {socket.gethostname()}, pid {held.owner.pid}, last heartbeat 0s ago" in msg, msg
        assert "is being run by another driver" in msg
        assert state() == before
        assert not b.holds_lease(sid)
    assert a.lease_holder(sid) is None  # released
    with DriverLease(b, sid):  # now b may
        assert b.reset_unfinished(sid) == 1


def test_lease_is_released_on_errors_and_interrupts(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    sid = new_sweep(a)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), DriverLease(a, sid):
            raise exc
        assert a.lease_holder(sid) is None and not a.holds_lease(sid)


def test_a_stale_lease_is_taken_over_and_a_live_one_on_another_host_is_not(stores: tuple[Store, Store]) -> None:
    a, b = stores
    sid = new_sweep(a)
    gone = LeaseOwner("elsewhere", 4242, "t-gone")
    assert a.take_lease(sid, gone) is None
    age(a, sid, lease.LEASE_EXPIRY_S / 2)  # another host, heartbeat 30 s old: alive as far as anyone can tell
    with pytest.raises(LeaseError, match=r"host elsewhere, pid 4242, last heartbeat 3\ds ago"):
        DriverLease(b, sid).__enter__()
    age(a, sid, lease.LEASE_EXPIRY_S)  # past its expiry: that driver is gone
    with DriverLease(b, sid) as held:
        assert held.taken_over is not None and held.taken_over.host == "elsewhere"
        assert b.lease_holder(sid).token == held.owner.token  # type: ignore[union-attr]
    # The old holder, were it to come back, cannot renew it nor release somebody else's.
    assert a.renew_lease(sid, gone) is False


def test_a_dead_driver_of_this_host_is_taken_over_at_once(stores: tuple[Store, Store]) -> None:
    a, b = stores
    sid = new_sweep(a)
    a.take_lease(sid, LeaseOwner(socket.gethostname(), dead_pid(), "t-killed"))  # a SIGKILLed driver's lease
    with DriverLease(b, sid) as held:
        assert held.taken_over is not None and held.taken_over.token == "t-killed"


def test_a_driver_that_lost_its_lease_writes_nothing_more(stores: tuple[Store, Store]) -> None:
    a, b = stores
    sid = new_sweep(a)
    with DriverLease(a, sid):
        a.mark_running(sid, "mup/w16/000")
        age(a, sid, 2 * lease.LEASE_EXPIRY_S)  # a stalled for two minutes (a suspended laptop, a stuck NFS)
        with DriverLease(b, sid):
            assert b.reset_unfinished(sid) == 1
            for write in (lambda: a.add_points(sid, "mup/w16/000", [{"step": 1, "val_loss": 1.0}]),
                          lambda: a.finish_trial(sid, "mup/w16/000", "completed", metric=1.0),
                          lambda: a.mark_running(sid, "mup/w16/001"), lambda: a.reset_unfinished(sid)):
                with pytest.raises(LeaseError, match="this driver lost the lease of sweep 's': it was taken over by "
                                                     "another driver"):
                    write()
            assert set(b.trials_frame(sid)["status"]) == {"pending"} and b.curves_frame(sid).empty
        # a's release does not remove b's lease (b already released its own here).


def test_the_heartbeat_renews_the_lease(stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = stores
    sid = new_sweep(a)
    monkeypatch.setattr(lease, "LEASE_RENEW_S", 0.05)
    with DriverLease(a, sid):
        first = a.lease_holder(sid)
        assert first is not None
        end = time.time() + 10
        while a.lease_holder(sid).heartbeat_at == first.heartbeat_at and time.time() < end:  # type: ignore[union-attr]
            time.sleep(0.05)
        later = a.lease_holder(sid)
        assert later is not None and later.heartbeat_at > first.heartbeat_at
        assert later.expires_at > utcnow() + timedelta(seconds=lease.LEASE_EXPIRY_S / 2)


def test_creating_a_sweep_with_its_trials_and_lease_is_one_transaction(stores: tuple[Store, Store]) -> None:
    a, b = stores
    owner = LeaseOwner.here()
    info = a.create_sweep("s", "text", "{}", "h", 2, "val_loss", trials=[record("k0"), record("k1")], owner=owner)
    assert info.counts == {"pending": 2}
    assert a.trial_keys(info.id) == {"k0", "k1"}
    assert b.lease_holder(info.id).token == owner.token  # type: ignore[union-attr]
    # A second driver creating the same sweep at the same moment is refused; the first one's stays as it was.
    with pytest.raises(StoreError, match="already exists"):
        b.create_sweep("s", "text", "{}", "h", 2, "val_loss", trials=[record("k0")], owner=LeaseOwner.here())
    # An insert the database refuses (a role its check constraint rejects) leaves no sweep behind.
    with pytest.raises(StoreError, match="create sweep failed"):
        a.create_sweep("t", "text", "{}", "h", 1, "val_loss", trials=[record("k0", role="bogus")])
    assert a.get_sweep("t") is None


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"seed": 10**16 * 1000}, "seed 10000000000000000000 is out of range"),
    ({"seed": -(2**63) - 1}, "seed -9223372036854775809 is out of range"),
    ({"steps_planned": 10**30}, f"steps_planned {10**30} is out of range"),
    ({"width": 2**31}, "width 2147483648 is out of range"),
])
def test_integers_out_of_their_column_range_are_refused_before_anything_is_written(
        stores: tuple[Store, Store], changes: dict[str, int], fragment: str) -> None:
    a, _ = stores
    with pytest.raises(StoreError) as err:
        a.create_sweep("s", "text", "{}", "h", 1, "val_loss", trials=[record("k0", **changes)])
    assert fragment in str(err.value) and "cannot store trial 'k0'" in str(err.value)
    assert "\n" not in str(err.value)
    assert a.list_sweeps() == []


def test_integers_of_results_and_points_are_checked(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    sid = new_sweep(a)
    with pytest.raises(StoreError, match="n_params 9223372036854775808 is out of range"):
        a.finish_trial(sid, "mup/w16/000", "completed", metric=1.0, n_params=2**63)
    with pytest.raises(StoreError, match="step 2147483648 is out of range"):
        a.add_points(sid, "mup/w16/000", [{"step": 2**31, "val_loss": 1.0}])
    assert a.curves_frame(sid).empty and set(a.trials_frame(sid)["status"]) == {"pending"}


def test_an_empty_sweep_left_by_an_older_version_is_replaced(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    a.create_sweep("s", "old text", "{}", "old-hash", 3, "val_loss")  # its trials never stored
    with pytest.raises(StoreError, match="already exists"):
        a.create_sweep("s", "text", "{}", "hash", 1, "val_loss", trials=[record("k0")])
    new = a.create_sweep("s", "text", "{}", "hash", 1, "val_loss", trials=[record("k0")], replace_empty=True)
    assert new.recipe_hash == "hash" and a.trial_keys(new.id) == {"k0"}
    assert [s.recipe_hash for s in a.list_sweeps()] == ["hash"]  # the old row is gone (its id may be reused)
    # A sweep with trials is never replaced.
    with pytest.raises(StoreError, match="already exists"):
        a.create_sweep("s", "text", "{}", "hash", 1, "val_loss", trials=[record("k1")], replace_empty=True)
    assert a.trial_keys(new.id) == {"k0"}


@pytest.mark.parametrize(("changes", "field"), [
    ({"search__seed": 10**16}, "search.seed: Input should be less than or equal to 1000000000000000"),
    ({"train__steps": 2**31}, "train.steps: Input should be less than 2147483648"),
    ({"train__steps": 10**30}, "train.steps: Input should be less than 2147483648"),
])
def test_recipe_integers_the_store_cannot_keep_are_refused_naming_the_field(
        tmp_path: Path, changes: dict[str, int], field: str) -> None:
    from mutransfer.recipe import RecipeError, load_recipe
    from mutransfer.testing.recipes import tiny_sweep_recipe

    path = tmp_path / "r.yaml"
    path.write_text(tiny_sweep_recipe(**changes))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert field in str(err.value) and "\n" not in str(err.value)
