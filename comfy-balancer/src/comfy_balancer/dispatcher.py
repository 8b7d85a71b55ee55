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
from typing import Any, TypeVar

from loguru import logger

from comfy_balancer.placement import dispatched_to, rejected_by_node, taken_back, undone
from comfy_balancer.registry import NodeRegistry, NodeState, NodeView
from comfy_balancer.scheduling import UNMEASURED, Strategy, pick_node, with_assumed_speeds
from comfy_balancer.service_client import NodeUnreachable, ServiceClient
from comfy_shared.capabilities import missing_capabilities
from comfy_shared.clock import now_ms, utc_now
from comfy_shared.errors import InvalidTransition, TaskNotFound
from comfy_shared.loops import LoopHandle
from comfy_shared.models import RetryPolicy, TaskRecord
from comfy_shared.signals import NODE_CHANGED, Signals
from comfy_shared.task_queue import TASK_QUEUED, TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TASK_ENDED, TaskStore
from comfy_shared.workload import expected_run_s, sampler_steps

STUCK_CLAIM_MS = 30_000
"""A claim whose record never became 'dispatched' (the balancer died in between) is this old
before the task is put back in the queue."""
OVERLOAD_PAUSE_S = 1.0
"""A node that answered 503 overloaded gets no new task for this long (its Retry-After)."""
MIN_CYCLE_INTERVAL_S = 0.005
"""Cycles woken by signals start at least this far apart (an idle dispatcher reacts at once)."""
_CACHE_SIZE = 4096
T = TypeVar("T")


@dataclass
class SweepReport:
    released: list[str] = field(default_factory=list)
    taken_back: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    still_placed: dict[str, list[TaskRecord]] = field(default_factory=dict)
    """Per node, the tasks it still holds after the sweep."""


