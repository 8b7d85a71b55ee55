"""Per-prompt node progress and the `progress_state` messages built from it.

Every node start, progress update and finish re-sends the state of all non-pending nodes of the
prompt. A node that ran has float `value`/`max` (0.0/1.0 at start); a cached output node that
is only "finished" keeps ComfyUI's integer defaults (1/1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JsonDict = dict[str, Any]


class ProgressRegistry:
    def __init__(self, prompt_id: str, send: Callable[[JsonDict], None]) -> None:
        self.prompt_id = prompt_id
        self._send = send
        self._nodes: dict[str, JsonDict] = {}

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._publish()

    def update(self, node_id: str, value: float, maximum: float) -> None:
        self._entry(node_id).update(state="running", value=value, max=maximum)
        self._publish()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._publish()

    def _entry(self, node_id: str) -> JsonDict:
        return self._nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _publish(self) -> None:
        nodes = {
            node_id: self._wire(node_id, entry)
            for node_id, entry in self._nodes.items()
            if entry["state"] != "pending"
        }
        self._send({"prompt_id": self.prompt_id, "nodes": nodes})

    def _wire(self, node_id: str, entry: JsonDict) -> JsonDict:
        return {
            "value": entry["value"],
            "max": entry["max"],
            "state": entry["state"],
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
