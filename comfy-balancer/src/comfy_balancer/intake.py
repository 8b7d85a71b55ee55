"""Accepting and cancelling tasks at the balancer, for a caller (an API key's tenant).

Accepting writes the task to Redis and into the durable queue before the caller gets 202,
after these checks: the key's highest priority (403), GPU-second budgets and submits per
minute (429); an
``Idempotency-Key`` (or a caller-chosen task id) already used by the tenant returns the
existing task; a full queue, or as many tasks of the key waiting as it may have, answers 429;
a graph the live nodes' ComfyUIs would refuse answers 422 with ComfyUI's own errors
(``FleetCatalog.check``), one no live node could run whole 422 with what each node lacks.
A caller sees and cancels only its tenant's tasks (an admin: all); another tenant's task is
"not found". With ``--submit-replicas``, a new task is answered only once that many Redis
replicas hold it, else 503 ``not_replicated`` (the task stays queued).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from comfy_balancer.auth.rate_limit import Quota, SubmitRateLimiter
from comfy_balancer.budgets import Budgets
from comfy_balancer.costs import CostModel
from comfy_balancer.errors import (
    BandNotAllowed,
    KeyQueueFull,
    NoCapableNode,
    NodeUnavailable,
    NotReplicated,
    PriorityNotAllowed,
    QueueFull,
    TaskIdTaken,
)
from comfy_balancer.fleet_catalog import FleetCatalog
from comfy_balancer.metrics import BalancerMetrics
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_balancer.service_client import NodeUnreachable, ServiceClient
from comfy_shared.access import Caller
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.capabilities import missing_capabilities
from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.idempotency import IdempotencyKeys
from comfy_shared.lifecycle import Cancelled, Refused
from comfy_shared.models import (
    UPLOAD_SUBFOLDER,
    Band,
    InputFile,
    PromptOrigin,
    RetryPolicy,
    TaskRecord,
    new_task_id,
)
from comfy_shared.outputs.inputs import InputStash
from comfy_shared.task_queue import (
    FIFO_FLOW,
    KeyAtCapacity,
    KeyQuota,
    QueueAtCapacity,
    Share,
    Submitted,
    TaskQueue,
)
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_shared.workflows import Expansion, TemplateLibrary

RETRY_AFTER_S = 5
CAPABILITIES_MAX_AGE_S = 1.0
"""How old a read of the nodes may be for the capability check (nodes change rarely; the
dispatcher reads them many times a second anyway)."""


@dataclass(frozen=True, slots=True)
class StagedInput:
    """A graph input naming a file the caller sent beforehand (the ComfyUI gateway's
    uploads): the file goes with the task as a template's image does, and the input is
    pointed at where each node stages it (checked before: the caller's graph may not name
    the staging folder itself)."""

    node_id: str
    input_name: str
    file: InputFile


@dataclass(frozen=True, slots=True)
class Intake:
    task: TaskRecord
    created: bool
    position: int | None = None
    """Tasks ahead of a task queued by this request (None for an existing task)."""
    quota: Quota | None = None
    """What is left of the key's submits per minute, when it has such a limit."""
    node_errors: dict[str, Any] = field(default_factory=dict)
    """ComfyUI's ``node_errors`` of branches of the graph that will not run (the rest does)."""
    replicated: bool = True
    """False: fewer Redis replicas than asked confirmed the task's write in time."""


