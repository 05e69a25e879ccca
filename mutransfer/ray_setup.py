"""Ray set-up on the driver: join a cluster or start Ray here, check that a trial fits a node, count the slots.

Nothing here runs at import: the environment variables Tune and Ray read are set by `init_ray`, before Ray starts
and before any Tune run, so importing mutransfer leaves `os.environ` as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray

from mutransfer.errors import MutransferError, option
from mutransfer.recipe import Recipe

# Tune writes ~5 files per trial that the database already holds (design notes): keep them off. Ray reads
# RAY_DEDUP_LOGS when it is imported: set here it reaches the processes Ray starts, not this driver, which prints
# no worker logs anyway (log_to_driver=False).
TUNE_ENVIRONMENT = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_MAX_PENDING_TRIALS_PG": "8",
    # Tune's own SIGINT handler ends the run as if it had finished (and points to a restore folder nobody uses):
    # the sweep's (mutransfer.interruption) stops it instead, marks the sweep interrupted and exits 130.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}
# The scratch folders of sweeps (scratch_dir): this prefix, and a file in each naming the process that owns it.
SCRATCH_PREFIX = "mutransfer-ray-"
SCRATCH_OWNER = "owner"

# Whether init_ray connected this process to Ray (started it here, or joined a cluster), not whoever called
# ray.init before: stop_ray ends only what init_ray began.
_initialized_here = False


class SweepError(MutransferError, RuntimeError):
    """A sweep that cannot start (one line, for the CLI)."""


# How long the head's GCS port gets to answer before `address` is refused. Ray itself would retry for minutes,
# printing a warning every few seconds; a head that is up answers a TCP connect in milliseconds.
CONNECT_TIMEOUT_S = 5.0


def set_tune_environment() -> None:
    """Set the variables of TUNE_ENVIRONMENT that the user has not set (a value the user set wins).

    Tune reads them when a run starts, Ray's processes inherit them when Ray starts: init_ray calls this first."""
    for name, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def init_ray(recipe: Recipe, address: str | None) -> None:
    """Join a cluster at `address`, or start Ray in this process on the local machine."""
    global _initialized_here
    if address and address.startswith("ray://"):
        # Under Ray Client, Tune's driver loop (and so the StoreCallback) would run on the head node, not here:
        # results would not come back to this process's database.
        raise SweepError(f"{option('address')} {address}: Ray Client (ray://) addresses are not supported; run "
                         f"the sweep on a machine of the cluster with {option('address')} HEAD_IP:6379 (or auto)")
    # Before the early return: a Ray someone else started still runs our Tune runs.
    set_tune_environment()
    if ray.is_initialized():
        return
    _initialized_here = True  # before ray.init: an interrupt inside it still ends what it began
    # Tune reads back per-trial result files that we keep off (the database has the results), and a local
    # in-process cluster's token auth is on by default: neither is news to a user.
    for noisy in ("ray.tune.analysis.experiment_analysis", "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                                  configure_logging=True)
    if address:
        # Trials import mutransfer on the workers: ship the driver's copy of the package with the job, so workers
        # need no checkout and run the same code (they still need torch, mup and ray[tune]; docs/cluster.md).
        if os.environ.get("MUTRANSFER_SHIP_PACKAGE", "1") != "0":
            import mutransfer

            kwargs["runtime_env"] = {"py_modules": [mutransfer], "excludes": ["__pycache__", "*.pyc"]}
        check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:
            raise SweepError(f"{option('address')} {address}: cannot connect to the Ray cluster: "
                             f"{_first_line(e)}") from e
    else:
        # Ray starts its workers at nice 15. The trials are this job's work, not background work: on a machine
        # shared with other processes a niced trial ran at half the speed of the same loop in a plain process
        # (BENCHMARKS.md, training throughput). A value the user set wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            ray.init(num_cpus=os.cpu_count() or 1, num_gpus=0 if not _has_cuda() else None, **kwargs)
        except Exception as e:  # a full /tmp, a port in use, a stale session: the user's machine, in one line
            raise SweepError(f"cannot start Ray on this machine: {_first_line(e)} (or pass "
                             f"{option('address')} of a running cluster)") from e


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse `address` (HOST:PORT of the head's GCS) in one line when nothing answers a TCP connect there within
    `timeout` seconds: Ray would retry for minutes. `auto` and `local` are left to Ray, which finds a cluster on
    this machine or fails at once."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweepError(f"{option('address')} {address}: not HOST:PORT (the head node's GCS port, 6379 unless "
                         "`ray start --head --port` chose another) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = f"no answer within {timeout:g}s" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise SweepError(f"{option('address')} {address}: nothing answers there ({why}): is the "
                         "Ray head running there (`ray start --head`), and is its port open to this machine?") from e


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def stop_ray() -> None:
    """End this driver's Ray: the processes of a Ray it started here (raylet, workers, ...) stop; a cluster it
    joined keeps running (its workers for this job are ended by the disconnect)."""
    global _initialized_here
    if _initialized_here and ray.is_initialized():
        ray.shutdown()
    _initialized_here = False


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def check_resources(recipe: Recipe) -> None:
    """Fail now, with a clear message, when no node can ever run a trial (Ray would wait forever)."""
    if os.environ.get("MUTRANSFER_SKIP_RESOURCE_CHECK", "0") == "1":
        return  # an autoscaling cluster may add the node that fits later (docs/cluster.md)
    res = recipe.resources
    want = {k: v for k, v in {"CPU": res.cpus, "GPU": res.gpus, **res.custom}.items() if v > 0}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for node in nodes:
        have = node.get("Resources", {})
        if all(have.get(k, 0.0) >= v for k, v in want.items()):
            return
    label = {"CPU": "cpus", "GPU": "gpus"}
    biggest = {k: max((n.get("Resources", {}).get(k, 0.0) for n in nodes), default=0.0) for k in want}
    short = ", ".join(f"{label.get(k, f'custom.{k}')} {want[k]:g} (the largest of {len(nodes)} node(s) has "
                      f"{biggest[k]:g})" for k in want if want[k] > biggest[k])
    asked = ", ".join(f"{label.get(k, f'custom.{k}')} {v:g}" for k, v in want.items())
    raise SweepError(f"resources: a trial asks for more than any node has: {short}" if short else
                     f"resources: no single node has all of {asked} that a trial asks for")


def cluster_slots(recipe: Recipe) -> int:
    """How many trials the connected cluster can run at once: per node, what fits of a trial's request."""
    res = recipe.resources
    want = {k: v for k, v in {"CPU": res.cpus, "GPU": res.gpus, **res.custom}.items() if v > 0}
    slots = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node.get("Resources", {})
            # A small tolerance: Ray accounts resources in 1e-4 units, 1.0 / 0.1 must count as 10.
            slots += min(int(have.get(k, 0.0) / v + 1e-6) for k, v in want.items())
    return max(1, slots)


def scratch_dir(storage_dir: str | None) -> Path:
    """Tune's experiment folder holds nothing the database lacks (resume comes from the store): a scratch folder,
    for the caller to remove at the end, under `storage_dir` or $MUTRANSFER_RAY_DIR if the user wants it elsewhere
    than the temp dir.

    A driver killed outright (SIGKILL, a lost machine) cannot remove its folder: each folder names its owner (host
    and process id), and the next run removes the folders there whose owner on this host is gone."""
    base = storage_dir or os.environ.get("MUTRANSFER_RAY_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base))
    (folder / SCRATCH_OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    remove_dead_scratch(folder.parent)
    return folder


def remove_dead_scratch(base: Path) -> list[Path]:
    """Remove the scratch folders under `base` left by a driver of this host that is no longer running. Returns them.

    Folders of other hosts (a shared file system) and of live processes are left alone; so is any folder without
    an owner file (an earlier version's, or one not ours)."""
    host, removed = socket.gethostname(), []
    for folder in base.glob(SCRATCH_PREFIX + "*"):
        try:
            owner_host, pid = (folder / SCRATCH_OWNER).read_text().split()
            alive = owner_host != host or _alive(int(pid))
        except (OSError, ValueError):
            continue
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
