"""The prompt queue and history, with ComfyUI's `PromptQueue` semantics.

- Pending prompts are a binary heap ordered by `(number, prompt_id)`; `GET /queue` shows the raw
  heap array, not a sorted list.
- At most one prompt runs at a time (one worker); `running` is keyed by a task counter.
- History entries are written only when a prompt finishes, oldest first, capped at
  `history_max` (the oldest entry is evicted once there are *more than* that many).
- Every change calls `on_change`, which the emulator turns into a `status` broadcast. Deleting
  the last pending prompt reports twice, as ComfyUI's wipe-then-notify does.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass
class QueueEntry:
    """One queued prompt: ComfyUI's 6-tuple (the 6th, sensitive slot is never shown)."""

    number: int | float
    prompt_id: str
    prompt: JsonDict
    extra_data: JsonDict
    outputs_to_execute: list[str]
    sensitive: JsonDict = field(default_factory=dict)

    def __lt__(self, other: QueueEntry) -> bool:
        # heapq only needs "<"; ComfyUI compares tuples, i.e. number first, then prompt_id.
        return (self.number, self.prompt_id) < (other.number, other.prompt_id)

    def as_list(self) -> list[Any]:
        """The 5-element list `[number, prompt_id, prompt, extra_data, outputs_to_execute]`."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


@dataclass(frozen=True)
class ExecutionStatus:
    status_str: str  # "success" | "error"
    completed: bool
    messages: list[list[Any]]

    def as_dict(self) -> JsonDict:
        return {
            "status_str": self.status_str,
            "completed": self.completed,
            "messages": copy.deepcopy(self.messages),
        }


class PromptQueue:
    """Pending heap, running set and history of one emulated ComfyUI process."""

    def __init__(self, on_change: Callable[[], None], history_max: int = 10000) -> None:
        self._on_change = on_change
        self._history_max = history_max
        self.pending: list[QueueEntry] = []
        self.running: dict[int, QueueEntry] = {}
        self.history: dict[str, JsonDict] = {}
        self._task_counter = 0
        self._has_items = asyncio.Event()

    def put(self, entry: QueueEntry) -> None:
        heapq.heappush(self.pending, entry)
        self._has_items.set()
        self._on_change()

    async def get(self) -> tuple[int, QueueEntry]:
        """Wait for the next prompt, move it to `running` and return `(task_id, entry)`."""
        while not self.pending:
            self._has_items.clear()
            await self._has_items.wait()
        entry = heapq.heappop(self.pending)
        task_id = self._task_counter
        self._task_counter += 1
        self.running[task_id] = copy.deepcopy(entry)
        self._on_change()
        return task_id, entry

    def task_done(self, task_id: int, result: JsonDict, status: ExecutionStatus) -> None:
        """Move a finished prompt from `running` into history."""
        entry = self.running.pop(task_id)
        if len(self.history) > self._history_max:
            self.history.pop(next(iter(self.history)))
        record: JsonDict = {"prompt": entry.as_list(), "outputs": {}, "status": status.as_dict()}
        record.update(result)
        self.history[entry.prompt_id] = record
        self._on_change()

    def remaining(self) -> int:
        return len(self.pending) + len(self.running)

    def running_ids(self) -> list[str]:
        return [entry.prompt_id for entry in self.running.values()]

    def is_pending(self, prompt_id: str) -> bool:
        return any(entry.prompt_id == prompt_id for entry in self.pending)

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running, pending) as 5-element lists; pending stays in raw heap order."""
        running = [entry.as_list() for entry in self.running.values()]
        return running, [entry.as_list() for entry in self.pending]

    def wipe_pending(self) -> None:
        self.pending = []
        self._on_change()

    def delete_pending(self, prompt_id: str) -> bool:
        """Remove the first pending item (in heap-array order) with this id."""
        for index, entry in enumerate(self.pending):
            if entry.prompt_id != prompt_id:
                continue
            if len(self.pending) == 1:
                self.wipe_pending()
            else:
                self.pending.pop(index)
                heapq.heapify(self.pending)
            self._on_change()
            return True
        return False

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> JsonDict:
        if prompt_id is not None:
            found = self.history.get(prompt_id)
            return {prompt_id: copy.deepcopy(found)} if found is not None else {}
        return self._history_window(max_items, offset)

    def _history_window(self, max_items: int | None, offset: int) -> JsonDict:
        # ComfyUI: offset < 0 with max_items means "the newest max_items".
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: JsonDict = {}
        for index, (key, record) in enumerate(self.history.items()):
            if index < offset:
                continue
            out[key] = record
            if max_items is not None and len(out) >= max_items:
                break
        return out

    def wipe_history(self) -> None:
        self.history = {}

    def delete_history(self, prompt_id: str) -> None:
        self.history.pop(prompt_id, None)
