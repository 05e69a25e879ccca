"""docs/examples: the Slurm and KubeRay examples parse (bash -n, YAML) and say what they must."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


@pytest.mark.parametrize("script", ["slurm/ray-cluster.sbatch", "kuberay/run-sweep.sh"])
def test_scripts_are_valid_bash(script: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    res = subprocess.run([bash, "-n", str(EXAMPLES / script)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


def test_sbatch_starts_head_then_workers_then_the_sweep() -> None:
    text = (EXAMPLES / "slurm/ray-cluster.sbatch").read_text()
    head = text.index("ray start --head")
    worker = text.index('ray start --address="$head_ip:$PORT"')
    sweep = text.index('mutransfer sweep "$RECIPE" --name "$NAME" --address "$head_ip:$PORT"')
    assert head < worker < sweep and "srun" in text and "#SBATCH --nodes=" in text


def test_kuberay_manifest_is_a_raycluster() -> None:
    doc = yaml.safe_load((EXAMPLES / "kuberay/raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    assert head["template"]["spec"]["containers"][0]["name"] == "ray-head"
    (group,) = spec["workerGroupSpecs"]
    assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    run = (EXAMPLES / "kuberay/run-sweep.sh").read_text()
    assert f"MUTRANSFER_RAYCLUSTER:-{doc['metadata']['name']}" in run and "ray.io/node-type=head" in run
    assert "kubectl" in run and "exec" in run and "mutransfer sweep" in run
