"""Checks that no task was completed twice, for tests and benchmarks that inject faults.

A task can run more than once (a node's ComfyUI may finish a prompt of an attempt that moved
to another node), but its record may be completed only once, by its current attempt. Three
independent witnesses of that, each counted per task:

- the record: exactly one attempt of a succeeded task has the outcome "succeeded", its last;
- the event stream: exactly one event carries the task in a terminal status;
- the services' output: exactly one "task finished" line names the task.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

_TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)


def succeeded_attempts(task: dict[str, Any]) -> int:
    """Attempts in the task's log (as the API shows it) whose outcome is "succeeded"."""
    return sum(attempt.get("outcome") == "succeeded" for attempt in task["attempt_log"])


def completed_by_an_attempt_that_was_over(task: dict[str, Any]) -> bool:
    """A succeeded task whose success is not its last attempt's: an attempt that was over
    completed it."""
    log = task["attempt_log"]
    return task["status"] == "succeeded" and (not log or log[-1].get("outcome") != "succeeded")


async def terminal_events(redis: Redis, task_id: str, keys: RedisKeys | None = None) -> int:
    """Events in the task's stream that carry it in a terminal status."""
    store = TaskStore(redis, keys or RedisKeys())
    events = await store.read_events(task_id, count=100_000)
    return sum(event.task.status.value in _TERMINAL for _, event in events)


def finished_lines(outputs: Iterable[str], task_id: str) -> int:
    """ "task finished" lines about ``task_id`` in the (text) output of service processes."""
    pattern = re.compile(rf"task finished \[task_id={re.escape(task_id)}[\] ]")
    return sum(len(pattern.findall(output)) for output in outputs)


def duplicated_completions(task: dict[str, Any], *, events: int, lines: int | None = None) -> int:
    """Completions of the task beyond the one it may have (0 when all is well): the largest
    excess any witness shows, plus one if an attempt that was over completed it."""
    allowed = 1 if task["status"] == "succeeded" else 0
    excess = max(succeeded_attempts(task) - allowed, events - 1)
    if lines is not None:
        excess = max(excess, lines - allowed)
    return max(0, excess) + int(completed_by_an_attempt_that_was_over(task))
