"""Handing placed tasks to their nodes, and what each answer means for the task.

A send runs in the background (placing does not wait for nodes). Its result is one of the
typed outcomes below, decided by :func:`outcome_of` without I/O, then acted on. Whatever goes
wrong, a send never leaves its slot held without a live attempt: a task the node cannot even
be sent (its graph is not JSON) fails as the caller's error; any other failure gives the slot
back and requeues the task, which costs an attempt, so it is bounded by ``--max-attempts``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from loguru import logger

from comfy_balancer.registry import NodeRegistry, NodeView
from comfy_balancer.service_client import NodeAnswer, NodeUnreachable, ServiceClient
from comfy_shared.errors import TaskNotFound
from comfy_shared.lifecycle import (
    AttemptRef,
    Ended,
    Refused,
    TakenBack,
    TurnedAway,
    current_attempt,
)
from comfy_shared.models import ErrorType, TaskError, TaskRecord
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

OVERLOAD_PAUSE_S = 1.0
"""A node that answered 503 overloaded gets no new task for this long (its Retry-After)."""


REFUSALS_WITHOUT_WORK = frozenset({"overloaded", "node_not_ready"})
"""A node's 503 codes that say it did nothing with the task: it goes back to the queue with
no attempt spent, and the node pauses."""


@dataclass(frozen=True, slots=True)
class Taken:
    """The node has the attempt (or had it already)."""


@dataclass(frozen=True, slots=True)
class Overloaded:
    """The node did nothing: no attempt spent, and the node gets a pause."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """The task itself cannot run: its graph or parameters are wrong (the caller's fault)."""

    error: TaskError


@dataclass(frozen=True, slots=True)
class NodeFailed:
    """The node could not take it (unreachable, an error of its own): another node may."""

    reason: str


SendOutcome = Taken | Overloaded | Invalid | NodeFailed


def outcome_of(answer: NodeAnswer) -> SendOutcome:
    """What a node's answer to a placement means."""
    if answer.status in (200, 202):
        return Taken()
    if answer.status == 503 and answer.body.get("code") in REFUSALS_WITHOUT_WORK:
        return Overloaded()
    if answer.status == 422:
        details = {key: value for key, value in answer.body.items() if key in _REJECTION_KEYS}
        message = str(answer.body.get("detail", "the node rejected the graph"))
        return Invalid(TaskError(type=ErrorType.VALIDATION, message=message, details=details))
    if answer.status == 401:
        # A misconfigured node (or balancer), not the task's fault: it moves on.
        return NodeFailed("node refused our internal token (--internal-token differs)")
    return NodeFailed(f"node answered {answer.status}: {answer.body.get('detail')}")


_REJECTION_KEYS = ("code", "error", "node_errors", "errors")


def placement_body(record: TaskRecord, graph: dict[str, Any]) -> bytes:
    """The request a node gets: the task's final graph (expanded once, at intake) and its id.
    Raises ValueError for a graph JSON cannot carry (NaN, infinity)."""
    body = {"task_id": record.id, "prompt": graph, "priority": record.priority}
    return json.dumps(body | {"client": record.client}, allow_nan=False).encode()


class Sender:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        registry: NodeRegistry,
        nodes_client: ServiceClient,
    ) -> None:
        self._store = store
        self._queue = queue
        self._registry = registry
        self._nodes = nodes_client
        self._running: dict[str, asyncio.Task[None]] = {}
        self._paused_until: dict[str, float] = {}
        # Sends to one node go one at a time, so ComfyUI queues them in placement order.
        self._node_locks: dict[str, asyncio.Lock] = {}

    def start(self, record: TaskRecord, graph: dict[str, Any], node: NodeView) -> None:
        """Send the task's current attempt to ``node`` in the background."""
        task = asyncio.create_task(self._send(record, graph, node), name=f"send-{record.id}")
        self._running[record.id] = task
        task.add_done_callback(lambda _: self._running.pop(record.id, None))

    def is_sending(self, task_id: str) -> bool:
        return task_id in self._running

    def is_paused(self, node_id: str) -> bool:
        return self._paused_until.get(node_id, 0.0) > asyncio.get_running_loop().time()

    async def stop(self) -> None:
        """Cancel the sends in flight; the next sweep of any replica sends them again."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _send(self, record: TaskRecord, graph: dict[str, Any], node: NodeView) -> None:
        attempt = AttemptRef(node.node_id, record.attempts)
        with logger.contextualize(task_id=record.id, attempt=record.attempts):
            try:
                outcome = await self._deliver(record, graph, node)
            except Exception as exc:
                logger.opt(exception=exc).error("sending a placement failed")
                outcome = NodeFailed(f"sending failed: {exc}")
            try:
                await self._act(record.id, attempt, outcome)
            except Exception as exc:
                # Nobody awaits this background task, so an error raised here would vanish
                # ("Task exception was never retrieved"). Redis is away, most likely: the
                # attempt stays as recorded (dispatched, not taken), and once the dispatch
                # timeout passes a sweep sends it again.
                logger.opt(exception=exc).warning(
                    "recording the placement's outcome failed; a sweep will send it again"
                )

    async def _deliver(
        self, record: TaskRecord, graph: dict[str, Any], node: NodeView
    ) -> SendOutcome:
        try:
            body = placement_body(record, graph)
        except ValueError as exc:
            error = f"the graph cannot be sent as JSON: {exc}"
            return Invalid(TaskError(type=ErrorType.VALIDATION, message=error))
        if node.url is None:
            return NodeFailed("the node publishes no URL")
        try:
            async with self._node_locks.setdefault(node.node_id, asyncio.Lock()):
                answer = await self._nodes.generate(node.url, body)
        except NodeUnreachable as exc:
            return NodeFailed(f"dispatch failed: {exc}")
        return outcome_of(answer)

    async def _act(self, task_id: str, attempt: AttemptRef, outcome: SendOutcome) -> None:
        match outcome:
            case Taken():
                return
            case Overloaded():
                logger.info("node overloaded; task back in the queue", to_node=attempt.node_id)
                self._paused_until[attempt.node_id] = (
                    asyncio.get_running_loop().time() + OVERLOAD_PAUSE_S
                )
                await self._change(task_id, attempt, TurnedAway(attempt))
            case Invalid(error):
                logger.info("task refused by the node", reason=error.message)
                await self._change(task_id, attempt, Ended(attempt, error=error))
            case NodeFailed(reason):
                await self._registry.record_failure(attempt.node_id)
                await take_back(self._store, self._queue, task_id, attempt, reason)

    async def _change(self, task_id: str, attempt: AttemptRef, event: TurnedAway | Ended) -> None:
        await settle(self._store, self._queue, task_id, attempt, event)


async def take_back(
    store: TaskStore, queue: TaskQueue, task_id: str, attempt: AttemptRef, reason: str
) -> TaskRecord | None:
    """The node lost the attempt: the task is queued again (or fails once out of attempts).
    The record after, or None if the attempt was over already (nothing taken back)."""
    after = await settle(store, queue, task_id, attempt, TakenBack(attempt, reason))
    if after is not None and after.status is TaskStatus.QUEUED:
        logger.warning(
            "task back in the queue", task_id=task_id, from_node=attempt.node_id, reason=reason
        )
    return after


async def settle(
    store: TaskStore,
    queue: TaskQueue,
    task_id: str,
    attempt: AttemptRef,
    event: TurnedAway | TakenBack | Ended,
) -> TaskRecord | None:
    """Apply an event that ends a placement, then give the slot back: into the queue if the
    task is queued again, freed otherwise. None if the event was refused (the attempt was over)."""
    try:
        after = await store.apply(task_id, event)
    except TaskNotFound:
        await queue.release(task_id, attempt.node_id)
        return None
    except Refused as refused:
        if refused.record.status.is_terminal or current_attempt(refused.record) != attempt:
            await queue.release(task_id, attempt.node_id)  # the slot is not this attempt's
        return None
    if after.status is TaskStatus.QUEUED:
        await queue.requeue(task_id, attempt.node_id)
    else:
        await queue.release(task_id, attempt.node_id)
    return after
