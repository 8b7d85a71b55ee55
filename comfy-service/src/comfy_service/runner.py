"""Drives tasks on the one ComfyUI: submit, cancel, fail, and finish from ComfyUI's history.

Every task id is also the ComfyUI ``prompt_id``. Submitting is idempotent: a task record is
created at most once (compare-and-set in Redis), and each attempt is sent to ComfyUI at most
once (``SET NX`` on the attempt's submission key), so a retried request never runs twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from comfy_service.errors import NotOnThisNode
from comfy_service.owned_tasks import OwnedTasks
from comfy_service.record_changes import finish_from_history, retry_elsewhere
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import (
    ComfyClient,
    ComfyUnavailable,
    HistoryEntry,
    PromptRejected,
    QueueState,
)
from comfy_shared.models import ErrorType, TaskError, TaskRecord, new_task_id
from comfy_shared.redis_keys import RedisKeys
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskChange, TaskStore
from comfy_shared.workflows import Expansion, TemplateLibrary

_WAITING = (TaskStatus.QUEUED, TaskStatus.DISPATCHED)
UPLOAD_SUBFOLDER = "comfy-stack"
QUEUE_SNAPSHOT_S = 0.25


@dataclass(frozen=True, slots=True)
class Submission:
    task: TaskRecord
    created: bool
    """False when the id was already known: the existing task is returned, nothing re-runs."""


class TaskRunner:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        comfy: ComfyClient,
        owned: OwnedTasks,
        templates: TemplateLibrary,
        max_image_bytes: int,
        redis: Redis,
        keys: RedisKeys,
        node_id: str,
        client_id: str,
        retention_s: int,
    ) -> None:
        self._store = store
        self._queue = queue
        self._comfy = comfy
        self._owned = owned
        self._templates = templates
        self._max_image_bytes = max_image_bytes
        self._redis = redis
        self._keys = keys
        self.node_id = node_id
        self.client_id = client_id
        self._retention_s = retention_s
        self._queue_snapshot: tuple[float, QueueState] | None = None

    async def submit(self, request: GenerateRequest) -> Submission:
        work = self._prepare(request)
        fresh = TaskRecord(
            id=request.task_id or new_task_id(),
            submitted_at=utc_now(),
            node_id=self.node_id,
            priority=request.priority,
            attempts=1,
            client=request.client,
            workflow=request.workflow,
            params=work.params,
        )
        task, created = await self._store.create(fresh, work.graph)
        if not created and not self._dispatched_here(task):
            return Submission(task, created=False)
        with logger.contextualize(task_id=task.id, attempt=task.attempts):
            if await self._claim_attempt(task):
                return await self._send_to_comfy(task, work, created)
            return await self._resend(task, work)

    async def cancel(self, task_id: str) -> TaskRecord:
        """End the task as cancelled, then take it out of ComfyUI: removed from the queue if
        it waits, interrupted by prompt id if it runs (so no other prompt is touched)."""
        task = await self._store.get(task_id)
        if task.node_id != self.node_id and not task.status.is_terminal:
            raise NotOnThisNode(task_id, task.node_id)
        cancelled = await self._store.transition(
            task_id, TaskStatus.CANCELLED, finished_at=utc_now()
        )
        await self._stop_in_comfy(task_id)
        await self._owned.remove(task_id)
        logger.info("task cancelled", task_id=task_id)
        return cancelled

    async def fail(self, task_id: str, error: TaskError) -> TaskRecord | None:
        """Fail a task for a reason of ours (watchdog, lost prompt) and stop it in ComfyUI.
        Returns None if the task had already ended or belongs to another node now."""

        def failed(record: TaskRecord) -> TaskRecord | None:
            if record.status.is_terminal:
                return None
            return record.model_copy(
                update={"status": TaskStatus.FAILED, "error": error, "finished_at": utc_now()}
            )

        ended = await self._end(task_id, failed)
        if ended is not None:
            logger.warning("task failed", task_id=task_id, reason=error.message)
            await self._stop_in_comfy(task_id)
        return ended

    async def finish(self, task_id: str, entry: HistoryEntry | None = None) -> TaskRecord | None:
        """Record the result of a prompt ComfyUI has finished, reading its history if needed."""
        entry = entry or await self._comfy.get_history(task_id)
        if entry is None:
            return None
        final = await self._end(task_id, lambda record: finish_from_history(record, entry))
        if final is not None:
            logger.info("task finished", task_id=task_id, status=final.status.value)
        return final

    async def _end(self, task_id: str, change: TaskChange) -> TaskRecord | None:
        """Apply a final change to a task this node owns; a failure the task's retry policy
        covers sends it back to the balancer's queue instead. Returns the stored record, or
        None if nothing changed (ended already, or another node owns it now)."""
        changed = False

        def apply(record: TaskRecord) -> TaskRecord | None:
            nonlocal changed
            ended = change(record) if record.node_id == self.node_id else None
            changed = ended is not None
            return (retry_elsewhere(ended) or ended) if ended is not None else None

        after = await self._store.update(task_id, apply)
        await self._owned.remove(task_id)
        if not changed:
            return None
        if after.status is TaskStatus.QUEUED:
            logger.warning("task goes back to the queue for another node", task_id=task_id)
            await self._queue.requeue(task_id, self.node_id)
        return after

    async def abandon(self, task_id: str) -> None:
        """Stop and forget a prompt whose task was handed to another node meanwhile."""
        logger.warning("task moved to another node; dropping it here", task_id=task_id)
        await self._stop_in_comfy(task_id)
        await self._owned.remove(task_id)

    async def queue_position(self, task: TaskRecord) -> int | None:
        """Prompts ahead of this one in ComfyUI's queue, while it waits there."""
        if task.status not in _WAITING or task.node_id != self.node_id:
            return None
        try:
            return (await self._recent_queue()).position(task.id)
        except ComfyUnavailable:
            return None

    async def _recent_queue(self) -> QueueState:
        """ComfyUI's queue, at most QUEUE_SNAPSHOT_S old: status reads of many waiting tasks
        then cost one request to ComfyUI, not one each."""
        now = time.monotonic()
        if self._queue_snapshot is None or now - self._queue_snapshot[0] > QUEUE_SNAPSHOT_S:
            self._queue_snapshot = (now, await self._comfy.get_queue())
        return self._queue_snapshot[1]

    def _prepare(self, request: GenerateRequest) -> Expansion:
        """The graph to run: the request's own, or its template expanded with its params."""
        if request.prompt is not None:
            return Expansion(graph=request.prompt, params={})
        template = self._templates.get(request.workflow or "")
        resolved = template.resolve(request.params)
        template.check_image_sizes(resolved, self._max_image_bytes)
        return template.expand(resolved)

    async def _with_uploaded_images(self, task_id: str, work: Expansion) -> dict[str, Any]:
        """Upload the request's images to this node's ComfyUI and point their inputs at them."""
        graph = work.graph
        for image in work.images:
            upload = await self._comfy.upload_image(
                image.data, f"{task_id}-{image.param}.{image.extension}",
                subfolder=UPLOAD_SUBFOLDER, overwrite=True,
            )  # fmt: skip
            for target in image.targets:
                graph[target.node]["inputs"][target.input] = upload.image_ref
        return graph

    def _dispatched_here(self, task: TaskRecord) -> bool:
        """A task the balancer created and handed to this node, not yet sent to ComfyUI."""
        return task.node_id == self.node_id and task.status is TaskStatus.DISPATCHED

    async def _claim_attempt(self, task: TaskRecord) -> bool:
        key = self._keys.task_submission(task.id, task.attempts)
        claimed = await self._redis.set(key, self.node_id, nx=True, ex=self._retention_s)
        return bool(claimed)

    async def _release_attempt(self, task: TaskRecord) -> None:
        await self._redis.delete(self._keys.task_submission(task.id, task.attempts))

    async def _resend(self, task: TaskRecord, work: Expansion) -> Submission:
        """The same attempt sent again (its sender lost the answer, or this service died while
        handling it): adopt the prompt if ComfyUI has it, submit it if it never got there."""
        if task.submitted_at is not None or task.status is not TaskStatus.DISPATCHED:
            return Submission(task, created=False)
        if await self._comfy_knows(task.id, history_too=True):
            return await self._adopt(task)
        return await self._send_to_comfy(task, work, created=False)

    async def _adopt(self, task: TaskRecord) -> Submission:
        logger.warning("prompt already in comfyui; following it instead of submitting again")
        await self._owned.add(task.id)
        adopted = await self._store.update(
            task.id, lambda r: r.model_copy(update={"submitted_at": utc_now()})
        )
        return Submission(adopted, created=True)

    async def _send_to_comfy(self, task: TaskRecord, work: Expansion, created: bool) -> Submission:
        if task.attempts > 1 and await self._comfy_knows(task.id, history_too=False):
            # An earlier attempt still waits or runs here (this node was taken for dead):
            # submitting the prompt id again would run it twice.
            return await self._adopt(task)
        self._owned.expect(task.id)
        try:
            prompt = await self._with_uploaded_images(task.id, work)
            result = await self._comfy.submit(prompt, prompt_id=task.id, client_id=self.client_id)
        except PromptRejected as exc:
            self._owned.unexpect(task.id)
            await self._reject(task, exc)
            raise
        except ComfyUnavailable:
            if not await self._comfy_knows(task.id, history_too=True):
                self._owned.unexpect(task.id)
                await self._forget(task, created)
                raise
            logger.warning("prompt reached ComfyUI although the submit call failed")
            result = None
        await self._owned.add(task.id)
        logger.info("task submitted to comfyui")
        warnings = result.node_errors if result is not None else {}
        if created and not warnings:
            # A task created here was stamped at creation; only a placement by the balancer
            # needs the mark that tells it the attempt reached ComfyUI.
            return Submission(task, created=True)
        accepted: dict[str, Any] = {"submitted_at": utc_now()}
        if warnings:
            accepted["warnings"] = warnings
        task = await self._store.update(task.id, lambda r: r.model_copy(update=accepted))
        return Submission(task, created=True)

    async def _reject(self, task: TaskRecord, exc: PromptRejected) -> None:
        error = TaskError(
            type=ErrorType.VALIDATION,
            message=f"ComfyUI rejected the prompt: {exc.error_message}",
            details={"error": exc.error, "node_errors": exc.node_errors},
        )
        await self._store.transition(task.id, TaskStatus.FAILED, error=error, finished_at=utc_now())
        logger.info("prompt rejected by comfyui", error_type=exc.error_type)

    async def _comfy_knows(self, task_id: str, *, history_too: bool) -> bool:
        """Is the prompt queued or running in ComfyUI (or, with ``history_too``, finished
        there)? An unreachable ComfyUI counts as no."""
        try:
            if (await self._comfy.get_queue()).position(task_id) is not None:
                return True
            return history_too and await self._comfy.get_history(task_id) is not None
        except ComfyUnavailable:
            return False

    async def _forget(self, task: TaskRecord, created: bool) -> None:
        """The submission never reached ComfyUI: leave no trace, so the caller (or the
        balancer, which owns its tasks) can simply try again."""
        await self._release_attempt(task)
        if created:
            await self._store.delete(task.id)

    async def _stop_in_comfy(self, task_id: str) -> None:
        try:
            await self._comfy.delete_from_queue([task_id])
            await self._comfy.interrupt(task_id)
        except ComfyUnavailable as exc:
            # Unreachable ComfyUI runs nothing we could stop; reconciliation tidies up later.
            logger.warning("could not stop the prompt in comfyui", task_id=task_id, error=str(exc))
