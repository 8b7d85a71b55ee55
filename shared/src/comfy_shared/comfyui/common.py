"""Value types shared by the HTTP models and the WebSocket events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class ComfyModel(BaseModel):
    """Base of every parsed ComfyUI payload.

    Unknown keys are kept rather than rejected: ComfyUI adds keys between versions and custom
    nodes add their own, and neither should break a client.
    """

    model_config = ConfigDict(frozen=True, extra="allow")


class OutputFile(ComfyModel):
    """One file a node produced, addressable through ``GET /view``.

    ``kind`` is the key of the node's UI dict it came from ("images", "gifs", "video",
    "audio", ...); ``type`` is the folder: "output", "temp" or "input". ``animated`` is the
    node's ``"animated": [true]`` flag (SaveAnimatedWEBP, SaveAnimatedPNG): the file is a clip.
    """

    node_id: str
    kind: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    animated: bool = False


class OutputText(ComfyModel):
    """One string a node reported in its UI dict's ``text`` list (core PreviewAny, the
    ShowText nodes of custom packs): not a file, nothing to fetch from ``/view``.
    ``position`` is its index in that list."""

    node_id: str
    position: int
    text: str


TEXT_KEY = "text"
"""The UI-dict key under which nodes report text (a list of strings)."""


class LogEntry(ComfyModel):
    """One chunk written to ComfyUI's stdout/stderr: local ISO-8601 time and text."""

    t: str
    m: str


class TerminalSize(ComfyModel):
    cols: int
    rows: int


def output_files(outputs: Mapping[str, Mapping[str, Any] | None]) -> list[OutputFile]:
    """Every file in a node-id → UI-dict mapping (history ``outputs`` or one ``executed``).

    Any key whose value is a file entry (a dict with a string ``filename``) or a list of them
    counts, so video and audio nodes from custom packs are covered without knowing their keys.
    """
    return [entry for entry in output_entries(outputs) if isinstance(entry, OutputFile)]


def output_entries(
    outputs: Mapping[str, Mapping[str, Any] | None],
) -> list[OutputFile | OutputText]:
    """Every file (as :func:`output_files` finds them) and every string of a ``text`` list,
    in the order ComfyUI reported them: node by node, key by key, entry by entry."""
    found: list[OutputFile | OutputText] = []
    for node_id, ui in outputs.items():
        animated = _is_animated(ui or {})
        for key, value in (ui or {}).items():
            entries = value if isinstance(value, list) else [value]
            for position, entry in enumerate(entries):
                if _is_file(entry):
                    found.append(_file(node_id, key, entry, animated))
                elif key == TEXT_KEY and isinstance(entry, str):
                    found.append(OutputText(node_id=node_id, position=position, text=entry))
    return found


def _is_animated(ui: Mapping[str, Any]) -> bool:
    # ComfyUI sends a one-element tuple, so JSON carries [true] (PreviewImage says [false]).
    flag = ui.get("animated")
    return isinstance(flag, list) and any(value is True for value in flag)


def _is_file(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("filename"), str)


def _file(node_id: str, kind: str, entry: Mapping[str, Any], animated: bool) -> OutputFile:
    return OutputFile(
        node_id=node_id,
        kind=kind,
        filename=entry["filename"],
        subfolder=str(entry.get("subfolder") or ""),
        type=str(entry.get("type") or "output"),
        animated=animated,
    )
