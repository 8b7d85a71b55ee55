"""The sweep: every placement is looked at each dispatch cycle, so none is left behind.

For each slot a node holds, :func:`sweep_action` decides (pure, tested as a table) whether the
placement stands, and :class:`Sweeper` acts: free the slot of a task that ended or moved, put
back a claim that never became a placement (its balancer died in between), take the task back
from a node that is gone or whose ComfyUI has been unreachable too long, and send again a
placement whose answer was lost. The invariant it keeps: no slot is held without a live
attempt (being sent, accepted by its node, or younger than the dispatch timeout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from comfy_balancer.costs import CostModel, reference_speed
from comfy_balancer.metrics import BalancerMetrics
from comfy_balancer.registry import NodeState, NodeView
from comfy_balancer.sending import Sender, take_back
from comfy_balancer.work import WorkCache
from comfy_shared.lifecycle import AttemptRef
from comfy_shared.models import NodeSpeed, TaskRecord
from comfy_shared.task_queue import TaskQueue
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore

STUCK_CLAIM_MS: Final = 30_000
"""A claim whose record never became 'dispatched' (the balancer died in between) is this old
before the task is put back in the queue."""


@dataclass(frozen=True, slots=True)
class Keep:
    pass


@dataclass(frozen=True, slots=True)
class Release:
    """The slot is not the task's any more (it ended, or runs elsewhere)."""


@dataclass(frozen=True, slots=True)
class PutBack:
    """A claim that never became a placement: back to the queue, no attempt spent."""


@dataclass(frozen=True, slots=True)
class TakeBack:
    reason: str


@dataclass(frozen=True, slots=True)
class SendAgain:
    pass


SweepAction = Keep | Release | PutBack | TakeBack | SendAgain


@dataclass(frozen=True, slots=True)
class SweepRules:
    dispatch_timeout_ms: float
    comfyui_down_grace_s: float


def sweep_action(
    record: TaskRecord | None,
    node: NodeView,
    *,
    claimed_age_ms: float,
    sending: bool,
    node_gone: bool,
    rules: SweepRules,
) -> SweepAction:
    """What to do with one slot of ``node`` (``node_gone``: its health has been missing long
    enough for this balancer to know it is dead, not just restarted with Redis)."""
    if record is None or record.status.is_terminal or record.node_id not in (None, node.node_id):
        return Release()
    if record.status is TaskStatus.QUEUED:
        return PutBack() if claimed_age_ms > STUCK_CLAIM_MS else Keep()
    if node_gone:
        return TakeBack("the node stopped publishing health")
    down_s = node.health.comfyui.down_for_s if node.health else None
    if node.state is NodeState.COMFYUI_DOWN and (down_s or 0) >= rules.comfyui_down_grace_s:
        return TakeBack(f"ComfyUI unreachable for {down_s:.0f}s")
    if (
        record.status is TaskStatus.DISPATCHED
        and record.submitted_at is None
        and claimed_age_ms > rules.dispatch_timeout_ms
        and not sending
    ):
        return SendAgain()
    return Keep()


@dataclass
class SweepReport:
    released: list[str] = field(default_factory=list)
    taken_back: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    still_placed: dict[str, list[TaskRecord]] = field(default_factory=dict)
    """Per node, the tasks it still holds after the sweep."""


class Sweeper:
    def __init__(
        self,
        *,
        store: TaskStore,
        queue: TaskQueue,
        sender: Sender,
        work: WorkCache,
        rules: SweepRules,
        costs: CostModel,
        metrics: BalancerMetrics,
    ) -> None:
        """``metrics`` counts the placements taken back from their node."""
        self._costs = costs
        self._metrics = metrics
        self._store = store
        self._queue = queue
        self._sender = sender
        self._work = work
        self._rules = rules

    async def sweep_once(self, nodes: list[NodeView], gone: set[str], now_ms: float) -> SweepReport:
        """Every placement, in two round trips of reads whatever the cluster size."""
        report = SweepReport()
        by_node = {node.node_id: node for node in nodes}
        placements = await self._queue.dispatched_on(list(by_node))
        task_ids = [task_id for claims in placements.values() for task_id in claims]
        records = await self._store.find_many(task_ids) if task_ids else {}
        fleet = reference_speed([node.speed for node in nodes if node.speed])
        for node_id, claims in placements.items():
            report.still_placed[node_id] = []
            for task_id, claimed_ms in claims.items():
                record, node = records[task_id], by_node[node_id]
                action = sweep_action(
                    record, node, claimed_age_ms=now_ms - claimed_ms,
                    sending=self._sender.is_sending(task_id), node_gone=node_id in gone,
                    rules=self._rules,
                )  # fmt: skip
                if await self._act(action, task_id, record, node, report, fleet) and record:
                    report.still_placed[node_id].append(record)
        return report

    async def _act(
        self,
        action: SweepAction,
        task_id: str,
        record: TaskRecord | None,
        node: NodeView,
        report: SweepReport,
        fleet: NodeSpeed,
    ) -> bool:
        """Carry the action out; returns whether the task stays placed on the node."""
        match action:
            case Release():
                await self._queue.release(task_id, node.node_id)
                report.released.append(task_id)
                if record is not None:
                    await self._learn_cost(record, node, fleet)
                return False
            case PutBack():
                await self._queue.requeue(task_id, node.node_id)
                report.taken_back.append(task_id)
                return False
            case TakeBack(reason) if record is not None:
                attempt = AttemptRef(node.node_id, record.attempts)
                if await take_back(self._store, self._queue, task_id, attempt, reason):
                    self._metrics.count_lease_expired(node.node_id)
                report.taken_back.append(task_id)
                return False
            case SendAgain() if record is not None:
                await self._work.learn([task_id])
                if (work := self._work.get(task_id)) is not None:
                    self._sender.start(record, work.graph, node)
                    report.resent.append(task_id)
        return True

    async def _learn_cost(self, record: TaskRecord, node: NodeView, fleet: NodeSpeed) -> None:
        """A task that succeeded on ``node`` teaches its graph's cost (``costs``)."""
        work = self._work.get(record.id)
        if (
            record.status is not TaskStatus.SUCCEEDED
            or record.node_id != node.node_id
            or record.started_at is None
            or record.finished_at is None
            or work is None
        ):
            return
        run_s = (record.finished_at - record.started_at).total_seconds()
        await self._costs.learn(work.graph, run_s, node.speed, fleet)
