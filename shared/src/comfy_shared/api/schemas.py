"""Request and response bodies of ``/api/v1``, the same on a service and on the balancer, so a
client written for one node works unchanged against a cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from comfy_shared.json_types import json_integer
from comfy_shared.models import (
    TASK_ID_ALPHABET,
    TASK_ID_PATTERN,
    Attempt,
    Band,
    ErrorType,
    OutputKind,
    TaskError,
    TaskRecord,
)
from comfy_shared.net_guard import MAX_URL_CHARS
from comfy_shared.task_queue import MAX_ABS_PRIORITY
from comfy_shared.task_state import TaskStatus

API_PREFIX = "/api/v1"
MAX_OUTPUT_TTL_S: Final = 366 * 24 * 3600
"""A year and a day: the bound of a task's own ``output_ttl_s``."""

# Keys that only a UI-format ("Save", not "Save (API)") workflow has at its top level.
_UI_FORMAT_KEYS = frozenset({"nodes", "links", "last_node_id"})

_INPUT_VALUE_SCHEMA: Final = {
    "description": "A constant (string, number, boolean, null), a link to another node's "
    'output (`["<node id>", <output index>]`), or a list or object a node takes (ComfyUI '
    'reads a two-item list as a link: wrap a literal list as `{"__value__": [...]}`). '
    "ComfyUI checks each value against the node's declared inputs.",
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "minItems": 2,
            "maxItems": 2,
            "title": "Link",
        },
        {"type": "array"},
        {"type": "object"},
    ],
}
InputValue = Annotated[Any, WithJsonSchema(_INPUT_VALUE_SCHEMA)]
"""Any JSON value: ComfyUI ignores inputs a node does not declare and answers a validation
error (a 400 it names the node in) for a declared one of the wrong kind, so refusing more here
would only refuse graphs ComfyUI runs."""


# Checked here, not left to ComfyUI: it reads each node's class_type before its own
# validation, so a list or an object there makes it fail with a 500 instead of refusing the
# graph (and a node that is not an object, likewise).
class GraphNode(TypedDict):
    """One node of an API-format graph: its class and its inputs by name; other keys (such
    as ``_meta``) are kept and ignored by ComfyUI."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    class_type: Annotated[str, Field(min_length=1, description="The node's class.")]
    inputs: dict[str, InputValue]
    _meta: NotRequired[Annotated[dict[str, Any], Field(description="Ignored by ComfyUI.")]]


_ONE_OF_PROMPT_OR_WORKFLOW: Final[JsonDict] = {
    "oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "object"}}},
        {"required": ["workflow"], "properties": {"workflow": {"type": "string"}}},
    ]
}


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_OF_PROMPT_OR_WORKFLOW)

    prompt: dict[str, GraphNode] | None = Field(
        default=None,
        min_length=1,
        description='A ComfyUI graph in API format ("Save (API)"): node id -> '
        '{"class_type", "inputs"}.',
    )
    workflow: str | None = Field(default=None, description="Name of a workflow template.")
    params: dict[str, Any] = Field(default_factory=dict, description="Template parameters.")
    task_id: str | None = Field(
        default=None,
        pattern=TASK_ID_PATTERN,
        description="Caller-chosen id; submitting the same id again returns the same task. "
        f"{TASK_ID_ALPHABET}.",
    )
    priority: int = Field(
        default=0,
        ge=-MAX_ABS_PRIORITY,
        le=MAX_ABS_PRIORITY,
        description="Higher runs first (balancer queue); "
        f"-{MAX_ABS_PRIORITY} to {MAX_ABS_PRIORITY}.",
    )
    band: Band | None = Field(
        default=None,
        description="The band to queue in (balancer): interactive, standard or batch; default "
        "the API key's. Bands are served in that order; tenants share a band fairly.",
    )
    client: dict[str, Any] = Field(default_factory=dict, description="Metadata echoed back.")
    previews: bool = Field(
        default=False,
        description="Balancer: keep the sampler's preview images while the task runs, the "
        "latest at GET /api/v1/tasks/{id}/preview; the node's ComfyUI is asked to make them "
        "(extra_data.preview_method auto). A service called directly ignores it.",
    )
    output_ttl_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_OUTPUT_TTL_S,
        description="Seconds its outputs are kept once it finished; shorter than the "
        "deployment's --outputs-ttl-s only (a longer one is cut to it). Default: that.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="Balancer: an https URL that receives task.succeeded, task.failed or "
        "task.cancelled when the task ends, signed as Standard Webhooks (default: the API "
        "key's webhook_url). Not a private or loopback address unless allow-listed.",
    )

    _integers = field_validator("priority", "output_ttl_s", mode="before")(json_integer)

    @field_validator("prompt", mode="before")
    @classmethod
    def _api_format_graph(cls, prompt: Any) -> Any:
        if isinstance(prompt, dict):
            if not prompt:
                raise ValueError("the prompt graph is empty")
            # A node may be called "nodes"; a UI-format workflow's "nodes" is no node.
            if any(not isinstance(prompt[key], dict) for key in _UI_FORMAT_KEYS & prompt.keys()):
                raise ValueError(
                    "this is a UI-format workflow; export it with 'Save (API)' and send that"
                )
        return prompt

    @model_validator(mode="after")
    def _prompt_or_workflow(self) -> GenerateRequest:
        if (self.prompt is None) == (self.workflow is None):
            raise ValueError("send exactly one of 'prompt' (a graph) or 'workflow' (a name)")
        return self


class ProgressView(BaseModel):
    node: str | None
    value: int
    max: int
    percent: float


class OutputView(BaseModel):
    index: int
    node_id: str
    kind: OutputKind
    filename: str
    subfolder: str
    type: str = Field(
        description='ComfyUI\'s folder of the file ("output", "temp"), or "text" for a text '
        "a node reported (its file name is made up: <node>-text-<n>.txt)."
    )
    sha256: str | None = Field(description="Digest of the stored bytes (the download's ETag).")
    size: int | None = Field(description="Bytes.")
    media_type: str = Field(
        description="The download's Content-Type, e.g. image/png, image/webp (an animated "
        "WebP has kind video), video/mp4, audio/flac, text/plain; charset=utf-8 (a text a "
        "node reported, kind text); application/octet-stream if unknown."
    )
    url: str = Field(description="Download path, relative to the API's base URL.")


class TaskLinks(BaseModel):
    self: str
    events: str
    outputs: list[str]


class TaskEta(BaseModel):
    """When a waiting task is expected to start and finish, from the fleet's measured speeds
    and the work ahead of it under the queue's policy."""

    start: datetime
    finish: datetime


