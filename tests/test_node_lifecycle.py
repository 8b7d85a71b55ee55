"""The Helm chart's node lifecycle hooks (deploy/helm/comfy-stack/files/node_lifecycle.py) run
as Kubernetes runs them, as processes, against a real balancer, service, emulator and Redis:
the preStop drain returns only once the node's running task finished and it is drained, then
lets ComfyUI's hook go; a new pod's undrain puts the node back; each gives up at its deadline."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from comfy_testkit import graphs
from comfy_testkit.api import submit, wait_for_status
from comfy_testkit.cluster import Cluster
from comfy_testkit.stack import ADMIN_KEY

SCRIPT = (
    Path(__file__).parents[1] / "deploy" / "helm" / "comfy-stack" / "files" / "node_lifecycle.py"
)


async def hook(
    cluster: Cluster, tmp_path: Path, node_id: str, *args: str
) -> asyncio.subprocess.Process:
    """The hook as a process, with the environment the chart gives it."""
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN_KEY + "\n")
    env = {
        **os.environ,
        "NODE_LIFECYCLE_NODE_ID": node_id,
        "NODE_LIFECYCLE_BALANCER_URL": cluster.balancer.url,
        "NODE_LIFECYCLE_ADMIN_KEY_FILE": str(key_file),
        "NODE_LIFECYCLE_STATE_DIR": str(tmp_path / "state"),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def finish(process: asyncio.subprocess.Process, timeout_s: float = 30) -> str:
    output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode == 0, output
    return output.decode()


async def node(cluster: Cluster, node_id: str) -> dict[str, Any]:
    nodes = (await cluster.api.get("/api/v1/nodes")).json()
    found: dict[str, Any] = next(n for n in nodes if n["node_id"] == node_id)
    return found


async def test_the_drain_hook_waits_for_the_running_task_then_releases_comfyui(
    make_cluster: Any, tmp_path: Path
) -> None:
    cluster: Cluster = make_cluster(["gpu-0"], step_time_s=0.01)
    await cluster.nodes_ready(1)
    task = await submit(cluster.api, graphs.txt2img(f"k8s-{uuid.uuid4().hex[:8]}", steps=300))
    await wait_for_status(cluster.api, task["id"], {"running"})
    comfyui_hook = await hook(cluster, tmp_path, "gpu-0", "wait-drained", "--deadline-s", "60")

    output = await finish(await hook(cluster, tmp_path, "gpu-0", "drain", "--deadline-s", "60"))

    # the task ended before the hook returned: Kubernetes stops nothing mid-task
    finished = (await cluster.api.get(f"/api/v1/tasks/{task['id']}")).json()
    assert finished["status"] == "succeeded"
    assert "node-lifecycle: node gpu-0 drained" in output
    assert (await node(cluster, "gpu-0"))["state"] == "drained"
    assert (tmp_path / "state" / "drained").exists()
    assert "the service's drain is over" in await finish(comfyui_hook)

    # the next pod of the same node id
    output = await finish(await hook(cluster, tmp_path, "gpu-0", "undrain", "--deadline-s", "30"))

    assert "node gpu-0 undrained" in output
    state = await node(cluster, "gpu-0")
    assert (state["state"], state["drained"]) == ("ready", False)


async def test_the_drain_hook_gives_up_at_its_deadline(make_cluster: Any, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster(["gpu-0"], step_time_s=0.01)
    await cluster.nodes_ready(1)
    task = await submit(cluster.api, graphs.txt2img(f"k8s-{uuid.uuid4().hex[:8]}", steps=5000))
    await wait_for_status(cluster.api, task["id"], {"running"})
    started = time.monotonic()

    output = await finish(await hook(cluster, tmp_path, "gpu-0", "drain", "--deadline-s", "3"))

    assert time.monotonic() - started < 15
    assert "node gpu-0 not drained in time" in output
    assert (tmp_path / "state" / "drained").exists()  # ComfyUI's hook is released all the same
    assert (await node(cluster, "gpu-0"))["state"] == "draining"


async def test_hooks_for_a_node_the_balancer_never_saw_return_at_once(
    make_cluster: Any, tmp_path: Path
) -> None:
    cluster: Cluster = make_cluster(["gpu-0"])
    await cluster.nodes_ready(1)

    drained = await finish(await hook(cluster, tmp_path, "gpu-9", "drain", "--deadline-s", "30"))
    undrained = await finish(
        await hook(cluster, tmp_path, "gpu-9", "undrain", "--deadline-s", "30")
    )

    assert "never published its health: nothing to drain" in drained
    assert "node gpu-9 is new: nothing to undrain" in undrained


async def test_undrain_waits_for_a_balancer_that_is_not_up_yet(tmp_path: Path) -> None:
    """A new pod may start before any balancer answers: the hook retries, then gives up."""
    env = {
        **os.environ,
        "NODE_LIFECYCLE_NODE_ID": "gpu-0",
        "NODE_LIFECYCLE_BALANCER_URL": "http://127.0.0.1:9",  # discard port: refused
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "undrain",
        "--deadline-s",
        "3",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = await finish(process)

    assert "Connection refused" in output
    assert "undrain: gave up at the deadline" in output


async def test_wait_drained_returns_as_soon_as_the_mark_appears(tmp_path: Path) -> None:
    env = {**os.environ, "NODE_LIFECYCLE_STATE_DIR": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "wait-drained",
        "--deadline-s",
        "60",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    # no mark: it keeps waiting (a bounded look for something that must not happen)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(process.wait(), 1.0)
    (tmp_path / "drained").touch()
    assert "the service's drain is over" in await finish(process, timeout_s=10)
