"""comfy-balancer's domain errors and the one table that maps every error to an HTTP answer.

ComfyStackError (comfy_shared.errors)
├── TaskNotFound, InvalidTransition, ConcurrentUpdate  (shared)
├── TooManyStreams         (shared) --max-streams event streams are open -> 429 with Retry-After
├── QueueFull              the pending queue is at its limit -> 429 with Retry-After
├── NotReplicated          a submit's task fewer Redis replicas confirmed than asked -> 503
├── BudgetExhausted        the key used its GPU-seconds of the day or month -> 429, Retry-After
├── InvalidUsageRange      a usage report's days are no days, reversed or too many -> 422
├── OtherTenant            a key asked for another tenant's usage or tasks -> 403
├── NoCapableNode          no live node offers what the graph needs -> 422, with details
├── UnknownWorkflow        no template of that name -> 422
├── OutputNotFound, OutputExpired, RangeNotSatisfiable  (shared) a download -> 404, 410, 416
├── StoreUnavailable       (shared) the output store cannot be read or written -> 503
├── NodeUnavailable        the node holding a task's files or state cannot be reached -> 503
├── NodeNotFound           no node of that id ever published health -> 404
├── NoPreview              a task that did not ask for previews, or ended -> 404
├── InvalidWebhookUrl      a webhook URL that may not be called (form, scheme, addresses) -> 422
├── WebhookUnsigned        a webhook with no secret to sign it -> 422
└── DeadLetterNotFound     no dead webhook for that task (or another tenant's) -> 404
PromptRejected (comfy_shared.comfyui)  the fleet's ComfyUIs would refuse the graph (the fleet
                           catalog's validation) -> 422 with ComfyUI's error and node_errors
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from comfy_balancer.auth.callers import Forbidden, Unauthorized
from comfy_balancer.auth.keys import KeyNotFound
from comfy_balancer.auth.rate_limit import RateLimited
from comfy_balancer.budgets import BudgetExhausted
from comfy_balancer.usage import InvalidUsageRange, OtherTenant
from comfy_balancer.webhooks.outbox import DeadLetterNotFound
from comfy_balancer.webhooks.submit import InvalidWebhookUrl, WebhookUnsigned
from comfy_shared.api.errors import (
    FORM_ERRORS,
    OUTPUT_ERRORS,
    PROMPT_REJECTED,
    REQUEST_ERRORS,
    ErrorMapping,
    ErrorTable,
    retry_after_header,
    transition_extras,
)
from comfy_shared.api.sse import InvalidEventId
from comfy_shared.comfyui import PromptRejected
from comfy_shared.errors import (
    ComfyStackError,
    ConcurrentUpdate,
    InvalidTransition,
    TaskNotFound,
    TooManyStreams,
)
from comfy_shared.idempotency import IdempotencyKeyBusy, IdempotencyKeyReused
from comfy_shared.models import Band, ErrorType
from comfy_shared.workflows import InvalidParams, StagedInputReference, UnknownWorkflow


class QueueFull(ComfyStackError):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"the queue holds its maximum of {limit} tasks; retry later")
        self.retry_after_s = retry_after_s


class NotReplicated(ComfyStackError):
    """The task was written on the Redis primary, but not confirmed by ``--submit-replicas``
    replicas in time: were the primary lost now, a promoted replica might not have it."""

    def __init__(self, task_id: str, retry_after_s: int) -> None:
        super().__init__(
            f"task {task_id!r} was queued, but the Redis replicas did not confirm it in time; "
            "it may run: submit again with the same task id or Idempotency-Key to learn its state"
        )
        self.task_id = task_id
        self.retry_after_s = retry_after_s


class KeyQueueFull(ComfyStackError):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"this API key may have {limit} tasks waiting; retry later")
        self.retry_after_s = retry_after_s


class PriorityNotAllowed(ComfyStackError):
    def __init__(self, priority: int, highest: int) -> None:
        super().__init__(f"priority {priority} is above this API key's highest, {highest}")


class BandNotAllowed(ComfyStackError):
    def __init__(self, band: Band, highest: Band) -> None:
        super().__init__(f"band {band.value!r} is above this API key's highest, {highest.value!r}")


class TaskIdTaken(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"the task id {task_id!r} is taken; choose another")


class NoCapableNode(ComfyStackError):
    def __init__(self, missing_by_node: dict[str, dict[str, list[str]]]) -> None:
        super().__init__(
            "no live node can run this graph: each lacks a node class or a model file it names"
        )
        self.missing_by_node = missing_by_node


class NodeUnavailable(ComfyStackError):
    def __init__(self, node_id: str | None, what: str) -> None:
        super().__init__(f"node {node_id!r} is unavailable: {what}")


class NodeNotFound(ComfyStackError):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"no node {node_id!r} ever published its health")


class NoPreview(ComfyStackError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} has no preview image: it did not ask for previews")


def _no_capable_node_extras(exc: NoCapableNode) -> dict[str, Any]:
    return {"missing": exc.missing_by_node, "nodes_checked": sorted(exc.missing_by_node)}


def _params_extras(exc: InvalidParams) -> dict[str, Any]:
    return {"errors": exc.errors}


def _rate_limit_headers(exc: RateLimited) -> dict[str, str]:
    return retry_after_header(exc) | exc.quota.headers()


def _challenge(_: Unauthorized) -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="comfy-stack"'}


V, S = ErrorType.VALIDATION, ErrorType.SERVICE

STATUS_FOR: ErrorTable = {
    **REQUEST_ERRORS,
    **OUTPUT_ERRORS,
    **FORM_ERRORS,
    TaskNotFound: ErrorMapping(404, "task_not_found", V),
    InvalidTransition: ErrorMapping(409, "task_finished", V, transition_extras),
    InvalidEventId: ErrorMapping(400, "invalid_event_id", V),
    UnknownWorkflow: ErrorMapping(422, "unknown_workflow", V),
    InvalidParams: ErrorMapping(422, "invalid_params", V, _params_extras),
    StagedInputReference: ErrorMapping(422, "staged_input", V),
    PromptRejected: PROMPT_REJECTED,
    NoCapableNode: ErrorMapping(422, "no_capable_node", V, _no_capable_node_extras),
    QueueFull: ErrorMapping(429, "queue_full", S, headers=retry_after_header),
    NotReplicated: ErrorMapping(503, "not_replicated", S, headers=retry_after_header),
    KeyQueueFull: ErrorMapping(429, "key_queue_full", V, headers=retry_after_header),
    RateLimited: ErrorMapping(429, "rate_limited", V, headers=_rate_limit_headers),
    BudgetExhausted: ErrorMapping(429, "budget_exhausted", V, headers=retry_after_header),
    InvalidUsageRange: ErrorMapping(422, "invalid_range", V),
    OtherTenant: ErrorMapping(403, "tenant_not_allowed", V),
    Unauthorized: ErrorMapping(401, "unauthorized", V, headers=_challenge),
    Forbidden: ErrorMapping(403, "forbidden", V),
    PriorityNotAllowed: ErrorMapping(403, "priority_not_allowed", V),
    BandNotAllowed: ErrorMapping(403, "band_not_allowed", V),
    KeyNotFound: ErrorMapping(404, "key_not_found", V),
    TaskIdTaken: ErrorMapping(409, "task_id_taken", V),
    IdempotencyKeyReused: ErrorMapping(422, "idempotency_key_reuse", V),
    IdempotencyKeyBusy: ErrorMapping(409, "request_in_progress", V, headers=retry_after_header),
    TooManyStreams: ErrorMapping(429, "too_many_streams", S, headers=retry_after_header),
    NodeUnavailable: ErrorMapping(503, "node_unavailable", S),
    NoPreview: ErrorMapping(404, "preview_not_found", V),
    NodeNotFound: ErrorMapping(404, "node_not_found", V),
    ConcurrentUpdate: ErrorMapping(503, "busy", S),
    RedisError: ErrorMapping(503, "redis_unavailable", S),
    InvalidWebhookUrl: ErrorMapping(422, "invalid_webhook_url", V),
    WebhookUnsigned: ErrorMapping(422, "webhook_unsigned", V),
    DeadLetterNotFound: ErrorMapping(404, "dead_letter_not_found", V),
}
