"""A user's tasks as ComfyUI shows prompts: queue items and history entries.

Both read the task store only (the record, its graph and its origin: ``Submission``), so
every balancer replica answers the same, whichever ran the task and whether its node lives.

- A queue item is ComfyUI's 5-list ``[number, prompt_id, prompt, extra_data,
  outputs_to_execute]``: ``number`` as ``/prompt`` answered it (a task sent to ``/api/v1``
  has none: 0), the graph as the caller sent it (uploads by the caller's names, not the
  staged ones), ``extra_data`` as sent plus ``client_id`` and ``create_time`` (ms), and the
  graph's output nodes (without the node catalogue: the nodes nothing links from).
- A history entry exists once the task has ended: ``{prompt, outputs, status, meta}``.
  ``outputs`` are node id -> ComfyUI's UI dict, named for the gateway (``naming``);
  ``status.messages`` are ``execution_start`` and ``execution_cached`` (when it started),
  then ``execution_success``, ``execution_error`` (ComfyUI's payload: node, exception,
  traceback) or ``execution_interrupted`` (a cancel, before or while it ran).
- ``GET /history`` is ComfyUI's: entries oldest first (here: by submission), ``max_items``
  alone takes the newest N, ``offset`` skips the oldest. It reads the tenant's retention
  index (``RedisKeys.tenant_recent``, at most :data:`MAX_HISTORY_ITEMS` newest tasks) with
  each task's status in one round trip, then the window's tasks in one more, except those
  already rendered (:class:`RenderedHistory`): a liveness probe that polls the whole history
  costs one round trip and no rendering once every entry was rendered.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any, Final

from comfy_balancer.gateway.naming import ui_outputs
from comfy_shared.models import TaskRecord
from comfy_shared.task_state import TaskStatus
from comfy_shared.task_store import Submission, TaskStore

JsonObject = dict[str, Any]
MAX_HISTORY_ITEMS: Final = 10_000
"""ComfyUI keeps at most this many history entries; so does one answer here."""
MAX_CACHED_ENTRIES: Final = 20_000
"""Rendered history entries a replica keeps (about 1 KB each)."""
STAGED_ORIGINALS: Final = "comfyui_staged"
"""Key of a task's ``client`` metadata: each staged upload's name -> what the caller wrote
(so the graph is shown as it was sent, and sending it again works)."""
_EXCEPTION_TYPES: Final = {"validation": "ValidationError", "service": "ServiceError"}


def ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def shown_graph(submission: Submission) -> JsonObject:
    """The graph as the caller sent it: staged upload names back to the caller's own."""
    graph = submission.prompt or {}
    originals = submission.record.client.get(STAGED_ORIGINALS)
    if not isinstance(originals, dict) or not originals:
        return graph
    return {
        node_id: {
            **node,
            "inputs": {
                name: originals.get(value, value) if isinstance(value, str) else value
                for name, value in node.get("inputs", {}).items()
            },
        }
        for node_id, node in graph.items()
    }


def output_nodes(graph: JsonObject) -> list[str]:
    """The nodes no other node links from: ComfyUI's outputs, as far as a graph alone
    tells (a dangling non-output node is counted too)."""
    linked = {
        value[0]
        for node in graph.values()
        for value in node.get("inputs", {}).values()
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
    }
    return sorted(node_id for node_id in graph if node_id not in linked)


def extra_data(submission: Submission) -> JsonObject:
    origin = submission.origin
    data: JsonObject = dict(origin.extra_data) if origin is not None else {}
    if origin is not None and origin.client_id is not None:
        data["client_id"] = origin.client_id
    data["create_time"] = ms(submission.record.created_at)
    return data


def queue_item(submission: Submission) -> list[Any]:
    graph = shown_graph(submission)
    number = submission.origin.number if submission.origin is not None else 0
    return [number, submission.record.id, graph, extra_data(submission), output_nodes(graph)]


