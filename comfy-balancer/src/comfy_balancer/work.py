"""What the dispatcher needs of each task, read from Redis once and kept for a while: its graph
(to check capabilities and to send), its size in sampler steps and its shape (to estimate its
run time), and for a queued task the nodes its earlier attempts ended on (a retry prefers
others) and when it was queued."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import TaskStore
from comfy_shared.workload import graph_shape, sampler_steps

CACHE_SIZE: Final = 4096
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Work:
    graph: dict[str, Any]
    steps: int
    shape: str

    @classmethod
    def of(cls, graph: dict[str, Any]) -> Work:
        return cls(graph, sampler_steps(graph), graph_shape(graph))


class WorkCache:
    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._work: OrderedDict[str, Work] = OrderedDict()
        self._tried: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._queued_at: OrderedDict[str, datetime] = OrderedDict()

    def get(self, task_id: str) -> Work | None:
        return self._work.get(task_id)

    def tried(self, task_id: str) -> frozenset[str]:
        """Nodes earlier attempts of a queued task ended on."""
        return self._tried.get(task_id, frozenset())

    def queued_at(self, task_id: str) -> datetime | None:
        return self._queued_at.get(task_id)

    def placed(self, task_id: str) -> None:
        """The task left the queue: its earlier nodes are read again if it comes back."""
        self._tried.pop(task_id, None)
        self._queued_at.pop(task_id, None)

    async def learn(self, task_ids: list[str], *, queued: bool = False) -> None:
        """Read the graphs not known yet and, for ``queued`` tasks, the nodes their earlier
        attempts ended on: two round trips at most."""
        graphs_missing = [task_id for task_id in task_ids if task_id not in self._work]
        if graphs_missing:
            graphs = await self._store.get_prompts(graphs_missing)
            for task_id, graph in graphs.items():
                if graph is not None:
                    _remember(self._work, task_id, Work.of(graph))
        tries_missing = [task_id for task_id in task_ids if queued and task_id not in self._tried]
        if tries_missing:
            records = await self._store.find_many(tries_missing)
            for task_id, record in records.items():
                if record is not None and record.status is TaskStatus.QUEUED:
                    tried = frozenset(attempt.node_id for attempt in record.attempt_log)
                    _remember(self._tried, task_id, tried)
                    _remember(self._queued_at, task_id, record.updated_at)


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
