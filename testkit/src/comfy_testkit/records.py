"""Task records for tests that drive the store directly, without a node process."""

from __future__ import annotations

from typing import Any

from comfy_shared.lifecycle import AttemptRef, Ended, Started
from comfy_shared.models import Attempt, TaskRecord
from comfy_shared.task_store import TaskStore

NODE = "node-t"
ATTEMPT = AttemptRef(NODE, 1)
"""The first attempt of a task made by :func:`on_node`."""


def on_node(task_id: str, **fields: Any) -> TaskRecord:
    """A task submitted straight to the node ``NODE``: its first and only attempt."""
    return TaskRecord(
        id=task_id,
        node_id=NODE,
        attempts=1,
        attempt_log=[Attempt(number=1, node_id=NODE)],
        **fields,
    )


async def run(store: TaskStore, task_id: str) -> TaskRecord:
    return await store.apply(task_id, Started(ATTEMPT))


async def succeed(store: TaskStore, task_id: str) -> TaskRecord:
    return await store.apply(task_id, Ended(ATTEMPT))
