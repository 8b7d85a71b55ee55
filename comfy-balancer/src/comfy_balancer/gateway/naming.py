"""Where a gateway client finds an output: the one mapping between a node's file names and
the names the gateway shows.

Nodes name their files as they like, and names collide across nodes (``ComfyUI_00001_.png``
on every one of them). So every file a gateway client is shown (history, jobs, the
``executed`` frames of the WebSocket relay) carries a ``subfolder`` that starts with its
prompt id: ``<prompt_id>`` for a file in the node's folder itself, ``<prompt_id>/<subfolder>``
for one in a subfolder. ``GET /view`` takes the triple back, finds the prompt (which must be
the caller's) and the file among its recorded outputs, and never asks a node which file
carries a name. Uploads (``type=input``) are the caller's own names and are not mapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfy_shared.models import OutputKind, TaskOutput, is_valid_task_id

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeLocation:
    """Where a file shown under a gateway subfolder lives: its prompt, and the subfolder
    the node gave it."""

    prompt_id: str
    subfolder: str


def gateway_subfolder(prompt_id: str, node_subfolder: str) -> str:
    node_subfolder = node_subfolder.strip("/")
    return f"{prompt_id}/{node_subfolder}" if node_subfolder else prompt_id


def node_location(subfolder: str) -> NodeLocation | None:
    """The prompt and node subfolder a gateway subfolder names (None: it names no prompt)."""
    prompt_id, _, rest = subfolder.strip("/").partition("/")
    if not is_valid_task_id(prompt_id):
        return None
    return NodeLocation(prompt_id, rest)


def present_file(prompt_id: str, entry: Mapping[str, Any]) -> JsonObject:
    """One file entry (``{filename, subfolder, type}`` and whatever else a node put there)
    as a gateway client sees it."""
    return {**entry, "subfolder": gateway_subfolder(prompt_id, str(entry.get("subfolder", "")))}


def present_node_output(prompt_id: str, output: Mapping[str, Any]) -> JsonObject:
    """A node's UI output (``executed.data.output``, a value of history ``outputs``) with
    every file entry in it renamed; other values (``animated``, ``text``) pass unchanged."""
    return {key: _present_value(prompt_id, value) for key, value in output.items()}


def _present_value(prompt_id: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_present_value(prompt_id, item) for item in value]
    if isinstance(value, dict) and isinstance(value.get("filename"), str):
        return present_file(prompt_id, value)
    return value


def ui_outputs(prompt_id: str, outputs: list[TaskOutput]) -> dict[str, JsonObject]:
    """A task's stored outputs as ComfyUI's history shows them (node id -> UI dict), named
    for gateway clients. The UI key is what ComfyUI's own save nodes use: ``audio`` for
    sound, ``images`` for everything else, with ``animated: [true]`` beside a clip."""
    by_node: dict[str, JsonObject] = {}
    for output in outputs:
        ui = by_node.setdefault(output.node_id, {})
        key = "audio" if output.kind is OutputKind.AUDIO else "images"
        entry = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        ui.setdefault(key, []).append(present_file(prompt_id, entry))
        if output.kind is OutputKind.VIDEO:
            ui["animated"] = [True]
    return by_node


def find_output(
    outputs: list[TaskOutput], filename: str, node_subfolder: str, folder: str
) -> int | None:
    """The index of the recorded output a ``/view`` names (None: no such output)."""
    for index, output in enumerate(outputs):
        if (output.filename, output.subfolder.strip("/"), output.type) == (
            filename,
            node_subfolder,
            folder,
        ):
            return index
    return None
