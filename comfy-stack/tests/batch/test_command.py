"""``comfy-stack batch`` as a user runs it: a real process against a real fleet, stopped with
Ctrl-C (SIGINT) mid-run and run again."""

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_stack.batch import read_manifest
from comfy_stack.processes import ManagedProcess, start_python_module
from comfy_testkit.cluster import Cluster
from comfy_testkit.image_files import write_tree
from comfy_testkit.stack import ADMIN_KEY
from comfy_testkit.waiting import wait_for_condition

pytestmark = pytest.mark.timeout(120)  # a fleet of processes, and the command twice

FILES = [f"shoot-{n % 2}/img-{n}.png" for n in range(6)]


def start_batch(cluster: Cluster, tmp_path: Path, name: str, *extra: str) -> ManagedProcess:
    args = [
        "batch", str(tmp_path / "in"), "-w", "img2img-sdxl", "-p", "prompt=a watercolour",
        "-p", "steps=2", "-o", str(tmp_path / "out"), "--concurrency", "2", "--json",
        "--url", cluster.balancer.url, "--key", ADMIN_KEY, *extra,
    ]  # fmt: skip
    return start_python_module(name, "comfy_stack", args, log_dir=tmp_path / "logs")


def summary_of(process: ManagedProcess) -> dict[str, Any]:
    """The JSON summary: the last lines of the output, from a line that is ``{``."""
    lines = process.output().splitlines()
    start = max(n for n, line in enumerate(lines) if line == "{")
    return dict(json.loads("\n".join(lines[start:])))


def states(tmp_path: Path) -> list[str]:
    return [record.state for record in read_manifest(tmp_path / "out").values()]


async def test_ctrl_c_leaves_a_consistent_manifest_and_the_rerun_does_each_file_once(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(("a", "b"), step_time_s=0.4)  # about a second a task
    await cluster.nodes_ready(2)
    write_tree(tmp_path / "in", FILES)
    first = start_batch(cluster, tmp_path, "batch-1")

    async def some_done_some_running() -> bool:
        now = states(tmp_path)
        return "done" in now and "submitted" in now

    await wait_for_condition(some_done_some_running, timeout_s=60, what="a file done, one running")
    first.send_signal(signal.SIGINT)

    assert first.process.wait(timeout=30) == 130, first.output()
    stopped = summary_of(first)
    # Cut while sending (its answer not back yet) or while following the task: both resume
    # the same task, the first through the request's idempotency key.
    in_flight = [
        r
        for r in read_manifest(tmp_path / "out").values()
        if r.state in ("submitting", "submitted")
    ]
    assert stopped["interrupted"] == 6 - stopped["done"] > 0
    assert stopped["ok"] is False
    assert in_flight
    assert all(record.task_id for record in in_flight if record.state == "submitted")
    assert not list((tmp_path / "out").rglob("*.part"))  # no half-written output left

    second = start_batch(cluster, tmp_path, "batch-2")

    assert second.process.wait(timeout=60) == 0, second.output()
    resumed = summary_of(second)
    assert resumed["already_done"] == stopped["done"]
    assert resumed["done"] == 6 - stopped["done"]
    assert (resumed["failed"], resumed["interrupted"], resumed["ok"]) == ([], 0, True)
    records = read_manifest(tmp_path / "out")
    assert sorted(records) == sorted(FILES)
    assert {record.state for record in records.values()} == {"done"}
    task_ids = [str(record.task_id) for record in records.values()]
    listing = (await cluster.api.get("/api/v1/tasks", params={"limit": 100})).json()
    assert sorted(task["id"] for task in listing["tasks"]) == sorted(task_ids)  # one task a file
    assert set((await cluster.executions(task_ids)).values()) == {1}  # each ran once
    outputs = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")
    )
    assert outputs == sorted(FILES)


async def test_existing_outputs_are_refused_with_exit_2_before_anything_is_sent(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(("a",))
    write_tree(tmp_path / "in", ["x.png"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.webp").write_bytes(b"someone's")

    refused = start_batch(cluster, tmp_path, "batch")

    assert refused.process.wait(timeout=30) == 2
    assert "would overwrite" in refused.output()
    assert "--overwrite" in refused.output()
    listing = (await cluster.api.get("/api/v1/tasks")).json()
    assert listing["tasks"] == []
