"""A running cluster for tests: emulators, services, a balancer and clients to all of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from comfy_shared.comfyui.prompt_ids import prompt_id_for
from comfy_testkit.emulator_control import EmulatorControl
from comfy_testkit.stack import RunningComponent
from comfy_testkit.waiting import wait_for_condition


@dataclass
class Node:
    node_id: str
    emulator: RunningComponent
    service: RunningComponent
    control: EmulatorControl

    def kill(self) -> None:
        self.service.kill()
        self.emulator.kill()


@dataclass
class Cluster:
    balancer: RunningComponent
    nodes: list[Node]
    api: httpx.AsyncClient

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)

    async def nodes_ready(self, count: int, timeout_s: float = 15) -> None:
        """Wait until the balancer sees ``count`` nodes that take work (ready or busy)."""

        async def ready() -> bool:
            nodes = (await self.api.get("/api/v1/nodes")).json()
            return sum(node["state"] in ("ready", "busy") for node in nodes) >= count

        await wait_for_condition(ready, timeout_s=timeout_s, what=f"{count} nodes ready")

    async def executions(
        self,
        task_ids: list[str],
        *,
        attempts: int = 5,
        earlier: Mapping[str, int] | None = None,
    ) -> Counter[str]:
        """How often each task's prompts ran in the emulators, over all its attempts (each
        attempt has its own prompt id). ``earlier``: prompt id -> executions that emulators
        killed since had counted (their counters died with them)."""
        task_of = {prompt_id_for(t, n): t for t in task_ids for n in range(1, attempts + 1)}
        counts: Counter[str] = Counter(dict.fromkeys(task_ids, 0))
        runs_by_prompt: Counter[str] = Counter(earlier or {})
        for node in self.nodes:
            runs_by_prompt.update((await node.control.stats())["executions"])
        for prompt_id, runs in runs_by_prompt.items():
            if prompt_id in task_of:
                counts[task_of[prompt_id]] += runs
        return counts
