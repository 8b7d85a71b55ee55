"""How attempts end on this node: finished by ComfyUI, failed for a reason of ours, cancelled by
the caller, or withdrawn because the task moved on.

Each end is a lifecycle event naming its attempt, so the store refuses it when the attempt is
no longer the task's current one: a node that was taken for dead never completes a task that
now runs elsewhere, it only withdraws the prompt from its ComfyUI. A prompt stays followed
until ComfyUI confirmed it stopped, so one that could not be withdrawn (ComfyUI unreachable)
is withdrawn by the next reconciliation, before it can start.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

from loguru import logger

from comfy_service.comfy_results import ended_from_history
from comfy_service.errors import NotOnThisNode
from comfy_service.keeping import OutputKeeper
from comfy_service.memory import MemoryRelief
from comfy_service.prompts import FollowedPrompts, Prompt
from comfy_shared.comfyui import ComfyClient, ComfyError, ComfyUnavailable, HistoryEntry
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.lifecycle import Cancelled, Ended, Refused, current_attempt
from comfy_shared.models import UPLOAD_SUBFOLDER, ErrorType, TaskError, TaskRecord
from comfy_shared.outputs.store import StoreUnavailable
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore


def _blank_png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    pixels = zlib.compress(b"\x00\x80")  # filter byte, one grey pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


BLANK_PNG = _blank_png()


class TaskEndings:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        comfy: ComfyClient,
        prompts: FollowedPrompts,
        node_id: str,
        keeper: OutputKeeper,
        memory: MemoryRelief,
    ) -> None:
        self._keeper = keeper
        self._memory = memory
        self._store = store
        self._queue = queue
        self._comfy = comfy
        self._prompts = prompts
        self._node_id = node_id

    async def finish(self, prompt: Prompt, entry: HistoryEntry | None = None) -> TaskRecord | None:
        """Record the result of a prompt ComfyUI has finished, reading its history if needed."""
        entry = entry or await self._comfy.get_history(prompt.prompt_id)
        if entry is None:
            return None
        ended, held = await self._stored(prompt, ended_from_history(prompt.attempt, entry))
        if ended.error is not None:
            with logger.contextualize(task_id=prompt.task_id):  # in the task's timeline
                await self._memory.relieve(ended.error)  # before the retry can come back here
        final = await self._record(prompt, ended)
        if final is None and held:
            await self._keeper.release(prompt.task_id)  # the attempt was over: not its outputs
        await self._prompts.remove(prompt)  # ComfyUI is done with it
        return final

    async def _stored(self, prompt: Prompt, ended: Ended) -> tuple[Ended, bool]:
        """A successful end once its outputs are in the output store (and whether this call
        held them); a failure of ours when they cannot be stored."""
        if ended.error is not None or not ended.outputs:
            return ended, False
        try:
            task = await self._store.get(prompt.task_id)
        except TaskNotFound:
            return ended, False  # nothing to record it on
        if current_attempt(task) != prompt.attempt:
            return ended, False  # moved on: the end will be refused, and another node stores
        try:
            outputs, held = await self._keeper.keep(task, ended.outputs, ended.at)
        except (StoreUnavailable, ComfyError) as exc:
            logger.error("outputs not stored", task_id=prompt.task_id, error=str(exc))
            message = f"the outputs could not be stored: {exc}"
            error = TaskError(type=ErrorType.SERVICE, message=message)
            return Ended(prompt.attempt, error=error, at=ended.at), False
        return replace(ended, outputs=outputs), held

    async def fail(self, prompt: Prompt, error: TaskError) -> TaskRecord | None:
        """Fail the attempt for a reason of ours (a time limit, a lost prompt, ComfyUI down) and
        stop its prompt. None if the attempt was over already."""
        ended = await self._record(prompt, Ended(prompt.attempt, error=error))
        await self._stop(prompt)
        return ended

    async def cancel(self, task_id: str) -> TaskRecord:
        """End the task as cancelled, then take its prompt out of ComfyUI (dequeued if it waits,
        interrupted if it runs; no other prompt is touched)."""
        record = await self._store.get(task_id)
        if record.node_id != self._node_id and not record.status.is_terminal:
            raise NotOnThisNode(task_id, record.node_id)
        try:
            cancelled = await self._store.apply(task_id, Cancelled())
        except Refused as refused:
            raise InvalidTransition(task_id, refused.record.status, TaskStatus.CANCELLED) from None
        logger.info("task cancelled", task_id=task_id)
        prompt_id = prompt_id_for(task_id, record.attempts)
        await self._stop(self._prompts.prompt(prompt_id, task_id, record.attempts))
        await self._scrub_inputs(cancelled)
        return cancelled

    async def withdraw(self, prompt: Prompt, reason: str, task: TaskRecord | None = None) -> None:
        """Stop and forget a prompt whose attempt is over (the task moved on, or ended)."""
        logger.warning("prompt withdrawn from comfyui", task_id=prompt.task_id, reason=reason)
        await self._stop(prompt)
        if task is not None:
            await self._scrub_inputs(task)

    async def forget(self, prompt: Prompt) -> None:
        """Stop following a prompt ComfyUI no longer holds."""
        await self._prompts.remove(prompt)

    async def _record(self, prompt: Prompt, ended: Ended) -> TaskRecord | None:
        """Store how the attempt ended; a failure the task's retry policy covers sends it back
        to the balancer's queue. None when the attempt was over already."""
        try:
            after = await self._store.apply(prompt.task_id, ended)
        except TaskNotFound:
            return None
        except Refused as refused:
            logger.debug("attempt end not recorded", task_id=prompt.task_id, reason=str(refused))
            await self._scrub_inputs(refused.record)
            return None
        _log_end(after, ended)
        if after.status is TaskStatus.QUEUED:
            await self._queue.requeue(prompt.task_id, self._node_id)
        await self._scrub_inputs(after)
        return after

    async def _scrub_inputs(self, task: TaskRecord) -> None:
        """ComfyUI cannot delete an input file: each of the task's is overwritten with one
        blank pixel once its attempt here is over, so nothing can read it afterwards."""
        for name in task.input_files:
            try:
                await self._comfy.upload_image(
                    BLANK_PNG, name, subfolder=UPLOAD_SUBFOLDER, overwrite=True
                )
            except ComfyError as exc:
                logger.warning("could not blank an input file", task_id=task.id, error=str(exc))
                return

    async def _stop(self, prompt: Prompt) -> None:
        try:
            await self._comfy.cancel_prompt(prompt.prompt_id)
        except ComfyUnavailable as exc:
            # Still followed: the next reconciliation withdraws it once ComfyUI answers.
            logger.warning("could not stop the prompt in comfyui yet", error=str(exc))
            return
        await self._prompts.remove(prompt)


def _log_end(after: TaskRecord, ended: Ended) -> None:
    with logger.contextualize(task_id=after.id):
        reason = ended.error.message if ended.error else None
        if after.status is TaskStatus.QUEUED:
            logger.warning("task back in the queue for another node", reason=reason)
        elif after.status is TaskStatus.SUCCEEDED:
            logger.info("task finished", status=after.status.value)
        else:
            logger.warning("task failed", reason=reason)
