"""``POST /prompt``: a ComfyUI prompt becomes a task of the user's, answered at once.

In ComfyUI's order: a ``number`` is drawn (also for a prompt that is then refused), the body
is read as JSON whatever its ``Content-Type`` says (clients send JSON labelled as a form, or
unlabelled; the body limits and the strict parser of ``/api/v1`` apply), a missing
``prompt`` is 400 ``no_prompt``, a ``prompt_id`` that is not a canonical UUID 400
``invalid_prompt_id``, a node without ``class_type`` 400 ``invalid_prompt``. Then:

- ``partial_execution_targets`` keeps the named nodes and what they depend on (ComfyUI runs
  only those); none of them in the graph: 400 ``prompt_no_outputs``.
- Inputs that name the user's uploads are staged (``uploads``).
- The intake validates the graph against the fleet's nodes, as for ``/api/v1/generate``
  (``FleetCatalog.check``): ComfyUI's 400 with ``node_errors`` (``errors.PromptRejected``),
  or a 200 whose ``node_errors`` name the branches that will not run.
- The task id IS the ``prompt_id`` (the client's, or a new ``str(uuid4())``); an id in use,
  by this user or another, is refused (409 ``task_id_taken``), never answered with the
  earlier prompt.
- ``front: true`` puts the prompt before the user's own waiting prompts (priority
  :data:`FRONT_PRIORITY` in the user's flow of the fair queue, within the key's
  ``max_priority``), never before another user's; a client's ``number`` is kept out of the
  order altogether (ComfyUI would sort the whole queue by it). With ``--queue-policy fifo``
  (one flow for everyone) ``front`` does nothing.
- What the prompt brought besides its graph is kept beside the task (``PromptOrigin``):
  ``client_id`` (its WebSocket), ``number``, and ``extra_data`` without the comfy.org
  credentials ComfyUI hides from its queue too (they are not passed to nodes).

The answer is ComfyUI's ``{"prompt_id", "number", "node_errors"}``; refusals of the facade
(queue full, rate limit, budget, no node can run it) come in ComfyUI's error envelope
(``errors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

from fastapi import Request
from pydantic import ValidationError

from comfy_balancer.errors import TaskIdTaken
from comfy_balancer.gateway.errors import (
    invalid_prompt,
    invalid_prompt_id,
    no_prompt,
    prompt_no_outputs,
)
from comfy_balancer.gateway.history import STAGED_ORIGINALS
from comfy_balancer.gateway.identity import GatewayUser
from comfy_balancer.gateway.uploads import Uploads
from comfy_balancer.lifespan import BalancerState
from comfy_shared.api.request_limits import RequestLimits, check_graph_size, check_string_sizes
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.api.strict_json import parse_strict_json
from comfy_shared.comfyui.prompt_ids import is_canonical_uuid
from comfy_shared.models import PromptOrigin

JsonObject = dict[str, Any]
FRONT_PRIORITY: Final = 1
SENSITIVE_EXTRA_DATA: Final = ("auth_token_comfy_org", "api_key_comfy_org")
USAGE_SOURCE_HEADER: Final = "comfy-usage-source"


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """A ``POST /prompt`` body, checked."""

    prompt_id: str
    graph: JsonObject
    client_id: str | None
    extra_data: JsonObject
    front: bool


def read_prompt(document: Any) -> PromptRequest:
    """Raises PromptRefused as ComfyUI refuses, in its order."""
    if not isinstance(document, dict) or "prompt" not in document:
        raise no_prompt()
    prompt_id = _prompt_id(document.get("prompt_id"))
    graph = _graph(document["prompt"])
    targets = document.get("partial_execution_targets")
    if targets is not None:
        graph = _targeted(graph, targets)
    extra = document.get("extra_data")
    if extra is not None and not isinstance(extra, dict):
        raise invalid_prompt("extra_data is not an object.")
    client_id = document.get("client_id")
    return PromptRequest(
        prompt_id=prompt_id,
        graph=graph,
        client_id=client_id if isinstance(client_id, str) else None,
        extra_data={k: v for k, v in (extra or {}).items() if k not in SENSITIVE_EXTRA_DATA},
        front=document.get("front") is True,
    )


def _prompt_id(value: Any) -> str:
    if value is None:
        return str(uuid4())
    if not isinstance(value, str) or not is_canonical_uuid(value):
        raise invalid_prompt_id()
    return value


def _graph(prompt: Any) -> JsonObject:
    if not isinstance(prompt, dict):
        raise invalid_prompt("the prompt is not an object of nodes.")
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str) or not class_type:
            raise invalid_prompt("a node is missing the class_type property.", node_id)
        if not isinstance(node.get("inputs", {}), dict):
            raise invalid_prompt(f"the inputs of node {node_id} are not an object.", node_id)
    return {node_id: {"inputs": {}, **node} for node_id, node in prompt.items()}


def _targeted(graph: JsonObject, targets: Any) -> JsonObject:
    """The targets and every node they depend on."""
    wanted = [t for t in targets if t in graph] if isinstance(targets, list) else []
    if not wanted:
        raise prompt_no_outputs()
    kept: set[str] = set()
    while wanted:
        node_id = wanted.pop()
        if node_id in kept or node_id not in graph:
            continue
        kept.add(node_id)
        wanted.extend(
            value[0]
            for value in graph[node_id]["inputs"].values()
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        )
    return {node_id: node for node_id, node in graph.items() if node_id in kept}


def origin_of(prompt: PromptRequest, number: int, request: Request) -> PromptOrigin:
    extra = dict(prompt.extra_data)
    if "comfy_usage_source" not in extra and (source := request.headers.get(USAGE_SOURCE_HEADER)):
        extra["comfy_usage_source"] = source
    return PromptOrigin(client_id=prompt.client_id, number=number, extra_data=extra)


def front_priority(state: BalancerState, user: GatewayUser, front: bool) -> int:
    """The priority ``front`` gets: inside the user's own flow only (fair queue)."""
    highest = user.caller.limits.max_priority
    allowed = highest is None or highest >= FRONT_PRIORITY
    return FRONT_PRIORITY if front and allowed and state.settings.queue_policy == "fair" else 0


async def submit_prompt(
    request: Request, state: BalancerState, user: GatewayUser, uploads: Uploads
) -> JsonObject:
    """Queue the prompt of ``request`` for ``user``; ComfyUI's answer."""
    limits: RequestLimits = request.app.state.request_limits
    number = await state.store.next_prompt_number()
    document = parse_strict_json(await request.body())
    check_graph_size(document, limits.max_graph_nodes)
    check_string_sizes(document, limits.max_string_bytes)
    prompt = read_prompt(document)
    staged, originals = await uploads.staged_inputs(user.tenant, prompt.graph)
    try:
        task = GenerateRequest(
            prompt=prompt.graph,
            task_id=prompt.prompt_id,
            priority=front_priority(state, user, prompt.front),
            client={STAGED_ORIGINALS: originals} if originals else {},
        )
    except ValidationError as exc:
        raise invalid_prompt(f"the prompt is malformed: {exc.errors()[0]['msg']}") from exc
    intake = await state.intake.accept(
        task, None, user.caller, origin=origin_of(prompt, number, request), staged=staged
    )
    if not intake.created:
        raise TaskIdTaken(prompt.prompt_id)
    return {"prompt_id": prompt.prompt_id, "number": number, "node_errors": intake.node_errors}
