"""The error answers only the balancer gives, for its routes' OpenAPI documentation (the
answers both apps give are in ``comfy_shared.api.openapi``)."""

from __future__ import annotations

from comfy_balancer.auth.sessions import SESSION_COOKIE
from comfy_shared.api.openapi import UNAUTHORIZED, Answer, OpenApiRewrite, require_credentials

NO_CAPABLE_NODE = Answer(
    422,
    "no_capable_node",
    "no live node offers every node class and model file the graph names; `missing` says "
    "what each checked node lacks.",
)
PROMPT_REJECTED = Answer(
    422,
    "prompt_rejected",
    "the live nodes' ComfyUIs would refuse the graph (checked against their object_info, "
    "merged as `--object-info-merge` says); `error` and `node_errors` are ComfyUI's own, as a "
    "node's ComfyUI words them. Nothing was queued.",
)
QUEUE_FULL = Answer(429, "queue_full", "the queue holds `--max-queue` tasks; see Retry-After.")
NOT_REPLICATED = Answer(
    503,
    "not_replicated",
    "the task was queued, but fewer Redis replicas than `--submit-replicas` confirmed it in "
    "time; it may run. Submit again with the same task id or Idempotency-Key: the answer is "
    "the task, or it is queued anew if Redis lost it. See Retry-After.",
)
NODE_UNAVAILABLE = Answer(
    503, "node_unavailable", "the node that holds the task (or its files) cannot be reached."
)
NODE_NOT_FOUND = Answer(404, "node_not_found", "no node with this id ever published its health.")

PREVIEW_NOT_FOUND = Answer(
    404,
    "preview_not_found",
    "no preview image: the task did not ask for `previews`, or it ended.",
)
PREVIEW_IMAGE = {
    "description": "The newest preview image of the running attempt (JPEG as ComfyUI makes "
    "them, or PNG).",
    "content": {"image/jpeg": {}, "image/png": {}},
}

FORBIDDEN = Answer(403, "forbidden", "the API key lacks the scope the route needs.")
PRIORITY_NOT_ALLOWED = Answer(
    403, "priority_not_allowed", "`priority` is above the API key's `max_priority`."
)
BAND_NOT_ALLOWED = Answer(
    403, "band_not_allowed", "`band` is above the API key's `share.max_band`."
)
RATE_LIMITED = Answer(
    429,
    "rate_limited",
    "the API key used its `submits_per_minute`; see Retry-After and the RateLimit headers.",
)
KEY_QUEUE_FULL = Answer(
    429, "key_queue_full", "the API key has its `max_queued` tasks waiting; see Retry-After."
)
BUDGET_EXHAUSTED = Answer(
    429,
    "budget_exhausted",
    "the API key's tasks used its `gpu_seconds_per_day` (or `_per_month`); Retry-After says "
    "when the next UTC day (or month) begins.",
)
INVALID_RANGE = Answer(
    422,
    "invalid_range",
    "`since` or `until` is not a calendar day, `until` is before `since`, or the range is "
    "longer than 400 days.",
)
TENANT_NOT_ALLOWED = Answer(
    403,
    "tenant_not_allowed",
    "the API key sees only its own tenant's usage and tasks (not an admin key).",
)
TASK_ID_TAKEN = Answer(409, "task_id_taken", "another tenant's task has this `task_id`.")
KEY_NOT_FOUND = Answer(404, "key_not_found", "no API key with this id.")
INVALID_WEBHOOK_URL = Answer(
    422,
    "invalid_webhook_url",
    "`webhook_url` is not an absolute https URL (http only for an allow-listed host), carries "
    "a user name or password, or its host leads to a loopback, private, link-local or other "
    "non-public address that `--webhook-allow` does not list.",
)
WEBHOOK_UNSIGNED = Answer(
    422,
    "webhook_unsigned",
    "the task would have a webhook but there is no secret to sign it: the API key has none "
    "and the balancer has no `--webhook-secret`.",
)
DEAD_LETTER_NOT_FOUND = Answer(
    404, "dead_letter_not_found", "no dead webhook for this task (or not the key's tenant's)."
)

API_KEYS: OpenApiRewrite = require_credentials(
    [UNAUTHORIZED, FORBIDDEN],
    {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`csk_...`), or the admin key.",
        },
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "browserSession": {
            "type": "apiKey",
            "in": "cookie",
            "name": SESSION_COOKIE,
            "description": "A browser's session, set by signing in at `/signin` with a key: "
            "it stands for that key. A change it carries must come from a page of this "
            "server (else 403 `cross_site_request`).",
        },
    },
)
"""Every ``/api/v1`` route takes an API key (when authentication is on, the default)."""
