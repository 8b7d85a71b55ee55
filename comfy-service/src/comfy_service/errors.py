"""comfy-service's domain errors and the one table that maps every error to an HTTP answer.

ComfyStackError (comfy_shared.errors)
├── TaskNotFound, InvalidTransition, ConcurrentUpdate  (shared)
├── TooManyStreams         (shared) --max-streams event streams are open -> 429 with Retry-After
├── UnknownWorkflow        the request names a workflow template this node does not have
├── OutputNotFound, OutputExpired, RangeNotSatisfiable  (shared) a download -> 404, 410, 416
├── StoreUnavailable       (shared) the output store cannot be read or written -> 503
├── NotOnThisNode          the task exists but another node (or the balancer) owns it
├── WebhooksNotSent        a request with a webhook_url (only the balancer sends webhooks) -> 422
├── Overloaded             --max-concurrent-submits are in progress -> 503 with Retry-After
└── NodeNotReady           warming up, warm-up failed or recycling (lifecycle) -> 503
ComfyError (comfy_shared.comfyui.errors)
├── PromptRejected         ComfyUI's validation refused the graph -> 422, node_errors passed on
├── ComfyNotFound          an output file is gone from ComfyUI -> 404
└── ComfyUnavailable/ComfyProtocolError -> 503
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from comfy_shared.api.errors import (
    OUTPUT_ERRORS,
    PROMPT_REJECTED,
    REQUEST_ERRORS,
    ErrorMapping,
    ErrorTable,
    retry_after_header,
    transition_extras,
)
from comfy_shared.api.sse import InvalidEventId
from comfy_shared.comfyui import (
    ComfyError,
    ComfyNotFound,
    ComfyProtocolError,
    ComfyUnavailable,
    PromptRejected,
)
from comfy_shared.errors import (
    ComfyStackError,
    ConcurrentUpdate,
    InvalidTransition,
    TaskNotFound,
    TooManyStreams,
)
from comfy_shared.idempotency import IdempotencyKeyBusy, IdempotencyKeyReused
from comfy_shared.models import ErrorType, NodeLifecycle
from comfy_shared.workflows import InvalidParams, StagedInputReference, UnknownWorkflow


class NotOnThisNode(ComfyStackError):
    def __init__(self, task_id: str, owner: str | None) -> None:
        where = f"node {owner!r}" if owner else "the balancer's queue"
        super().__init__(f"task {task_id!r} is not on this node; it is on {where}")
        self.owner = owner


class WebhooksNotSent(ComfyStackError):
    def __init__(self) -> None:
        super().__init__(
            "a service called directly sends no webhooks (comfy-balancer does); "
            "leave webhook_url out and follow the task's events instead"
        )


class Overloaded(ComfyStackError):
    retry_after_s = 1

    def __init__(self, limit: int) -> None:
        super().__init__(f"this node is handling its maximum of {limit} submits; retry shortly")


class NodeNotReady(ComfyStackError):
    retry_after_s = 5

    def __init__(self, lifecycle: NodeLifecycle) -> None:
        why = f": {lifecycle.reason}" if lifecycle.reason else ""
        super().__init__(f"this node takes no task now ({lifecycle.state.value}{why})")
        self.lifecycle = lifecycle


def _lifecycle_extras(exc: NodeNotReady) -> dict[str, Any]:
    return {"lifecycle": exc.lifecycle.model_dump(mode="json")}


def _params_extras(exc: InvalidParams) -> dict[str, Any]:
    return {"errors": exc.errors}


V, S = ErrorType.VALIDATION, ErrorType.SERVICE

STATUS_FOR: ErrorTable = {
    **REQUEST_ERRORS,
    **OUTPUT_ERRORS,
    TaskNotFound: ErrorMapping(404, "task_not_found", V),
    WebhooksNotSent: ErrorMapping(422, "webhooks_not_sent", V),
    ComfyNotFound: ErrorMapping(404, "file_not_found", S),
    InvalidTransition: ErrorMapping(409, "task_finished", V, transition_extras),
    NotOnThisNode: ErrorMapping(409, "not_on_this_node", V),
    InvalidEventId: ErrorMapping(400, "invalid_event_id", V),
    UnknownWorkflow: ErrorMapping(422, "unknown_workflow", V),
    InvalidParams: ErrorMapping(422, "invalid_params", V, _params_extras),
    StagedInputReference: ErrorMapping(422, "staged_input", V),
    PromptRejected: PROMPT_REJECTED,
    TooManyStreams: ErrorMapping(429, "too_many_streams", S, headers=retry_after_header),
    ComfyUnavailable: ErrorMapping(503, "comfyui_unavailable", S),
    ComfyProtocolError: ErrorMapping(503, "comfyui_protocol_error", S),
    ComfyError: ErrorMapping(503, "comfyui_error", S),
    IdempotencyKeyReused: ErrorMapping(422, "idempotency_key_reuse", V),
    IdempotencyKeyBusy: ErrorMapping(409, "request_in_progress", V, headers=retry_after_header),
    ConcurrentUpdate: ErrorMapping(503, "busy", S),
    Overloaded: ErrorMapping(503, "overloaded", S, headers=retry_after_header),
    NodeNotReady: ErrorMapping(
        503, "node_not_ready", S, _lifecycle_extras, headers=retry_after_header
    ),
    RedisError: ErrorMapping(503, "redis_unavailable", S),
}
