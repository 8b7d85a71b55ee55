"""How the gateway refuses: ComfyUI's error envelope, with the balancer's statuses.

ComfyUI answers a refused ``/prompt`` with ``{"error": {type, message, details, extra_info},
"node_errors": {...}}``, and its frontend reads that shape from any failed call. The gateway
answers every refusal so: ComfyUI's own (:class:`PromptRefused`, 400, with ComfyUI's types and
texts) and the facade's (a full queue, a rate limit, a budget, no capable node, a missing
key...), which keep the HTTP status, ``Retry-After`` and error code the same refusal has on
``/api/v1`` (the code becomes ``error.type``, its extras ``error.extra_info``). One table,
:data:`REFUSALS`, says which errors are answered this way; anything else reaches the app's
own handlers (an unexpected error: 500).

Gateway routes use :class:`GatewayRoute` as their route class, which applies the table to
whatever the route or its dependencies raise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.exceptions import RedisError

from comfy_balancer.auth.callers import Forbidden, Unauthorized
from comfy_balancer.auth.rate_limit import RateLimited
from comfy_balancer.budgets import BudgetExhausted
from comfy_balancer.errors import (
    STATUS_FOR,
    BandNotAllowed,
    KeyQueueFull,
    NoCapableNode,
    NodeNotFound,
    NodeUnavailable,
    NoPreview,
    NotReplicated,
    PriorityNotAllowed,
    QueueFull,
    TaskIdTaken,
)
from comfy_balancer.gateway.identity import CrossSiteRequest
from comfy_balancer.gateway.uploads import InvalidUploadName
from comfy_shared.api.request_limits import GraphTooLarge, StringTooLong
from comfy_shared.api.strict_json import InvalidNumber, InvalidString, MalformedJson, NestedTooDeep
from comfy_shared.comfyui import PromptRejected
from comfy_shared.errors import ComfyStackError, ConcurrentUpdate
from comfy_shared.outputs.store import StoreUnavailable
from comfy_shared.workflows import StagedInputReference

JsonObject = dict[str, Any]
BASIC_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="comfy-stack", charset="UTF-8"'}
"""A browser asks its user for a name and password on this; the key goes in the password."""


class PromptRefused(ComfyStackError):
    """A prompt refused as ComfyUI refuses it: 400 with its error ``type``, ``message`` and
    ``details`` (graph validation adds ``node_errors``: node id -> {errors, class_type,
    dependent_outputs})."""

    def __init__(
        self,
        type: str,
        message: str,
        details: str = "",
        *,
        node_errors: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.details = details
        self.node_errors = dict(node_errors or {})


class InvalidQuery(ComfyStackError):
    """A query parameter of the wrong kind (ComfyUI: 500)."""


class UploadRefused(ComfyStackError):
    """An upload that is not a whole image within the limits, a video or a sound."""


def no_prompt() -> PromptRefused:
    return PromptRefused("no_prompt", "No prompt provided", "No prompt provided")


def invalid_prompt_id() -> PromptRefused:
    return PromptRefused(
        "invalid_prompt_id",
        "prompt_id must be a valid UUID",
        "Send the canonical lowercase hyphenated form (str(uuid.uuid4())) or leave prompt_id "
        "out to have one assigned.",
    )


def invalid_prompt(message: str, node_id: str | None = None) -> PromptRefused:
    return PromptRefused(
        "invalid_prompt",
        f"Cannot execute because {message}",
        f"Node ID '#{node_id}'" if node_id is not None else "",
    )


def prompt_no_outputs() -> PromptRefused:
    return PromptRefused("prompt_no_outputs", "Prompt has no outputs")


def _no_extras(_: Any) -> JsonObject:
    return {}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    type: str
    extra_info: Callable[[Any], JsonObject] = field(default=_no_extras)
    headers: Callable[[Any], dict[str, str]] | None = None


def _as_on_api(error: type[Exception], **overrides: Any) -> Refusal:
    """The refusal ``error`` gets on ``/api/v1``: the same status, code and headers."""
    mapping = STATUS_FOR[error]
    fields: JsonObject = {
        "status": mapping.status,
        "type": mapping.code,
        "extra_info": mapping.extras,
        "headers": mapping.headers,
    }
    return Refusal(**(fields | overrides))


REFUSALS: Final[Mapping[type[Exception], Refusal]] = {
    Unauthorized: _as_on_api(Unauthorized, headers=lambda _: BASIC_CHALLENGE),
    Forbidden: _as_on_api(Forbidden),
    CrossSiteRequest: Refusal(403, "cross_site_request"),
    InvalidQuery: Refusal(400, "invalid_query"),
    UploadRefused: Refusal(400, "invalid_upload"),
    InvalidUploadName: Refusal(400, "invalid_upload"),
    MalformedJson: _as_on_api(MalformedJson),
    InvalidNumber: _as_on_api(InvalidNumber),
    InvalidString: _as_on_api(InvalidString),
    NestedTooDeep: _as_on_api(NestedTooDeep),
    StringTooLong: _as_on_api(StringTooLong),
    GraphTooLarge: _as_on_api(GraphTooLarge),
    StagedInputReference: _as_on_api(StagedInputReference),
    NoCapableNode: _as_on_api(NoCapableNode),
    PriorityNotAllowed: _as_on_api(PriorityNotAllowed),
    BandNotAllowed: _as_on_api(BandNotAllowed),
    TaskIdTaken: _as_on_api(TaskIdTaken),
    QueueFull: _as_on_api(QueueFull),
    NotReplicated: _as_on_api(NotReplicated),
    KeyQueueFull: _as_on_api(KeyQueueFull),
    RateLimited: _as_on_api(RateLimited),
    BudgetExhausted: _as_on_api(BudgetExhausted),
    StoreUnavailable: _as_on_api(StoreUnavailable),
    NodeUnavailable: _as_on_api(NodeUnavailable),
    NodeNotFound: _as_on_api(NodeNotFound),  # /api/v1 only today, as NoPreview
    NoPreview: _as_on_api(NoPreview),  # /api/v1 only today: listed so a route may raise it
    ConcurrentUpdate: _as_on_api(ConcurrentUpdate),
    RedisError: _as_on_api(RedisError),
}
"""Every refusal a gateway route gives besides PromptRefused (whose instances say their own
type); a subclass is answered as its nearest listed base."""


def envelope(
    type: str,
    message: str,
    details: str = "",
    extra_info: Mapping[str, Any] | None = None,
    node_errors: Mapping[str, Any] | None = None,
) -> JsonObject:
    """ComfyUI's shape of an error answer."""
    return {
        "error": {
            "type": type,
            "message": message,
            "details": details,
            "extra_info": dict(extra_info or {}),
        },
        "node_errors": dict(node_errors or {}),
    }


def refusal_response(exc: Exception) -> JSONResponse | None:
    """The answer to ``exc`` in ComfyUI's envelope, or None when it is no refusal."""
    if isinstance(exc, PromptRefused):
        body = envelope(exc.type, exc.message, exc.details, node_errors=exc.node_errors)
        return JSONResponse(body, status_code=400)
    if isinstance(exc, PromptRejected):  # validated against the fleet: ComfyUI's own body
        return JSONResponse({"error": exc.error, "node_errors": exc.node_errors}, 400)
    refusal = next((REFUSALS[cls] for cls in type(exc).__mro__ if cls in REFUSALS), None)
    if refusal is None:
        return None
    body = envelope(refusal.type, str(exc), extra_info=refusal.extra_info(exc))
    headers = refusal.headers(exc) if refusal.headers else None
    return JSONResponse(body, status_code=refusal.status, headers=headers)


class GatewayRoute(APIRoute):
    """A route whose refusals (raised by it or by its dependencies) are answered in
    ComfyUI's envelope."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except Exception as exc:
                if (refused := refusal_response(exc)) is None:
                    raise
                return refused
            return response

        return handle