class QueueStanding(BaseModel):
    """Where a waiting task stands (the ``queue`` events of its stream, on the balancer)."""

    queue_position: int
    eta: TaskEta | None


class TaskView(BaseModel):
    id: str
    status: TaskStatus
    queue_position: int | None = Field(
        default=None,
        description="While it waits: how many tasks will start before it under the queue's "
        "policy, fleet-wide; null otherwise.",
    )
    eta: TaskEta | None = Field(
        default=None, description="While it waits on the balancer: expected start and finish."
    )
    progress: ProgressView | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    node_id: str | None
    priority: int
    band: Band
    predicted_gpu_s: float | None = Field(description="GPU-seconds it is expected to take.")
    attempts: int
    attempt_log: list[Attempt] = Field(description="Each placement on a node, oldest first.")
    outputs: list[OutputView]
    error: TaskError | None
    warnings: dict[str, Any]
    client: dict[str, Any]
    tenant: str
    workflow: str | None
    params: dict[str, Any]
    links: TaskLinks

    @classmethod
    def from_record(
        cls,
        record: TaskRecord,
        *,
        queue_position: int | None = None,
        eta: TaskEta | None = None,
    ) -> TaskView:
        base = f"{API_PREFIX}/tasks/{record.id}"
        outputs = [
            OutputView(url=f"{base}/outputs/{index}", index=index, **output.model_dump())
            for index, output in enumerate(record.outputs)
        ]
        progress = record.progress
        return cls(
            id=record.id,
            status=record.status,
            queue_position=queue_position,
            eta=eta,
            progress=ProgressView(**progress.model_dump(), percent=progress.percent)
            if progress
            else None,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            node_id=record.node_id,
            priority=record.priority,
            band=record.band,
            predicted_gpu_s=record.predicted_gpu_s,
            attempts=record.attempts,
            attempt_log=record.attempt_log,
            outputs=outputs,
            error=record.error,
            warnings=record.warnings,
            client=record.client,
            tenant=record.tenant,
            workflow=record.workflow,
            params=record.params,
            links=TaskLinks(self=base, events=f"{base}/events", outputs=[o.url for o in outputs]),
        )


class ErrorBody(BaseModel):
    """Every error answer has this shape; ``code`` is stable and meant for programs."""

    model_config = ConfigDict(extra="allow")

    detail: str
    code: str
    type: ErrorType = Field(description="Who is at fault: validation = the caller.")
