"""Typed ComfyUI HTTP responses.

Models keep unknown keys (see :class:`ComfyModel`); only the fields later code relies on are
declared. Shapes follow ComfyUI 0.8 as recorded in the test captures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from comfy_shared.comfyui.common import (
    ComfyModel,
    LogEntry,
    OutputFile,
    OutputText,
    TerminalSize,
    output_entries,
    output_files,
)
from comfy_shared.comfyui.errors import ComfyProtocolError
from comfy_shared.comfyui.events import (
    Event,
    ExecutionError,
    ExecutionInterrupted,
    Unknown,
    parse_message,
)


class SubmitResult(ComfyModel):
    """200 from POST /prompt. Non-empty ``node_errors`` means only some outputs were valid:
    the prompt is queued, but the listed branches will not run."""

    prompt_id: str
    number: int | float
    node_errors: dict[str, Any] = Field(default_factory=dict)


class QueueItem(ComfyModel):
    """One queue entry; on the wire a list ``[number, prompt_id, prompt, extra_data,
    outputs_to_execute]``. Also the ``prompt`` of a history entry."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any] = Field(default_factory=dict)
    outputs_to_execute: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if not isinstance(data, list | tuple):
            return data
        if len(data) < 5:
            raise ValueError(f"queue item has {len(data)} elements, expected 5")
        names = ("number", "prompt_id", "prompt", "extra_data", "outputs_to_execute")
        return dict(zip(names, data, strict=False))

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def create_time_ms(self) -> int | None:
        value = self.extra_data.get("create_time")
        return value if isinstance(value, int) else None


class QueueState(ComfyModel):
    """GET /queue. ``pending`` is in run order (the server sends its raw heap array)."""

    running: list[QueueItem] = Field(
        default_factory=list, validation_alias=AliasChoices("queue_running", "running")
    )
    pending: list[QueueItem] = Field(
        default_factory=list, validation_alias=AliasChoices("queue_pending", "pending")
    )

    @field_validator("pending")
    @classmethod
    def _run_order(cls, items: list[QueueItem]) -> list[QueueItem]:
        # The server's heapq pops the smallest (number, prompt_id) first.
        return sorted(items, key=lambda item: (item.number, item.prompt_id))

    @property
    def queue_remaining(self) -> int:
        return len(self.running) + len(self.pending)

    def is_running(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.running)

    def is_pending(self, prompt_id: str) -> bool:
        return any(item.prompt_id == prompt_id for item in self.pending)

    def position(self, prompt_id: str) -> int | None:
        """How many prompts run before this one: 0 if it is running or runs next,
        ``None`` if it is not in the queue (finished, deleted, or never submitted)."""
        if self.is_running(prompt_id):
            return 0
        for index, item in enumerate(self.pending):
            if item.prompt_id == prompt_id:
                return len(self.running) + index
        return None


class PromptInfo(ComfyModel):
    """GET /prompt: ``{"exec_info": {"queue_remaining": N}}``."""

    queue_remaining: int

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("exec_info"), dict):
            return data["exec_info"]
        return data


class HistoryStatus(ComfyModel):
    """``status_str`` is "success" exactly when ``completed``; errors and interrupts give
    "error". ``messages`` are ``(event_name, data)`` pairs, as on the WebSocket."""

    status_str: str
    completed: bool
    messages: list[tuple[str, Any]] = Field(default_factory=list)

    def events(self) -> list[Event]:
        """The messages as events; a malformed one becomes :class:`Unknown` so that reading
        a finished prompt's status never fails on it."""
        return [_event_or_unknown(name, data) for name, data in self.messages]

    @property
    def error(self) -> ExecutionError | None:
        return next((e for e in self.events() if isinstance(e, ExecutionError)), None)

    @property
    def interruption(self) -> ExecutionInterrupted | None:
        return next((e for e in self.events() if isinstance(e, ExecutionInterrupted)), None)


def _event_or_unknown(name: str, data: Any) -> Event:
    try:
        return parse_message(name, data)
    except ComfyProtocolError:
        return Unknown(type=name, data=data)


class HistoryEntry(ComfyModel):
    """A finished prompt (succeeded, failed or interrupted).

    ``outputs`` maps node id → that node's whole UI dict, every key kept; use :meth:`files`
    for the downloadable files, :meth:`entries` for the files and the texts nodes reported.
    ``status`` is None only if the server recorded none.
    """

    prompt: QueueItem
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    status: HistoryStatus | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt_id(self) -> str:
        return self.prompt.prompt_id

    @property
    def succeeded(self) -> bool:
        return self.status is not None and self.status.completed

    def files(self) -> list[OutputFile]:
        return output_files(self.outputs)

    def entries(self) -> list[OutputFile | OutputText]:
        return output_entries(self.outputs)


