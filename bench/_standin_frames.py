"""Plays the nodes' part for gateway prompts without ComfyUI: marks a prompt placed and
running, writes the frames a node's service would write for ComfyUI's default text-to-image
graph (``comfy_testkit.graphs.txt2img``: the same message types, order and shapes as the
emulator's, ``progress`` and ``progress_state`` per sampler step), then ends it. Every prompt
runs at once, so the gateway relays them all together, with no node process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from comfy_shared.frames import MessageFrame, to_fields
from comfy_shared.lifecycle import AttemptRef, Ended, Placed, Started
from comfy_shared.task_store import TaskStore

NODE = "standin"
LOADERS = ("4", "6", "7", "5")  # checkpoint, prompts, latent: no steps
SAMPLER = "3"
AFTER = ("8", "9")  # decode, save


async def run_prompt(store: TaskStore, task_id: str, steps: int, step_time_s: float) -> None:
    record = await store.apply(task_id, Placed(NODE))
    attempt = AttemptRef(NODE, record.attempts)
    await store.apply(task_id, Started(attempt))
    frames = _Frames(store, task_id, attempt.number)
    await frames.say("execution_start", timestamp=_ms())
    await frames.say("execution_cached", nodes=[], timestamp=_ms())
    for node in LOADERS:
        await frames.node_runs(node)
    await frames.node_runs(SAMPLER, finished=False)
    for step in range(1, steps + 1):
        await asyncio.sleep(step_time_s)
        await frames.step(step, steps)
    for node in AFTER:
        await frames.node_runs(node)
    output = {"images": [{"filename": f"{task_id}_00001_.png", "subfolder": "", "type": "output"}]}
    await frames.say("executed", node="9", display_node="9", output=output)
    await frames.say("execution_success", timestamp=_ms())
    await frames.say("executing", node=None)
    await store.apply(task_id, Ended(attempt))


class _Frames:
    def __init__(self, store: TaskStore, task_id: str, attempt: int) -> None:
        self._store = store
        self._task_id = task_id
        self._attempt = attempt
        self._nodes: dict[str, dict[str, Any]] = {}

    async def say(self, kind: str, **data: Any) -> None:
        if kind == "executing" and data.get("node") is None:
            data = {"node": None, "prompt_id": self._task_id}
        else:
            data["prompt_id"] = self._task_id
        text = json.dumps({"type": kind, "data": data})
        frame = MessageFrame(self._attempt, time.time() * 1000, text)
        await self._store.append_frames({self._task_id: [to_fields(frame)]})

    async def node_runs(self, node: str, *, finished: bool = True) -> None:
        self._nodes[node] = self._state(node, 0.0, 1.0, "running")
        await self._progress_state()
        await self.say("executing", node=node, display_node=node)
        if finished:
            self._nodes[node] = self._state(node, 1.0, 1.0, "finished")
            await self._progress_state()

    async def step(self, value: int, maximum: int) -> None:
        await self.say("progress", value=value, max=maximum, node=SAMPLER)
        state = "finished" if value == maximum else "running"
        self._nodes[SAMPLER] = self._state(SAMPLER, float(value), float(maximum), state)
        await self._progress_state()

    async def _progress_state(self) -> None:
        await self.say("progress_state", nodes=dict(self._nodes))

    def _state(self, node: str, value: float, maximum: float, state: str) -> dict[str, Any]:
        return {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node,
            "prompt_id": self._task_id,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
        }


def _ms() -> int:
    return int(time.time() * 1000)
