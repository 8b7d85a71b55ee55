"""The prompts this node sent to its ComfyUI and still follows, one per attempt of a task.

Each attempt of a task has its own ComfyUI prompt id (``prompt_id_for``), so an event names
exactly one attempt: a report about an attempt that is no longer the task's current one (the
task moved to another node meanwhile) is recognised and its prompt withdrawn.

The map lives in Redis (``RedisKeys.node_prompts``) so a restarted service picks its prompts up
again. The clocks the watchdog reads (last sign of life, time at the head of the queue) are
soft state in memory: after a restart they start again from zero, which only delays a timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from comfy_shared.lifecycle import AttemptRef
from comfy_shared.redis_keys import RedisKeys


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt in ComfyUI: the attempt of a task it runs."""

    prompt_id: str
    task_id: str
    attempt: AttemptRef


class FollowedPrompts:
    def __init__(self, redis: Redis, keys: RedisKeys, node_id: str) -> None:
        self._redis = redis
        self._key = keys.node_prompts(node_id)
        self._node_id = node_id
        self._known: dict[str, Prompt] = {}
        self._last_activity: dict[str, float] = {}
        self._head_since: dict[str, float] = {}
        self.ended = 0
        """Prompts this process stopped following (each once): tasks run here, for recycling."""
        self.ended_more = asyncio.Event()
        """Set when :attr:`ended` grows; whoever waits on it clears it."""

    def prompt(self, prompt_id: str, task_id: str, attempt: int) -> Prompt:
        return Prompt(prompt_id, task_id, AttemptRef(self._node_id, attempt))

    def expect(self, prompt: Prompt) -> None:
        """Note a prompt about to be sent, so its first events are recognised at once (they can
        arrive before the submit call returns)."""
        self._known[prompt.prompt_id] = prompt

    def unexpect(self, prompt: Prompt) -> None:
        """The submission failed: nothing will run."""
        self._known.pop(prompt.prompt_id, None)

    async def add(self, prompt: Prompt) -> None:
        value = json.dumps({"task_id": prompt.task_id, "attempt": prompt.attempt.number})
        await self._redis.hset(self._key, prompt.prompt_id, value)
        self._known[prompt.prompt_id] = prompt
        self.touch(prompt.prompt_id)

    async def remove(self, prompt: Prompt) -> None:
        if removed := await self._redis.hdel(self._key, prompt.prompt_id):
            self.ended += removed
            self.ended_more.set()
        self._known.pop(prompt.prompt_id, None)
        self._last_activity.pop(prompt.prompt_id, None)
        self._head_since.pop(prompt.prompt_id, None)

    async def find(self, prompt_id: str) -> Prompt | None:
        """The prompt, if this node follows it; the hot path is answered from memory."""
        if (known := self._known.get(prompt_id)) is not None:
            return known
        raw = cast("str | None", await self._redis.hget(self._key, prompt_id))
        if raw is None:
            return None
        return self._remember(prompt_id, raw)

    async def all(self) -> list[Prompt]:
        """Every followed prompt, read from Redis (the truth after a restart)."""
        entries = cast(dict[str, str], await self._redis.hgetall(self._key))
        return [self._remember(prompt_id, raw) for prompt_id, raw in sorted(entries.items())]

    async def count(self) -> int:
        return await self._redis.hlen(self._key)

    def touch(self, prompt_id: str) -> None:
        """Record a sign of life (an event from ComfyUI about this prompt)."""
        self._last_activity[prompt_id] = time.monotonic()

    def idle_for_s(self, prompt_id: str) -> float:
        now = time.monotonic()
        return now - self._last_activity.setdefault(prompt_id, now)

    def at_head(self, prompt_id: str, is_at_head: bool) -> float:
        """Seconds the prompt has been waiting at the head of ComfyUI's queue (0 if it is not)."""
        if not is_at_head:
            self._head_since.pop(prompt_id, None)
            return 0.0
        now = time.monotonic()
        return now - self._head_since.setdefault(prompt_id, now)

    def _remember(self, prompt_id: str, raw: str) -> Prompt:
        entry = json.loads(raw)
        prompt = self.prompt(prompt_id, str(entry["task_id"]), int(entry["attempt"]))
        self._known[prompt_id] = prompt
        return prompt
