"""ComfyUI's "classic" output cache.

A node's cache key is its *signature*: its class_type, its IS_CHANGED/fingerprint value, its
constant inputs, and, for linked inputs, the position of the ancestor in a deterministic ancestry
walk plus the ancestors' own immediate signatures. Node ids are not part of it (except for nodes
with a hidden UNIQUE_ID input), so an identical graph under other ids still hits the cache.

At the start of every prompt, entries whose key the new prompt does not use are evicted, so in
effect only the previous prompt's results are reused. A fingerprint that cannot be computed
(e.g. LoadImage on a vanished file) makes the node uncacheable for that prompt.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from comfy_emulator.nodes.base import NodeEnv, NodeRegistry

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class CacheEntry:
    ui: JsonDict | None  # {"meta": {...}, "output": {...}} for nodes that returned UI output
    outputs: tuple[Any, ...]


def is_link(value: Any) -> bool:
    """graph_utils.is_link: `["<node id>", <slot>]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
    )


def to_hashable(value: Any) -> Hashable:
    if isinstance(value, dict):
        return frozenset((k, to_hashable(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(to_hashable(v) for v in value)
    if isinstance(value, Hashable):
        return value
    return repr(value)


class _Uncacheable:
    """A signature part equal to nothing else (ComfyUI uses NaN for this)."""

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)


class SignatureBuilder:
    """Computes every node's cache key for one prompt."""

    def __init__(self, registry: NodeRegistry, env: NodeEnv, prompt: JsonDict) -> None:
        self.registry = registry
        self.env = env
        self.prompt = prompt
        self._fingerprints: dict[str, Hashable] = {}

    def all_keys(self) -> dict[str, Hashable]:
        return {node_id: self.signature(node_id) for node_id in self.prompt}

    def signature(self, node_id: str) -> Hashable:
        ancestors, order = self._ancestry(node_id)
        parts = [self._immediate(node_id, order)]
        parts.extend(self._immediate(a, order) for a in ancestors)
        return to_hashable(parts)

    def _immediate(self, node_id: str, order: dict[str, int]) -> list[Any]:
        node = self.prompt.get(node_id)
        if node is None:
            return [_Uncacheable()]
        cls = self.registry.get(node["class_type"])
        parts: list[Any] = [node["class_type"], self._fingerprint(node_id)]
        if cls is not None and cls.uses_unique_id(self.env):
            parts.append(node_id)
        inputs = node.get("inputs", {})
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value):
                parts.append((key, ("ANCESTOR", order[value[0]], value[1])))
            else:
                parts.append((key, value))
        return parts

    def _fingerprint(self, node_id: str) -> Hashable:
        if node_id not in self._fingerprints:
            self._fingerprints[node_id] = self._compute_fingerprint(node_id)
        return self._fingerprints[node_id]

    def _compute_fingerprint(self, node_id: str) -> Hashable:
        node = self.prompt[node_id]
        cls = self.registry.get(node["class_type"])
        if cls is None or not cls.has_fingerprint:
            return False
        constants = {k: v for k, v in node.get("inputs", {}).items() if not is_link(v)}
        try:
            return to_hashable(cls.fingerprint(self.env, constants))
        except Exception:
            return _Uncacheable()

    def _ancestry(self, node_id: str) -> tuple[list[str], dict[str, int]]:
        ancestors: list[str] = []
        order: dict[str, int] = {}
        self._walk(node_id, ancestors, order)
        return ancestors, order

    def _walk(self, node_id: str, ancestors: list[str], order: dict[str, int]) -> None:
        # Pre-order, inputs by sorted name: the numbering must be deterministic.
        node = self.prompt.get(node_id)
        if node is None:
            return
        inputs = node.get("inputs", {})
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value) and value[0] not in order:
                ancestors.append(value[0])
                order[value[0]] = len(ancestors) - 1
                self._walk(value[0], ancestors, order)


class OutputCache:
    """Cached node outputs keyed by signature; only the current prompt's keys survive."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._entries: dict[Hashable, CacheEntry] = {}
        self._keys: dict[str, Hashable] = {}

    def set_prompt(self, keys: dict[str, Hashable]) -> None:
        """Adopt a new prompt's keys and evict entries it does not use."""
        self._keys = keys
        used = set(keys.values())
        self._entries = {k: v for k, v in self._entries.items() if k in used}

    def get(self, node_id: str) -> CacheEntry | None:
        key = self._keys.get(node_id)
        if not self.enabled or key is None:
            return None
        return self._entries.get(key)

    def set(self, node_id: str, entry: CacheEntry) -> None:
        key = self._keys.get(node_id)
        if self.enabled and key is not None:
            self._entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()
