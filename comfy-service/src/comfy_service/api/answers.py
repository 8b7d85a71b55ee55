"""The error answers only a service gives, for its routes' OpenAPI documentation (the answers
both apps give are in ``comfy_shared.api.openapi``)."""

from __future__ import annotations

from comfy_shared.api.openapi import UNAUTHORIZED, Answer, OpenApiRewrite, require_credentials

PROMPT_REJECTED = Answer(
    422,
    "prompt_rejected",
    "ComfyUI's validation refused the graph; its `error` and `node_errors` are passed on.",
)
NOT_ON_THIS_NODE = Answer(
    409, "not_on_this_node", "the task is held by another node or the balancer's queue."
)
WEBHOOKS_NOT_SENT = Answer(
    422,
    "webhooks_not_sent",
    "the request has a `webhook_url`: only comfy-balancer sends webhooks; follow the task's "
    "events instead.",
)
FILE_NOT_FOUND = Answer(404, "file_not_found", "ComfyUI no longer has the output file.")
OVERLOADED = Answer(
    503,
    "overloaded",
    "the node handles its `--max-concurrent-submits` submits already; see Retry-After. "
    "Nothing was queued.",
)
NODE_NOT_READY = Answer(
    503,
    "node_not_ready",
    "the node warms up, failed its warm-up or recycles (`lifecycle` says which, and why); "
    "see Retry-After. Nothing was queued.",
)
COMFYUI_ANSWERS = (
    Answer(503, "comfyui_unavailable", "ComfyUI cannot be reached; nothing changed there."),
    Answer(503, "comfyui_protocol_error", "ComfyUI answered something it should not."),
    Answer(503, "comfyui_error", "ComfyUI failed to answer the request."),
)

INTERNAL_TOKEN: OpenApiRewrite = require_credentials(
    [UNAUTHORIZED],
    {
        "internalToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The deployment's internal token, when the service has one "
            "(`--internal-token`); a service without one asks for no credential.",
        }
    },
)