class TaskIntake:
    def __init__(
        self,
        *,
        store: TaskStore,
        stash: InputStash,
        queue: TaskQueue,
        registry: NodeRegistry,
        fleet_catalog: FleetCatalog,
        nodes_client: ServiceClient,
        policy: RetryPolicy,
        templates: TemplateLibrary,
        max_queue: int,
        rate_limiter: SubmitRateLimiter,
        costs: CostModel,
        budgets: Budgets,
        metrics: BalancerMetrics,
        fair: bool = True,
    ) -> None:
        """``fair``: tenants take turns in a band (else one flow per band: priority, then
        arrival); ``metrics`` counts accepted and refused submits."""
        self._store = store
        self._stash = stash
        self._idempotency = IdempotencyKeys(store)
        self._rate_limiter = rate_limiter
        self._budgets = budgets
        self._queue = queue
        self._registry = registry
        self._fleet_catalog = fleet_catalog
        self._nodes = nodes_client
        self._policy = policy
        self._templates = templates
        self._max_queue = max_queue
        self._fair = fair
        self._costs = costs
        self._metrics = metrics

    @property
    def budgets(self) -> Budgets:
        """The budgets submits are checked against (the metrics read them too)."""
        return self._budgets

    async def accept(
        self,
        request: GenerateRequest,
        idempotency_key: str | None,
        caller: Caller,
        origin: PromptOrigin | None = None,
        staged: Sequence[StagedInput] = (),
    ) -> Intake:
        """Queue the request's task for ``caller`` (``origin``: it came through the ComfyUI
        gateway, which keeps what the prompt brought beside the task; ``staged``: the files
        its graph names that the gateway keeps for the caller)."""
        try:
            intake = await self._accept(request, idempotency_key, caller, origin, staged)
        except Exception as error:
            self._metrics.count_rejected(error)
            raise
        if intake.created:
            task = intake.task
            self._metrics.count_submitted(
                tenant=task.tenant, workflow=task.workflow, band=task.band
            )
        else:
            self._metrics.count_idempotent_hit()
        return intake

    async def _accept(
        self,
        request: GenerateRequest,
        idempotency_key: str | None,
        caller: Caller,
        origin: PromptOrigin | None,
        staged: Sequence[StagedInput],
    ) -> Intake:
        limits = caller.limits
        if limits.max_priority is not None and request.priority > limits.max_priority:
            raise PriorityNotAllowed(request.priority, limits.max_priority)
        band = request.band or caller.share.band
        if not caller.share.allows(band):
            raise BandNotAllowed(band, caller.share.max_band or caller.share.band)
        await self._budgets.check(caller)
        quota = None
        if limits.submits_per_minute is not None and caller.key_id is not None:
            quota = await self._rate_limiter.take(caller.key_id, limits.submits_per_minute)
        task_id = request.task_id or new_task_id()
        async with self._idempotency.first_use(
            caller.tenant, idempotency_key, task_id, request
        ) as earlier:
            if earlier is not None:
                return Intake(self._visible(earlier, caller), created=False, quota=quota)
            intake = await self._enqueue(task_id, request, caller, band, origin, staged)
        if not intake.replicated:
            # Raised past the idempotency key, which stays bound: the task exists, and a
            # retry with the key must find it rather than queue a second one.
            raise NotReplicated(task_id, RETRY_AFTER_S)
        return dataclasses.replace(intake, quota=quota)

    async def cancel(self, task_id: str, caller: Caller) -> TaskRecord:
        """Removed from the queue while it waits; otherwise cancelled by the node it is on."""
        record = self._visible(await self._store.get(task_id), caller)
        if record.status.is_terminal:
            raise InvalidTransition(task_id, record.status, TaskStatus.CANCELLED)
        if await self._queue.remove(task_id) or record.node_id is None:
            return await self._cancel_here(task_id)
        return await self._cancel_on_node(record)

    async def _enqueue(
        self,
        task_id: str,
        request: GenerateRequest,
        caller: Caller,
        band: Band,
        origin: PromptOrigin | None,
        staged: Sequence[StagedInput],
    ) -> Intake:
        # Only a caller-chosen id can be taken already; the submit script checks again.
        if request.task_id and (existing := await self._store.find(task_id)) is not None:
            return Intake(self._visible(existing, caller, taken=True), created=False)
        work = _with_staged(self._expand(request), staged)
        checked = await self._fleet_catalog.check(work.graph)
        live = await self._check_capable(work.graph)
        cost_s = await self._costs.predict(work.graph, [node.speed for node in live if node.speed])
        record = TaskRecord(
            id=task_id,
            priority=request.priority,
            band=band,
            output_ttl_s=request.output_ttl_s,
            predicted_gpu_s=round(cost_s, 3),
            client=request.client,
            tenant=caller.tenant,
            key_id=caller.key_id,
            retry=self._policy,
            workflow=request.workflow,
            params=work.params,
            previews=request.previews,
            input_files=[file.name for file in work.inputs],
            webhook_url=request.webhook_url or caller.webhook_url,  # checked by the route
        )
        kept = await self._stash.keep(task_id, work.inputs)
        try:
            submitted = await self._submit(
                record, work.graph, kept.references, origin, caller, cost_s
            )
        except Exception:
            await self._stash.let_go(kept)
            raise
        if not submitted.created:
            await self._stash.let_go(kept)
            return Intake(
                self._visible(submitted.task, caller, taken=True),
                created=False,
                replicated=submitted.replicated,
            )
        logger.info(
            "task queued", task_id=task_id, band=band, priority=request.priority, cost_s=cost_s
        )
        node_errors = checked.node_errors if checked is not None else {}
        return Intake(
            submitted.task,
            submitted.created,
            submitted.position,
            node_errors=node_errors,
            replicated=submitted.replicated,
        )

    async def _submit(
        self,
        record: TaskRecord,
        graph: dict[str, Any],
        inputs: dict[str, str],
        origin: PromptOrigin | None,
        caller: Caller,
        cost_s: float,
    ) -> Submitted:
        limits = caller.limits
        try:
            return await self._queue.submit(
                record,
                graph,
                inputs=inputs,
                origin=origin,
                max_pending=self._max_queue,
                limits=KeyQuota(max_queued=limits.max_queued, max_running=limits.max_running),
                share=Share(
                    flow=caller.tenant if self._fair else FIFO_FLOW,
                    cost_s=cost_s,
                    weight=caller.share.weight,
                    group=caller.share.group or "",
                ),
            )
        except QueueAtCapacity:
            raise QueueFull(self._max_queue, RETRY_AFTER_S) from None
        except KeyAtCapacity:
            raise KeyQueueFull(limits.max_queued or 0, RETRY_AFTER_S) from None

    def _expand(self, request: GenerateRequest) -> Expansion:
        return self._templates.expand_request(
            prompt=request.prompt,
            workflow=request.workflow,
            params=request.params,
        )

    @staticmethod
    def _visible(record: TaskRecord, caller: Caller, *, taken: bool = False) -> TaskRecord:
        """The record, if the caller may see it. Another tenant's task is "not found"; an id
        another tenant took is refused as taken (saying no more than that)."""
        if caller.sees(record):
            return record
        raise TaskIdTaken(record.id) if taken else TaskNotFound(record.id)

    async def _check_capable(self, prompt: dict[str, Any]) -> list[NodeView]:
        """The live nodes. 422 only when live nodes exist and none could run the graph; with
        no live node at all, the task waits for one (a cluster restart must not turn work
        away)."""
        nodes = await self._registry.recent(max_age_s=CAPABILITIES_MAX_AGE_S)
        live = [n for n in nodes if n.state is not NodeState.DEAD]
        lacking = {n.node_id: missing_capabilities(prompt, n.capabilities) for n in live}
        if lacking and all(lacking.values()):
            raise NoCapableNode({node: missing.model_dump() for node, missing in lacking.items()})
        return live

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


def _with_staged(work: Expansion, staged: Sequence[StagedInput]) -> Expansion:
    graph = dict(work.graph)
    for item in staged:
        node = graph[item.node_id]
        staged_name = f"{UPLOAD_SUBFOLDER}/{item.file.name}"
        graph[item.node_id] = {**node, "inputs": {**node["inputs"], item.input_name: staged_name}}
    return Expansion(graph, work.params, [*work.inputs, *(item.file for item in staged)])