def history_entry(submission: Submission) -> JsonObject:
    record = submission.record
    outputs = ui_outputs(record.id, record.outputs)
    return {
        "prompt": queue_item(submission),
        "outputs": outputs,
        "status": history_status(submission),
        "meta": {
            node_id: {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            for node_id in outputs
        },
    }


def history_status(submission: Submission) -> JsonObject:
    record = submission.record
    started = ms(_first_start(record))
    messages: list[list[Any]] = []
    if started is not None:
        messages.append(["execution_start", {"prompt_id": record.id, "timestamp": started}])
        cached = {"nodes": [], "prompt_id": record.id, "timestamp": started}
        messages.append(["execution_cached", cached])
    messages.append(_ending(submission))
    succeeded = record.status is TaskStatus.SUCCEEDED
    return {
        "status_str": "success" if succeeded else "error",
        "completed": succeeded,
        "messages": messages,
    }


def _first_start(record: TaskRecord) -> datetime | None:
    starts = [attempt.started_at for attempt in record.attempt_log if attempt.started_at]
    return min(starts) if starts else record.started_at


def _ending(submission: Submission) -> list[Any]:
    record = submission.record
    ended = ms(record.finished_at or record.updated_at)
    if record.status is TaskStatus.SUCCEEDED:
        return ["execution_success", {"prompt_id": record.id, "timestamp": ended}]
    if record.status is TaskStatus.FAILED:
        return ["execution_error", execution_error(submission)]
    node_id = record.progress.node if record.progress is not None else None
    interrupted: JsonObject = {
        "prompt_id": record.id,
        "node_id": node_id or "",
        "node_type": _class_of(submission, node_id),
        "executed": [],
        "timestamp": ended,
    }
    return ["execution_interrupted", interrupted]


def execution_error(submission: Submission) -> JsonObject:
    """ComfyUI's ``execution_error`` payload for a failed task: from ComfyUI's own report
    where it made one, else (the node was lost, the graph refused...) the task's error."""
    record = submission.record
    error = record.error
    details = error.details if error is not None else {}
    node_id = details.get("node_id")
    traceback = details.get("traceback")
    fault = error.type.value if error is not None else "service"
    return {
        "prompt_id": record.id,
        "node_id": str(node_id) if node_id is not None else "",
        "node_type": str(details.get("node_type") or _class_of(submission, node_id)),
        "executed": [str(node) for node in details.get("executed") or []],
        "exception_message": str(
            details.get("exception_message") or (error.message if error else "")
        ),
        "exception_type": str(
            details.get("exception_type") or _EXCEPTION_TYPES.get(fault, "ExecutionError")
        ),
        "traceback": [str(line) for line in traceback] if isinstance(traceback, list) else [],
        "current_inputs": details.get("current_inputs") or {},
        "current_outputs": details.get("current_outputs") or {},
        "timestamp": ms(record.finished_at or record.updated_at),
    }


def _class_of(submission: Submission, node_id: Any) -> str:
    node = (submission.prompt or {}).get(str(node_id)) if node_id is not None else None
    return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def is_history(record: TaskRecord | None, tenant: str) -> bool:
    """A task that has a history entry for ``tenant``: its own, and ended."""
    return record is not None and record.tenant == tenant and record.status.is_terminal


class RenderedHistory:
    """History entries already rendered, as JSON, by (task id, created ms): an ended task's
    entry never changes (nothing writes a record after its end), so a replica renders each
    once. Bounded: the least recently used go first. A forgotten task leaves its tenant's
    index, and an id used again has another created time, so neither is shown from here."""

    def __init__(self, max_entries: int = MAX_CACHED_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._max_entries = max_entries

    def get(self, key: tuple[str, int]) -> bytes | None:
        fragment = self._entries.get(key)
        if fragment is not None:
            self._entries.move_to_end(key)
        return fragment

    def put(self, key: tuple[str, int], fragment: bytes) -> None:
        self._entries[key] = fragment
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


async def history_of(
    store: TaskStore,
    rendered: RenderedHistory,
    tenant: str,
    *,
    max_items: int | None,
    offset: int | None,
) -> bytes:
    """``GET /history``, as JSON: the tenant's ended tasks in ComfyUI's order and window.
    One round trip lists the tenant's tasks with their status; a second reads those of the
    window not rendered yet (none, once they all were)."""
    listed = await store.recent_statuses(tenant, MAX_HISTORY_ITEMS)
    ended = [item for item in reversed(listed) if item.status and item.status.is_terminal]
    start = max(0, len(ended) - max_items) if offset is None and max_items else offset or 0
    window = ended[start : None if max_items is None else start + max_items]
    fragments = {item.task_id: rendered.get((item.task_id, item.created_ms)) for item in window}
    missing = [task_id for task_id, fragment in fragments.items() if fragment is None]
    for submission in (await store.find_submissions(missing)).values():
        if submission is not None and is_history(submission.record, tenant):
            fragment = json.dumps(history_entry(submission)).encode()
            created = ms(submission.record.created_at) or 0
            rendered.put((submission.record.id, created), fragment)
            fragments[submission.record.id] = fragment
    return (
        b"{"
        + b",".join(
            json.dumps(task_id).encode() + b": " + fragment
            for task_id, fragment in fragments.items()
            if fragment is not None
        )
        + b"}"
    )


async def one_history(store: TaskStore, tenant: str, prompt_id: str) -> JsonObject:
    """``GET /history/{id}``: ``{id: entry}`` once the tenant's task has ended, else ``{}``."""
    submission = (await store.find_submissions([prompt_id]))[prompt_id]
    if submission is None or not is_history(submission.record, tenant):
        return {}
    return {prompt_id: history_entry(submission)}
