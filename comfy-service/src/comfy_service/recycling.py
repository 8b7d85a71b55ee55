"""Recycling a supervised ComfyUI between tasks, before a slow leak or a fragmented GPU costs
a task (``--recycle-after-tasks``, ``--recycle-memory-growth-mb``).

Due after a number of tasks ended on this node since ComfyUI last started, or once ComfyUI's
resident memory, read after a task ended, is more than a given amount above its level after
the first task since its start (models loaded: its level once warm). Then the node says
``recycling`` (balancers place nothing on it; a submit gets 503 ``node_not_ready`` and spends
no attempt), waits until its tasks in flight are done, restarts ComfyUI and lets the warm-up
that follows every restart take it back to ``ready``. No task is cut short, none runs twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import psutil
from loguru import logger

from comfy_service.lifecycle import Lifecycle
from comfy_service.prompts import FollowedPrompts
from comfy_service.submit_gate import SubmitGate
from comfy_service.supervisor import ComfySupervisor
from comfy_shared.loops import LoopHandle

IDLE_POLL_S: Final = 0.2
MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecyclePolicy:
    after_tasks: int | None = None
    memory_growth_bytes: int | None = None

    @classmethod
    def of(cls, after_tasks: int | None, memory_growth_mb: float | None) -> RecyclePolicy:
        growth_bytes = round(memory_growth_mb * MB) if memory_growth_mb is not None else None
        return cls(after_tasks, growth_bytes)

    @property
    def enabled(self) -> bool:
        return self.after_tasks is not None or self.memory_growth_bytes is not None


class RecycleDue:
    """Whether ComfyUI is due for a recycle, from what was seen since its last start."""

    def __init__(self, policy: RecyclePolicy) -> None:
        self._policy = policy
        self.started()

    def started(self) -> None:
        """ComfyUI (re)started: a fresh count and a fresh memory level."""
        self._tasks = 0
        self._warm_rss_bytes: int | None = None
        self._growth_bytes = 0

    def tasks_ended(self, count: int, rss_bytes: int | None) -> None:
        """``count`` tasks ended since the last call; ComfyUI's resident memory now."""
        self._tasks += count
        if rss_bytes is None:
            return
        if self._warm_rss_bytes is None:
            self._warm_rss_bytes = rss_bytes
        self._growth_bytes = rss_bytes - self._warm_rss_bytes

    def reason(self) -> str | None:
        after_tasks, growth_limit = self._policy.after_tasks, self._policy.memory_growth_bytes
        if after_tasks is not None and self._tasks >= after_tasks:
            return f"after {self._tasks} tasks"
        if growth_limit is not None and self._growth_bytes > growth_limit:
            return f"memory grew {self._growth_bytes // MB} MB since it was warm"
        return None


def rss_bytes(pid: int | None) -> int | None:
    """The resident memory of process ``pid`` (None if there is none)."""
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class Recycler:
    def __init__(
        self,
        *,
        policy: RecyclePolicy,
        comfyui: ComfySupervisor,
        lifecycle: Lifecycle,
        prompts: FollowedPrompts,
        submits: SubmitGate,
    ) -> None:
        self._due = RecycleDue(policy)
        self._comfyui = comfyui
        self._lifecycle = lifecycle
        self._prompts = prompts
        self._submits = submits
        self._seen_start = 0
        self._seen_ended = 0

    async def run(self, handle: LoopHandle) -> None:
        """The loop: a look each time tasks ended, so the node stops taking work at once
        (and a look first: a recycle cut short by an error is taken up again)."""
        while True:
            await self.recycle_once()
            handle.working()
            await self._prompts.ended_more.wait()
            self._prompts.ended_more.clear()

    async def recycle_once(self) -> str | None:
        """One look: recycles when due, and returns why."""
        self._observe()
        if (reason := self._due.reason()) is not None:
            await self.recycle(reason)
        return reason

    async def recycle(self, reason: str) -> None:
        """Take the node out of rotation, let its tasks finish, restart ComfyUI; the warm-up
        after the restart brings the node back."""
        starts = self._comfyui.starts
        self._lifecycle.recycling(reason)
        if await self._until_idle(starts):
            await self._comfyui.restart(f"recycling {reason}")
            logger.info("recycled comfyui", reason=reason)
        else:
            logger.info("comfyui restarted before its recycle", reason=reason)
        self._started_afresh()

    def _observe(self) -> None:
        if self._comfyui.starts != self._seen_start:  # it died and was started again
            self._started_afresh()
        if ended := self._prompts.ended - self._seen_ended:
            self._seen_ended = self._prompts.ended
            self._due.tasks_ended(ended, rss_bytes(self._comfyui.pid))

    def _started_afresh(self) -> None:
        self._seen_start = self._comfyui.starts
        self._seen_ended = self._prompts.ended
        self._due.started()

    async def _until_idle(self, starts: int) -> bool:
        """Until no task is in flight here (True), or ComfyUI was started again meanwhile
        (False: it died, and the restart that followed did the recycle's work, warm-up
        included; the node takes work again). The lifecycle refuses new submits first; one
        that was past that check already is counted by the gate until its prompt is
        followed."""
        while True:
            if self._comfyui.starts != starts:
                return False
            if not self._submits.active and not await self._prompts.count():
                return True
            await asyncio.sleep(IDLE_POLL_S)
