"""Taking a task on this node: store it (or find the balancer's placement), then send the
attempt's prompt to ComfyUI exactly once.

A template is expanded once, where the task is accepted (here, or at the balancer), into the
graph ComfyUI runs; its image inputs are stored with the task and uploaded right before the
prompt is sent. Each attempt has its own prompt id (``prompt_id_for``), and sending is
idempotent: a task record is created at most once (compare-and-set in Redis), and each attempt
is sent at most once (its submission claim), so a retried request never runs twice. The same
attempt asked for again (its sender lost the answer) adopts the prompt ComfyUI already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from loguru import logger

from comfy_service.ending import TaskEndings
from comfy_service.prompts import FollowedPrompts, Prompt
from comfy_shared.access import DEFAULT_TENANT
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.clock import utc_now
from comfy_shared.comfyui import ComfyClient, ComfyUnavailable, PromptRejected
from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_shared.idempotency import IdempotencyKeys
from comfy_shared.lifecycle import Accepted, AttemptOver, Ended, Refused
from comfy_shared.models import (
    UPLOAD_SUBFOLDER,
    Attempt,
    ErrorType,
    InputFile,
    TaskError,
    TaskRecord,
    new_task_id,
)
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import Expansion, TemplateLibrary

PREVIEWS_ON: Final = {"preview_method": "auto"}
"""The prompt's ``extra_data`` for a task that wants previews: ComfyUI makes them for this
prompt whatever its ``--preview-method`` (none by default)."""


@dataclass(frozen=True, slots=True)
class Submission:
    task: TaskRecord
    created: bool
    """False when the id was already known: the existing task is returned, nothing re-runs."""


class Submitter:
    def __init__(
        self,
        *,
        store: TaskStore,
        stash: InputStash,
        comfy: ComfyClient,
        prompts: FollowedPrompts,
        endings: TaskEndings,
        templates: TemplateLibrary,
        node_id: str,
        client_id: str,
    ) -> None:
        self._store = store
        self._stash = stash
        self._idempotency = IdempotencyKeys(store)
        self._comfy = comfy
        self._prompts = prompts
        self._endings = endings
        self._templates = templates
        self._node_id = node_id
        self._client_id = client_id

    async def submit(
        self, request: GenerateRequest, idempotency_key: str | None = None
    ) -> Submission:
        task_id = request.task_id or new_task_id()
        async with self._idempotency.first_use(
            DEFAULT_TENANT, idempotency_key, task_id, request
        ) as earlier:
            if earlier is not None:
                return Submission(earlier, created=False)
            return await self._submit(task_id, request)

    async def _submit(self, task_id: str, request: GenerateRequest) -> Submission:
        if request.task_id and (known := await self._store.find(task_id)) is not None:
            return await self._known_task(known, request)
        work = self._expand(request)
        record = self._new_record(task_id, request, work)
        kept = await self._stash.keep(task_id, work.inputs)
        try:
            task, created = await self._store.create(record, work.graph, kept.references)
        except Exception:
            await self._stash.let_go(kept)
            raise
        if not created:  # the same id came in twice at once: the other request sends it
            await self._stash.let_go(kept)
            return Submission(task, created=False)
        return await self._attempt(task, work.graph, work.inputs, created=True)

    async def _known_task(self, task: TaskRecord, request: GenerateRequest) -> Submission:
        """A task the balancer placed here is sent (its graph was made at the balancer's
        intake, its inputs are stored); any other known id answers with its task."""
        if not self._placed_here(task):
            return Submission(task, created=False)
        graph = request.prompt or await self._store.get_prompt(task.id) or {}
        return await self._attempt(task, graph, None, created=False)

    async def _attempt(
        self,
        task: TaskRecord,
        graph: dict[str, Any],
        inputs: list[InputFile] | None,
        *,
        created: bool,
    ) -> Submission:
        """Send the task's current attempt to ComfyUI, once (``inputs`` None: read them)."""
        prompt = self._prompts.prompt(prompt_id_for(task.id, task.attempts), task.id, task.attempts)
        with logger.contextualize(task_id=task.id, attempt=task.attempts):
            if not await self._store.claim_submission(task.id, task.attempts, self._node_id):
                return await self._send_again(task, prompt, graph)
            if inputs is None:
                inputs = await self._stored_inputs(task)
            return await self._send(task, prompt, graph, inputs, created=created)

    def _expand(self, request: GenerateRequest) -> Expansion:
        return self._templates.expand_request(
            prompt=request.prompt,
            workflow=request.workflow,
            params=request.params,
        )

    def _new_record(self, task_id: str, request: GenerateRequest, work: Expansion) -> TaskRecord:
        attempt = Attempt(number=1, node_id=self._node_id, prompt_id=prompt_id_for(task_id, 1))
        return TaskRecord(  # on this node from the start: its first and only attempt
            id=task_id,
            submitted_at=utc_now(),
            node_id=self._node_id,
            priority=request.priority,
            output_ttl_s=request.output_ttl_s,
            attempts=1,
            attempt_log=[attempt],
            client=request.client,
            workflow=request.workflow,
            params=work.params,
            input_files=[file.name for file in work.inputs],
        )

    def _placed_here(self, task: TaskRecord) -> bool:
        """A task the balancer created and handed to this node, not yet sent to ComfyUI."""
        return task.node_id == self._node_id and task.status is TaskStatus.DISPATCHED

    async def _send_again(
        self, task: TaskRecord, prompt: Prompt, graph: dict[str, Any]
    ) -> Submission:
        """The same attempt asked for again (its sender lost the answer, or this service died
        while handling it): adopt the prompt if ComfyUI has it, send it if it never got there."""
        if task.submitted_at is not None or task.status is not TaskStatus.DISPATCHED:
            return Submission(task, created=False)
        if await self._comfy_knows(prompt.prompt_id):
            logger.warning("prompt already in comfyui; following it instead of sending it again")
            await self._prompts.add(prompt)
            return Submission(await self._accepted(task, prompt, {}), created=True)
        inputs = await self._stored_inputs(task)
        return await self._send(task, prompt, graph, inputs, created=False)

    async def _send(
        self,
        task: TaskRecord,
        prompt: Prompt,
        graph: dict[str, Any],
        inputs: list[InputFile],
        *,
        created: bool,
    ) -> Submission:
        """Upload the inputs and queue the prompt (``created``: the task was created by this
        request, so a failure before ComfyUI got it deletes it again)."""
        self._prompts.expect(prompt)
        try:
            await self._upload(inputs)
            result = await self._comfy.submit(
                graph,
                prompt_id=prompt.prompt_id,
                client_id=self._client_id,
                extra_data=PREVIEWS_ON if task.previews else None,
            )
        except PromptRejected as exc:
            self._prompts.unexpect(prompt)
            await self._reject(task, prompt, exc)
            raise
        except ComfyUnavailable:
            if not await self._comfy_knows(prompt.prompt_id):
                self._prompts.unexpect(prompt)
                await self._forget(task, created=created)
                raise
            logger.warning("prompt reached comfyui although the submit call failed")
            result = None
        await self._prompts.add(prompt)
        logger.info("task submitted to comfyui", prompt_id=prompt.prompt_id)
        warnings = result.node_errors if result is not None else {}
        if created and not warnings:
            return Submission(task, created=True)  # created here: stamped at creation
        return Submission(await self._accepted(task, prompt, warnings), created=True)

    async def _accepted(
        self, task: TaskRecord, prompt: Prompt, warnings: dict[str, Any]
    ) -> TaskRecord:
        """Mark the attempt as in ComfyUI (the balancer's sweep reads this mark)."""
        try:
            return await self._store.apply(
                task.id, Accepted(prompt.attempt, prompt.prompt_id, warnings)
            )
        except AttemptOver as over:
            # Cancelled or moved while it was being sent: withdrawn now, before it can start.
            await self._endings.withdraw(prompt, over.reason, over.record)
            return over.record
        except Refused as refused:
            return refused.record

    async def _stored_inputs(self, task: TaskRecord) -> list[InputFile]:
        if not task.input_files:
            return []
        return await self._stash.load(await self._store.get_inputs(task.id))

    async def _upload(self, inputs: list[InputFile]) -> None:
        for file in inputs:
            await self._comfy.upload_image(
                file.data, file.name, subfolder=UPLOAD_SUBFOLDER, overwrite=True
            )

    async def _reject(self, task: TaskRecord, prompt: Prompt, exc: PromptRejected) -> None:
        error = TaskError(
            # Prompt ids are made here: ComfyUI refusing one is our fault, not the graph's.
            type=ErrorType.SERVICE
            if exc.error_type == "invalid_prompt_id"
            else ErrorType.VALIDATION,
            message=f"ComfyUI rejected the prompt: {exc.error_message}",
            details={"error": exc.error, "node_errors": exc.node_errors},
        )
        try:
            await self._store.apply(task.id, Ended(prompt.attempt, error=error))
        except Refused:
            return
        logger.info("prompt rejected by comfyui", error_type=exc.error_type)

    async def _comfy_knows(self, prompt_id: str) -> bool:
        """Is the prompt queued, running or finished in ComfyUI? Unreachable counts as no."""
        try:
            if (await self._comfy.get_queue()).position(prompt_id) is not None:
                return True
            return await self._comfy.get_history(prompt_id) is not None
        except ComfyUnavailable:
            return False

    async def _forget(self, task: TaskRecord, *, created: bool) -> None:
        """The submission never reached ComfyUI: leave no trace, so the caller (or the
        balancer, which owns its tasks) can simply try again."""
        await self._store.release_submission(task.id, task.attempts)
        if created:
            await self._store.delete(task)
