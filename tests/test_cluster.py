"""Sweeps on a real Ray cluster through `--address`, per-trial resources, and requests no node can meet.

The cluster is real: `ray start --head` plus `ray start --address` processes on this machine (tests/ray_cluster.py),
each node with its own CPUs and a custom resource that names it; the sweep runs in a separate `mutransfer sweep`
process, as a user would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from ray_cluster import Cluster, ray_cluster

from mutransfer.recipe import Train

RECIPE = """
name: {name}
model: {{family: mlp, parametrization: mup, base_width: 16}}
data: {{kind: digits, val_fraction: 0.2}}
train: {{steps: {steps}, eval_interval: 50, schedule: constant}}
search:
  samples: {samples}
  seed: 1
  space:
    lr: {{loguniform: [1.0e-3, 3.0e-2]}}
scales: {{base: {{width: 16, depth: 2, batch_size: 32}}, vary: {{width: [16, 32]}}}}
target: {{width: 1024, depth: 2, batch_size: 32}}
resources: {resources}
"""


def run(args: list[str], cwd: Path, db: str, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**(env or os.environ), "MUTRANSFER_DB": db, "MUTRANSFER_RAY_DIR": str(cwd / "ray")}
    return subprocess.run([sys.executable, "-m", "mutransfer.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def max_concurrency(trials: pd.DataFrame) -> int:
    """The most trials whose [started_at, finished_at] intervals overlap at one instant."""
    events = sorted([(t, 1) for t in trials["started_at"]] + [(t, -1) for t in trials["finished_at"]],
                    key=lambda e: (e[0], e[1]))  # at a tie, an end before a start: touching is not overlapping
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


# One cluster for the two sweeps below (its start and stop take about as long as either sweep): node A, one CPU;
# node B, one CPU and one (fake) GPU. Each node has a custom resource that names it.
NODES_AB = [{"num_cpus": 1, "resources": {"node_a": 1}}, {"num_cpus": 1, "num_gpus": 1, "resources": {"node_b": 1}}]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ray_cluster(NODES_AB) as c:
        yield c


@pytest.mark.slow
def test_two_node_cluster_runs_and_stores_every_trial(cluster: Cluster, tmp_path: Path) -> None:
    from mutransfer.storage import Store

    # One CPU a trial: one trial at a time on each node.
    (tmp_path / "two.yaml").write_text(RECIPE.format(name="two", steps=300, samples=4,
                                                     resources="{cpus: 1}"))
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    # The driver is a separate process that joins the cluster, as `mutransfer sweep --address` does for a user.
    res = run(["sweep", "two.yaml", "--address", cluster.address, "-q", "--skip-check"], tmp_path, db,
              env=cluster.env)
    assert res.returncode == 0, res.stderr[-3000:] + cluster.logs()
    a, b = cluster.node_with("node_a"), cluster.node_with("node_b")

    store = Store.open(db)
    sweep = store.get_sweep("two")
    assert sweep is not None and sweep.status == "done"
    trials = store.trials_frame(sweep.id)
    assert len(trials) == 8 and (trials["status"] == "completed").all(), trials[["key", "status", "error"]]
    assert trials["metric"].notna().all() and (trials["flops"] > 0).all()
    # Every trial stores the Ray node it ran on ("host/node id"), and both nodes ran some.
    node_ids = {str(n).rsplit("/", 1)[1] for n in trials["node"]}
    assert node_ids <= {a[:12], b[:12]}, (node_ids, a, b)
    assert node_ids == {a[:12], b[:12]}, trials["node"].value_counts()
    # Results flowed back: every trial has its learning curve in the driver's database.
    curves = store.curves_frame(sweep.id)
    assert set(curves["key"]) == set(trials["key"])


@pytest.mark.slow
def test_fractional_gpus_pack_four_trials_per_gpu(cluster: Cluster, tmp_path: Path) -> None:
    """`gpus: 0.25` on a node with one (fake) GPU: Ray runs four trials at once, never more."""
    from mutransfer.storage import Store

    # The GPU is what limits concurrency: 0.125 CPU per trial would allow 8 on node B's one CPU (node A has no GPU:
    # it runs none of them).
    # 1000 steps: a trial must outlast the start of the other three workers on node B's one CPU (at 200 steps, on a
    # fast machine, the first finished before the fourth started).
    (tmp_path / "frac.yaml").write_text(RECIPE.format(name="frac", steps=1000, samples=4,
                                                      resources="{cpus: 0.125, gpus: 0.25}"))
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    res = run(["sweep", "frac.yaml", "--address", cluster.address, "-q", "--skip-check"], tmp_path, db,
              env=cluster.env)
    assert res.returncode == 0, res.stderr[-3000:] + cluster.logs()

    store = Store.open(db)
    sweep = store.get_sweep("frac")
    assert sweep is not None
    trials = store.trials_frame(sweep.id)
    # The node has a GPU only in Ray's books: the trainer's `device: auto` must fall back to the CPU.
    assert len(trials) == 8 and (trials["status"] == "completed").all(), trials[["key", "status", "error"]]
    assert {str(n).rsplit("/", 1)[1] for n in trials["node"]} == {cluster.node_with("node_b")[:12]}
    assert max_concurrency(trials) == 4, trials[["key", "started_at", "finished_at"]]


def test_device_auto_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from mutransfer.train import device_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for(Train(steps=1, device="auto")) == torch.device("cpu")


@pytest.mark.slow
def test_request_no_node_can_meet_fails_at_once(tmp_path: Path) -> None:
    """Instead of waiting forever for a node that does not exist: exit 2, one line, no database written."""
    (tmp_path / "big.yaml").write_text(RECIPE.format(name="big", steps=20, samples=1,
                                                     resources="{cpus: 1, gpus: 2}"))
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    res = run(["sweep", "big.yaml", "-q", "--skip-check"], tmp_path, db, timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: resources: a trial asks for more than any node has: gpus 2 (the largest of 1 node(s) "
                      "has 0)"], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "mt.db").exists()  # refused before the database (and its schema) was created


NODES = [
    {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "node_a": 1.0}},
    {"Alive": True, "Resources": {"CPU": 2.0, "tpu": 4.0}},
    {"Alive": False, "Resources": {"CPU": 128.0, "GPU": 8.0}},  # a dead node counts for nothing
]


@pytest.mark.parametrize(("resources", "message"), [
    ({"gpus": 2}, "a trial asks for more than any node has: gpus 2 (the largest of 2 node(s) has 1)"),
    ({"cpus": 16}, "a trial asks for more than any node has: cpus 16 (the largest of 2 node(s) has 8)"),
    ({"custom": {"tpu": 8}}, "custom.tpu 8 (the largest of 2 node(s) has 4)"),
    ({"custom": {"fpga": 1}}, "custom.fpga 1 (the largest of 2 node(s) has 0)"),
    ({"gpus": 1, "custom": {"tpu": 1}}, "no single node has all of cpus 1, gpus 1, custom.tpu 1"),
])
def test_check_resources_names_what_no_node_has(monkeypatch: pytest.MonkeyPatch, resources: dict[str, object],
                                                message: str) -> None:
    import ray

    from mutransfer.ray_setup import SweepError, check_resources
    from mutransfer.recipe import Resources

    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    recipe = type("R", (), {"resources": Resources.model_validate(resources)})()
    with pytest.raises(SweepError, match="resources: ") as err:
        check_resources(recipe)  # type: ignore[arg-type]
    assert message in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("MUTRANSFER_SKIP_RESOURCE_CHECK", "1")  # an autoscaling cluster may add the node later
    check_resources(recipe)  # type: ignore[arg-type]


@pytest.mark.parametrize(("resources", "slots"), [
    ({"cpus": 1}, 10), ({"cpus": 0.25, "gpus": 0.25}, 4), ({"cpus": 0.1, "gpus": 0.1}, 10), ({"cpus": 1, "custom": {"tpu": 2}}, 2),
    ({"custom": {"node_a": 1}}, 1),
])
def test_cluster_slots_counts_what_fits_per_node(monkeypatch: pytest.MonkeyPatch, resources: dict[str, object],
                                                 slots: int) -> None:
    import ray

    from mutransfer.ray_setup import check_resources, cluster_slots
    from mutransfer.recipe import Resources

    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    recipe = type("R", (), {"resources": Resources.model_validate(resources)})()
    check_resources(recipe)  # type: ignore[arg-type]
    assert cluster_slots(recipe) == slots  # type: ignore[arg-type]


def test_ray_client_address_is_refused() -> None:
    from mutransfer.ray_setup import SweepError, init_ray
    from mutransfer.recipe import Resources

    recipe = type("R", (), {"resources": Resources()})()
    with pytest.raises(SweepError, match=r"Ray Client \(ray://\) addresses are not supported"):
        init_ray(recipe, "ray://head:10001")  # type: ignore[arg-type]
