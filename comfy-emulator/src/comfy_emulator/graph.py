"""Execution order within one prompt (ComfyUI's `ExecutionList`, a topological dissolve).

Starting from the targeted output nodes, every uncached ancestor is added; a node becomes ready
when all of its pending inputs are done. Among ready nodes ComfyUI prefers, in turn: an output
node, a node feeding an output node, a node two steps from an output node, else the first ready
node in insertion order. Cached nodes are not added (their values come from the cache), but a
targeted output node is always added, so a cached output still reports its old UI output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from comfy_emulator.cache import is_link

JsonDict = dict[str, Any]


class DependencyCycleError(Exception):
    """No node is ready although some are pending."""


class ExecutionList:
    def __init__(
        self, prompt: JsonDict, is_output: Callable[[str], bool], is_cached: Callable[[str], bool]
    ) -> None:
        self._prompt = prompt
        self._is_output = is_output
        self._is_cached = is_cached
        self._pending: dict[str, bool] = {}  # insertion-ordered set
        self._block_count: dict[str, int] = {}
        self._blocking: dict[str, set[str]] = {}  # from node -> nodes waiting on it

    def add_node(self, node_id: str) -> None:
        """Add a node and, recursively, its uncached ancestors."""
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending:
                continue
            self._pending[current] = True
            self._block_count[current] = 0
            self._blocking[current] = set()
            for value in self._prompt[current]["inputs"].values():
                if is_link(value):
                    if not self._is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            self._link(source, target)

    def _link(self, source: str, target: str) -> None:
        if self._is_cached(source) or target in self._blocking[source]:
            return
        self._blocking[source].add(target)
        self._block_count[target] += 1

    def is_empty(self) -> bool:
        return not self._pending

    def stage(self) -> str:
        """The next node to run (see the module docstring for the preference order)."""
        ready = [n for n in self._pending if self._block_count[n] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        return self._pick(ready)

    def _pick(self, ready: list[str]) -> str:
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self._blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self._blocking[node_id]:
                if any(self._is_output(b) for b in self._blocking.get(blocked, ())):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self._pending[node_id]
        for blocked in self._blocking.pop(node_id):
            self._block_count[blocked] -= 1

    def pending(self) -> list[str]:
        return list(self._pending)
