"""Accepting and cancelling tasks at the balancer.

Accepting writes the task to Redis and into the durable queue before the caller gets 202,
after three checks: an ``Idempotency-Key`` (or a caller-chosen task id) already used returns
the existing task; a full queue answers 429; a graph no live node could ever run answers 422
with what each node lacks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from loguru import logger

from comfy_balancer.errors import NoCapableNode, NodeUnavailable, QueueFull
from comfy_balancer.registry import NodeRegistry, NodeState
from comfy_balancer.service_client import NodeUnreachable, ServiceClient
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.capabilities import missing_capabilities
from comfy_shared.errors import InvalidTransition
from comfy_shared.lifecycle import Cancelled, Refused
from comfy_shared.models import RetryPolicy, TaskRecord, new_task_id
from comfy_shared.task_queue import QueueAtCapacity, TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import Expansion, TemplateLibrary

RETRY_AFTER_S = 5
IDEMPOTENCY_WAIT_S = 5.0
CAPABILITIES_MAX_AGE_S = 1.0
"""How old a read of the nodes may be for the capability check (nodes change rarely; the
dispatcher reads them many times a second anyway)."""


@dataclass(frozen=True, slots=True)
class Intake:
    task: TaskRecord
    created: bool
    position: int | None = None
    """Tasks ahead of a task queued by this request (None for an existing task)."""


class TaskIntake:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        registry: NodeRegistry,
        nodes_client: ServiceClient,
        policy: RetryPolicy,
        templates: TemplateLibrary,
        max_queue: int,
    ) -> None:
        self._store = store
        self._queue = queue
        self._registry = registry
        self._nodes = nodes_client
        self._policy = policy
        self._templates = templates
        self._max_queue = max_queue

    async def accept(self, request: GenerateRequest, idempotency_key: str | None) -> Intake:
        task_id = request.task_id or new_task_id()
        if idempotency_key is not None:
            earlier = await self._earlier_task(idempotency_key, task_id)
            if earlier is not None:
                return Intake(earlier, created=False)
        try:
            return await self._enqueue(task_id, request)
        except Exception:
            if idempotency_key is not None:
                await self._store.unbind_idempotency_key(idempotency_key)
            raise

    async def cancel(self, task_id: str) -> TaskRecord:
        """Removed from the queue while it waits; otherwise cancelled by the node it is on."""
        record = await self._store.get(task_id)
        if record.status.is_terminal:
            raise InvalidTransition(task_id, record.status, TaskStatus.CANCELLED)
        if await self._queue.remove(task_id) or record.node_id is None:
            return await self._cancel_here(task_id)
        return await self._cancel_on_node(record)

    async def _enqueue(self, task_id: str, request: GenerateRequest) -> Intake:
        # Only a caller-chosen id can be taken already; the submit script checks again.
        if request.task_id and (existing := await self._store.find(task_id)) is not None:
            return Intake(existing, created=False)
        work = self._expand(request, task_id)
        await self._check_capable(work.graph)
        record = TaskRecord(
            id=task_id,
            priority=request.priority,
            client=request.client,
            retry=self._policy,
            workflow=request.workflow,
            params=work.params,
            input_files=[file.name for file in work.inputs],
        )
        try:
            submitted = await self._queue.submit(
                record, work.graph, inputs=work.inputs, max_pending=self._max_queue
            )
        except QueueAtCapacity:
            raise QueueFull(self._max_queue, RETRY_AFTER_S) from None
        if submitted.created:
            logger.info("task queued", task_id=task_id, priority=request.priority)
        return Intake(submitted.task, submitted.created, submitted.position)

    def _expand(self, request: GenerateRequest, task_id: str) -> Expansion:
        return self._templates.expand_request(
            prompt=request.prompt,
            workflow=request.workflow,
            params=request.params,
            task_id=task_id,
        )

    async def _earlier_task(self, key: str, task_id: str) -> TaskRecord | None:
        """The task an earlier request with this key created, waiting for it if that request
        is still being accepted; None when this request is the first (it now owns the key)."""
        deadline = asyncio.get_running_loop().time() + IDEMPOTENCY_WAIT_S
        while (earlier := await self._store.bind_idempotency_key(key, task_id)) is not None:
            if (known := await self._store.find(earlier)) is not None:
                return known
            if asyncio.get_running_loop().time() > deadline:
                raise QueueFull(self._max_queue, RETRY_AFTER_S)  # the first one is stuck
            await asyncio.sleep(0.01)
        return None

    async def _check_capable(self, prompt: dict[str, Any]) -> None:
        """422 only when live nodes exist and none could run the graph; with no live node at
        all, the task waits for one (a cluster restart must not turn work away)."""
        nodes = await self._registry.recent(max_age_s=CAPABILITIES_MAX_AGE_S)
        live = [n for n in nodes if n.state is not NodeState.DEAD]
        lacking = {n.node_id: missing_capabilities(prompt, n.capabilities) for n in live}
        if lacking and all(lacking.values()):
            raise NoCapableNode({node: missing.model_dump() for node, missing in lacking.items()})

    async def _cancel_here(self, task_id: str) -> TaskRecord:
        try:
            cancelled = await self._store.apply(task_id, Cancelled())
        except Refused as refused:
            raise InvalidTransition(task_id, refused.record.status, TaskStatus.CANCELLED) from None
        logger.info("task cancelled", task_id=task_id)
        return cancelled

    async def _cancel_on_node(self, record: TaskRecord) -> TaskRecord:
        node = await self._registry.find(record.node_id or "")
        if node is None or node.url is None:
            return await self._cancel_here(record.id)  # the node is gone: nothing runs there
        try:
            answer = await self._nodes.cancel(node.url, record.id)
        except NodeUnreachable as exc:
            raise NodeUnavailable(record.node_id, str(exc)) from exc
        current = await self._store.get(record.id)
        if answer.status == 409 and not current.status.is_terminal:
            return await self._cancel_here(record.id)  # not on the node yet (being dispatched)
        if not current.status.is_terminal:
            raise NodeUnavailable(record.node_id, f"cancel answered {answer.status}")
        if current.status is not TaskStatus.CANCELLED:
            raise InvalidTransition(record.id, current.status, TaskStatus.CANCELLED)
        return current
