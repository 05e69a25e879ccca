"""A real multi-node Ray cluster on this machine, for tests: `ray start --head` plus `ray start --address` nodes.

Each node is a `ray start --block` process in its own session; stopping the cluster signals those process groups
(never `ray stop`, which would stop every Ray on the machine, other test runs' included). Token authentication is
off (`RAY_AUTH_MODE=disabled`) for the nodes and for drivers that get `cluster.env`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    temp_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # node_id, resources (from ray.nodes())

    def node_with(self, resource: str) -> str:
        """The id of the node that has the custom resource `resource`."""
        return next(n["node_id"] for n in self.nodes if resource in n["resources"])

    def logs(self) -> str:
        out = []
        for p in sorted(self.temp_dir.glob("node-*.log")):
            out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Ray head did not open port {port} in {timeout:.0f}s")


_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
want, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= want or time.time() > deadline:
        break
    time.sleep(0.3)
print(json.dumps([{"node_id": n["NodeID"], "resources": n["Resources"]} for n in nodes]))
"""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    # Worker nodes first, then the head. SIGTERM to `ray start --block` itself makes it drain and stop its own
    # raylet, GCS and workers (a signal to the whole group kills those first and leaves it waiting); whatever is
    # left of the group after that is killed.
    for p in reversed(procs):
        if p.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


@contextmanager
def ray_cluster(nodes: list[dict[str, Any]], timeout: float = 90.0) -> Iterator[Cluster]:
    """Start one Ray node per entry of `nodes` (the first is the head): {"num_cpus": 1, "num_gpus": 0,
    "resources": {"node_a": 1}}. Yields the cluster once every node has joined; stops it afterwards."""
    # A short temp dir: Ray's unix socket paths must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="mtray-", dir="/tmp"))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = Cluster(address=f"127.0.0.1:{port}", env=env, temp_dir=temp_dir)
    try:
        for i, spec in enumerate(nodes):
            args = [f"--num-cpus={spec.get('num_cpus', 1)}", f"--num-gpus={spec.get('num_gpus', 0)}"]
            if spec.get("resources"):
                args.append(f"--resources={json.dumps(spec['resources'])}")
            if i == 0:
                args += ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
                         "--node-ip-address=127.0.0.1"]
            else:
                args += [f"--address={cluster.address}", "--node-ip-address=127.0.0.1"]
            cluster.procs.append(_start_node(args, env, temp_dir / f"node-{i}.log"))
            if i == 0:
                _wait_for_port(port, cluster.procs[0], timeout)
        res = subprocess.run([sys.executable, "-c", _NODES, cluster.address, str(len(nodes)), str(timeout)],
                             env=env, capture_output=True, text=True, timeout=timeout + 60)
        if res.returncode != 0:
            raise RuntimeError(f"cannot list the cluster's nodes: {res.stderr[-2000:]}\n{cluster.logs()}")
        cluster.nodes = json.loads(res.stdout.strip().splitlines()[-1])
        if len(cluster.nodes) < len(nodes):
            raise RuntimeError(f"only {len(cluster.nodes)} of {len(nodes)} nodes joined\n{cluster.logs()}")
        yield cluster
    finally:
        _stop(cluster.procs)
        shutil.rmtree(temp_dir, ignore_errors=True)