class UploadResult(ComfyModel):
    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def image_ref(self) -> str:
        """The value for LoadImage's ``image`` input."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


class SystemInfo(ComfyModel):
    os: str | None = None
    ram_total: int | None = None
    ram_free: int | None = None
    comfyui_version: str | None = None
    python_version: str | None = None
    pytorch_version: str | None = None
    embedded_python: bool | None = None
    argv: list[str] = Field(default_factory=list)


class DeviceStats(ComfyModel):
    """Memory in bytes. On CPU/MPS the vram fields report system RAM."""

    name: str
    type: str
    index: int | None = None
    vram_total: int
    vram_free: int
    torch_vram_total: int | None = None
    torch_vram_free: int | None = None


class SystemStats(ComfyModel):
    system: SystemInfo
    devices: list[DeviceStats] = Field(default_factory=list)

    @property
    def device(self) -> DeviceStats | None:
        """The torch device ComfyUI runs on (the server always reports exactly one)."""
        return self.devices[0] if self.devices else None


class RawLogs(ComfyModel):
    """GET /internal/logs/raw: the last 300 stdout/stderr chunks."""

    entries: list[LogEntry] = Field(default_factory=list)
    size: TerminalSize | None = None


class NodeInputs(ComfyModel):
    """Input name → spec, e.g. ``["INT", {"min": 1}]``, ``[["a", "b"]]`` (V1 combo) or
    ``["COMBO", {"options": ["a", "b"]}]`` (V3 combo)."""

    required: dict[str, Any] = Field(default_factory=dict)
    optional: dict[str, Any] = Field(default_factory=dict)
    hidden: dict[str, Any] = Field(default_factory=dict)


# Loader inputs are named ckpt_name, lora_name, clip_name1, ...; sampler_name is the one core
# combo with that suffix that lists algorithms rather than files.
_MODEL_INPUT = re.compile(r"_name\d*$")
_NOT_MODEL_INPUTS = frozenset({"sampler_name"})


class NodeInfo(ComfyModel):
    """One node class from GET /object_info."""

    name: str
    display_name: str | None = None
    description: str | None = ""
    category: str | None = ""
    python_module: str | None = None
    input: NodeInputs = Field(default_factory=NodeInputs)
    input_order: dict[str, list[str]] = Field(default_factory=dict)
    output: list[Any] = Field(default_factory=list)
    output_is_list: list[Any] = Field(default_factory=list)
    output_name: list[Any] = Field(default_factory=list)
    output_node: bool = False
    deprecated: bool = False
    experimental: bool = False
    api_node: bool = False

    def input_spec(self, name: str) -> Any:
        """The spec of a required or optional input, or None."""
        return self.input.required.get(name, self.input.optional.get(name))

    def combo_options(self, name: str) -> list[str] | None:
        """The options of a COMBO input (either wire form), or None if it is not a combo."""
        return combo_options(self.input_spec(name))

    def model_inputs(self) -> dict[str, list[str]]:
        """Loader inputs → the model files offered, e.g. ``{"ckpt_name": ["sd15.safetensors"]}``."""
        found: dict[str, list[str]] = {}
        for name in (*self.input.required, *self.input.optional):
            options = self.combo_options(name)
            if options is not None and _MODEL_INPUT.search(name) and name not in _NOT_MODEL_INPUTS:
                found[name] = options
        return found


def combo_options(spec: Any) -> list[str] | None:
    """Options of a V1 ``[[...], {...}]`` or V3 ``["COMBO", {"options": [...]}]`` spec."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    head = spec[0]
    if isinstance(head, list):
        return [str(option) for option in head]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, list):
            return [str(option) for option in options]
    return None


def model_files(object_info: Mapping[str, NodeInfo]) -> dict[str, dict[str, list[str]]]:
    """class_type → loader input → model files, for every class that has a loader input.

    A workflow node ``{"class_type": C, "inputs": {I: V}}`` can run here only if
    ``V in model_files(info)[C][I]``.
    """
    found = {name: info.model_inputs() for name, info in object_info.items()}
    return {name: inputs for name, inputs in found.items() if inputs}
