"""Pydantic models stored in Redis and returned by the APIs.

Everything serialises to JSON with ``model_dump_json``; timestamps are UTC ISO-8601.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, computed_field

from comfy_shared.clock import utc_now
from comfy_shared.task_state import TaskStatus

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Task ids are Redis key parts (and, for a task whose id is a UUID, its first prompt id):
keep them to safe characters.
No ``:``, the separator of Redis keys, so no id names another task's keys (``X:events``)."""
TASK_ID_ALPHABET = (
    "1 to 128 characters: an ASCII letter or digit, then ASCII letters, digits, '_', '.' or '-'"
)
_TASK_ID = re.compile(TASK_ID_PATTERN)


def is_valid_task_id(task_id: str) -> bool:
    # fullmatch: the pattern's "$" alone would also accept a trailing newline.
    return _TASK_ID.fullmatch(task_id) is not None


def new_task_id() -> str:
    return str(uuid4())


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
    TEXT = "text"
    """A string a node reported (PreviewAny's ``{"text": [...]}``), or a ``.txt`` file."""
    OTHER = "other"


class TaskOutput(BaseModel):
    """One file ComfyUI produced; (filename, subfolder, type) is what ComfyUI's /view takes.

    Or one text a node reported (``comfy_shared.outputs.texts``): type "text", a made-up
    file name, and the text itself in ``text`` until it is stored, never fetched from /view.
    """

    node_id: str
    kind: OutputKind
    filename: str
    subfolder: str = ""
    type: str = "output"
    sha256: str | None = Field(
        default=None,
        description="Digest of the bytes in the output store (None: not stored, served from "
        "the node that made it).",
    )
    size: int | None = Field(default=None, description="Bytes, once stored.")
    text: str | None = Field(
        default=None,
        exclude_if=lambda text: text is None,  # a file's record carries no empty key
        description="A text output's text while it is not stored (then it is served from "
        "here); None once stored and for files.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def media_type(self) -> str:
        """The download's Content-Type, from the file name (`comfy_shared.outputs.media`)."""
        from comfy_shared.outputs.media import media_type_of  # media imports this module

        return media_type_of(self.filename)


class Attempt(BaseModel):
    """One placement of a task on a node, kept so a failed task shows everything it went through."""

    number: int
    node_id: str
    dispatched_at: datetime = Field(default_factory=utc_now)
    prompt_id: str | None = Field(
        default=None, description="The prompt id the attempt has in its node's ComfyUI."
    )
    started_at: datetime | None = Field(
        default=None, description="When its graph started running in ComfyUI (None: it never ran)."
    )
    ended_at: datetime | None = None
    outcome: str | None = Field(
        default=None,
        description='How it ended: "succeeded", "failed: ...", "cancelled", or why '
        "the node lost it.",
    )


class Band(StrEnum):
    """A task's class of service. Bands are served strictly in this order (a waiting batch
    task is promoted once it has waited ``--batch-max-wait-s``); tenants share a band fairly."""

    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """0 is served first."""
        return _BAND_ORDER.index(self)


_BAND_ORDER = list(Band)


class RetryPolicy(BaseModel):
    """Set by the balancer: which ComfyUI failures are the node's fault (e.g. out of memory),
    so the task may run again elsewhere, and how many placements a task gets in all."""

    max_attempts: int = 3
    retry_on: list[str] = Field(
        default_factory=list,
        description="Case-insensitive substrings of exception type or message that mean retry.",
    )

    def allows_retry(self, attempts: int, error: TaskError) -> bool:
        """A node's fault (marked ``node_fault`` in the details, e.g. its ComfyUI restarted) or a
        ComfyUI error matching ``retry_on`` may run again elsewhere; validation never does."""
        if attempts >= self.max_attempts or error.type is ErrorType.VALIDATION:
            return False
        if error.details.get("node_fault") is True:
            return True
        text = f"{error.details.get('exception_type', '')} {error.message}".lower()
        return error.type is ErrorType.COMFYUI and any(p.lower() in text for p in self.retry_on)


class TaskRecord(BaseModel):
    """The state of one generation task, as stored under ``RedisKeys.task``."""

    model_config = ConfigDict(validate_assignment=True)

    id: str
    status: TaskStatus = TaskStatus.QUEUED
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    submitted_at: datetime | None = Field(
        default=None, description="When the current attempt was handed to ComfyUI."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    node_id: str | None = None
    priority: int = 0
    band: Band = Band.STANDARD
    output_ttl_s: int | None = Field(
        default=None, description="Seconds its outputs are kept (None: the deployment's)."
    )
    predicted_gpu_s: float | None = Field(
        default=None, description="GPU-seconds the task is expected to take (what it is charged)."
    )
    attempts: int = 0
    progress: Progress | None = None
    outputs: list[TaskOutput] = Field(default_factory=list)
    error: TaskError | None = None
    warnings: dict[str, Any] = Field(
        default_factory=dict,
        description="ComfyUI node_errors of output branches that were skipped (partial validity).",
    )
    client: dict[str, Any] = Field(default_factory=dict, description="Caller's metadata, echoed.")
    tenant: str = Field(default="default", description="Whose task it is: only they see it.")
    key_id: str | None = Field(
        default=None, description="The API key that submitted it (its limits apply)."
    )
    workflow: str | None = Field(default=None, description="Template name, if one was used.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Template parameters as used (random seeds included)."
    )
    previews: bool = Field(
        default=False, description="The sampler's preview images are kept while it runs."
    )
    attempt_log: list[Attempt] = Field(default_factory=list)
    input_files: list[str] = Field(
        default_factory=list,
        description="Files the node uploads to its ComfyUI before submitting (task inputs key).",
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Present on tasks the balancer manages."
    )
    webhook_url: str | None = Field(
        default=None,
        description="Where the balancer announces the task's end (checked at submit).",
    )


class PromptOrigin(BaseModel):
    """What a prompt sent through the ComfyUI gateway brought besides its graph: kept beside
    the task (``{p}:task:{id}:origin``), not in its record, since ``extra_data`` carries the
    whole UI workflow and the record is copied into every event."""

    client_id: str | None = Field(
        default=None, description="The submitting WebSocket client: its events go there."
    )
    number: int = Field(description="ComfyUI's queue number, as /prompt answered it.")
    extra_data: dict[str, Any] = Field(
        default_factory=dict, description="As sent: extra_pnginfo (the UI workflow) and the like."
    )


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file a task brings (an image parameter): kept with the task until it ends, uploaded by
    each node that runs it to its own ComfyUI (input folder, subfolder ``UPLOAD_SUBFOLDER``)."""

    name: str
    data: bytes


UPLOAD_SUBFOLDER = "comfy-stack"


TaskEventKind = Literal["state", "progress", "output"]


class TaskEvent(BaseModel):
    """One entry of a task's event stream: what changed plus the whole task after the change,
    so a reader that sees only the last event still knows everything."""

    kind: TaskEventKind
    at: datetime = Field(default_factory=utc_now)
    task: TaskRecord


class GpuInfo(BaseModel):
    """One NVIDIA GPU as NVML reports it."""

    index: int
    name: str
    uuid: str | None = Field(
        default=None, description="NVML's UUID (``GPU-...``): DCGM's ``UUID`` label."
    )
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: float | None = None
    power_watts: float | None = Field(
        default=None, description="Power drawn now (DCGM's ``DCGM_FI_DEV_POWER_USAGE``)."
    )
    power_limit_watts: float | None = Field(
        default=None, description="The power limit the driver enforces."
    )
    xid_errors: int | None = Field(
        default=None,
        description="Critical XID errors NVML reported since the service started (None: the "
        "GPU or driver offers no XID events).",
    )
    last_xid: int | None = Field(
        default=None,
        description="The code of the latest of them (DCGM's ``DCGM_FI_DEV_XID_ERRORS``).",
    )


class ComfyStatus(BaseModel):
    """What the node knows about its ComfyUI right now."""

    reachable: bool
    error: str | None = None
    down_for_s: float | None = Field(
        default=None, description="Seconds since ComfyUI last answered, while it does not."
    )
    version: str | None = None
    queue_running: int = 0
    queue_pending: int = 0
    device: str | None = None
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    required_frontend_version: str | None = None
    pytorch_version: str | None = None


class Capabilities(BaseModel):
    """What graphs the node's ComfyUI can run: its node classes, and the model files each
    loader offers (class -> loader input -> files, e.g. CheckpointLoaderSimple -> ckpt_name),
    and by folder."""

    node_classes: list[str] = Field(default_factory=list)
    models: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    model_folders: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Model folder (checkpoints, loras, embeddings...) -> its files, as "
        "ComfyUI's /models lists them.",
    )
    object_info_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the node's whole object_info, stored beside the health "
        "document (RedisKeys.node_object_info): readers re-read it only when this changes. "
        "None until ComfyUI answered.",
    )

    @cached_property
    def node_class_set(self) -> frozenset[str]:
        """``node_classes`` for lookups (hundreds of classes, checked for every queued task)."""
        return frozenset(self.node_classes)


class NodeSpeed(BaseModel):
    """How fast the node's ComfyUI works, measured by its service from the tasks it ran: a
    task of ``n`` sampler steps takes about ``overhead_s + n * seconds_per_step``."""

    seconds_per_step: float = Field(ge=0, description="Mean time of one sampler step.")
    overhead_s: float = Field(ge=0, description="Mean time of a task beyond its steps.")
    tasks_measured: int = Field(ge=0)


class NodeProfile(BaseModel):
    """What a node's service knows of the models on its GPU and of what work costs there,
    learned from the tasks it ran (kept across restarts beside the health document). Model
    files are named as the graph names them (``ckpt_name``, ``unet_name``...); a workflow
    shape is ``workload.graph_shape``."""

    resident: list[str] = Field(
        default_factory=list,
        description="Model files believed loaded on the GPU, least recently used first.",
    )
    load_s: dict[str, float] = Field(
        default_factory=dict,
        description="Learned seconds this node takes to load each model file (a switch).",
    )
    shape_run_s: dict[str, float] = Field(
        default_factory=dict,
        description="Learned run time of each workflow shape here, its models resident.",
    )
    shape_vram_bytes: dict[str, int] = Field(
        default_factory=dict,
        description="The most VRAM each shape's model weights took when loaded here.",
    )
    model_bytes: dict[str, int] = Field(
        default_factory=dict,
        description="VRAM each model file's weights took when it was loaded alone here.",
    )


class NodeReadiness(StrEnum):
    """Whether a live node takes new tasks, as its own service decides."""

    READY = "ready"
    WARMING_UP = "warming-up"
    """Its warm-up workflow runs (at start, or after ComfyUI restarted)."""
    WARM_UP_FAILED = "warm-up-failed"
    """The warm-up failed: the node takes no task until one passes (``reason`` says why)."""
    RECYCLING = "recycling"
    """It finishes its tasks, then restarts ComfyUI and warms up again."""


class NodeLifecycle(BaseModel):
    """Where the node is in its lifecycle; anything but ``ready`` takes no new task."""

    state: NodeReadiness = NodeReadiness.READY
    reason: str | None = Field(
        default=None, description="Why it takes no task: a failed warm-up's error, or the cause "
        "of a recycle."
    )  # fmt: skip
    since: datetime | None = Field(default=None, description="When it entered this state.")
    comfyui_restarts: int = Field(
        default=0, description="Times the service restarted the ComfyUI it supervises."
    )
    comfyui_recycles: int = Field(
        default=0, description="Of those restarts, the ones to recycle it (the others followed "
        "its death)."
    )  # fmt: skip


class NodeHealth(BaseModel):
    """The document a comfy-service publishes under ``RedisKeys.node_health``; it expires
    unless refreshed, so a missing document means the node is gone."""

    node_id: str
    url: str
    version: str
    started_at: datetime
    updated_at: datetime = Field(default_factory=utc_now)
    comfyui: ComfyStatus
    tasks_in_flight: int = 0
    cpu_percent: float
    ram_used_bytes: int
    ram_total_bytes: int
    gpus: list[GpuInfo] = Field(default_factory=list)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    speed: NodeSpeed | None = Field(default=None, description="None until a task has run.")
    profile: NodeProfile = Field(default_factory=NodeProfile)
    lifecycle: NodeLifecycle = Field(default_factory=NodeLifecycle)
    ttl_s: float = Field(
        default=6.0,
        description="Seconds the document lives unless refreshed: the node is "
        "taken for dead this long after its last refresh.",
    )