@dataclass(frozen=True, slots=True)
class _Work:
    """What the dispatcher needs of a task's graph, read once."""

    prompt: dict[str, Any]
    steps: int


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
        self._work: OrderedDict[str, _Work] = OrderedDict()
        # Nodes earlier attempts of a queued task ended on; read when the task is first seen
        # at the head of the queue, dropped when it is placed.
        self._avoid: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._sending: set[asyncio.Task[None]] = set()
        self._paused_until: dict[str, float] = {}
        # Sends to one node go one at a time, so ComfyUI queues them in placement order.
        self._node_locks: dict[str, asyncio.Lock] = {}

    async def run(self, handle: LoopHandle, tick_s: float) -> None:
        """Cycle on every signal, and at least every ``tick_s`` seconds. Raises when Redis
        fails (its supervisor starts it again): a new subscription, then a full cycle at once,
        so signals lost while it was down do not matter."""
        loop = asyncio.get_running_loop()
        async with self._signals.subscribe(TASK_QUEUED, TASK_ENDED, NODE_CHANGED) as wakeups:
            while True:
                started = loop.time()
                await self.cycle()
                handle.working()
                if await wakeups.next(timeout_s=tick_s) is not None:
                    # Under load signals come in a stream (two per task): one cycle a few ms
                    # later serves all of them, instead of a full cycle for each.
                    await asyncio.sleep(started + MIN_CYCLE_INTERVAL_S - loop.time())
                    while await wakeups.next(timeout_s=0.001) is not None:
                        pass

    async def cycle(self) -> int:
        nodes = await self._registry.read()
        report = await self.sweep_once(nodes)
        return await self.dispatch_once(await self._with_backlog(nodes, report.still_placed))

    async def dispatch_once(self, nodes: list[NodeView]) -> int:
        """Place as many queued tasks as there are free capable slots; returns how many."""
        # Updated as this cycle decides, so each choice sees the ones before it: the tasks
        # placed, and the tasks left waiting for a busy node (that node is busier for the
        # tasks behind them).
        now = asyncio.get_running_loop().time()
        views = {
            node.node_id: node
            if self._paused_until.get(node.node_id, 0.0) <= now
            else replace(node, in_flight=node.slots)  # overloaded a moment ago: no new work
            for node in nodes
        }
        if not _any_free(views):
            return 0
        head = await self._queue.head(self._lookahead)
        await self._learn(head, queued=True)
        placed = 0
        for task_id in head:
            if not _any_free(views):
                break
            work = self._work.get(task_id)
            if work is None:
                continue  # deleted meanwhile
            avoid = self._avoid.get(task_id, frozenset())
            node = pick_node(
                list(views.values()),
                _can_run(work.prompt),
                self._strategy,
                steps=work.steps,
                avoid=avoid,
            )
            if node is None:
                continue  # no node can run it now: later tasks may still fit elsewhere
            run_s = expected_run_s(node.speed or UNMEASURED, work.steps)
            if not node.free_slots:
                views[node.node_id] = replace(node, backlog_s=node.backlog_s + run_s)
                continue
            claimed = await self._queue.claim(task_id, node.node_id, node.slots)
            if claimed == -1:  # another replica filled it
                views[node.node_id] = replace(node, in_flight=node.slots)
            elif claimed == 1:
                views[node.node_id] = replace(
                    node, in_flight=node.in_flight + 1, backlog_s=node.backlog_s + run_s
                )
                placed += 1
                self._avoid.pop(task_id, None)
                await self._place(task_id, node)
        return placed

    async def sweep_once(self, nodes: list[NodeView]) -> SweepReport:
        """Look at every placement: two round trips for the reads, whatever the cluster size."""
        report = SweepReport()
        by_node = {node.node_id: node for node in nodes}
        placements = await self._queue.dispatched_on(list(by_node))
        task_ids = [task_id for claims in placements.values() for task_id in claims]
        records = await self._store.find_many(task_ids) if task_ids else {}
        for node_id, claims in placements.items():
            report.still_placed[node_id] = []
            for task_id, claimed_ms in claims.items():
                record = records[task_id]
                kept = await self._sweep_task(record, task_id, claimed_ms, by_node[node_id], report)
                if kept and record is not None:
                    report.still_placed[node_id].append(record)
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
    ) -> bool:
        """Returns whether the task stays placed on the node."""
        age_ms = now_ms() - claimed_ms
        if (
            record is None
            or record.status.is_terminal
            or (record.node_id not in (None, node.node_id))
        ):
            await self._queue.release(task_id, node.node_id)
            report.released.append(task_id)
            return False
        if record.status is TaskStatus.QUEUED and age_ms > STUCK_CLAIM_MS:
            await self._queue.requeue(task_id, node.node_id)
            report.taken_back.append(task_id)
            return False
        if record.status is not TaskStatus.QUEUED and node.state is NodeState.DEAD:
            await self._take_back(task_id, node.node_id, "the node stopped publishing health")
            report.taken_back.append(task_id)
            return False
        if (
            record.status is TaskStatus.DISPATCHED
            and record.submitted_at is None
            and age_ms > self._dispatch_timeout_ms
            and not self._is_sending(task_id)
        ):
            self._send_in_background(record, node)
            report.resent.append(task_id)
        return True

    async def _place(self, task_id: str, node: NodeView) -> None:
        try:
            record = await self._store.update(
                task_id, lambda r: dispatched_to(r, node.node_id, self._policy)
            )
        except (InvalidTransition, TaskNotFound):
            await self._queue.release(task_id, node.node_id)  # cancelled while we claimed it
            return
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
        await self._learn([record.id])
        work = self._work.get(record.id)
        if work is None or node.url is None:
            return
        body = {"task_id": record.id, "priority": record.priority, "client": record.client}
        body |= await self._work_of(record, work.prompt)
        with logger.contextualize(task_id=record.id, attempt=record.attempts):
            try:
                async with self._node_locks.setdefault(node.node_id, asyncio.Lock()):
                    answer = await self._nodes.generate(node.url, body)
            except NodeUnreachable as exc:
                await self._refused(record.id, node.node_id, f"dispatch failed: {exc}")
                return
            if answer.status in (200, 202):
                return
            if answer.status == 503 and answer.body.get("code") == "overloaded":
                await self._turned_away(record.id, node.node_id)
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

    async def _turned_away(self, task_id: str, node_id: str) -> None:
        """The node was overloaded and did nothing: the task goes back to its place in the
        queue with no attempt spent, and the node gets nothing for a moment."""
        logger.info("node overloaded; task back in the queue", task_id=task_id, to_node=node_id)
        self._paused_until[node_id] = asyncio.get_running_loop().time() + OVERLOAD_PAUSE_S
        try:
            record = await self._store.update(task_id, lambda r: undone(r, node_id))
        except TaskNotFound:
            await self._queue.release(task_id, node_id)
            return
        if record.status is TaskStatus.QUEUED and record.node_id is None:
            await self._queue.requeue(task_id, node_id)
        elif record.status.is_terminal or record.node_id != node_id:
            await self._queue.release(task_id, node_id)

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

    async def _learn(self, task_ids: list[str], *, queued: bool = False) -> None:
        """Read the graphs not known yet, and for ``queued`` tasks the nodes their earlier
        attempts ended on: two round trips at most."""
        graphs_missing = [task_id for task_id in task_ids if task_id not in self._work]
        if graphs_missing:
            prompts = await self._store.get_prompts(graphs_missing)
            for task_id, prompt in prompts.items():
                if prompt is not None:
                    _remember(self._work, task_id, _Work(prompt, sampler_steps(prompt)))
        tries_missing = [task_id for task_id in task_ids if queued and task_id not in self._avoid]
        if tries_missing:
            records = await self._store.find_many(tries_missing)
            for task_id, record in records.items():
                if record is not None and record.status is TaskStatus.QUEUED:
                    tried = frozenset(attempt.node_id for attempt in record.attempt_log)
                    _remember(self._avoid, task_id, tried)

    async def _with_backlog(
        self, nodes: list[NodeView], placed: dict[str, list[TaskRecord]]
    ) -> list[NodeView]:
        """The nodes as the sweep left them: tasks in flight, and the expected seconds until
        that work is done (a running task counts what is left of its expected time)."""
        await self._learn([record.id for records in placed.values() for record in records])
        now = utc_now()
        views = []
        for node in with_assumed_speeds(nodes):
            records = placed.get(node.node_id, [])
            speed = node.speed or UNMEASURED
            backlog_s = 0.0
            for record in records:
                work = self._work.get(record.id)
                run_s = expected_run_s(speed, work.steps if work else 0)
                if record.started_at is not None:
                    run_s -= (now - record.started_at).total_seconds()
                backlog_s += max(0.0, run_s)
            views.append(replace(node, in_flight=len(records), backlog_s=backlog_s))
        return views


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _any_free(views: dict[str, NodeView]) -> bool:
    return any(node.free_slots for node in views.values())


def _can_run(prompt: dict[str, Any]) -> Callable[[NodeView], bool]:
    def can_run(node: NodeView) -> bool:
        return not missing_capabilities(prompt, node.capabilities)

    return can_run
