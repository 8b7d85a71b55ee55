"""Late binding: a task leaves the queue only when a capable node has a free slot.

The loop wakes on signals (a task was queued, a task ended, a node changed) and on a short
tick, so it reacts within milliseconds and still notices what no signal announces (a health
key that expired). Each cycle first sweeps the placements (frees slots of ended tasks, takes
tasks back from dead nodes, re-sends placements a crash interrupted), then places tasks.

Placement is exactly-once: claiming is atomic in Redis (see ``TaskQueue.claim``), and a
re-sent placement carries the same attempt number, which the service runs at most once.
Several balancer replicas can run this loop against one Redis.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger

from comfy_balancer.placement import dispatched_to, rejected_by_node, taken_back
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_balancer.scheduling import Strategy, pick_node
from comfy_balancer.service_client import NodeUnreachable, ServiceClient
from comfy_shared.capabilities import missing_capabilities
from comfy_shared.clock import now_ms
from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.signals import NODE_CHANGED, Signals
from comfy_shared.task_queue import TASK_QUEUED, TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TASK_ENDED, TaskStore

STUCK_CLAIM_MS = 30_000
"""A claim whose record never became 'dispatched' (the balancer died in between) is this old
before the task is put back in the queue."""
_PROMPT_CACHE_SIZE = 2048


@dataclass
class SweepReport:
    released: list[str] = field(default_factory=list)
    taken_back: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        registry: NodeRegistry,
        nodes_client: ServiceClient,
        signals: Signals,
        strategy: Strategy,
        policy: RetryPolicy,
        lookahead: int,
        dispatch_timeout_s: float,
    ) -> None:
        self._store = store
        self._queue = queue
        self._registry = registry
        self._nodes = nodes_client
        self._signals = signals
        self._strategy = strategy
        self._policy = policy
        self._lookahead = lookahead
        self._dispatch_timeout_ms = dispatch_timeout_s * 1000
        self._prompts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._sending: set[asyncio.Task[None]] = set()
        # Sends to one node go one at a time, so ComfyUI queues them in placement order.
        self._node_locks: dict[str, asyncio.Lock] = {}

    async def run(self, tick_s: float) -> None:
        """Cycle on every signal, and at least every ``tick_s`` seconds."""
        async with self._signals.subscribe(TASK_QUEUED, TASK_ENDED, NODE_CHANGED) as wakeups:
            while True:
                await self.cycle()
                if await wakeups.next(timeout_s=tick_s) is not None:
                    while await wakeups.next(timeout_s=0.001) is not None:
                        pass  # a burst of signals needs one cycle, not one each

    async def cycle(self) -> int:
        try:
            nodes = await self._registry.read()
            await self.sweep_once(nodes)
            return await self.dispatch_once(await self._registry.read())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.opt(exception=True).warning("dispatch cycle failed")
            return 0

    async def dispatch_once(self, nodes: list[NodeView]) -> int:
        """Place as many queued tasks as there are free capable slots; returns how many."""
        # Counted up as this cycle places tasks, so the strategy sees each placement (otherwise
        # least-loaded would give one node every task of a cycle until it is full).
        views = {node.node_id: node for node in nodes}
        placed = 0
        for task_id in await self._queue.head(self._lookahead) if _any_free(views) else []:
            ready = [node for node in views.values() if node.free_slots]
            if not ready:
                break
            prompt = await self._prompt(task_id)
            if prompt is None:
                continue
            node = pick_node(ready, _can_run(prompt), self._strategy, await self._tried(task_id))
            if node is None:
                continue  # no free node can run it: later tasks may still fit elsewhere
            claimed = await self._queue.claim(task_id, node.node_id, node.slots)
            if claimed == -1:  # another replica filled it
                views[node.node_id] = replace(node, in_flight=node.slots)
            elif claimed == 1:
                views[node.node_id] = replace(node, in_flight=node.in_flight + 1)
                placed += 1
                await self._place(task_id, node, prompt)
        return placed

    async def sweep_once(self, nodes: list[NodeView]) -> SweepReport:
        """Look at every placement: two round trips for the reads, whatever the cluster size."""
        report = SweepReport()
        by_node = {node.node_id: node for node in nodes}
        placements = await self._queue.dispatched_on(list(by_node))
        task_ids = [task_id for claims in placements.values() for task_id in claims]
        records = await self._store.find_many(task_ids) if task_ids else {}
        for node_id, claims in placements.items():
            for task_id, claimed_ms in claims.items():
                record = records[task_id]
                await self._sweep_task(record, task_id, claimed_ms, by_node[node_id], report)
        return report

    async def stop(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _sweep_task(
        self,
        record: TaskRecord | None,
        task_id: str,
        claimed_ms: float,
        node: NodeView,
        report: SweepReport,
    ) -> None:
        age_ms = now_ms() - claimed_ms
        if (
            record is None
            or record.status.is_terminal
            or (record.node_id not in (None, node.node_id))
        ):
            await self._queue.release(task_id, node.node_id)
            report.released.append(task_id)
        elif record.status is TaskStatus.QUEUED:
            if age_ms > STUCK_CLAIM_MS:
                await self._queue.requeue(task_id, node.node_id)
                report.taken_back.append(task_id)
        elif node.state is NodeState.DEAD:
            await self._take_back(task_id, node.node_id, "the node stopped publishing health")
            report.taken_back.append(task_id)
        elif (
            record.status is TaskStatus.DISPATCHED
            and record.submitted_at is None
            and age_ms > self._dispatch_timeout_ms
            and not self._is_sending(task_id)
        ):
            self._send_in_background(record, node)
            report.resent.append(task_id)

    async def _place(self, task_id: str, node: NodeView, prompt: dict[str, Any]) -> None:
        try:
            record = await self._store.update(
                task_id, lambda r: dispatched_to(r, node.node_id, self._policy)
            )
        except (InvalidTransition, TaskNotFound):
            await self._queue.release(task_id, node.node_id)  # cancelled while we claimed it
            return
        self._prompts[task_id] = prompt
        logger.info(
            "task dispatched", task_id=task_id, to_node=node.node_id, attempt=record.attempts
        )
        self._send_in_background(record, node)

    def _send_in_background(self, record: TaskRecord, node: NodeView) -> None:
        task = asyncio.create_task(self._send(record, node), name=f"send-{record.id}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _is_sending(self, task_id: str) -> bool:
        return any(task.get_name() == f"send-{task_id}" for task in self._sending)

    async def _send(self, record: TaskRecord, node: NodeView) -> None:
        prompt = await self._prompt(record.id)
        if prompt is None or node.url is None:
            return
        body = {"task_id": record.id, "priority": record.priority, "client": record.client}
        body |= await self._work_of(record, prompt)
        with logger.contextualize(task_id=record.id, attempt=record.attempts):
            try:
                async with self._node_locks.setdefault(node.node_id, asyncio.Lock()):
                    answer = await self._nodes.generate(node.url, body)
            except NodeUnreachable as exc:
                await self._refused(record.id, node.node_id, f"dispatch failed: {exc}")
                return
            if answer.status in (200, 202):
                return
            if answer.status == 422:
                await self._store.update(record.id, lambda r: rejected_by_node(r, answer.body))
                await self._queue.release(record.id, node.node_id)
                return
            await self._refused(
                record.id,
                node.node_id,
                f"node answered {answer.status}: {answer.body.get('detail')}",
            )

    async def _work_of(self, record: TaskRecord, prompt: dict[str, Any]) -> dict[str, Any]:
        """A template task is sent as its template and resolved values (the node uploads its
        images to its own ComfyUI); any other task as its graph."""
        if record.workflow is None:
            return {"prompt": prompt}
        params = await self._store.get_params(record.id)
        return {"workflow": record.workflow, "params": params or {}}

    async def _refused(self, task_id: str, node_id: str, reason: str) -> None:
        logger.warning("dispatch refused; trying another node", to_node=node_id, reason=reason)
        await self._registry.record_failure(node_id)
        await self._take_back(task_id, node_id, reason)

    async def _take_back(self, task_id: str, node_id: str, reason: str) -> None:
        try:
            record = await self._store.update(task_id, lambda r: taken_back(r, node_id, reason))
        except TaskNotFound:
            await self._queue.release(task_id, node_id)
            return
        if record.status is TaskStatus.QUEUED and record.node_id is None:
            logger.warning(
                "task back in the queue", task_id=task_id, from_node=node_id, reason=reason
            )
            await self._queue.requeue(task_id, node_id)
        else:
            await self._queue.release(task_id, node_id)

    async def _tried(self, task_id: str) -> frozenset[str]:
        """Nodes an earlier attempt of this task ended on (only retried tasks have any)."""
        record = await self._store.find(task_id)
        if record is None or not record.attempt_log:
            return frozenset()
        return frozenset(attempt.node_id for attempt in record.attempt_log)

    async def _prompt(self, task_id: str) -> dict[str, Any] | None:
        prompt = self._prompts.get(task_id)
        if prompt is None:
            prompt = await self._store.get_prompt(task_id)
            if prompt is None:
                return None
            self._prompts[task_id] = prompt
            while len(self._prompts) > _PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return prompt


def _any_free(views: dict[str, NodeView]) -> bool:
    return any(node.free_slots for node in views.values())


def _can_run(prompt: dict[str, Any]) -> Callable[[NodeView], bool]:
    def can_run(node: NodeView) -> bool:
        return not missing_capabilities(prompt, node.capabilities)

    return can_run
