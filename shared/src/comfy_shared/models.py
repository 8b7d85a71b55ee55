"""Pydantic models stored in Redis and returned by the APIs.

Everything serialises to JSON with ``model_dump_json``; timestamps are UTC ISO-8601.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from comfy_shared.clock import utc_now
from comfy_shared.task_state import TaskStatus


class ErrorType(StrEnum):
    """Who is at fault: this decides whether a retry can help and what the caller should fix."""

    VALIDATION = "validation"
    """The caller's workflow or parameters; retrying the same request cannot help."""
    COMFYUI = "comfyui"
    """ComfyUI failed while executing (a node raised, out of memory...)."""
    SERVICE = "service"
    """Our side or the infrastructure: node lost, timeout, ComfyUI unreachable."""


class TaskError(BaseModel):
    type: ErrorType
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Progress(BaseModel):
    """Where a running task is: the node executing and, for nodes that report steps, the step."""

    node: str | None = None
    value: int = 0
    max: int = 0

    @property
    def percent(self) -> float:
        return round(100.0 * self.value / self.max, 1) if self.max else 0.0


class OutputKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    OTHER = "other"


class TaskOutput(BaseModel):
    """One file ComfyUI produced; (filename, subfolder, type) is what ComfyUI's /view takes."""

    node_id: str
    kind: OutputKind
    filename: str
    subfolder: str = ""
    type: str = "output"


class TaskRecord(BaseModel):
    """The state of one generation task, as stored under ``RedisKeys.task``."""

    model_config = ConfigDict(validate_assignment=True)

    id: str
    status: TaskStatus = TaskStatus.QUEUED
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    node_id: str | None = None
    priority: int = 0
    attempts: int = 0
    progress: Progress | None = None
    outputs: list[TaskOutput] = Field(default_factory=list)
    error: TaskError | None = None
    warnings: dict[str, Any] = Field(
        default_factory=dict,
        description="ComfyUI node_errors of output branches that were skipped (partial validity).",
    )
    client: dict[str, Any] = Field(default_factory=dict, description="Caller's metadata, echoed.")


TaskEventKind = Literal["state", "progress", "output"]


class TaskEvent(BaseModel):
    """One entry of a task's event stream: what changed plus the whole task after the change,
    so a reader that sees only the last event still knows everything."""

    kind: TaskEventKind
    at: datetime = Field(default_factory=utc_now)
    task: TaskRecord
