"""The error answers only the balancer gives, for its routes' OpenAPI documentation (the
answers both apps give are in ``comfy_shared.api.openapi``)."""

from __future__ import annotations

from comfy_shared.api.openapi import Answer

NO_CAPABLE_NODE = Answer(
    422,
    "no_capable_node",
    "no live node offers every node class and model file the graph names; `missing` says "
    "what each checked node lacks.",
)
QUEUE_FULL = Answer(429, "queue_full", "the queue holds `--max-queue` tasks; see Retry-After.")
NODE_UNAVAILABLE = Answer(
    503, "node_unavailable", "the node that holds the task (or its files) cannot be reached."
)
